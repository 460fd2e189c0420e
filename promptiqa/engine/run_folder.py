"""A training run's folder (--save_path): its file names (every module that reads a run uses these), the refusal
to mix two runs in it, the log, the start files, metrics.csv and curves.png, summary.json, and the rule that picks
the best epoch.

metrics.csv is rewritten whole (atomically) from the history last.pth.tar carries, right after each checkpoint:
a kill or a full disk at any moment leaves it equal to the checkpoint's history or one epoch behind it, and a
resume rewrites it from the checkpoint, so an epoch's rows are never repeated or lost.
"""
from __future__ import annotations

import csv
import io
import itertools
import math
import platform
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .. import __version__
from ..data.splits import RUN_SPLITS_FILE
from ..devices import cpu_facts
from ..errors import ConfigError
from ..fileio import FileLock, atomic_write, new_figure, remove_orphans, save_figure, write_csv, write_json

CONFIG, ENVIRONMENT, LOG = "config.json", "environment.json", "log.txt"
SPLITS = RUN_SPLITS_FILE   # the split file's name belongs to data (promptiqa check --splits reads run folders)
METRICS, CURVES, SUMMARY = "metrics.csv", "curves.png", "summary.json"
BEST, LAST = "best_model.pth.tar", "last.pth.tar"
BEST_VAL = "best_val_model.pth.tar"   # --val_fraction: the best epoch on the validation parts
RUN_FILES = (CONFIG, SPLITS, ENVIRONMENT, LOG, METRICS, CURVES, SUMMARY, BEST, LAST, BEST_VAL)
CHECKPOINTS = (BEST, LAST, BEST_VAL)
TENSORBOARD = "tensorboard"   # --log_to tensorboard's event files (engine/tracking.py), a folder of the run

# "note" says what a row's figures do not cover (an epoch resumed mid-way: its training figures)
METRICS_COLUMNS = ("epoch", "dataset", "split", "srocc", "plcc", "krcc", "rmse", "loss", "note")
FIGURES = ("srocc", "plcc", "krcc", "rmse", "loss")
REQUIRED_COLUMNS = ("epoch", "dataset", "split", "srocc", "plcc")
METRIC_SPLITS = ("train", "test", "val")   # metrics.csv's "split": "val" rows only with --val_fraction


def selection_score(per_dataset: Mapping[str, Mapping[str, float]]) -> float:
    """The official model-selection figure of one epoch: SROCC + PLCC summed over the datasets' test splits (NaN
    counts as 0)."""
    return float(sum(np.nan_to_num(m["srocc"]) + np.nan_to_num(m["plcc"]) for m in per_dataset.values()))


def best_epoch(scores: Mapping[int, float]) -> int:
    """The epoch the official code keeps (best_model.pth.tar): the largest selection score, the earliest of equal
    ones."""
    return max(sorted(scores), key=lambda e: (scores[e], -e))


class MetricsError(ConfigError):
    """A metrics.csv that cannot be read as training metrics (the message names the file and line)."""


def existing_run_files(folder) -> List[str]:
    """The run files (RUN_FILES, and the TENSORBOARD folder) already in ``folder``."""
    folder = Path(folder)
    return [name for name in (*RUN_FILES, TENSORBOARD) if (folder / name).exists()]


def new_run_folder(parent) -> Path:
    """A new folder of its own under ``parent`` for a run not told where to write: ``parent/YYYYmmdd-HHMMSS``
    (``-2``, ``-3``, ... after it when that exists), created here, so no run writes over another's files."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        folder = Path(parent) / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def check_save_path(save_path, resume: Optional[str], overwrite: bool) -> None:
    """Refuse, before any work, a --save_path that is not a folder, or one holding another run that this run
    would overwrite (no --resume of its own last.pth.tar, no --overwrite)."""
    folder = Path(save_path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--save_path {folder} is a file, not a folder; give a folder for the run's files")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--save_path {folder}: {parent} is a file, not a folder")
            break
    found = existing_run_files(folder) if folder.is_dir() else []
    if not found or overwrite:
        return
    if resume and resolved(resume, "--resume").parent == folder.resolve():
        return
    shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    if (folder / LAST).is_file():
        raise ConfigError(f"--save_path {folder} already holds a run ({shown}); continue it with --resume "
                          f"{folder / LAST}, give another --save_path, or pass --overwrite to replace it")
    raise ConfigError(f"--save_path {folder} already holds a run ({shown}) that stopped before its first checkpoint, "
                      f"so there is no {LAST} to resume: pass --overwrite to start it again, or give another "
                      f"--save_path")


def resolved(path, option: str) -> Path:
    """``path`` with its symbolic links followed; a link loop is one ConfigError naming ``option``."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as err:   # Python < 3.13 raises RuntimeError for a loop
        raise ConfigError(f"{option} {path}: cannot be followed ({err}); expected a file, not a loop of symbolic "
                          f"links") from None


