"""A seed run's figures, read from the metrics.csv training writes: per selection (the last epoch, the best epoch by
training's own rule on the test split, and with --val_fraction the best on validation), per dataset, per metric.
A seed folder holding one run per dataset (the "w/o mixed training" ablation) selects each run's epochs on its own.
promptiqa/experiments/summary.py computes the statistics over seeds from them."""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from ..engine.run_folder import CONFIG, METRICS, SUMMARY, best_epoch, read_metrics, selection_score
from ..errors import ConfigError

SELECTIONS = {"last": "last epoch", "best": "best epoch (selected on the test split, as the official code does)",
              "best_val": "best epoch on validation (--val_fraction: selected on a validation part held out from "
                          "training; test figures)"}
SUMMARY_METRICS = ("srocc", "plcc")
DONE_FILE = SUMMARY    # training writes it when a run has finished all its epochs


@dataclass
class SeedRun:
    """One seed's figures: values[selection][dataset][metric], and the epoch each came from."""

    path: Path
    seed: Optional[int]
    finished: bool
    values: Dict[str, Dict[str, Dict[str, float]]] = field(default_factory=dict)
    epochs: Dict[str, Dict[str, int]] = field(default_factory=dict)


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def select_epochs(rows: Sequence[Mapping[str, str]], val_rows: Sequence[Mapping[str, str]] = ()) -> Dict[str, int]:
    """{"last": ..., "best": ...} epochs of one metrics.csv's test rows; "best" by training's own rule
    (run_folder.best_epoch), so it is the epoch of the run's best_model.pth.tar; given validation rows, "best_val"
    by the same rule on them (the epoch of best_val_model.pth.tar)."""
    def scores(part):
        by_epoch: Dict[int, Dict[str, Dict[str, float]]] = {}
        for r in part:
            by_epoch.setdefault(int(r["epoch"]), {})[r["dataset"]] = {m: _float(r[m]) for m in ("srocc", "plcc")}
        return {e: selection_score(m) for e, m in by_epoch.items()}

    test = scores(rows)
    if not test:
        raise ConfigError("no test rows")
    chosen = {"last": max(test), "best": best_epoch(test)}
    if val_rows:
        chosen["best_val"] = best_epoch(scores(val_rows))
    return chosen


def _seed_of(path: Path) -> Optional[int]:
    for candidate in (path / CONFIG, *sorted(path.glob(f"*/{CONFIG}"))):
        if candidate.is_file():
            try:
                return int(json.loads(candidate.read_text())["seed"])
            except (KeyError, ValueError, TypeError, json.JSONDecodeError):
                pass
    match = re.search(r"seed_?(\d+)", path.name)
    return int(match.group(1)) if match else None


def read_seed_run(path) -> SeedRun:
    """A seed's run folder: its metrics.csv, or one sub-folder per dataset each with its own metrics.csv."""
    path = Path(path)
    files = [path / METRICS] if (path / METRICS).is_file() else sorted(path.glob(f"*/{METRICS}"))
    if not files:
        raise FileNotFoundError(f"no {METRICS} in {path} or its sub-folders")
    run = SeedRun(path, _seed_of(path), all((f.parent / DONE_FILE).is_file() for f in files))
    run.values = {s: {} for s in SELECTIONS}
    run.epochs = {s: {} for s in SELECTIONS}
    for f in files:
        every = read_metrics(f)
        rows = [r for r in every if r["split"] == "test"]
        if not rows:
            warnings.warn(f"{f} has no test rows (no evaluation finished yet); skipped")
            continue
        chosen = select_epochs(rows, [r for r in every if r["split"] == "val"])
        for selection, epoch in chosen.items():
            for r in rows:
                if int(r["epoch"]) != epoch:
                    continue
                if r["dataset"] in run.values[selection]:
                    raise ConfigError(f"{path}: dataset '{r['dataset']}' appears in more than one metrics.csv")
                run.values[selection][r["dataset"]] = {m: _float(r[m]) for m in ("srocc", "plcc", "krcc", "rmse")}
                run.epochs[selection][r["dataset"]] = epoch
    return run


def find_seed_runs(root) -> List[Path]:
    """The seed folders of a 10-split root (seed_*), or the root itself when it is one run; refuses a path that
    is neither (a mistyped folder)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder (expected a training run or a 10-split folder of seed_*/ runs)")
    seeds = sorted((p for p in root.glob("seed_*") if p.is_dir()), key=lambda p: (_seed_of(p) or 0, p.name))
    if seeds:
        return seeds
    markers = (METRICS, CONFIG)
    if not any((root / m).is_file() or next(root.glob(f"*/{m}"), None) for m in markers):
        raise ConfigError(f"{root} is not a run folder (no {METRICS} or {CONFIG}, no seed_*/ runs or runs in its "
                          f"sub-folders)")
    return [root]


def read_group(root, partial: bool = False) -> List[SeedRun]:
    """Every seed run under ``root``; unfinished runs are skipped with a warning unless ``partial``."""
    runs = []
    for path in find_seed_runs(root):
        try:
            run = read_seed_run(path)
        except FileNotFoundError:
            warnings.warn(f"{path}: no {METRICS} yet; skipped")
            continue
        if not run.finished and not partial:
            warnings.warn(f"{path}: training has not finished (no {DONE_FILE}); skipped (summarise with --partial "
                          f"to include its latest epoch)")
            continue
        runs.append(run)
    return runs
