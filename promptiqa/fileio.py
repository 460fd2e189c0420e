"""Writing files so that a failure never leaves a partial file behind, and the one JSON and the one CSV writer."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence

from .errors import PromptIQAError


class WriteError(PromptIQAError, OSError):
    """A file that could not be written (a full disk, no permission); its previous version, if any, is intact."""

    def __str__(self) -> str:
        return str(self.args[0])


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a temp file in ``path``'s folder, flush it to disk (fsync), then rename it to
    ``path``: a failure (a kill, a full disk) leaves no partial file and an existing ``path`` untouched. A failure
    to write is a WriteError naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give the file the usual permissions
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else dict(newline="", encoding="utf-8"))) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())   # the data is on disk before the name points at it
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        failure = _write_failure(err)
        if failure is not None:
            before = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
            error = WriteError(f"could not write {path}: {os.strerror(failure)} ({before})")
            error.errno = failure
            raise error from err
        raise


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    atomic_write(path, lambda fh: fh.write(text))


# JSON: strict (no NaN or Infinity, which Python writes but JSON has not, so other readers fail on them): an undefined
# number is null, with "<key>_note" beside it saying why (the caller's note when it gave one, else a generic one).
NOTE_SUFFIX = "_note"


def json_text(obj: Any, indent: Optional[int] = 1, compact: bool = False,
              default: Optional[Callable[[Any], Any]] = None) -> str:
    """``obj`` as strict JSON text: numpy values as Python's, paths as strings, every non-finite number null with a
    ``<key>_note`` beside it; ``allow_nan=False`` so none can slip through. ``compact``: no spaces (one line)."""
    return json.dumps(_strict(obj, default), indent=None if compact else indent, allow_nan=False,
                      separators=(",", ":") if compact else None)


def write_json(path, obj: Any, indent: Optional[int] = 1, default: Optional[Callable[[Any], Any]] = None) -> Path:
    """``obj`` as strict JSON (``json_text``) in ``path``, atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, json_text(obj, indent=indent, default=default) + "\n")
    return path


# CSV: every file and table we write is UTF-8 with "\n" line ends (the csv module's default is "\r\n"), values as
# the caller formatted them (None as an empty cell); files are written atomically.
CSV_LINE_END = "\n"


def csv_writer(fh) -> Any:
    """A ``csv.writer`` on ``fh`` (a file opened with ``newline=""``, or a StringIO) in the one convention."""
    return csv.writer(fh, lineterminator=CSV_LINE_END)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """``header`` then ``rows`` as CSV text."""
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """``header`` then ``rows`` as CSV in ``path``, atomically; returns the path."""
    path = Path(path)

    def write(fh):
        writer = csv_writer(fh)
        writer.writerow(header)
        writer.writerows(rows)

    atomic_write(path, write)
    return path


def _plain(value: Any, default: Optional[Callable[[Any], Any]]) -> Any:
    """numpy scalars and arrays as Python numbers and lists, paths as strings, tuples as lists; ``default`` for
    anything else JSON has no type for."""
    if value is None or isinstance(value, (str, bool, int, float, list, dict)):
        return value
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):   # numpy (torch tensors are not results)
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return dict(value)
    if default is not None:
        return default(value)
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form")