LOCK = ".promptiqa.lock"   # held by the run writing the folder (train.py's main rank), removed when it ends


class RunFolderLock(FileLock):
    """One run per folder at a time: the run folder's LOCK, taken after the folder checks and held until the run
    ends. A folder made only to hold the lock is removed again with it when the run wrote nothing there."""

    def __init__(self, folder):
        folder = Path(folder)
        super().__init__(folder / LOCK, f"--save_path {folder}")
        self.folder, self.made = folder, []

    def acquire(self, wait: bool = False, on_wait=None) -> "RunFolderLock":
        self.made = [f for f in (self.folder, *self.folder.parents) if not f.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            super().acquire(wait, on_wait)
        except BaseException:
            self._remove_made()
            raise
        return self

    def release(self) -> None:
        super().release()
        self._remove_made()

    def _remove_made(self) -> None:
        for folder in self.made:   # innermost first; a folder the run wrote into is kept
            try:
                folder.rmdir()
            except OSError:
                break
        self.made = []


def lock_run_folder(save_path, resume: Optional[str], overwrite: bool) -> RunFolderLock:
    """check_save_path, then the folder's lock, then check_save_path again: a run that finished between the first
    check and the lock has left its files, which the second check finds."""
    check_save_path(save_path, resume, overwrite)
    lock = RunFolderLock(save_path).acquire()
    try:
        check_save_path(save_path, resume, overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def clear_run(folder) -> List[str]:
    """Delete the run files (and temporary files of interrupted writes) in ``folder``: --overwrite."""
    folder = Path(folder)
    removed = existing_run_files(folder)
    for name in removed:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
        else:
            (folder / name).unlink()
    for name in RUN_FILES:
        remove_orphans(folder / name)
    return removed


class RunLog:
    """Timestamped lines, printed and appended to the run's log.txt by the main rank (other ranks stay quiet).

    Lines logged before ``open`` are held back: the refusals before the run folder is written leave nothing."""

    def __init__(self, folder, is_main: bool):
        self.path, self.is_main = Path(folder) / LOG, is_main
        self.pending: Optional[List[str]] = []

    def __call__(self, message: str) -> None:
        if not self.is_main:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        print(line, flush=True)
        if self.pending is not None:
            self.pending.append(line)
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def open(self) -> None:
        """Write the held-back lines; from now on each line goes to log.txt as it is logged."""
        lines, self.pending = self.pending or [], None
        if self.is_main:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in lines))

    def record_error(self, err: BaseException) -> None:
        """Append the error that ended the run to log.txt (not printed: the command prints it), when the run folder
        was opened; a run's log then says why it stopped."""
        if self.is_main and self.pending is None:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] stopped by an error: {first}\n")

    def remove_orphans(self, name: str) -> None:
        """Delete the temporary files a killed write of ``name`` left (up to a checkpoint's size each)."""
        for tmp in remove_orphans(self.path.parent / name):
            self(f"removed {tmp.name}, the temporary file of an interrupted write of {name}")


def open_run_folder(folder, config: Mapping[str, Any], splits: Mapping[str, Any], overwrite: bool,
                    log: RunLog) -> None:
    """Write the start files (config.json, splits.json, environment.json; log.txt from here on), once every check
    has passed; ``overwrite`` first removes the previous run's files. Main rank only."""
    from ..data import save_splits

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    removed = clear_run(folder) if overwrite else []
    log.open()
    if removed:
        log(f"--overwrite: removed the previous run's {', '.join(removed)}")
    for name in CHECKPOINTS:
        log.remove_orphans(name)
    write_json(folder / CONFIG, dict(config), indent=2)
    save_splits(folder / SPLITS, dict(splits))
    write_json(folder / ENVIRONMENT, environment_info(), indent=2)


def write_history(folder, history: Sequence[Dict[str, Any]]) -> None:
    """metrics.csv and curves.png from the history (last.pth.tar carries it): rewritten whole, atomically."""
    folder = Path(folder)
    if history or (folder / METRICS).exists():   # none before the first epoch; a stale one loses rows not in history
        write_metrics(folder / METRICS, history)
    if history:
        plot_curves(history, folder / CURVES)


def write_summary(folder, best: Mapping[str, Any], last: Sequence[Mapping[str, Any]], digests: Sequence[str],
                  best_val: Optional[Mapping[str, Any]] = None) -> None:
    """summary.json: the best epoch, the last epoch's rows and every rank's weight digest (written when a run has
    finished all its epochs); with --val_fraction also ``best_val``, the best epoch on validation and its test
    figures."""
    payload = {"best": best, "last": list(last), "rank_weight_digests": list(digests)}
    if best_val is not None:
        payload["best_val"] = best_val
    write_json(Path(folder) / SUMMARY, payload, indent=2)


