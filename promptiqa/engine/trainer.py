"""Mixed-dataset PromptIQA training, as the official train.py does it, with DDP, virtual ranks and exact resume.

This module is the wiring (data, model, optimiser, DDP, loaders, resume), the epoch loop (train one epoch, evaluate,
keep the best, checkpoint) and the launch modes. The step and the epoch are ``loop``'s; the batch semantics and
virtual ranks ``virtual_ranks``'; the prompt augmentation ``augment``'s; the checkpoints ``checkpointing``'s; the
run's other files ``run_folder``'s.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from .. import __version__
from ..config import FIRST_EPOCH_MODES, TrainConfig
from ..data import GroupSampler, ImageLoader, MultiDataset, resolve_roots, resolve_split
from ..data.views import DatasetViews, load_views
from ..devices import default_device, describe_amp
from ..distributed import (DistEnv, StopVote, agreed, all_gather_objects, any_rank, check_launch, cleanup, describe,
                           end_process, free_port, init_distributed, local_main_first, lost_peer)
from ..models import build_model, state_dict_sha256
from . import TrainingError
from . import run_folder as files
from .augment import PromptAugment
from .checkpointing import Checkpoints, RunState, train_fingerprints
from .inference import evaluate_test_splits
from .loop import EpochResult, TrainStep, epoch_rows, train_one_epoch
from .run_folder import best_epoch, selection_score
from .schedule import build_optimizer
from .tracking import Tracker, check_backends
from .virtual_ranks import GroupBatchNorm2d, ZipSampler, plan_steps, seed_process, virtual_ranks


class Trainer:
    """Runs one training process; all ranks construct one and call ``run``."""

    def __init__(self, cfg: TrainConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        self.plan = plan_steps(cfg.batch_size, env.local_world_size, cfg.groups_per_process, nodes=env.nodes)
        if cfg.first_epoch not in FIRST_EPOCH_MODES:
            raise TrainingError(f"first_epoch must be one of {', '.join(FIRST_EPOCH_MODES)}, got {cfg.first_epoch!r}")
        self.ranks = virtual_ranks(env.rank, cfg.groups_per_process, cfg.seed, env.device)
        self.augment = PromptAugment(cfg.seed, cfg.random_scale_rate, cfg.random_flipping_rate,
                                     cfg.random_flipping_warmup)
        self.log = files.RunLog(cfg.save_path, env.is_main)
        self.isp_positions: Dict[str, np.ndarray] = {}   # each dataset's evaluation ISPP in its train split
        self.tracker = Tracker()   # --log_to's, opened with the run folder
        self.folder_lock: Optional[files.RunFolderLock] = None   # the main rank's, taken in _prepare
        seed_process(cfg.seed, env.rank)

    # ---------------------------------------------------------------- wiring
    def build_data(self) -> List[DatasetViews]:
        """Every --dataset's train/test views, and its evaluation ISPP (interval sampling, g - 1 pairs)."""
        cfg = self.cfg
        if not cfg.dataset:
            raise TrainingError("no --dataset given")
        roots = resolve_roots(cfg.dataset, config=cfg.datasets_config, overrides=cfg.data_root)

        def choose_split(records):
            split = resolve_split(records, seed=None if cfg.split_file else cfg.seed, split_file=cfg.split_file,
                                  val_fraction=cfg.val_fraction)
            return split, f"split file {cfg.split_file}" if cfg.split_file else f"seed {split.seed}"

        views = []
        for key in cfg.dataset:
            v = load_views(key, roots[key], choose_split, cfg.image_size, cfg.label_norm, cfg.cache_dir,
                           feeds_gpu=self.env.device.type == "cuda")
            self.isp_positions[key] = v.isp_positions(self.plan.isp_num)
            views.append(v)
            val, val_units = ("", "") if v.val is None else (f" / {len(v.val)} validation",
                                                             f"/{len(v.split.val_units)}")
            self.log(f"dataset {key}: {len(v.train)} train{val} / {len(v.test)} test images ({v.records.split_by} "
                     f"split, {len(v.split.train_units)}{val_units}/{len(v.split.test_units)} units), labels "
                     f"{cfg.label_norm}")
        return views

    def _prepare(self):
        """Everything that can refuse the run, before anything is written: the run folder, the data, the model
        and the resume file. Each phase is agreed by every rank (a refusal on one is raised on all), and the long
        ones are shared out: the fingerprints of the train images over the ranks, the backbone download to one
        process per node, so no rank waits in a collective while another works alone."""
        cfg, env = self.cfg, self.env

        def data():
            if env.is_main:   # only rank 0 writes there; it holds the folder's lock until the run ends
                self.folder_lock = files.lock_run_folder(cfg.save_path, cfg.resume, cfg.overwrite)
            return self.build_data()

        views = agreed(data, env)
        started = time.time()
        fingerprints = train_fingerprints(views, env)
        self.log(f"fingerprinted {sum(map(len, fingerprints.values()))} training images in "
                 f"{time.time() - started:.1f} s ({env.world_size} rank(s) sharing them), for the leakage guard")
        build = lambda: build_training_model(cfg, env.device)   # noqa: E731
        # the ImageNet weights come from the hub: one process per node fills the local cache, the others read it
        model = local_main_first(build, env) if cfg.pretrained_backbone is True else agreed(build, env)

        def rest():
            optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, fused=env.device.type == "cuda")
            self.checkpoints = Checkpoints(cfg, env, views, self.plan.isp_num, self.log, fingerprints)
            state = self.checkpoints.resume(model, optimizer, self.augment, self.ranks) if cfg.resume else RunState()
            return optimizer, state

        optimizer, state = agreed(rest, env)
        return views, model, optimizer, state

    def run(self) -> dict:
        cfg, env = self.cfg, self.env
        self.log(f"promptiqa {__version__}: {self.plan.describe(cfg.batch_size)}; device {env.device}, "
                 f"world size {env.world_size}, {describe(env)}")
        views, model, optimizer, state = self._prepare()
        if env.is_main:
            files.open_run_folder(cfg.save_path, cfg.to_dict(), {v.key: v.split for v in views}, cfg.overwrite,
                                  self.log)
            files.write_history(cfg.save_path, state.history)
        net = torch.compile(model) if cfg.compile else model
        if env.distributed:
            # gradients live in DDP's all-reduce buckets instead of beside them: one copy fewer (~1.2 GB per GPU)
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                gradient_as_bucket_view=True)
        # The official code serves epoch 1 in each dataset's sample order (consecutive runs of it form the groups)
        # and regroups only after each epoch; "shuffled" regroups at random from the start.
        first_orders = [v.train_order for v in views] if cfg.first_epoch == "official" else None
        samplers = [GroupSampler([len(v.train) for v in views], self.plan.group_size, cfg.seed, vr.index,
                                 env.world_size * cfg.groups_per_process, first_orders=first_orders)
                    for vr in self.ranks]
        self.log(f"first epoch: {cfg.first_epoch} (" + ("groups are consecutive runs of each dataset's official "
                 "sample order; regrouped at random from epoch 2" if first_orders else "regrouped at random every "
                 "epoch") + ")")
        data = MultiDataset([v.train for v in views])
        vote = StopVote(env)
        with stop_on_signals(self.log) as stop, cuda_settings(cfg, env.device):
            self.log(f"model selection: {files.BEST} is chosen by SROCC + PLCC summed over the datasets' TEST splits, "
                     "as the official code does (this selects on the test split); last epoch figures are kept too")
            if self.checkpoints.validating:
                self.log(f"model selection on validation: {files.BEST_VAL} is chosen by the same rule on the "
                         "datasets' validation parts (held out from training); its test figures are reported beside")
            if cfg.eval_amp != cfg.amp:
                self.log(f"per-epoch evaluation, and so the choice of {files.BEST}, runs in "
                         f"{describe_amp(cfg.eval_amp)} (--eval_amp {cfg.eval_amp}); training in "
                         f"{describe_amp(cfg.amp)} (--amp {cfg.amp})")
            # (ImageLoader's workers ignore SIGINT/SIGTERM: a stop reaches this process, which saves, then ends them)
            loader = ImageLoader(data, batch_sampler=ZipSampler(samplers), num_workers=cfg.workers,
                                 pin_memory=env.device.type == "cuda", persistent_workers=cfg.workers > 0)
            step = TrainStep(net, model, optimizer, cfg, env, self.plan, self.ranks, self.augment)
            self.tracker = Tracker(cfg.log_to, cfg.save_path, env.is_main, state.global_step if cfg.resume else None,
                                   self.log)
            try:
                return self._epochs(step, loader, samplers, views, state, stop, vote)
            finally:
                vote.close()
                self.tracker.close()

    # ---------------------------------------------------------------- the epoch loop
    def _epochs(self, step: TrainStep, loader, samplers, views, state: RunState, stop: "StopRequest",
                vote: StopVote) -> dict:
        cfg, env, model = self.cfg, self.env, step.model
        keys = [v.key for v in views]
        steps_this_run = 0
        while state.epoch < cfg.epochs:
            self.augment.set_epoch(state.epoch)
            for s in samplers:
                s.set_epoch(state.epoch, state.step)
            # the epoch's full step count (len() is what is left of it after a mid-epoch resume)
            result = train_one_epoch(step, loader, state, samplers[0].groups_per_rank, steps_this_run, keys,
                                     lambda: stop.requested, self.checkpoints.last, vote, self.tracker)
            steps_this_run += result.steps
            if result.stopped:
                return self._stop(step, state)
            rows = epoch_rows(result, keys, state.epoch, env)
            self._log_epoch(result, rows, state, step.optimizer.param_groups[0]["lr"])
            if (state.epoch + 1) % cfg.eval_every == 0 or state.epoch + 1 == cfg.epochs:
                test = self._evaluate(model, views, state, "test", rows)
                self._keep_best(model, test, state)
                if self.checkpoints.validating:
                    self._keep_best_val(model, self._evaluate(model, views, state, "val", rows), test, state)
            state.history.extend(rows)
            state.epoch, state.step = state.epoch + 1, 0
            self.checkpoints.save_last(model, step.optimizer, state, self.augment, self.ranks)
            if env.is_main:
                files.write_history(cfg.save_path, state.history)   # after the checkpoint that carries the same
            drill = cfg.stop_after_steps is not None and steps_this_run >= cfg.stop_after_steps
            if state.epoch < cfg.epochs and any_rank(stop.requested or drill, env):
                return self._stop(step, state, saved=True)
        digests = all_gather_objects(state_dict_sha256(model), env)
        self.log(f"finished {cfg.epochs} epochs; weights identical across ranks: {len(set(digests)) == 1} "
                 f"({digests[0][:12]})")
        last = [r for r in state.history if r["epoch"] == state.epoch]
        best_val = state.best_val if self.checkpoints.validating else None
        if best_val is not None:
            self._log_selections(last, state)
        if env.is_main:
            files.write_summary(cfg.save_path, state.best, last, digests, best_val)
        return {"stopped": False, "best": state.best, "digests": digests,
                **({"best_val": best_val} if best_val is not None else {})}

    def _log_epoch(self, result: EpochResult, rows: List[dict], state: RunState, lr: float) -> None:
        """The epoch's log line; ``lr`` is the optimiser's rate at the epoch's last step (warm-up included)."""
        note = result.note
        self.log(f"epoch {state.epoch + 1}/{self.cfg.epochs}: loss {result.loss:.5f}, {result.images_per_s:.1f} "
                 f"images/s, lr {lr:.3g}, flip rate "
                 f"{self.augment.flip_rate:.3g}; train " + "; ".join(
                     f"{r['dataset']} SROCC {r['srocc']:.4f} PLCC {r['plcc']:.4f}" for r in rows)
                 + (f" ({note})" if note else ""))

    def _keep_best(self, model, test: Dict[str, Dict[str, float]], state: RunState) -> None:
        """best_model.pth.tar follows the official selection rule (run_folder.best_epoch)."""
        epoch, score = state.epoch + 1, selection_score(test)
        candidates = {epoch: score} if state.best["epoch"] is None else {state.best["epoch"]: state.best["score"],
                                                                         epoch: score}
        if best_epoch(candidates) == epoch:
            state.best = {"score": score, "epoch": epoch, "metrics": test}
            self.checkpoints.save_best(model, epoch, test)
        self.log(f"epoch {epoch} test: " + "; ".join(f"{k} SROCC {m['srocc']:.4f} PLCC {m['plcc']:.4f}"
                                                       for k, m in test.items())
                 + f" | best epoch {state.best['epoch']} (SROCC+PLCC sum {state.best['score']:.4f})")

    def _evaluate(self, model, views, state: RunState, part: str, rows: List[dict]) -> Dict[str, Dict[str, float]]:
        """Every dataset's ``part`` ("test", or "val" with --val_fraction) scored after an epoch: its figures, which
        also go to ``rows`` (metrics.csv) and the tracker."""
        cfg = self.cfg
        figures = evaluate_test_splits(model, views, self.isp_positions, self.env, batch_size=cfg.eval_batch_size,
                                       amp=cfg.eval_amp, official_prompt=cfg.test_prompt == "official",
                                       flip_axis=cfg.flip_axis, workers=cfg.workers, part=part)
        rows += [dict(epoch=state.epoch + 1, dataset=k, split=part, loss=float("nan"), **m) for k, m in figures.items()]
        self.tracker.evaluation(state.global_step, figures, split=part)
        return figures

    def _keep_best_val(self, model, val: Dict[str, Dict[str, float]], test: Dict[str, Dict[str, float]],
                       state: RunState) -> None:
        """best_val_model.pth.tar: the official rule (run_folder.best_epoch) applied to the validation parts."""
        epoch, score, best = state.epoch + 1, selection_score(val), state.best_val
        candidates = {epoch: score} if best["epoch"] is None else {best["epoch"]: best["score"], epoch: score}
        if best_epoch(candidates) == epoch:
            state.best_val = {"score": score, "epoch": epoch, "val": val, "test": test}
            self.checkpoints.save_best_val(model, epoch, val, test)
        self.log(f"epoch {epoch} validation: " + "; ".join(f"{k} SROCC {m['srocc']:.4f} PLCC {m['plcc']:.4f}"
                                                             for k, m in val.items())
                 + f" | best epoch on validation {state.best_val['epoch']} (SROCC+PLCC sum "
                   f"{state.best_val['score']:.4f})")

    def _log_selections(self, last: List[dict], state: RunState) -> None:
        """The test figures of the three selections side by side: last epoch, best on test, best on validation."""
        def figures(metrics):
            return "; ".join(f"{k} SROCC {m['srocc']:.4f} PLCC {m['plcc']:.4f}" for k, m in metrics.items())

        last_test = {r["dataset"]: r for r in last if r["split"] == "test"}
        self.log(f"test figures by selection: last epoch {state.epoch}: {figures(last_test)} | best on test (epoch "
                 f"{state.best['epoch']}, {files.BEST}): {figures(state.best['metrics'] or {})} | best on validation "
                 f"(epoch {state.best_val['epoch']}, {files.BEST_VAL}): {figures(state.best_val['test'] or {})}")

    def _stop(self, step: TrainStep, state: RunState, saved: bool = False) -> dict:
        if not saved:
            self.checkpoints.save_last(step.model, step.optimizer, state, self.augment, self.ranks)
        self.log(f"stopped at epoch {state.epoch + 1}, step {state.step}; resume with --resume {self.checkpoints.last}")
        return {"stopped": True, "epoch": state.epoch, "step": state.step}