def _undefined(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _why(value: float) -> str:
    return "undefined: not a number" if math.isnan(value) else f"undefined: {'+' if value > 0 else '-'}infinity"


def _strict(obj: Any, default: Optional[Callable[[Any], Any]]) -> Any:
    obj = _plain(obj, default)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            value = _plain(value, default)
            if _undefined(value):
                note = f"{key}{NOTE_SUFFIX}"
                out[key], out[note] = None, obj.get(note) or _why(value)
            elif key not in out:   # else: the note of an undefined number, already written beside it
                out[key] = _strict(value, default)
        return out
    if isinstance(obj, list):
        return [None if _undefined(v) else _strict(v, default) for v in (_plain(x, default) for x in obj)]
    return None if _undefined(obj) else obj


def _write_failure(err: BaseException):
    """The errno of a failed write: an OSError's, or one a writer reported inside another exception (torch.save
    raises RuntimeError("... file write failed") when the file object it writes to raises)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and not isinstance(err, WriteError) and err.errno is not None:
            return err.errno
        err = err.__cause__ or err.__context__
    return None


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems cannot open or sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_orphans(path) -> List[Path]:
    """Remove the temporary files an interrupted ``atomic_write(path)`` left beside ``path`` (a kill -9 mid-write);
    returns them. Only the writer of ``path`` may call this (a temp file of a write in progress would go too)."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


class OutputError(PromptIQAError):
    """An output path that cannot or must not be written: an input of the same command, a folder, a read-only place."""


def _identity(path):
    """What makes two paths one file: (device, inode) when it exists (links followed), else its resolved path."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return os.path.realpath(path)
    return st.st_dev, st.st_ino


def refuse_overwriting_inputs(outputs, inputs) -> None:
    """Raise an OutputError naming both when an output path is one of the inputs (symlinks, hard links, ``..`` and
    relative spellings resolved) or when two outputs are one file; call it before any work.

    ``outputs``: (what, path) pairs such as ("--out", "scores.csv"), None paths skipped; ``inputs``: (what, path)
    pairs such as ("the checkpoint", "best_model.pth.tar").
    """
    outputs = [(what, path) for what, path in outputs if path is not None]
    seen = {}
    for what, path in outputs:
        other = seen.setdefault(_identity(path), (what, path))
        if other != (what, path):
            raise OutputError(f"{what} {path} and {other[0]} {other[1]} are the same file; give them different paths")
    existing = {key: entry for key, entry in seen.items() if isinstance(key, tuple)}  # an input exists
    if not existing:
        return
    for what, path in inputs:
        entry = existing.get(_identity(path)) if path is not None else None
        if entry is not None:
            raise OutputError(f"{entry[0]} {entry[1]} is {what} {path}: refusing to overwrite an input; choose "
                              f"another output path")


def check_writable(path, what: str = "output") -> None:
    """Raise an OutputError unless a file can be created at ``path`` (no folder there, its folder exists or can be
    made, and the OS lets us create files in it); creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give the path of a file to write")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the nearest folder that exists: makedirs starts there
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: {folder} is a file, not a folder, so nothing can be written under it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".promptiqa-probe.", dir=folder)
    except OSError as err:
        raise OutputError(f"{what} {path}: cannot create files in {folder} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)


def new_figure(**kwargs):
    """A matplotlib Figure drawn by the Agg canvas: no pyplot, so the process's backend (a notebook's) is untouched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi: int = 100) -> None:
    """``fig`` as a PNG, atomically."""
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi), binary=True)


class LockHeld(PromptIQAError):
    """Another process holds the lock a command needs (a run folder, an image cache)."""


class FileLock:
    """An exclusive lock on one file (``flock``: the operating system releases it when its process dies, so a
    killed run leaves no stale lock), holding who took it for the message of a process that finds it held. The lock
    file is removed on release; a process that opened the file just before its removal notices (the path no longer
    names its file) and locks the new one. Where ``fcntl`` is missing (Windows) nothing is locked."""

    def __init__(self, path, what: str):
        self.path, self.what, self.fd = Path(path), what, None

    def acquire(self, wait: bool = False, on_wait=None) -> "FileLock":
        """Take the lock; held by another process: LockHeld naming it, or with ``wait`` block until it is free
        (``on_wait(holder)`` is called first)."""
        try:
            import fcntl
        except ImportError:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                if not wait:
                    os.close(fd)
                    raise LockHeld(f"{self.what} is in use by {holder}; wait for it to finish, or use another "
                                   f"path (lock file {self.path})") from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)   # released and removed by its holder meanwhile: lock the file that is there now
        import socket
        import time

        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  .encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)   # while still held: no one can be inside between the unlink and the close
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
