"""Prompted evaluation of the demo: every requirement's prompt on the same held-out images, the prompt x labels
SROCC matrix, and the prompt effect.

Every requirement's label file splits alike by reference (they hold the same references), and one of them (a
requirement without aspects, e.g. ``ssim``) lists every image: its held-out images are the **pool**. Their features
are computed once per model and scored under each requirement's ISPP (interval-sampled from that requirement's
train split). A requirement's own figures are computed on its **evaluation set** within the pool (for an aspect
requirement: the held-out images it penalises plus as many it does not); the matrix entry (prompt P, labels L) is
P's predictions against L's labels on L's evaluation set, and a second matrix does the same over the whole pool,
where an aspect requirement's labels are mostly tied. The **prompt effect** is the Spearman correlation between the predictions
made for the pool under a MOS-like requirement's prompt and under its DMOS-like mirror's: a model that follows its
prompt makes it strongly negative; a model without prompt gives +1 by construction.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Collection, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..data.formats.common import DatasetError
from ..evaluation.features import FeatureBank
from ..evaluation.runner import EvalConfig, EvalSession
from ..metrics import compute_metrics, srocc


@dataclass
class RequirementResult:
    """One model's predictions for the held-out images under one requirement's prompt."""

    key: str
    seen: bool                     # a training requirement (False: never seen in training)
    pred: np.ndarray               # on the requirement's evaluation set (``images``)
    gt: np.ndarray                 # its labels there
    metrics: Dict[str, float]      # pred against gt
    prompt: Optional[List[dict]]   # the ISPP (image name, normalised score), None without prompts
    images: List[str] = field(default_factory=list)
    pred_pool: np.ndarray = field(default_factory=lambda: np.zeros(0))   # on every held-out image (the pool)
    srocc_pool: float = float("nan")                                      # pred_pool against its labels there


@dataclass
class ModelResult:
    """A model's results on every requirement, its prompt effect and its prompt x labels SROCC matrices."""

    name: str
    checkpoint: str
    requirements: Dict[str, RequirementResult]
    prompt_effect: float
    mirror: tuple
    cross: Dict[str, Dict[str, float]] = field(default_factory=dict)       # on each label's evaluation set
    cross_pool: Dict[str, Dict[str, float]] = field(default_factory=dict)  # on every held-out image
    test_images: List[str] = field(default_factory=list)                   # the pool

    def to_dict(self) -> dict:
        return {"name": self.name, "checkpoint": self.checkpoint, "prompt_effect": self.prompt_effect,
                "mirror": list(self.mirror), "cross_srocc": self.cross, "cross_srocc_pool": self.cross_pool,
                "test_images": self.test_images,
                "requirements": {k: {"seen": r.seen, "metrics": r.metrics, "srocc_pool": r.srocc_pool,
                                     "prompt": r.prompt, "images": r.images, "pred": r.pred.tolist(),
                                     "gt": r.gt.tolist(), "pred_pool": r.pred_pool.tolist()}
                                 for k, r in self.requirements.items()}}


def evaluate_model(name: str, checkpoint: str, roots: Dict[str, str], labels: Mapping[str, Mapping[str, float]],
                   sets: Mapping[str, Collection[str]], seen: Sequence[str], mirror: Sequence[str], seed: int,
                   cache_dir: Optional[str] = None, device: Optional[str] = None, isp_num: Optional[int] = None,
                   batch_size: int = 64) -> ModelResult:
    """Score the held-out images under the prompt of every requirement in ``roots`` (key -> label CSV).

    ``labels`` gives each key's score of every image (by name); ``sets`` each key's evaluation set (image names;
    its held-out part is used); ``mirror`` is (MOS-like key, DMOS-like key); ``seed`` must be the training run's
    split seed."""
    keys = list(roots)
    cfg = EvalConfig(checkpoint=checkpoint, dataset=keys, seed=seed, data_root=[f"{k}={v}" for k, v in roots.items()],
                     cache_dir=cache_dir, device=device, isp_num=isp_num, batch_size=batch_size, workers=0,
                     progress=False)
    session = EvalSession(cfg)
    try:
        pool = max(session.datasets, key=lambda d: len(d.test_names))
        names = pool.test_names
        where = {n: i for i, n in enumerate(names)}
        for data in session.datasets:
            outside = sorted(set(data.test_names) - set(where))
            if outside or set(data.split.test_units) != set(pool.split.test_units):
                raise DatasetError(data.key, f"holds out other images than {pool.key} (e.g. "
                                   f"{(outside or data.split.test_units)[:2]}); every label file must hold the same "
                                   f"references, one of them every image (regenerate the demo dataset)")
        bank = FeatureBank(session.model, pool.test, session.env, batch_size=batch_size)
        gt_pool = {k: np.array([labels[k][n] for n in names], dtype=np.float64) for k in keys}
        subsets = {k: np.array([i for i, n in enumerate(names) if n in sets[k]], dtype=np.int64) for k in keys}
        results = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for data in session.datasets:
                prompt = session.prompt(data)
                pred_pool = bank.score(None if prompt is None else prompt.images,
                                       None if prompt is None else prompt.scores)
                at = subsets[data.key]
                pred, gt = pred_pool[at], gt_pool[data.key][at]
                results[data.key] = RequirementResult(
                    data.key, data.key in seen, pred, gt, compute_metrics(pred, gt),
                    None if prompt is None else prompt.describe(data.train_names), [names[i] for i in at],
                    pred_pool, srocc(pred_pool, gt_pool[data.key]))
            effect = srocc(results[mirror[0]].pred_pool, results[mirror[1]].pred_pool)
            cross = {p: {l: srocc(results[p].pred_pool[subsets[l]], gt_pool[l][subsets[l]]) for l in keys}
                     for p in keys}
            cross_pool = {p: {l: srocc(results[p].pred_pool, gt_pool[l]) for l in keys} for p in keys}
        return ModelResult(name, checkpoint, results, effect, tuple(mirror), cross, cross_pool, names)
    finally:
        session.close()