def build_training_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The model ``cfg`` describes, on ``device``, its BatchNorm layers per-group capable (GroupBatchNorm2d)."""
    model = build_model(cfg.model, backbone=cfg.backbone, image_size=cfg.image_size,
                        backbone_kwargs=cfg.backbone_kwargs or None, pretrained_backbone=cfg.pretrained_backbone,
                        drop=cfg.drop).to(device)
    GroupBatchNorm2d.convert(model)
    if cfg.grad_checkpointing:
        model.vit.set_grad_checkpointing(True)
    return model


# Set (to 1) by gpu-check's resume drill: deterministic CUDA kernels, so that a resumed run can be compared with an
# uninterrupted one bit for bit (cuDNN's autotuner, atomic adds and memory-efficient attention's backward differ from
# run to run). An op that has no deterministic kernel then raises, naming itself. Needs CUBLAS_WORKSPACE_CONFIG=:4096:8
# in the environment too.
@contextmanager
def cuda_settings(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Within, on CUDA: TF32 as ``cfg.tf32`` says, and cuDNN's autotuner (fixed input sizes: it picks the fastest
    convolution once), or deterministic kernels with ``cfg.deterministic``; restored on the way out."""
    if device.type != "cuda":
        yield
        return
    deterministic = cfg.deterministic
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
         torch.backends.cudnn.deterministic) = saved[:4]
        torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


