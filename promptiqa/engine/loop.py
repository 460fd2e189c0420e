"""One epoch of training (``train_one_epoch``) and its step (``TrainStep``): the official step, over this process's
k groups, with the prompt augmentation, per-rank image flips, L1 loss and Adam.

A step is k groups of g images: run one after another with gradient accumulation (memory of one group), or as one
batch with --batch_groups (faster; the same BatchNorm and prompt semantics, one dropout stream).
"""
from __future__ import annotations

import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import explain_shared_memory_failures, normalise
from ..devices import autocast
from ..distributed import DistEnv, StopVote, all_gather_objects, any_rank
from ..metrics import compute_metrics
from . import TrainingError
from .augment import PromptAugment, draw_flips, flip_batch
from .checkpointing import RunState
from .schedule import learning_rate, set_learning_rate
from .tracking import Tracker
from .virtual_ranks import StepPlan, VirtualRank, batchnorm_groups, group_batchnorm_layers


class TrainStep:
    """One optimiser step over this process's k groups: ``step(images, labels)`` -> (mean loss, predictions on the
    un-augmented scale), both tensors on the device (no host synchronisation)."""

    def __init__(self, net, model, optimizer, cfg, env: DistEnv, plan: StepPlan, ranks: Sequence[VirtualRank],
                 augment: PromptAugment):
        self.net, self.model, self.optimizer, self.cfg, self.env = net, model, optimizer, cfg, env
        self.plan, self.ranks, self.augment = plan, list(ranks), augment
        self.batchnorms = group_batchnorm_layers(model)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        t, flip = self.augment.draw()
        if self.cfg.batch_groups and self.plan.groups_per_process > 1:
            loss, pred = self._batched(images, labels, t, flip)
        else:
            loss, pred = self._accumulated(images, labels, t, flip)
        if self.cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, pred

    def _accumulated(self, images, labels, t, flip):
        """The k groups one after another, each in its virtual rank's random streams; gradients summed / k."""
        k, g = self.plan.groups_per_process, self.plan.group_size
        step_loss, preds = 0.0, []
        for j, vr in enumerate(self.ranks):
            part = slice(j * g, (j + 1) * g)
            with vr:
                x = flip_batch(images[part], draw_flips(vr.np, g), self.cfg.flip_axis)
                y, scale = PromptAugment.apply(labels[part], t, flip)
                sync = nullcontext() if (not self.env.distributed or j == k - 1) else self.net.no_sync()
                # one group per forward: its own statistics; only the first group updates the running ones
                groups = nullcontext() if k == 1 else batchnorm_groups(self.batchnorms, 1, update_running=j == 0)
                with sync, groups:
                    with autocast(self.env.device, self.cfg.amp):
                        pred = self.net(x, y)
                    loss = F.l1_loss(pred.float(), y)
                    (loss / k).backward()
            step_loss = step_loss + loss.detach()
            preds.append(PromptAugment.invert(pred.detach().float(), scale, flip))
        return step_loss / k, preds[0] if k == 1 else torch.cat(preds)

    def _batched(self, images, labels, t, flip):
        """All k groups in one forward (--batch_groups): same BatchNorm and prompt semantics, one dropout stream."""
        k, g = self.plan.groups_per_process, self.plan.group_size
        ys, scales = [], []
        with self.ranks[0]:
            flips = np.concatenate([draw_flips(vr.np, g) for vr in self.ranks])
            x = flip_batch(images, flips, self.cfg.flip_axis)
            for j in range(k):
                y, scale = PromptAugment.apply(labels[j * g:(j + 1) * g], t, flip)
                ys.append(y)
                scales.append(scale.expand(g))
            y = torch.cat(ys)
            with batchnorm_groups(self.batchnorms, k), autocast(self.env.device, self.cfg.amp):
                pred = self.net(x, y, groups=k)
            loss = F.l1_loss(pred.float(), y)
            loss.backward()
        return loss.detach(), PromptAugment.invert(pred.detach().float(), torch.cat(scales), flip)


@dataclass
class EpochResult:
    """What one call of ``train_one_epoch`` did: this rank's un-augmented predictions, labels and dataset indices
    (in step order), the mean training loss, the speed, and whether a stop request ended it early."""

    stopped: bool
    steps: int
    loss: float
    pred: torch.Tensor
    gt: torch.Tensor
    dataset: torch.Tensor
    images_per_s: float
    first_step: int            # > 0 when resumed mid-epoch: the earlier steps' figures are gone
    steps_total: int

    @property
    def note(self) -> str:
        """What the epoch's training figures do not cover (a mid-epoch resume), for metrics.csv."""
        if not self.first_step:
            return ""
        return (f"resumed mid-epoch at step {self.first_step} of {self.steps_total}: the training loss and figures "
                f"cover steps {self.first_step + 1}-{self.steps_total} only")


