"""Mixed-dataset PromptIQA training, as the official train.py does it, with DDP, virtual ranks and exact resume.

Step semantics (printed at start): ``batch_size`` images per optimiser step summed over a node's processes;
each process handles ``groups_per_process`` = k groups of g = batch_size / (procs_per_node * k) images from one
dataset; image i of a group is predicted from the group's other g - 1 image-score pairs. Process p's groups are
those of *virtual ranks* p*k .. p*k+k-1, so k groups in one process train exactly as k processes would: each
group has its own BatchNorm batch statistics, dropout/flip random streams (seeded seed + 100 * virtual rank) and
prompt set; gradients are averaged over all groups; BatchNorm running statistics follow virtual rank 0's group,
which is what DDP's buffer broadcast from rank 0 makes of them.

Prompt augmentation: the official code seeds Python's ``random`` per rank and then re-seeds it with the split
seed while loading data, so every rank draws the same augmentation decisions at every step. We keep that
relation with one ``random.Random(seed)`` stream shared by all (virtual) ranks: per step one random-scaling
decision and one u-position t ~ U(0, 1) (group scale = max + (1 - max) * t, so u ~ U(max, 1) per group), then
one random-flipping decision.
"""
from __future__ import annotations

import json
import math
import platform
import random
import signal
import subprocess
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..config import ARCHITECTURE_FIELDS, FIRST_EPOCH_MODES, STATE_FIELDS, TrainConfig
from ..data import (IQAImages, GroupSampler, ImageLoader, MultiDataset, image_fingerprint, load_dataset,
                    normalise_labels, official_train_order, open_image_source, resolve_roots, resolve_split,
                    sample_isps, save_splits)
from ..errors import PromptIQAError, one_line
from ..distributed import DistEnv, all_gather_objects, any_rank, cleanup, init_distributed, lost_peer
from ..fileio import atomic_write, atomic_write_text, remove_orphans
from ..metrics import compute_metrics
from ..models import build_model, checkpoint_config, read_checkpoint, save_checkpoint
from . import run_folder as files
from .evaluate import autocast, broadcast_buffers, flip_batch, predict_split, stack_items, summarise


class TrainingError(PromptIQAError, RuntimeError):
    """A run that cannot start or go on (bad settings, non-finite loss, bad resume file)."""


@dataclass
class StepPlan:
    procs_per_node: int
    nodes: int
    groups_per_process: int
    group_size: int

    @property
    def prompt_length(self) -> int:
        return self.group_size - 1

    def describe(self, batch_size: int) -> str:
        return (f"processes per node {self.procs_per_node} x nodes {self.nodes}, groups per process "
                f"{self.groups_per_process}, group size g={self.group_size} (prompt length {self.prompt_length}), "
                f"images per step {batch_size * self.nodes}")


def plan_steps(batch_size: int, procs_per_node: int, groups_per_process: int, nodes: int = 1) -> StepPlan:
    """Group size from the official batch semantics; refuses sizes that do not divide or give g < 3."""
    units = procs_per_node * groups_per_process
    if groups_per_process < 1:
        raise TrainingError(f"--groups_per_process must be >= 1, got {groups_per_process}")
    if batch_size % units:
        raise TrainingError(f"--batch_size {batch_size} does not divide into {procs_per_node} process(es) per node x "
                            f"{groups_per_process} group(s) per process = {units} groups; use a multiple of {units}")
    g = batch_size // units
    if g < 3:
        raise TrainingError(f"group size g = {batch_size} / ({procs_per_node} x {groups_per_process}) = {g} is below 3: "
                            f"a prompt needs at least 2 image-score pairs; raise --batch_size or lower the groups")
    return StepPlan(procs_per_node, nodes, groups_per_process, g)


