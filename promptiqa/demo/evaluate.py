"""Prompted evaluation of the demo: every requirement's prompt on the same held-out images, and the prompt effect.

The held-out references are the same for every requirement (their label files list the same images and split by
sorted reference), so the test images' features are computed once per model and scored under each requirement's
ISPP (interval-sampled from that requirement's train split). Besides per-requirement SROCC/PLCC this gives the
**prompt effect**: the Spearman correlation between the predictions made for the same images under a MOS-like
requirement's prompt and under its DMOS-like mirror's. A model that follows its prompt makes it strongly negative;
a model without prompt gives +1 by construction.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..evaluation.features import FeatureBank
from ..evaluation.runner import EvalConfig, EvalSession
from ..metrics import compute_metrics, srocc


@dataclass
class RequirementResult:
    """One model's predictions for the held-out images under one requirement's prompt."""

    key: str
    seen: bool                     # a training requirement (False: never seen in training)
    pred: np.ndarray
    gt: np.ndarray
    metrics: Dict[str, float]
    prompt: Optional[List[dict]]   # the ISPP (image name, normalised score), None without prompts


@dataclass
class ModelResult:
    """A model's results on every requirement, its prompt effect and its cross-requirement SROCC matrix."""

    name: str
    checkpoint: str
    requirements: Dict[str, RequirementResult]
    prompt_effect: float
    mirror: tuple
    cross: Dict[str, Dict[str, float]] = field(default_factory=dict)   # prompt key -> label key -> SROCC
    test_images: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "checkpoint": self.checkpoint, "prompt_effect": self.prompt_effect,
                "mirror": list(self.mirror), "cross_srocc": self.cross, "test_images": self.test_images,
                "requirements": {k: {"seen": r.seen, "metrics": r.metrics, "prompt": r.prompt,
                                     "pred": r.pred.tolist(), "gt": r.gt.tolist()}
                                 for k, r in self.requirements.items()}}


def evaluate_model(name: str, checkpoint: str, roots: Dict[str, str], seen: Sequence[str], mirror: Sequence[str],
                   seed: int, cache_dir: Optional[str] = None, device: Optional[str] = None,
                   isp_num: Optional[int] = None, batch_size: int = 64) -> ModelResult:
    """Score the held-out images of every requirement in ``roots`` (key -> label CSV) under its own prompt.

    ``mirror`` is (MOS-like key, DMOS-like key); ``seed`` must be the training run's split seed."""
    keys = list(roots)
    cfg = EvalConfig(checkpoint=checkpoint, dataset=keys, seed=seed, data_root=[f"{k}={v}" for k, v in roots.items()],
                     cache_dir=cache_dir, device=device, isp_num=isp_num, batch_size=batch_size, workers=0,
                     progress=False)
    session = EvalSession(cfg)
    try:
        first = session.datasets[0]
        for data in session.datasets[1:]:
            if data.test_names != first.test_names:
                raise ValueError(f"requirements {first.key} and {data.key} hold out different images; their label "
                                 f"files must list the same images (regenerate the demo dataset)")
        bank = FeatureBank(session.model, first.test, session.env, batch_size=batch_size)
        results = {}
        for data in session.datasets:
            prompt = session.prompt(data)
            pred = bank.score(None if prompt is None else prompt.images, None if prompt is None else prompt.scores)
            gt = np.asarray(data.test.labels, dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                metrics = compute_metrics(pred, gt)
            results[data.key] = RequirementResult(
                data.key, data.key in seen, pred, gt, metrics,
                None if prompt is None else prompt.describe(data.train_names))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            effect = srocc(results[mirror[0]].pred, results[mirror[1]].pred)
            cross = {p: {l: srocc(results[p].pred, results[l].gt) for l in keys} for p in keys}
        return ModelResult(name, checkpoint, results, effect, tuple(mirror), cross, first.test_names)
    finally:
        session.close()
