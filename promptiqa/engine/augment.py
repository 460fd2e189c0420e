"""The paper's prompt augmentation (random scaling, random flipping of a group's scores) and the image flip that
training applies to each image.

The official code seeds Python's ``random`` per rank and then re-seeds it with the split seed while loading data,
so every rank draws the same augmentation decisions at every step. We keep that relation with one
``random.Random(seed)`` stream shared by all (virtual) ranks: per step one random-scaling decision and one
u-position t ~ U(0, 1) (group scale = max + (1 - max) * t, so u ~ U(max, 1) per group), then one random-flipping
decision. Image flips stay per rank (each virtual rank's numpy stream, ``virtual_ranks.VirtualRank``).
"""
from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch

FLIP_DIMS = {"vertical": 2, "horizontal": 3}   # "vertical" reverses rows: what the official "horizontal" flip does


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


def flip_batch(images: torch.Tensor, flips, flip_axis: str) -> torch.Tensor:
    """Flip the images whose entry in ``flips`` is true; "vertical" reverses rows (the official flip)."""
    if flip_axis == "none" or not bool(np.any(flips)):
        return images
    mask = torch.from_numpy(np.asarray(flips, dtype=bool))
    if images.device.type == "cuda":   # from pinned memory the copy does not block the host (pageable memory would)
        mask = mask.pin_memory()
    mask = mask.to(images.device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(FLIP_DIMS[flip_axis]), images)


def draw_flips(rng: np.random.Generator, n: int) -> np.ndarray:
    """Which of ``n`` training images to flip: each with probability 1/2, from a virtual rank's numpy stream."""
    return rng.random(n) < 0.5
