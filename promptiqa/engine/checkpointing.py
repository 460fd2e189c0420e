"""last.pth.tar and best_model.pth.tar: what they hold, writing them, and resuming a run from last.pth.tar.

last.pth.tar holds the model, the optimiser, the run's progress (epoch, step, global step), its history and best
epoch (and, with --val_fraction, its best epoch on validation), the shared augmentation stream and every virtual
rank's random streams: a resumed run continues exactly where the run stopped, mid-epoch too. best_model.pth.tar (and
best_val_model.pth.tar) holds the weights only (the official layout plus our config).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

from ..config import ARCHITECTURE_FIELDS, STATE_FIELDS
from ..data import image_fingerprint
from ..distributed import DistEnv, agreed, all_gather_objects
from ..models import checkpoint_config, load_checkpoint, non_finite, read_checkpoint, save_checkpoint
from . import TrainingError
from . import run_folder as files


@dataclass
class RunState:
    """A run's progress as last.pth.tar records it: epochs finished, steps done in the current epoch and in all,
    the metrics history (metrics.csv's rows) and the best epoch so far, on the test splits (the official rule) and,
    with a validation part, on it (``best_val``: its validation and test figures)."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    history: List[dict] = field(default_factory=list)
    best: Dict[str, Any] = field(default_factory=lambda: {"score": -math.inf, "epoch": None, "metrics": None})
    best_val: Dict[str, Any] = field(default_factory=lambda: {"score": -math.inf, "epoch": None, "val": None,
                                                              "test": None})


def train_fingerprints(views: Sequence, env: DistEnv) -> Dict[str, List[str]]:
    """{dataset: the content fingerprint of each train image, in split order}, for the checkpoints' leakage guard.

    Read once before training, each rank reading every world_size-th image of every dataset, then gathered: on a
    network file system ~51k files take minutes, which inside the epoch loop, on rank 0 alone, left the other ranks
    waiting in a collective past its timeout. A rank that cannot read an image stops every rank."""
    jobs = [(v.key, v.records.records[i].path) for v in views for i in v.split.train_indices]
    mine = agreed(lambda: {n: image_fingerprint(path) for n, (_, path) in enumerate(jobs)
                           if n % env.world_size == env.rank}, env, what="could not read a training image")
    found: Dict[int, str] = {}
    for part in all_gather_objects(mine, env):
        found.update(part)
    prints: Dict[str, List[str]] = {v.key: [] for v in views}
    for n, (key, _) in enumerate(jobs):
        prints[key].append(found[n])
    return prints


class Checkpoints:
    """Writes a run's checkpoints and restores one for --resume; every rank holds one (saving gathers every
    rank's random streams, and only the main rank writes)."""

    def __init__(self, cfg, env: DistEnv, views: Sequence, isp_num: int, log: files.RunLog,
                 fingerprints: Dict[str, List[str]]):
        self.cfg, self.env, self.views, self.isp_num, self.log = cfg, env, list(views), isp_num, log
        self.folder = Path(cfg.save_path)
        self.last, self.best = self.folder / files.LAST, self.folder / files.BEST
        self.best_val = self.folder / files.BEST_VAL
        self.validating = any(v.split.val_units for v in self.views)   # --val_fraction, or a split file's val part
        self._fingerprints = fingerprints   # train_fingerprints(views, env), computed before training

    def config_entry(self, model) -> dict:
        """The checkpoint's config: the model, prompt length, labels, and every dataset's split (its validation part
        too) with the content fingerprints of its train images (the leakage guard recognises them under any dataset
        name or path)."""
        splits = {}
        for v in self.views:
            splits[v.key] = {"seed": v.split.seed, "split_by": v.split.split_by, "train": list(v.split.train_units),
                             "test": list(v.split.test_units), "train_fingerprints": self._fingerprints[v.key]}
            if v.split.val_units:
                splits[v.key]["val"] = list(v.split.val_units)
        return checkpoint_config(model, prompt_num=self.isp_num, label_norm=self.cfg.label_norm,
                                 splits=splits, datasets=list(self.cfg.dataset))

    def save_last(self, model, optimizer, state: RunState, augment, ranks) -> None:
        """last.pth.tar (collective: every rank calls it; the main rank writes). Weights or optimiser state holding
        NaN or infinity (an update can overflow after a finite loss) are never written: the previous last.pth.tar
        stays the last good one. Every rank holds the same weights, so every rank decides alike."""
        bad = non_finite({"weights": model.state_dict(), "optimizer": optimizer.state_dict()["state"]})
        if bad:
            kept = (f"{self.last} (the previous epoch's) was kept" if self.last.is_file() else
                    f"no checkpoint had been written: start again with --overwrite")
            raise TrainingError(f"after epoch {state.epoch + 1} the {bad[0].split('.')[0]} hold NaN or infinity "
                                f"({len(bad)} tensor(s), e.g. {bad[0]}); stopping without saving. {kept} (a lower "
                                f"--lr, or --amp none, may help)")
        rng = {}
        for part in all_gather_objects({vr.index: vr.state() for vr in ranks}, self.env):
            rng.update(part)
        if not self.env.is_main:
            return
        self.log.remove_orphans(files.LAST)
        # "scaler" stays (None) so the file's layout is unchanged: fp16 training, which needed one, is gone
        save_checkpoint(self.last, model, config=self.config_entry(model), optimizer=optimizer.state_dict(),
                        scaler=None, epoch=state.epoch, step=state.step, global_step=state.global_step,
                        augment_rng=augment.rng.getstate(), rank_rng=rng, history=state.history, best=state.best,
                        train_config=self.cfg.to_dict(), **({"best_val": state.best_val} if self.validating else {}))

    def save_best(self, model, epoch: int, metrics: dict) -> None:
        """best_model.pth.tar: weights and config (main rank)."""
        if self.env.is_main:
            self.log.remove_orphans(files.BEST)
            save_checkpoint(self.best, model, config=self.config_entry(model), epoch=epoch, metrics=metrics)

    def save_best_val(self, model, epoch: int, val: dict, test: dict) -> None:
        """best_val_model.pth.tar: weights and config, with the epoch's validation and test figures (main rank)."""
        if self.env.is_main:
            self.log.remove_orphans(files.BEST_VAL)
            save_checkpoint(self.best_val, model, config=self.config_entry(model), epoch=epoch, metrics=test,
                            val_metrics=val)

    def resume(self, model, optimizer, augment, ranks) -> RunState:
        """Restore model, optimiser and every random stream from --resume; refuses (writing nothing) a file that is
        not a run's last.pth.tar, a changed architecture and a changed dataset mix or split."""
        cfg = self.cfg
        path = Path(cfg.resume)
        if not files.resolved(path, "--resume").is_file():
            raise TrainingError(f"--resume {path}: file not found (expected a run's {files.LAST})")
        try:
            saved = read_checkpoint(path)
        except Exception as err:
            raise TrainingError(f"--resume {path}: not a readable checkpoint ({err})") from err
        if "train_config" not in saved or "optimizer" not in saved:
            raise TrainingError(f"--resume {path}: not a resumable training checkpoint (expected {files.LAST} with "
                                f"optimiser and RNG states; {files.BEST} holds weights only)")
        bad = non_finite({"weights": saved.get("state_dict") or {},
                          "optimizer": (saved["optimizer"] or {}).get("state", {})})
        if bad:
            raise TrainingError(f"--resume {path}: its {bad[0].split('.')[0]} hold NaN or infinity ({len(bad)} "
                                f"tensor(s), e.g. {bad[0]}); training from it would only produce NaN. Resume from an "
                                f"earlier copy, or start again with --overwrite")
        old = saved["train_config"]
        arch = [f for f in ARCHITECTURE_FIELDS if old.get(f) != getattr(cfg, f)]
        if arch:
            diff = ", ".join(f"{f}: {old.get(f)} -> {getattr(cfg, f)}" for f in arch)
            raise TrainingError(f"--resume {path}: the architecture changed ({diff}); start a new run instead")
        self._check_splits(path, saved)
        changed = [f for f in STATE_FIELDS if old.get(f) != getattr(cfg, f)]
        if changed:
            message = ", ".join(f"{f}: {old.get(f)} -> {getattr(cfg, f)}" for f in changed)
            warnings.warn(f"resuming {path} with changed settings: {message}")
            self.log(f"WARNING: resuming with changed settings: {message}")
        load_checkpoint(model, saved)
        optimizer.load_state_dict(saved["optimizer"])
        state = RunState(int(saved["epoch"]), int(saved["step"]), int(saved["global_step"]))
        augment.rng.setstate(_as_tuple(saved["augment_rng"]))
        for vr in ranks:
            if vr.index in saved["rank_rng"]:
                vr.load(saved["rank_rng"][vr.index])
            else:
                warnings.warn(f"no RNG state for virtual rank {vr.index} in {path}: seeding it afresh")
        state.history, state.best = list(saved.get("history", [])), dict(saved.get("best", state.best))
        state.best_val = dict(saved.get("best_val") or state.best_val)
        if state.epoch >= cfg.epochs:
            self.log(f"resumed run already finished {state.epoch} epochs; raise --epochs to extend it")
        self.log(f"resumed from {path} at epoch {state.epoch + 1}, step {state.step}")
        return state

    def _check_splits(self, path: Path, saved: dict) -> None:
        """A resume must train on the datasets and splits the run started with: another --seed or --split_file
        would move test images into training (and the leakage check would not know)."""
        recorded = (saved.get("config") or {}).get("splits")
        if not isinstance(recorded, dict):
            return   # a checkpoint from before splits were recorded: nothing to compare with
        now = {v.key: v.split for v in self.views}
        if set(recorded) != set(now):
            raise TrainingError(f"--resume {path}: the run trained on {', '.join(sorted(recorded))}, not "
                                f"{', '.join(sorted(now))}; resume with the same --dataset, or start a new run")
        for key, split in now.items():
            old = recorded[key]
            if any(list(old.get(side, [])) != list(units) for side, units in
                   (("train", split.train_units), ("test", split.test_units), ("val", split.val_units))):
                source = f"--split_file {self.cfg.split_file}" if self.cfg.split_file else f"--seed {self.cfg.seed}"
                source += f" --val_fraction {self.cfg.val_fraction}" if self.cfg.val_fraction else ""
                n_val = len(old.get("val") or ())
                val = f", validation part of {n_val} unit{'s' if n_val != 1 else ''}" if n_val else ""
                raise TrainingError(f"--resume {path}: the {key} split of {source} is not the one the run trained "
                                    f"on (seed {old.get('seed')}{val}); resume with the run's split (--split_file "
                                    f"{self.folder / files.SPLITS}, or its --seed and --val_fraction), or start a "
                                    f"new run")


def _as_tuple(value):
    """random.Random state from its saved form (lists where the state has tuples)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
