"""Serving samples: training groups (one dataset per group, regrouped every epoch) and whole test splits.

A training group is g images of one dataset and forms one prompt set. The epoch's groups are a pure function
of (seed, epoch, the datasets' sample orders), so resuming, changing the number of ranks, or simulating k ranks
in one process all see the same groups. Ranks take groups strided: rank r gets groups r, r + W, r + 2W, ... of
the global order.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError

Group = List[Tuple[int, int]]  # [(dataset_idx, sample_idx), ...], all with the same dataset_idx


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


class GroupSampler(Sampler):
    """Batch sampler yielding groups of `group_size` (dataset_idx, sample_idx) pairs from one dataset each.

    `sizes[d]` is the number of train images of dataset d. Each epoch every dataset is permuted and cut into
    groups (its last incomplete group dropped), the groups of all datasets are shuffled together, and the
    surplus beyond a multiple of `world_size` is dropped so every rank takes the same number of steps.
    With `first_orders` (per dataset, its train positions in the official sample order) the first epoch (0) cuts
    that order instead of a permutation, as the official code does: it regroups a dataset only after an epoch.
    """

    def __init__(self, sizes: Sequence[int], group_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 first_orders: Optional[Sequence[Sequence[int]]] = None):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        _check_rank(rank, world_size)
        short = [(d, n) for d, n in enumerate(sizes) if n < group_size]
        if short:
            raise ConfigError("every dataset needs at least one full group of "
                             f"{group_size} train images; too few in (dataset_idx, size): {short}")
        self.sizes = [int(n) for n in sizes]
        self.first_orders = None
        if first_orders is not None:
            self.first_orders = [np.asarray(order, dtype=np.int64) for order in first_orders]
            bad = [d for d, (n, order) in enumerate(zip(self.sizes, self.first_orders))
                   if not np.array_equal(np.sort(order), np.arange(n))]
            if len(self.first_orders) != len(self.sizes) or bad:
                raise ValueError("first_orders must give, for every dataset, each of its train positions once "
                                 f"(wrong for dataset_idx {bad or 'count'})")
        self.group_size = group_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_index = 0
        self.groups_per_rank = sum(n // group_size for n in self.sizes) // world_size
        if self.groups_per_rank == 0:
            raise ConfigError(f"{sum(n // group_size for n in self.sizes)} groups cannot give each of "
                             f"{world_size} ranks one step")

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Select the epoch's grouping; `start_index` skips this rank's first groups (exact mid-epoch resume)."""
        if not 0 <= start_index <= self.groups_per_rank:
            raise ValueError(f"start_index must be in [0, {self.groups_per_rank}], got {start_index}")
        self.epoch = epoch
        self.start_index = start_index

    def epoch_groups(self, epoch: int) -> List[Group]:
        """All groups of `epoch` in global order, before the surplus is dropped (same on every rank)."""
        rng = np.random.default_rng([self.seed, epoch])
        g = self.group_size
        groups: List[Group] = []
        for d, n in enumerate(self.sizes):
            perm = self.first_orders[d] if epoch == 0 and self.first_orders is not None else rng.permutation(n)
            groups.extend([(d, int(i)) for i in perm[k * g:(k + 1) * g]] for k in range(n // g))
        return [groups[i] for i in rng.permutation(len(groups))]

    def rank_groups(self, epoch: int) -> List[Group]:
        """This rank's groups of `epoch`, from the first (ignores start_index)."""
        used = self.groups_per_rank * self.world_size
        return self.epoch_groups(epoch)[self.rank:used:self.world_size]

    def __iter__(self) -> Iterator[Group]:
        yield from self.rank_groups(self.epoch)[self.start_index:]

    def __len__(self) -> int:
        """Groups this rank still yields in the current epoch (groups_per_rank when not resuming)."""
        return self.groups_per_rank - self.start_index


class MultiDataset(Dataset):
    """Indexes several datasets by (dataset_idx, sample_idx), as GroupSampler yields; appends dataset_idx."""

    def __init__(self, datasets: Sequence[Dataset]):
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: Tuple[int, int]):
        d, i = key
        return (*self.datasets[d][i], d)


class TestShardSampler(Sampler):
    """Each of range(n) exactly once over all ranks, no padding: rank r takes r, r + W, ...; shards may differ by 1."""

    __test__ = False  # its name starts with "Test": keep pytest from collecting it

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        _check_rank(rank, world_size)
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))
