"""Image-score prompt (ISP) sampling from a train split: interval sampling (the official "fix") or random."""
from __future__ import annotations

import random
from typing import List, Optional, Sequence

import numpy as np

from ..errors import ConfigError

STRATEGIES = ("interval", "random")
# The paper's ISPP size: what the evaluation tools use unless told (or, for test.py, the checkpoint records its own).
DEFAULT_ISP_NUM = 10


def _interval_positions(length: int, isp_num: int) -> List[int]:
    """Positions the official code takes from an ordered list: 0, d, 2d, ... (n-2 of them after 0), then the last.

    n = isp_num, d = (length - 2) // (n - 2). The last two positions can be adjacent (length 10, n 4: 0, 4, 8, 9),
    and with d = 1 the second-to-last item is skipped (length 11, n 10: 0..8, then 10), as in the official code.
    """
    if isp_num == 2:
        return [0, length - 1]
    step = (length - 2) // (isp_num - 2)
    # (n - 2) * step <= length - 2, so the middle positions never reach the last one: no duplicates.
    return [0] + [k * step for k in range(1, isp_num - 1)] + [length - 1]


def sample_isps(labels: np.ndarray, isp_num: int, strategy: str = "interval", seed: Optional[int] = None,
                order: Optional[Sequence[int]] = None) -> np.ndarray:
    """Indices into `labels` of `isp_num` prompt images: evenly spaced by rank ("interval") or a seeded random draw.

    `order` lists the indices of `labels` in the official sample order (`splits.official_train_order`): interval
    sampling sorts stably, so equal labels keep this order, and random sampling shuffles this list, both as the
    official code does with its train list. Default: the order the labels are given in.
    """
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if isinstance(isp_num, bool) or not isinstance(isp_num, (int, np.integer)) or isp_num < 2:
        raise ConfigError(f"an ISPP needs at least 2 image-score pairs, got isp_num={isp_num!r}")
    if len(labels) < isp_num:
        raise ConfigError(f"cannot sample {isp_num} prompt images from a train split of only {len(labels)} images")
    base = np.arange(len(labels)) if order is None else np.asarray(order, dtype=np.int64).reshape(-1)
    if order is not None and not np.array_equal(np.sort(base), np.arange(len(labels))):
        raise ValueError(f"order must list each of the {len(labels)} label indices once")
    if strategy == "interval":
        ranked = base[np.argsort(labels[base], kind="stable")]
    elif strategy == "random":
        if seed is None:
            raise ConfigError("random ISP sampling needs a seed (it is deterministic by design)")
        # The official "random" shuffles the pairs, then takes the same positions as interval sampling.
        shuffled = base.tolist()
        random.Random(seed).shuffle(shuffled)
        ranked = np.asarray(shuffled)
    else:
        raise ConfigError(f"unknown ISP sampling strategy {strategy!r}; expected one of {STRATEGIES}")
    return ranked[_interval_positions(len(labels), isp_num)].astype(np.int64)
