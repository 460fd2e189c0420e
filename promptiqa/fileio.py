"""Writing files so that a failure never leaves a partial file behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import PromptIQAError


def atomic_write(path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a temp file in ``path``'s folder, then rename it to ``path``: a failure leaves no
    partial file and an existing ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give the file the usual permissions
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else dict(newline="", encoding="utf-8"))) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