@explain_shared_memory_failures()
def train_one_epoch(step: TrainStep, loader, state: RunState, steps_total: int, steps_before: int,
                    keys: Sequence[str], stop_requested: Callable[[], bool], last_checkpoint,
                    vote: StopVote, tracker: Optional[Tracker] = None) -> EpochResult:
    """Run the rest of epoch ``state.epoch`` (from step ``state.step``), advancing ``state``; stops early, after a
    step, when --stop_after_steps is reached (``steps_before`` steps ran earlier in this run) or a stop is
    requested on any rank: ``vote`` agrees it without a blocking sync, one step later on every rank (at once in a
    single process). A non-finite loss raises TrainingError naming ``last_checkpoint``, which is intact. ``tracker``
    (--log_to) gets the logging steps' loss, learning rate and images/s."""
    cfg, env = step.cfg, step.env
    step.net.train()
    losses, step_keys, preds, gts, dsets = [], [], [], [], []
    bar = None
    if env.is_main:
        from tqdm import tqdm

        bar = tqdm(total=steps_total, initial=state.step, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", unit="step",
                   dynamic_ncols=True, file=sys.stderr)
    started, images_done, stopped, checked = time.time(), 0, False, 0
    first_step = state.step
    tracker, tracked = tracker or Tracker(), 0   # the steps before losses[tracked] are in the tracker
    tracker.epoch_started()
    for images, labels, _, dataset_idx in _closing_bar_on_error(loader, bar):
        set_learning_rate(step.optimizer, learning_rate(cfg.lr, cfg.epochs, state.epoch, state.global_step,
                                                        cfg.lr_warmup_steps))
        images = normalise(images.to(env.device, non_blocking=True))   # uint8 through the loader, float32 here
        labels = labels.to(env.device, non_blocking=True).float()
        loss, pred = step(images, labels)
        losses.append(loss)
        preds.append(pred)
        gts.append(labels)
        step_keys.append(sorted({keys[int(d)] for d in dataset_idx}))
        dsets.append(dataset_idx)
        state.step += 1
        state.global_step += 1
        images_done += len(images)
        last_step = state.step == steps_total
        drill = cfg.stop_after_steps is not None and steps_before + len(losses) >= cfg.stop_after_steps
        # rank-independent condition: every rank must reach the same collectives
        if state.step % cfg.log_every == 0 or last_step or drill:
            _check_finite(losses, step_keys, checked, state, env, last_checkpoint)
            checked = len(losses)
            rate = images_done * env.world_size / max(time.time() - started, 1e-9)
            if bar is not None:
                bar.set_postfix(loss=f"{float(losses[-1]):.4f}", img_s=f"{rate:.1f}")
            if state.step % cfg.log_every == 0 or last_step:   # not the drill's stop: a resumed run logs these steps
                tracker.training_step(state.global_step, losses[tracked:], step.optimizer.param_groups[0]["lr"],
                                      (len(losses) - tracked) * len(images) * env.world_size)
                tracked = len(losses)
        # every rank posts every step (the same number of votes); the drill is the same on every rank
        if (vote.post(stop_requested()) or drill) and not last_step:
            stopped = True
        if bar is not None:
            bar.update(1)
        if stopped:
            break
    if bar is not None:
        bar.close()
    vote.collect()   # the last vote in flight; a stop it carries is seen by the epoch's end (stop_requested)
    _check_finite(losses, step_keys, checked, state, env, last_checkpoint)
    mean_loss = float(torch.stack([torch.as_tensor(l, dtype=torch.float32) for l in losses]).mean()) \
        if losses else float("nan")
    cat = (lambda parts: torch.cat(parts) if parts else torch.zeros(0))
    return EpochResult(stopped, len(losses), mean_loss, cat(preds), cat(gts), cat(dsets),
                       images_done * env.world_size / max(time.time() - started, 1e-9), first_step, steps_total)


def epoch_rows(result: EpochResult, keys: Sequence[str], epoch: int, env: DistEnv) -> List[dict]:
    """metrics.csv's training rows of an epoch: per dataset, the figures of every rank's predictions (gathered)."""
    local = (result.pred.cpu().tolist(), result.gt.cpu().tolist(), result.dataset.tolist())
    pred, gt, ds = [], [], []
    for p, y, d in all_gather_objects(local, env):
        pred += p
        gt += y
        ds += d
    pred, gt, ds = np.asarray(pred), np.asarray(gt), np.asarray(ds)
    rows = []
    for i, key in enumerate(keys):
        mask = ds == i
        if mask.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                metrics = compute_metrics(pred[mask], gt[mask])
            rows.append(dict(epoch=epoch + 1, dataset=key, split="train", loss=result.loss, **metrics,
                             **({"note": result.note} if result.note else {})))
    return rows


def _check_finite(losses, step_keys, start: int, state: RunState, env: DistEnv, last_checkpoint) -> None:
    """Stop on a non-finite loss among the steps since ``start`` (checked at log steps: one host sync)."""
    bad = []
    if len(losses) > start:
        values = torch.stack([torch.as_tensor(l, dtype=torch.float32) for l in losses[start:]]).cpu()
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
    if any_rank(bool(bad), env):
        if bad:
            i = start + bad[0]
            where = (f"loss {float(values[bad[0]])} at epoch {state.epoch + 1}, step "
                     f"{state.step - len(losses) + i + 1} (dataset {', '.join(step_keys[i])})")
        else:
            where = f"a non-finite loss on another rank in epoch {state.epoch + 1}"
        kept = (f"The last good checkpoint, {last_checkpoint}, was not overwritten" if Path(last_checkpoint).is_file()
                else "No checkpoint had been written yet: start again with --overwrite (a lower --lr, or --amp none, "
                     "may help)")
        raise TrainingError(f"non-finite training {where}; stopping. {kept}")


def _closing_bar_on_error(batches, bar):
    """``batches``, closing the progress bar first when reading one fails, so the error prints on a line of its own."""
    try:
        yield from batches
    except BaseException:
        if bar is not None:
            bar.close()
        raise
