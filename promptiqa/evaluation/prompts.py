"""A dataset's ISPP for evaluation: sampled from its train split, optionally perturbed (the paper's Table 5).

Perturbations, applied in this order whatever order they are given in:
- ``random_images``: each prompt image is replaced by a random other image of the same dataset's train split
  (never one of the ISPP's own images), keeping the scores; the prompt keeps its domain and score distribution
  and loses only the image-score correspondence.
- ``random_scores``: scores replaced by draws from U(0, 1).
- ``inverted_scores``: s -> 1 - s (a requirement of the opposite polarity).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..data import sample_isps
from ..errors import ConfigError
from ..engine.inference import stack_items

PERTURBATIONS = ("random_images", "random_scores", "inverted_scores")


@dataclass
class SampledISPP:
    """The ISPP one dataset is evaluated with, as sampled from its train split (and perturbed): image and score
    tensors for the model plus what to record about them. (predict.EncodedPrompt is a requirement already encoded.)"""

    images: torch.Tensor           # (n, 3, S, S) uint8: data.images.normalise on the device
    scores: torch.Tensor           # (n,) in [0, 1]
    positions: List[int]           # train-split positions of the prompt images (after any image replacement)
    sampled: List[int]             # the positions the ISP sampling chose
    perturb: List[str] = field(default_factory=list)

    def describe(self, names: Sequence[str]) -> List[dict]:
        """(image name, score) per ISP, for results.json."""
        return [{"image": names[p], "score": float(s)} for p, s in zip(self.positions, self.scores.tolist())]


def check_perturbations(perturb: Optional[Sequence[str]]) -> List[str]:
    """The requested perturbations in their fixed application order; unknown names are an error."""
    perturb = [p for p in (perturb or ()) if p != "none"]
    unknown = sorted(set(perturb) - set(PERTURBATIONS))
    if unknown:
        raise ConfigError(f"unknown prompt perturbation(s) {unknown}; choose from {', '.join(PERTURBATIONS)}")
    return [p for p in PERTURBATIONS if p in perturb]


def build_prompt(train, isp_num: int, strategy: str = "interval", seed: int = 0,
                 perturb: Optional[Sequence[str]] = None, key: str = "dataset",
                 order: Optional[Sequence[int]] = None) -> SampledISPP:
    """Sample ``isp_num`` ISPs from ``train`` (the train split's IQAImages) and apply ``perturb``, all seeded by
    ``seed``.

    ``order``: the train positions in the official sample order (``splits.official_train_order``), which decides
    ties and the random draw as in the official code."""
    perturb = check_perturbations(perturb)
    try:
        positions = [int(p) for p in sample_isps(train.labels, isp_num, strategy, seed=seed, order=order)]
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None
    sampled = list(positions)
    rng = np.random.default_rng(seed)
    if "random_images" in perturb:
        others = np.setdiff1d(np.arange(len(train)), positions)
        if len(others) < isp_num:
            raise ConfigError(f"{key}: random_images needs {isp_num} train images outside the ISPP, the train split "
                              f"has only {len(others)}")
        positions = [int(p) for p in rng.choice(others, size=isp_num, replace=False)]
    images, _ = stack_items(train, positions)
    scores = torch.as_tensor(train.labels[sampled], dtype=torch.float32)
    if "random_scores" in perturb:
        scores = torch.as_tensor(rng.uniform(0.0, 1.0, isp_num), dtype=torch.float32)
    if "inverted_scores" in perturb:
        scores = 1.0 - scores
    return SampledISPP(images, scores, positions, sampled, perturb)