class PromptAugment:
    """Random scaling and random flipping of a group's scores, drawn from one stream shared by all ranks.

    ``flip_warmup`` > 0 ramps the flipping rate linearly from 0 in epoch 1 to ``flip_rate`` from epoch
    ``flip_warmup`` + 1 on (``set_epoch``): a model trained from scratch first learns image quality, then to read
    the prompt's polarity. The draws per step do not change, so the random stream (and resume) is unaffected."""

    def __init__(self, seed: int, scale_rate: float, flip_rate: float, flip_warmup: int = 0):
        self.rng = random.Random(seed)
        self.scale_rate, self.full_flip_rate, self.flip_warmup = scale_rate, flip_rate, int(flip_warmup)
        self.flip_rate = flip_rate
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s (0-based) flipping rate."""
        ramp = 1.0 if self.flip_warmup <= 0 else min(1.0, epoch / self.flip_warmup)
        self.flip_rate = self.full_flip_rate * ramp

    def draw(self):
        """One step's decisions: (t or None, flip); t places u between each group's max and 1."""
        t = self.rng.random() if self.rng.random() < self.scale_rate else None
        return t, self.rng.random() < self.flip_rate

    @staticmethod
    def apply(labels: torch.Tensor, t: Optional[float], flip: bool):
        """Augmented labels and the scale used (1 when not scaled)."""
        scale = labels.new_ones(())
        if t is not None:
            top = labels.max()
            scale = top + (1 - top) * t
            labels = labels / scale
        return (1 - labels if flip else labels), scale

    @staticmethod
    def invert(pred: torch.Tensor, scale: torch.Tensor, flip: bool) -> torch.Tensor:
        """Predictions back on the un-augmented scale (undo the flip, then the scaling)."""
        return (1 - pred if flip else pred) * scale


class VirtualRank:
    """One virtual rank's random streams: torch (dropout) and numpy (image flips), seeded seed + 100 * index."""

    def __init__(self, index: int, seed: int, device: torch.device):
        self.index, self.device = index, device
        gen = torch.Generator().manual_seed(seed + 100 * index)
        self.cpu_state = gen.get_state()
        self.cuda_state = None
        if device.type == "cuda":
            with torch.random.fork_rng(devices=[device]):
                torch.cuda.manual_seed(seed + 100 * index)
                self.cuda_state = torch.cuda.get_rng_state(device)
        self.np = np.random.default_rng(seed + 100 * index)

    def __enter__(self):
        self._saved = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.cuda_state is not None
                       else None)
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.device)
        return self

    def __exit__(self, *exc):
        self.cpu_state = torch.get_rng_state()
        torch.set_rng_state(self._saved[0])
        if self.cuda_state is not None:
            self.cuda_state = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self._saved[1], self.device)

    def state(self) -> dict:
        return {"cpu": self.cpu_state, "cuda": self.cuda_state, "numpy": self.np.bit_generator.state}

    def load(self, state: dict) -> None:
        self.cpu_state = state["cpu"]
        if self.cuda_state is not None and state.get("cuda") is not None:
            self.cuda_state = state["cuda"]
        self.np.bit_generator.state = state["numpy"]


@dataclass
class DatasetBundle:
    key: str
    records: object
    split: object
    train: IQAImages
    test: IQAImages
    prompt_positions: np.ndarray    # ISPP positions in the train set (interval sampling)
    order: List[int]                # train positions in the official sample order (ISP ties, the first epoch)
    train_fingerprints: Optional[List[str]] = None   # content fingerprints of the train images, read once