@dataclass
class StopRequest:
    requested: bool = False


@contextmanager
def stop_on_signals(log) -> Iterator[StopRequest]:
    """Within: the first SIGINT/SIGTERM asks the run to stop after the current step (it then saves a resumable
    checkpoint), a second one aborts (KeyboardInterrupt). The previous handlers are restored on the way out."""
    stop = StopRequest()

    def request_stop(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        log(f"signal {signum}: finishing this step, then saving a resumable checkpoint (again to abort)")

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread: signals stay with whoever handles them
            pass
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def train_worker(local_index: Optional[int], cfg: TrainConfig) -> dict:
    """Entry point of one process (spawned with a local index, or launched by torchrun/SLURM or alone); the process
    group it joins is torn down on every way out."""
    if cfg.deterministic:   # deterministic cuBLAS needs a fixed workspace, set before its first call
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    env = init_distributed(cfg, local_index)
    failed, trainer = True, None
    try:
        with warnings.catch_warnings():
            if not env.is_main:   # every rank would repeat rank 0's warnings; only for this run, not the process
                warnings.simplefilter("ignore")
            trainer = Trainer(cfg, env)
            result = trainer.run()
        failed = False
        return result
    except BaseException as err:
        # The DDP wrapper in the failed frames holds the process group: let it go now (cleanup collects it), not
        # at interpreter shutdown, where a gloo worker thread still holding tensors aborts the process.
        traceback.clear_frames(err.__traceback__)
        reason = lost_peer(err, env)
        if reason is not None:
            last = Path(cfg.save_path) / files.LAST
            lost = TrainingError(f"rank {env.rank} lost another process of the job ({reason}); every rank stops. "
                                 f"Relaunch every node with --resume {last} (the last checkpoint, written whole)")
            lost.__cause__, err = err, lost
        if trainer is not None and isinstance(err, Exception):
            trainer.log.record_error(err)   # the run's log.txt says why it stopped
        raise err
    finally:
        if trainer is not None and trainer.folder_lock is not None:
            trainer.folder_lock.release()
        cleanup(env, failed=failed)
        if local_index is not None and not failed:   # a spawned rank, done: no interpreter shutdown (end_process)
            end_process(0)


def main(argv=None) -> int:
    """train.py: resolve the configuration (defaults <- --config <- command line) and train."""
    from ..config import resolve_config

    launch(resolve_config(argv))
    return 0


def launch(cfg: TrainConfig) -> Optional[dict]:
    """Start training in the launch mode ``cfg`` asks for (after checking every setting); ``cfg`` is not changed."""
    cfg.validate()
    check_launch(cfg)
    check_backends(cfg.log_to)
    if cfg.multiprocessing_distributed:
        import torch.multiprocessing as mp

        # one node: a port free now on this host, unless the user named one (--dist-url, or MASTER_ADDR/PORT)
        local = cfg.dist_url == "env://" and not os.environ.get("MASTER_ADDR")
        spawned = dataclasses.replace(
            cfg, nprocs=cfg.nprocs if cfg.nprocs is not None else
            (torch.cuda.device_count() if default_device().type == "cuda" else 1),
            dist_url=f"tcp://127.0.0.1:{free_port()}" if local else cfg.dist_url)
        mp.spawn(train_worker, nprocs=spawned.nprocs, args=(spawned,))
        return None
    return train_worker(None, cfg)