def environment_info() -> dict:
    """Provenance of a run: git commit, Python/torch/timm versions, devices, the CPU (devices.cpu_facts)."""
    import timm
    import torch

    from promptiqa.resources import checkout_root

    root, commit = checkout_root(), None
    try:
        if root is not None:  # an installed package has no commit of its own
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root,
                                    timeout=10).stdout.strip() or None
    except Exception:
        commit = None
    return {"promptiqa": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "platform": platform.platform(),
            "cuda": torch.version.cuda, "gpus": [torch.cuda.get_device_name(i) for i in
                                                 range(torch.cuda.device_count())],
            "cpu": cpu_facts()}   # a CPU run's figures depend on its vector extensions and thread counts


def plot_curves(history: Sequence[Dict[str, Any]], path) -> None:
    """Training loss and per-dataset test SROCC/PLCC per epoch, as a PNG (nothing without matplotlib)."""
    try:
        fig = new_figure(figsize=(15, 4))
    except ImportError:
        return
    from matplotlib.ticker import MaxNLocator

    axes = fig.subplots(1, 3)
    # whole epochs only (matplotlib's default ticks 1.25, 1.5, ... for a few epochs, 0.96 ... 1.04 for one); one
    # integer tick is enough, or a one-epoch run would fall back to the fractional ones
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    train = [r for r in history if r["split"] == "train"]
    epochs = sorted({r["epoch"] for r in train})
    axes[0].plot(epochs, [next(r["loss"] for r in train if r["epoch"] == e) for e in epochs], marker="o")
    axes[0].set(title="training loss (L1)", xlabel="epoch")
    for metric, ax in zip(("srocc", "plcc"), axes[1:]):
        for key in sorted({r["dataset"] for r in history}):
            rows = [r for r in history if r["split"] == "test" and r["dataset"] == key]
            ax.plot([r["epoch"] for r in rows], [r[metric] for r in rows], marker="o", label=key)
        ax.set(title=f"test {metric.upper()}", xlabel="epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def write_metrics(path, history: Sequence[Dict[str, Any]]) -> None:
    """metrics.csv from the run's history (every row so far), atomically; floats at full precision."""
    write_csv(path, METRICS_COLUMNS, ([repr(float(v)) if isinstance(v, float) else v
                                       for v in (row.get(c) for c in METRICS_COLUMNS)] for row in history))


def read_metrics(path) -> List[Dict[str, Any]]:
    """metrics.csv's rows (epoch an int, figures floats; NaN where empty). A malformed file is a MetricsError
    naming the file and line. Two things older versions could leave are used and said in a warning: an
    incomplete last row (a write cut short) is dropped, and an epoch written twice (a resume after a kill between
    the metrics and the checkpoint) counts once, by its last rows."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MetricsError(f"{path}: not a text file (expected training metrics: {', '.join(METRICS_COLUMNS)})") \
            from None
    lines = text.splitlines()
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise MetricsError(f"{path}: not a training metrics.csv (no column {', '.join(missing)}; expected "
                           f"{', '.join(METRICS_COLUMNS)})")
    raw = list(reader)
    if raw and not text.endswith(("\n", "\r")):   # the writer ends every row: this one was cut short
        warnings.warn(f"{path}: line {len(raw) + 1} is incomplete (a write cut short); it is left out")
        raw.pop()
    rows: Dict[tuple, Dict[str, Any]] = {}
    repeated = set()
    for i, r in enumerate(raw):
        line = i + 2
        if any(r.get(c) is None for c in REQUIRED_COLUMNS) or None in r:
            raise MetricsError(f"{path}, line {line}: expected the {len(header)} columns of the header, got "
                               f"{len(lines[i + 1].split(','))}: {lines[i + 1][:80]!r}")
        row = _parse_row(path, line, r)
        key = (row["epoch"], row["dataset"], row["split"])
        if key in rows:
            repeated.add(row["epoch"])
            del rows[key]   # the last occurrence counts, in its place
        rows[key] = row
    if repeated:
        epochs = ", ".join(map(str, sorted(repeated)))
        warnings.warn(f"{path}: epoch(s) {epochs} written more than once (a resumed run of an older version); the "
                      f"last rows of each are used")
    return list(rows.values())


def _parse_row(path: Path, line: int, r: Dict[str, str]) -> Dict[str, Any]:
    row: Dict[str, Any] = dict(r)
    try:
        row["epoch"] = int(r["epoch"])
    except ValueError:
        raise MetricsError(f"{path}, line {line}: epoch {r['epoch']!r} is not a whole number") from None
    if r["split"] not in METRIC_SPLITS:
        raise MetricsError(f"{path}, line {line}: split {r['split']!r} is not one of {', '.join(METRIC_SPLITS)}")
    for column in FIGURES:
        value = (r.get(column) or "").strip()
        try:
            row[column] = float(value) if value else math.nan
        except ValueError:
            raise MetricsError(f"{path}, line {line}: {column} {value!r} is not a number") from None
    return row