class Trainer:
    """Runs one training process; all ranks construct one and call ``run``."""

    def __init__(self, cfg: TrainConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        self.save_path = Path(cfg.save_path)
        self.plan = plan_steps(cfg.batch_size, env.local_world_size, cfg.groups_per_process,
                               nodes=max(1, env.world_size // env.local_world_size))
        if cfg.first_epoch not in FIRST_EPOCH_MODES:
            raise TrainingError(f"first_epoch must be one of {', '.join(FIRST_EPOCH_MODES)}, got {cfg.first_epoch!r}")
        k = cfg.groups_per_process
        self.virtual = [VirtualRank(env.rank * k + j, cfg.seed, env.device) for j in range(k)]
        self.virtual_world = env.world_size * k
        self.augment = PromptAugment(cfg.seed, cfg.random_scale_rate, cfg.random_flipping_rate,
                                     cfg.random_flipping_warmup)
        self.stop_requested = False
        self.pending_log: Optional[List[str]] = []   # lines logged before the run folder is written to
        self.history: List[dict] = []
        self.best = {"score": -math.inf, "epoch": None, "metrics": None}
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        torch.manual_seed(cfg.seed + 100 * env.rank)
        np.random.seed(cfg.seed + 100 * env.rank)
        if env.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32

    # ---------------------------------------------------------------- logging
    def log(self, message: str) -> None:
        if not self.env.is_main:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"[{stamp}] {message}"
        print(line, flush=True)
        if self.pending_log is not None:
            self.pending_log.append(line)
            return
        with open(self.save_path / files.LOG, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    # ---------------------------------------------------------------- data
    def build_data(self) -> List[DatasetBundle]:
        cfg = self.cfg
        if not cfg.dataset:
            raise TrainingError("no --dataset given")
        roots = resolve_roots(cfg.dataset, config=cfg.datasets_config, overrides=cfg.data_root)
        bundles = []
        for key in cfg.dataset:
            ds = load_dataset(key, roots[key], label_norm=cfg.label_norm)
            split = resolve_split(ds, seed=None if cfg.split_file else cfg.seed, split_file=cfg.split_file)
            source = open_image_source(ds, cfg.image_size, cfg.cache_dir)
            train_labels = normalise_labels(ds, split.train_indices)
            test_labels = normalise_labels(ds, split.test_indices)
            train = IQAImages(source, train_labels, cfg.image_size, indices=split.train_indices)
            test = IQAImages(source, test_labels, cfg.image_size, indices=split.test_indices)
            order = official_train_order(ds, split)
            prompt = sample_isps(train_labels, self.plan.prompt_length, "interval", order=order)
            bundles.append(DatasetBundle(key, ds, split, train, test, prompt, order))
            self.log(f"dataset {key}: {len(train)} train / {len(test)} test images ({ds.split_by} split, "
                     f"{len(split.train_units)}/{len(split.test_units)} units), labels {cfg.label_norm}")
        return bundles

    # ---------------------------------------------------------------- checkpoints
    def _config_entry(self, model, bundles) -> dict:
        for b in bundles:  # the leakage guard recognises these images under any dataset name or path
            if b.train_fingerprints is None:
                b.train_fingerprints = [image_fingerprint(b.records.records[i].path) for i in b.split.train_indices]
        splits = {b.key: {"seed": b.split.seed, "split_by": b.split.split_by, "train": list(b.split.train_units),
                          "test": list(b.split.test_units), "train_fingerprints": b.train_fingerprints}
                  for b in bundles}
        return checkpoint_config(model, prompt_num=self.plan.prompt_length, label_norm=self.cfg.label_norm,
                                 splits=splits, datasets=list(self.cfg.dataset))

    def _gather_rng(self) -> Dict[int, dict]:
        states = {vr.index: vr.state() for vr in self.virtual}
        merged = {}
        for part in all_gather_objects(states, self.env):
            merged.update(part)
        return merged

    def save_last(self, model, optimizer, scaler, bundles) -> None:
        rng = self._gather_rng()   # collective: every rank takes part
        if not self.env.is_main:
            return
        self._remove_orphans(files.LAST)
        save_checkpoint(self.save_path / files.LAST, model, config=self._config_entry(model, bundles),
                        optimizer=optimizer.state_dict(), scaler=scaler.state_dict() if scaler else None,
                        epoch=self.epoch, step=self.step_in_epoch, global_step=self.global_step,
                        augment_rng=self.augment.rng.getstate(), rank_rng=rng, history=self.history,
                        best=self.best, train_config=self.cfg.to_dict())

    def _remove_orphans(self, name: str) -> None:
        """Delete temp files a killed checkpoint write left (up to the checkpoint's size each)."""
        for tmp in remove_orphans(self.save_path / name):
            self.log(f"removed {tmp.name}, the temporary file of an interrupted write of {name}")

    def resume(self, model, optimizer, scaler, bundles) -> None:
        """Restore model, optimiser and every random stream from --resume; refuses (writing nothing) a file that
        is not a run's last.pth.tar, a changed architecture and a changed dataset mix or split."""
        path = Path(self.cfg.resume)
        if not path.is_file():
            raise TrainingError(f"--resume {path}: file not found (expected a run's last.pth.tar)")
        try:
            state = read_checkpoint(path)
        except Exception as err:
            raise TrainingError(f"--resume {path}: not a readable checkpoint ({err})") from err
        if "train_config" not in state or "optimizer" not in state:
            raise TrainingError(f"--resume {path}: not a resumable training checkpoint (expected last.pth.tar with "
                                f"optimiser and RNG states; best_model.pth.tar holds weights only)")
        old = state["train_config"]
        arch = [f for f in ARCHITECTURE_FIELDS if old.get(f) != getattr(self.cfg, f)]
        if arch:
            diff = ", ".join(f"{f}: {old.get(f)} -> {getattr(self.cfg, f)}" for f in arch)
            raise TrainingError(f"--resume {path}: the architecture changed ({diff}); start a new run instead")
        self._check_splits(path, state, bundles)
        changed = [f for f in STATE_FIELDS if old.get(f) != getattr(self.cfg, f)]
        if changed:
            message = ", ".join(f"{f}: {old.get(f)} -> {getattr(self.cfg, f)}" for f in changed)
            warnings.warn(f"resuming {path} with changed settings: {message}")
            self.log(f"WARNING: resuming with changed settings: {message}")
        from ..models import load_checkpoint

        load_checkpoint(model, state)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step"])
        self.global_step = int(state["global_step"])
        self.augment.rng.setstate(_as_tuple(state["augment_rng"]))
        for vr in self.virtual:
            if vr.index in state["rank_rng"]:
                vr.load(state["rank_rng"][vr.index])
            else:
                warnings.warn(f"no RNG state for virtual rank {vr.index} in {path}: seeding it afresh")
        self.history, self.best = list(state.get("history", [])), dict(state.get("best", self.best))
        if self.epoch >= self.cfg.epochs:
            self.log(f"resumed run already finished {self.epoch} epochs; raise --epochs to extend it")
        self.log(f"resumed from {path} at epoch {self.epoch + 1}, step {self.step_in_epoch}")

    def _check_splits(self, path: Path, state: dict, bundles) -> None:
        """A resume must train on the datasets and splits the run started with: another --seed or --split_file
        would move test images into training (and the leakage check would not know)."""
        recorded = (state.get("config") or {}).get("splits")
        if not isinstance(recorded, dict):
            return   # a checkpoint from before splits were recorded: nothing to compare with
        now = {b.key: b.split for b in bundles}
        if set(recorded) != set(now):
            raise TrainingError(f"--resume {path}: the run trained on {', '.join(sorted(recorded))}, not "
                                f"{', '.join(sorted(now))}; resume with the same --dataset, or start a new run")
        for key, split in now.items():
            old = recorded[key]
            if list(old.get("train", [])) != list(split.train_units) or \
                    list(old.get("test", [])) != list(split.test_units):
                source = f"--split_file {self.cfg.split_file}" if self.cfg.split_file else f"--seed {self.cfg.seed}"
                raise TrainingError(f"--resume {path}: the {key} split of {source} is not the one the run trained "
                                    f"on (seed {old.get('seed')}); resume with the run's split (--split_file "
                                    f"{self.save_path / files.SPLITS}, or its --seed), or start a new run")

    # ---------------------------------------------------------------- outputs
    def open_run_folder(self, bundles) -> None:
        """Write the start files, once every check has passed: the refusals before this write nothing."""
        log, self.pending_log = self.pending_log or [], None
        if not self.env.is_main:
            return
        folder = self.save_path
        folder.mkdir(parents=True, exist_ok=True)
        removed = files.clear_run(folder) if self.cfg.overwrite else []
        with open(folder / files.LOG, "a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in log))
        if removed:
            self.log(f"--overwrite: removed the previous run's {', '.join(removed)}")
        for name in files.CHECKPOINTS:
            self._remove_orphans(name)
        atomic_write_text(folder / files.CONFIG, json.dumps(self.cfg.to_dict(), indent=2))
        save_splits(folder / files.SPLITS, {b.key: b.split for b in bundles})
        atomic_write_text(folder / files.ENVIRONMENT, json.dumps(environment_info(), indent=2))
        self.write_metrics()

    def write_metrics(self) -> None:
        """metrics.csv and curves.png from the history (last.pth.tar carries it): rewritten whole, atomically."""
        if not self.env.is_main:
            return
        path = self.save_path / files.METRICS
        if self.history or path.exists():   # none before the first epoch; a stale one loses rows not in the history
            files.write_metrics(path, self.history)
        if self.history:
            plot_curves(self.history, self.save_path / files.CURVES)

    def _prepare(self):
        """Everything that can refuse the run, before anything is written: the run folder, the data, the model
        and the resume file."""
        cfg, env = self.cfg, self.env
        if env.is_main:   # only rank 0 writes there
            files.check_save_path(cfg.save_path, cfg.resume, cfg.overwrite)
        bundles = self.build_data()
        model = build_model(cfg.model, backbone=cfg.backbone, image_size=cfg.image_size,
                            backbone_kwargs=cfg.backbone_kwargs or None, pretrained_backbone=cfg.pretrained_backbone,
                            drop=cfg.drop).to(env.device)
        if cfg.grad_checkpointing:
            model.vit.set_grad_checkpointing(True)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler(env.device.type) if cfg.amp == "fp16" else None
        if cfg.resume:
            self.resume(model, optimizer, scaler, bundles)
        return bundles, model, optimizer, scaler

    def _agreed(self, step):
        """Run ``step`` on every rank; if it refuses on any rank, every rank raises (none waits for the others in
        a collective that never comes)."""
        error, result = None, None
        try:
            result = step()
        except (PromptIQAError, OSError) as err:
            error = err
        messages = all_gather_objects(None if error is None else one_line(error), self.env)
        if error is not None:
            raise error
        failed = [(rank, m) for rank, m in enumerate(messages) if m]
        if failed:
            rank, message = failed[0]
            raise TrainingError(f"rank {rank} refused to start: {message}")
        return result

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict:
        cfg, env = self.cfg, self.env
        self.log(f"promptiqa {__version__}: {self.plan.describe(cfg.batch_size)}; device {env.device}, "
                 f"world size {env.world_size}")
        bundles, model, optimizer, scaler = self._agreed(self._prepare)
        self.open_run_folder(bundles)
        net = torch.compile(model) if cfg.compile else model
        if env.distributed:
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        sizes = [len(b.train) for b in bundles]
        # The official code serves epoch 1 in each dataset's sample order (consecutive runs of it form the groups)
        # and regroups only after each epoch; "shuffled" regroups at random from the start.
        first_orders = [b.order for b in bundles] if cfg.first_epoch == "official" else None
        samplers = [GroupSampler(sizes, self.plan.group_size, cfg.seed, vr.index, self.virtual_world,
                                 first_orders=first_orders) for vr in self.virtual]
        self.log(f"first epoch: {cfg.first_epoch} (" + ("groups are consecutive runs of each dataset's official "
                 "sample order; regrouped at random from epoch 2" if first_orders else "regrouped at random every "
                 "epoch") + ")")
        data = MultiDataset([b.train for b in bundles])
        self._install_signal_handlers()
        self.log("model selection: best_model.pth.tar is chosen by SROCC + PLCC summed over the datasets' TEST "
                 "splits, as the official code does (this selects on the test split); last epoch figures are kept too")
        loader = ImageLoader(data, batch_sampler=_ZipSampler(samplers), num_workers=cfg.workers,
                            pin_memory=env.device.type == "cuda", persistent_workers=cfg.workers > 0)
        steps_this_run = 0
        while self.epoch < cfg.epochs:
            for group in optimizer.param_groups:
                group["lr"] = self._lr(self.epoch, self.global_step)
            self.augment.set_epoch(self.epoch)
            for s in samplers:
                s.set_epoch(self.epoch, self.step_in_epoch)
            # the epoch's full step count (len() is what is left of it after a mid-epoch resume)
            outcome = self.train_epoch(net, model, loader, optimizer, scaler, bundles, samplers[0].groups_per_rank,
                                       steps_this_run)
            steps_this_run += outcome["steps"]
            if outcome["stopped"]:
                return self._stop(model, optimizer, scaler, bundles)
            rows = outcome["rows"]
            if (self.epoch + 1) % cfg.eval_every == 0 or self.epoch + 1 == cfg.epochs:
                test = self.evaluate(model, bundles)
                rows += [dict(epoch=self.epoch + 1, dataset=k, split="test", loss=float("nan"), **m)
                         for k, m in test.items()]
                score = summarise(test)
                if score > self.best["score"]:
                    self.best = {"score": score, "epoch": self.epoch + 1, "metrics": test}
                    if env.is_main:
                        self._remove_orphans(files.BEST)
                        save_checkpoint(self.save_path / files.BEST, model,
                                        config=self._config_entry(model, bundles), epoch=self.epoch + 1,
                                        metrics=test)
                self.log(f"epoch {self.epoch + 1} test: " + "; ".join(
                    f"{k} SROCC {m['srocc']:.4f} PLCC {m['plcc']:.4f}" for k, m in test.items())
                         + f" | best epoch {self.best['epoch']} (SROCC+PLCC sum {self.best['score']:.4f})")
            self.history.extend(rows)
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self.save_last(model, optimizer, scaler, bundles)
            self.write_metrics()   # after the checkpoint that carries the same history
            drill = cfg.stop_after_steps is not None and steps_this_run >= cfg.stop_after_steps
            if self.epoch < cfg.epochs and any_rank(self.stop_requested or drill, env):
                return self._stop(model, optimizer, scaler, bundles, saved=True)
        digests = all_gather_objects(weights_digest(model), self.env)
        self.log(f"finished {cfg.epochs} epochs; weights identical across ranks: {len(set(digests)) == 1} "
                 f"({digests[0][:12]})")
        if env.is_main:
            atomic_write_text(self.save_path / files.SUMMARY, json.dumps(
                {"best": self.best, "last": [r for r in self.history if r["epoch"] == self.epoch],
                 "rank_weight_digests": digests}, indent=2, default=float))
        cleanup(env)
        return {"stopped": False, "best": self.best, "digests": digests}

    def _stop(self, model, optimizer, scaler, bundles, saved: bool = False) -> dict:
        if not saved:
            self.save_last(model, optimizer, scaler, bundles)
        self.log(f"stopped at epoch {self.epoch + 1}, step {self.step_in_epoch}; resume with "
                 f"--resume {self.save_path / files.LAST}")
        cleanup(self.env)
        return {"stopped": True, "epoch": self.epoch, "step": self.step_in_epoch}

    def train_epoch(self, net, model, loader, optimizer, scaler, bundles, steps_total, steps_before) -> dict:
        cfg, env = self.cfg, self.env
        net.train()
        bn_buffers = batchnorm_buffers(model)
        losses, step_keys, preds, gts, dsets = [], [], [], [], []
        bar = None
        if env.is_main:
            from tqdm import tqdm

            bar = tqdm(total=steps_total, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       unit="step", dynamic_ncols=True, file=sys.stderr)
        started, images_done, stopped, checked = time.time(), 0, False, 0
        first_step = self.step_in_epoch   # > 0 when resumed mid-epoch: the earlier steps' figures are gone
        for images, labels, _, dataset_idx in _closing_bar_on_error(loader, bar):
            if self.global_step <= cfg.lr_warmup_steps:
                for group in optimizer.param_groups:
                    group["lr"] = self._lr(self.epoch, self.global_step)
            images = images.to(env.device, non_blocking=True)
            labels = labels.to(env.device, non_blocking=True).float()
            step_loss = self.train_step(net, bn_buffers, images, labels, optimizer, scaler, preds, gts)
            losses.append(step_loss)
            step_keys.append(sorted({bundles[int(d)].key for d in dataset_idx}))
            dsets.append(dataset_idx)
            self.step_in_epoch += 1
            self.global_step += 1
            images_done += len(images)
            last_step = self.step_in_epoch == steps_total
            drill = cfg.stop_after_steps is not None and steps_before + len(losses) >= cfg.stop_after_steps
            # rank-independent condition: every rank must reach the same collectives
            if self.step_in_epoch % cfg.log_every == 0 or last_step or drill:
                self._check_finite(losses, step_keys, checked)
                checked = len(losses)
                rate = images_done * env.world_size / max(time.time() - started, 1e-9)
                if bar is not None:
                    bar.set_postfix(loss=f"{float(losses[-1]):.4f}", img_s=f"{rate:.1f}")
                if any_rank(self.stop_requested or drill, env) and not last_step:
                    stopped = True
            if bar is not None:
                bar.update(1)
            if stopped:
                break
        if bar is not None:
            bar.close()
        self._check_finite(losses, step_keys, checked)
        if stopped:
            return {"stopped": True, "steps": len(losses)}
        mean_loss = float(torch.stack([torch.as_tensor(l, dtype=torch.float32) for l in losses]).mean()) \
            if losses else float("nan")
        note = ""
        if first_step:
            note = (f"resumed mid-epoch at step {first_step} of {steps_total}: the training loss and figures cover "
                    f"steps {first_step + 1}-{steps_total} only")
        rows = self._train_rows(preds, gts, dsets, bundles, mean_loss, note)
        rate = images_done * env.world_size / max(time.time() - started, 1e-9)
        self.log(f"epoch {self.epoch + 1}/{cfg.epochs}: loss {mean_loss:.5f}, {rate:.1f} images/s, lr "
                 f"{self._lr(self.epoch):.3g}, flip rate {self.augment.flip_rate:.3g}; train " + "; ".join(
                     f"{r['dataset']} SROCC {r['srocc']:.4f} PLCC {r['plcc']:.4f}" for r in rows)
                 + (f" ({note})" if note else ""))
        return {"stopped": False, "rows": rows, "steps": len(losses)}

    def train_step(self, net, bn_buffers, images, labels, optimizer, scaler, preds, gts) -> torch.Tensor:
        """One optimiser step over this process's k groups; appends un-augmented predictions and labels."""
        cfg, env = self.cfg, self.env
        k, g = self.plan.groups_per_process, self.plan.group_size
        t, flip = self.augment.draw()
        if cfg.batch_groups and k > 1:
            step_loss = self._batched_step(net, images, labels, t, flip, preds, gts, scaler)
        else:
            step_loss = 0.0
            for j, vr in enumerate(self.virtual):
                part = slice(j * g, (j + 1) * g)
                with vr:
                    flips = vr.np.random(g) < 0.5
                    x = flip_batch(images[part], flips, cfg.flip_axis)
                    y, scale = PromptAugment.apply(labels[part], t, flip)
                    sync = nullcontext() if (not env.distributed or j == k - 1) else net.no_sync()
                    with sync:
                        with autocast(env.device, cfg.amp):
                            pred = net(x, y)
                        loss = F.l1_loss(pred.float(), y)
                        _backward(loss / k, scaler)
                # BatchNorm running statistics follow the first group only (DDP broadcasts rank 0's buffers)
                if j == 0 and k > 1:
                    kept = [b.detach().clone() for b in bn_buffers]
                elif j > 0:
                    for b, v in zip(bn_buffers, kept):
                        b.copy_(v)
                step_loss = step_loss + loss.detach()
                preds.append(PromptAugment.invert(pred.detach().float(), scale, flip))
                gts.append(labels[part])
            step_loss = step_loss / k
        if cfg.clip_grad:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return step_loss

    def _batched_step(self, net, images, labels, t, flip, preds, gts, scaler):
        """All k groups in one forward (--batch_groups): same BatchNorm/prompt semantics, one dropout stream."""
        k, g = self.plan.groups_per_process, self.plan.group_size
        ys, scales = [], []
        with self.virtual[0]:
            flips = np.concatenate([vr.np.random(g) < 0.5 for vr in self.virtual])
            x = flip_batch(images, flips, self.cfg.flip_axis)
            for j in range(k):
                y, scale = PromptAugment.apply(labels[j * g:(j + 1) * g], t, flip)
                ys.append(y)
                scales.append(scale.expand(g))
            y = torch.cat(ys)
            with autocast(self.env.device, self.cfg.amp):
                pred = net(x, y, groups=k)
            loss = F.l1_loss(pred.float(), y)
            _backward(loss, scaler)
        preds.append(PromptAugment.invert(pred.detach().float(), torch.cat(scales), flip))
        gts.append(labels)
        return loss.detach()

    def _lr(self, epoch: int, step: Optional[int] = None) -> float:
        """The official cosine schedule, per epoch, over --epochs (recomputed when a resume extends the run); with
        ``step`` (steps done so far) also the --lr_warmup_steps ramp."""
        lr = self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / self.cfg.epochs))
        if step is not None and self.cfg.lr_warmup_steps > 0:
            lr *= min(1.0, (step + 1) / self.cfg.lr_warmup_steps)
        return lr

    def _check_finite(self, losses, step_keys, start: int = 0) -> None:
        """Stop on a non-finite loss among the steps since ``start`` (checked at log steps: one host sync)."""
        bad = []
        if len(losses) > start:
            values = torch.stack([torch.as_tensor(l, dtype=torch.float32) for l in losses[start:]]).cpu()
            bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        if any_rank(bool(bad), self.env):
            if bad:
                i = start + bad[0]
                where = (f"loss {float(values[bad[0]])} at epoch {self.epoch + 1}, step "
                         f"{self.step_in_epoch - len(losses) + i + 1} (dataset {', '.join(step_keys[i])})")
            else:
                where = f"a non-finite loss on another rank in epoch {self.epoch + 1}"
            raise TrainingError(f"non-finite training {where}; stopping. The last good checkpoint, "
                                f"{self.save_path / files.LAST}, was not overwritten")

    def _train_rows(self, preds, gts, dsets, bundles, mean_loss, note: str = "") -> List[dict]:
        local = (torch.cat(preds).cpu().tolist() if preds else [], torch.cat(gts).cpu().tolist() if gts else [],
                 torch.cat(dsets).tolist() if dsets else [])
        pred, gt, ds = [], [], []
        for p, y, d in all_gather_objects(local, self.env):
            pred += p
            gt += y
            ds += d
        pred, gt, ds = np.asarray(pred), np.asarray(gt), np.asarray(ds)
        rows = []
        for i, b in enumerate(bundles):
            mask = ds == i
            if mask.any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    metrics = compute_metrics(pred[mask], gt[mask])
                rows.append(dict(epoch=self.epoch + 1, dataset=b.key, split="train", loss=mean_loss, **metrics,
                                 **({"note": note} if note else {})))
        return rows

    def evaluate(self, model, bundles) -> Dict[str, Dict[str, float]]:
        broadcast_buffers(model, self.env)
        results = {}
        for b in bundles:
            images, scores = stack_items(b.train, b.prompt_positions)
            pred = predict_split(model, b.test, self.env, images, scores, batch_size=self.cfg.eval_batch_size,
                                 amp=self.cfg.amp, official_prompt=self.cfg.test_prompt == "official",
                                 flip_axis=self.cfg.flip_axis)
            results[b.key] = compute_metrics(pred, b.test.labels)
        return results

    def _install_signal_handlers(self) -> None:
        def request_stop(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            self.log(f"signal {signum}: finishing this step, then saving a resumable checkpoint (again to abort)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, request_stop)
            except ValueError:  # not the main thread
                pass


class _ZipSampler:
    """One step's batch for a process: its virtual ranks' groups, concatenated in virtual-rank order."""

    def __init__(self, samplers):
        self.samplers = samplers

    def __iter__(self):
        for groups in zip(*self.samplers):
            yield [key for group in groups for key in group]

    def __len__(self):
        return len(self.samplers[0])


def _closing_bar_on_error(batches, bar):
    """``batches``, closing the progress bar first when reading one fails, so the error prints on a line of its own."""
    try:
        yield from batches
    except BaseException:
        if bar is not None:
            bar.close()
        raise


def batchnorm_buffers(model: torch.nn.Module) -> List[torch.Tensor]:
    """The BatchNorm running statistics (and counters) of ``model``."""
    return [b for n, b in model.named_buffers() if "running_" in n or "num_batches" in n]


def _backward(loss: torch.Tensor, scaler) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer, to compare ranks."""
    import hashlib

    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def environment_info() -> dict:
    """Provenance of a run: git commit, Python/torch/timm versions, devices."""
    import timm

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
                                                 range(torch.cuda.device_count())]}


def plot_curves(history: List[dict], path: Path) -> None:
    """Training loss and per-dataset test SROCC/PLCC per epoch, as a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
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
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100), binary=True)
    plt.close(fig)


def train_worker(local_index: Optional[int], cfg: TrainConfig) -> dict:
    """Entry point of one process (spawned with a local index, or launched by torchrun/SLURM or alone)."""
    env = init_distributed(cfg, local_index)
    if not env.is_main:
        warnings.filterwarnings("ignore")
    try:
        return Trainer(cfg, env).run()
    except RuntimeError as err:
        reason = lost_peer(err, env)
        if reason is None:
            raise
        last = Path(cfg.save_path) / files.LAST
        raise TrainingError(f"rank {env.rank} lost another process of the job ({reason}); every rank stops. "
                            f"Relaunch every node with --resume {last} (the last checkpoint, written whole)") from err


def main(argv=None) -> int:
    """train.py: resolve the configuration (defaults <- --config <- command line) and train."""
    from ..config import resolve_config

    launch(resolve_config(argv))
    return 0


def launch(cfg: TrainConfig) -> Optional[dict]:
    """Start training in the launch mode ``cfg`` asks for (after checking every setting)."""
    cfg.validate()
    if cfg.multiprocessing_distributed:
        import torch.multiprocessing as mp

        if cfg.nprocs is None:
            cfg.nprocs = torch.cuda.device_count() if torch.cuda.is_available() else 1
        if cfg.dist_url == "env://":
            cfg.dist_url = "tcp://127.0.0.1:29517"
        mp.spawn(train_worker, nprocs=cfg.nprocs, args=(cfg,))
        return None
    return train_worker(None, cfg)
