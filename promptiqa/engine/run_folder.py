"""A training run's folder (--save_path): its file names, the refusal to mix two runs in it, and metrics.csv.

metrics.csv is rewritten whole (atomically) from the history last.pth.tar carries, right after each checkpoint:
a kill or a full disk at any moment leaves it equal to the checkpoint's history or one epoch behind it, and a
resume rewrites it from the checkpoint, so an epoch's rows are never repeated or lost.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigError
from ..fileio import atomic_write, remove_orphans

CONFIG, SPLITS, ENVIRONMENT, LOG = "config.json", "splits.json", "environment.json", "log.txt"
METRICS, CURVES, SUMMARY = "metrics.csv", "curves.png", "summary.json"
BEST, LAST = "best_model.pth.tar", "last.pth.tar"
RUN_FILES = (CONFIG, SPLITS, ENVIRONMENT, LOG, METRICS, CURVES, SUMMARY, BEST, LAST)
CHECKPOINTS = (BEST, LAST)

# "note" says what a row's figures do not cover (an epoch resumed mid-way: its training figures)
METRICS_COLUMNS = ("epoch", "dataset", "split", "srocc", "plcc", "krcc", "rmse", "loss", "note")
FIGURES = ("srocc", "plcc", "krcc", "rmse", "loss")
REQUIRED_COLUMNS = ("epoch", "dataset", "split", "srocc", "plcc")


class MetricsError(ConfigError):
    """A metrics.csv that cannot be read as training metrics (the message names the file and line)."""


def existing_run_files(folder) -> List[str]:
    """The run files (RUN_FILES) already in ``folder``."""
    folder = Path(folder)
    return [name for name in RUN_FILES if (folder / name).exists()]


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
    if resume and Path(resume).resolve().parent == folder.resolve():
        return
    shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    own = f"--resume {folder / LAST}" if (folder / LAST).is_file() else "--resume (no last.pth.tar there yet)"
    raise ConfigError(f"--save_path {folder} already holds a run ({shown}); continue it with {own}, give another "
                      f"--save_path, or pass --overwrite to replace it")


def clear_run(folder) -> List[str]:
    """Delete the run files (and temporary files of interrupted writes) in ``folder``: --overwrite."""
    folder = Path(folder)
    removed = existing_run_files(folder)
    for name in removed:
        (folder / name).unlink()
    for name in RUN_FILES:
        remove_orphans(folder / name)
    return removed


def write_metrics(path, history: Sequence[Dict[str, Any]]) -> None:
    """metrics.csv from the run's history (every row so far), atomically; floats at full precision."""
    def write(fh):
        writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in row.items()})

    atomic_write(path, write)


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
    if r["split"] not in ("train", "test"):
        raise MetricsError(f"{path}, line {line}: split {r['split']!r} is neither 'train' nor 'test'")
    for column in FIGURES:
        value = (r.get(column) or "").strip()
        try:
            row[column] = float(value) if value else math.nan
        except ValueError:
            raise MetricsError(f"{path}, line {line}: {column} {value!r} is not a number") from None
    return row
