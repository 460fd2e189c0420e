"""Experiment tracking (--log_to): TensorBoard event files in the run folder, written by rank 0 only.

The x axis is the global step (optimiser steps since the run began). A resumed run continues after its
checkpoint's step: the events the interrupted run wrote after that checkpoint are cut out of the event files before
training goes on, and the new file starts with TensorBoard's purge marker (SessionLog.START at the next step), so a
step is never shown twice.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..fileio import atomic_write, remove_orphans
from . import run_folder as files

INSTALL_HINT = 'pip install tensorboard (or pip install ".[tensorboard]")'


def check_backends(backends: Sequence[str]) -> None:
    """Refuse, before any work, a --log_to backend whose package is not installed (one line naming the install)."""
    if "tensorboard" in backends:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"--log_to tensorboard needs the tensorboard package ({err}); {INSTALL_HINT}") from None


def event_files(folder) -> list:
    """The TensorBoard event files in ``folder``, in the order TensorBoard reads them (by name)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*tfevents*") if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []


def cut_events_after(folder, step: int) -> int:
    """Remove from the event files in ``folder`` every event of a step after ``step`` (what an interrupted run wrote
    after the checkpoint a resume starts from), each file rewritten atomically; returns how many values (points of
    a tag) were removed."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from torch.utils.tensorboard import RecordWriter

    removed = 0
    for path in event_files(folder):
        remove_orphans(path)   # a rewrite killed half-way; its temporary file would read as events
        records = list(RawEventFileLoader(str(path)).Load())   # a record cut short by a kill ends the file
        events = [Event.FromString(r) for r in records]
        # the file's version record stays: the reader's purge rules depend on it
        kept = [r for r, e in zip(records, events) if e.step <= step or e.HasField("file_version")]
        # a record is its data and 16 bytes of length and checksums: a larger file ends in a record cut short
        if len(kept) < len(records) or path.stat().st_size != sum(len(r) + 16 for r in records):

            def write(fh, kept=kept):
                writer = RecordWriter(fh)
                for record in kept:
                    writer.write(record)

            atomic_write(path, write, binary=True)
            removed += sum(len(e.summary.value) for e in events if e.step > step)
    return removed


class Tracker:
    """The run's experiment tracking: a no-op unless ``backends`` names one and this is the main rank.

    ``resumed_at``: the global step of the checkpoint a resumed run starts from (None for a new run)."""

    def __init__(self, backends: Sequence[str] = (), folder=None, is_main: bool = False,
                 resumed_at: Optional[int] = None, log=None):
        self.writer = None
        self._since = time.perf_counter()   # the start of the steps the next logging step covers
        if "tensorboard" not in backends or not is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(folder) / files.TENSORBOARD
        purge_step = None
        if resumed_at is not None:
            removed = cut_events_after(folder, resumed_at)
            purge_step = resumed_at + 1
            if removed and log is not None:
                log(f"TensorBoard: removed {removed} point(s) of steps after {resumed_at}, written after the "
                    f"checkpoint this run resumes from")
        # flush_secs: the writer's thread flushes this often too; we flush at every point written (see _flush)
        self.writer = SummaryWriter(str(folder), purge_step=purge_step, flush_secs=30)
        if log is not None:
            log(f"TensorBoard event files in {folder} (view with: tensorboard --logdir {folder.parent})")

    @property
    def active(self) -> bool:
        return self.writer is not None

    def epoch_started(self) -> None:
        """Restart the images/s clock (the time of evaluation and checkpoints between epochs is not training's)."""
        self._since = time.perf_counter()

    def training_step(self, global_step: int, losses: Sequence[torch.Tensor], lr: float, images: int) -> None:
        """One logging step: the mean training loss of ``losses`` (this rank's, since the previous logging step), the
        learning rate, and the images/s of all ranks over those steps (``images`` in them)."""
        if self.writer is None:
            return
        now, started = time.perf_counter(), self._since
        self._since = now
        if losses:
            loss = float(torch.stack([torch.as_tensor(l, dtype=torch.float32) for l in losses]).mean())
            self.writer.add_scalar("train/loss", loss, global_step)
        self.writer.add_scalar("train/lr", lr, global_step)
        self.writer.add_scalar("train/images_per_s", images / max(now - started, 1e-9), global_step)
        self._flush()

    def evaluation(self, global_step: int, per_dataset: Mapping[str, Mapping[str, float]],
                   split: str = "test") -> None:
        """One evaluation: each dataset's SROCC and PLCC (``split/<dataset>/srocc``) and their means over the
        datasets, NaN left out (``split/srocc_mean``: two parts, so no dataset's tag can clash with it)."""
        if self.writer is None:
            return
        for metric in ("srocc", "plcc"):
            values = [float(m[metric]) for m in per_dataset.values()]
            for key, value in zip(per_dataset, values):
                self.writer.add_scalar(f"{split}/{key}/{metric}", value, global_step)
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                self.writer.add_scalar(f"{split}/{metric}_mean", float(np.mean(finite)), global_step)
        self._flush()

    def _flush(self) -> None:
        # on disk before the next checkpoint: a kill then loses no point that the resumed run will not write again
        self.writer.flush()

    def close(self) -> None:
        """Write what is pending and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
