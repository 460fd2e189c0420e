"""A dataset's ISPP for evaluation: sampled from its train split, optionally perturbed (the paper's Table 5).

Perturbations, applied in this order whatever order they are given in, each seeded by the ISP seed:
- ``random_images``: the paper's random images ("generated random numbers"): each prompt image replaced by an
  image of random numbers, every pixel and channel an independent uniform integer in 0..255 (uint8 at the model's
  input size, normalised like any image: uniform over the normalised range [-1, 1]); the scores are kept.
- ``other_images``: each prompt image replaced by a random other image of the same dataset's train split (never
  one of the ISPP's own images), keeping the scores: the prompt keeps its domain and score distribution and loses
  only the image-score correspondence (what ``random_images`` did before it followed the paper).
- ``random_scores``: scores replaced by draws from U(0, 1) (numpy's ``uniform``: [0, 1), the labels' range).
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

PERTURBATIONS = ("random_images", "other_images", "random_scores", "inverted_scores")
IMAGE_REPLACEMENTS = ("random_images", "other_images")
# the random pixels draw from their own stream, so adding random_images leaves the same seed's random scores as they
# are (other_images and random_scores share the seed's first stream, in that order, as they always have)
RANDOM_IMAGES_STREAM = 1
RANDOM_IMAGE = "random pixels"   # the image name results.json records for a random image


@dataclass
class SampledISPP:
    """The ISPP one dataset is evaluated with, as sampled from its train split (and perturbed): image and score
    tensors for the model plus what to record about them. (predict.EncodedPrompt is a requirement already encoded.)"""

    images: torch.Tensor           # (n, 3, S, S) uint8: data.images.normalise on the device
    scores: torch.Tensor           # (n,) in [0, 1]
    positions: List[Optional[int]]  # train-split positions of the prompt images (after any image replacement; None:
                                    # a random image)
    sampled: List[int]             # the positions the ISP sampling chose
    perturb: List[str] = field(default_factory=list)

    def describe(self, names: Sequence[str]) -> List[dict]:
        """(image name, score) per ISP, for results.json."""
        return [{"image": RANDOM_IMAGE if p is None else names[p], "score": float(s)}
                for p, s in zip(self.positions, self.scores.tolist())]


def check_perturbations(perturb: Optional[Sequence[str]]) -> List[str]:
    """The requested perturbations in their fixed application order; unknown names are an error."""
    perturb = [p for p in (perturb or ()) if p != "none"]
    unknown = sorted(set(perturb) - set(PERTURBATIONS))
    if unknown:
        raise ConfigError(f"unknown prompt perturbation(s) {unknown}; choose from {', '.join(PERTURBATIONS)}")
    if set(IMAGE_REPLACEMENTS) <= set(perturb):
        raise ConfigError(f"{' and '.join(IMAGE_REPLACEMENTS)} both replace the prompt images; choose one")
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
    if "other_images" in perturb:
        others = np.setdiff1d(np.arange(len(train)), positions)
        if len(others) < isp_num:
            raise ConfigError(f"{key}: other_images needs {isp_num} train images outside the ISPP, the train split "
                              f"has only {len(others)}")
        positions = [int(p) for p in rng.choice(others, size=isp_num, replace=False)]
    if "random_images" in perturb:
        images = torch.from_numpy(random_images(isp_num, train.image_size, seed))
        positions = [None] * isp_num
    else:
        images, _ = stack_items(train, positions)
    scores = torch.as_tensor(train.labels[sampled], dtype=torch.float32)
    if "random_scores" in perturb:
        scores = torch.as_tensor(rng.uniform(0.0, 1.0, isp_num), dtype=torch.float32)
    if "inverted_scores" in perturb:
        scores = 1.0 - scores
    return SampledISPP(images, scores, positions, sampled, perturb)


def random_images(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` images of random numbers, (n, 3, size, size) uint8: every pixel and channel uniform in 0..255, seeded."""
    return np.random.default_rng([seed, RANDOM_IMAGES_STREAM]).integers(0, 256, size=(n, 3, size, size),
                                                                         dtype=np.uint8)
