"""Virtual ranks: k prompt groups in one process train exactly as k processes would.

Step semantics (printed at start): ``batch_size`` images per optimiser step summed over a node's processes; each
process handles ``groups_per_process`` = k groups of g = batch_size / (procs_per_node * k) images from one dataset;
image i of a group is predicted from the group's other g - 1 image-score pairs. Process p's groups are those of
*virtual ranks* p*k .. p*k+k-1, so k groups in one process train exactly as k processes would: each group has its
own BatchNorm batch statistics (``GroupBatchNorm2d``), dropout/flip random streams (seeded ``rank_seed``) and prompt
set; gradients are averaged over all groups; BatchNorm running statistics follow virtual rank 0's group, which is
what DDP's buffer broadcast from rank 0 makes of them.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import TrainingError


def rank_seed(seed: int, rank: int) -> int:
    """The seed of (virtual) rank ``rank``'s torch and numpy streams, as the official code seeds each rank."""
    return seed + 100 * rank


def seed_process(seed: int, rank: int) -> None:
    """Seed this process's global torch and numpy generators as rank ``rank``."""
    torch.manual_seed(rank_seed(seed, rank))
    np.random.seed(rank_seed(seed, rank))


@dataclass
class StepPlan:
    """How one optimiser step is split: processes per node x nodes, k groups per process of g images each."""

    procs_per_node: int
    nodes: int
    groups_per_process: int
    group_size: int

    @property
    def isp_num(self) -> int:
        return self.group_size - 1

    def describe(self, batch_size: int) -> str:
        return (f"processes per node {self.procs_per_node} x nodes {self.nodes}, groups per process "
                f"{self.groups_per_process}, group size g={self.group_size} (prompt length {self.isp_num}), "
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


class VirtualRank:
    """One virtual rank's random streams: torch (dropout) and numpy (image flips), seeded ``rank_seed``."""

    def __init__(self, index: int, seed: int, device: torch.device):
        self.index, self.device = index, device
        gen = torch.Generator().manual_seed(rank_seed(seed, index))
        self.cpu_state = gen.get_state()
        self.cuda_state = None
        if device.type == "cuda":
            with torch.random.fork_rng(devices=[device]):
                torch.cuda.manual_seed(rank_seed(seed, index))
                self.cuda_state = torch.cuda.get_rng_state(device)
        self.np = np.random.default_rng(rank_seed(seed, index))

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


def virtual_ranks(rank: int, groups_per_process: int, seed: int, device: torch.device) -> List[VirtualRank]:
    """Process ``rank``'s virtual ranks: rank * k .. rank * k + k - 1."""
    k = groups_per_process
    return [VirtualRank(rank * k + j, seed, device) for j in range(k)]


class GroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that treats a training batch as ``groups`` equal groups trained by separate processes.

    Each group is normalised with its own batch statistics; the running statistics follow the first group only, as
    DDP's buffer broadcast from rank 0 makes them (``update_running`` False: no group updates them, for the later
    groups of an accumulated step). Parameters and buffers are BatchNorm2d's, so state_dict keys are unchanged;
    with the defaults (one group, updating) and in eval mode it is exactly BatchNorm2d.
    """

    groups: int = 1
    update_running: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or (self.groups == 1 and self.update_running):
            return super().forward(x)
        out = [F.batch_norm(c, self.running_mean if j == 0 and self.update_running else None,
                            self.running_var if j == 0 and self.update_running else None, self.weight, self.bias,
                            True, self.momentum, self.eps) for j, c in enumerate(x.chunk(self.groups))]
        if self.update_running:
            self.num_batches_tracked.add_(1)
        return out[0] if len(out) == 1 else torch.cat(out)

    @classmethod
    def convert(cls, model: nn.Module) -> nn.Module:
        """Make every BatchNorm2d of ``model`` a GroupBatchNorm2d in place (same parameters and buffers)."""
        for module in model.modules():
            if type(module) is nn.BatchNorm2d:
                module.__class__ = cls
        return model


def group_batchnorm_layers(model: nn.Module) -> List[GroupBatchNorm2d]:
    """The GroupBatchNorm2d layers of ``model`` (after ``GroupBatchNorm2d.convert``)."""
    return [m for m in model.modules() if isinstance(m, GroupBatchNorm2d)]


@contextmanager
def batchnorm_groups(layers: Sequence[GroupBatchNorm2d], groups: int = 1, update_running: bool = True
                     ) -> Iterator[None]:
    """Within: the GroupBatchNorm2d ``layers`` (``group_batchnorm_layers(model)``) see ``groups`` groups per batch
    and update their running statistics from the first group only if ``update_running``."""
    for m in layers:
        m.groups, m.update_running = groups, update_running
    try:
        yield
    finally:
        for m in layers:
            del m.groups, m.update_running   # back to the class defaults


class ZipSampler:
    """One step's batch for a process: its virtual ranks' groups, concatenated in virtual-rank order."""

    def __init__(self, samplers: Sequence):
        self.samplers = list(samplers)

    def __iter__(self):
        for groups in zip(*self.samplers):
            yield [key for group in groups for key in group]

    def __len__(self):
        return len(self.samplers[0])
