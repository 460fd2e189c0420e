"""The measures of ``promptiqa adapt`` on predictions already made: which ISPPs a k-shot curve draws, bootstrap
confidence intervals over draws and over test images, relabel consistency, and the requirement matrix.

Pure functions of arrays (and of a scoring function for relabel consistency), so each is tested on its own; the
command (``adapt.py``) makes the predictions and stores them per unit.
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import numpy as np

from ..metrics import srocc

DEFAULT_KS = (2, 5, 10, 20, 50)
DEFAULT_DRAWS = 10          # random sampling's ISPP draws per k (interval sampling has one)
DEFAULT_BOOTSTRAP = 1000    # bootstrap resamples per confidence interval
CONFIDENCE = 0.95
# Monotonic relabellings of the prompt's scores (labels in [0, 1] -> [0, 1]) and the Spearman correlation with the
# untransformed prompt's predictions a model that adapts to the prompt gives: +1 increasing, -1 decreasing.
TRANSFORMS: "OrderedDict[str, Tuple[Callable[[np.ndarray], np.ndarray], int]]" = OrderedDict(
    affine=(lambda s: 0.5 * s + 0.25, 1),
    power=(lambda s: s ** 2, 1),
    log=(lambda s: np.log1p(9.0 * s) / np.log(10.0), 1),
    reversal=(lambda s: 1.0 - s, -1),
)
TRANSFORM_TEXT = {"affine": "0.5 s + 0.25", "power": "s^2", "log": "log10(1 + 9 s)", "reversal": "1 - s"}


class Draw(NamedTuple):
    """One ISPP of a k-shot curve: its size, its index among the draws of that size, and its sampling seed."""

    k: int
    draw: int
    seed: int


def prompt_sizes(ks: Sequence[int], n_train: int) -> List[int]:
    """The prompt sizes measured on a train split of ``n_train`` images: each k capped by it, in order, once each."""
    return list(dict.fromkeys(min(int(k), n_train) for k in ks))


def draw_plan(ks: Sequence[int], n_train: int, strategy: str, draws: int, seed: int) -> List[Draw]:
    """Every ISPP a k-shot curve draws: interval sampling one per k (seed unused), random ``draws`` per k with the
    seeds seed, seed + 1, ... (as the ISP experiments draw them)."""
    count = 1 if strategy == "interval" else draws
    return [Draw(k, d, seed + d) for k in prompt_sizes(ks, n_train) for d in range(count)]


# ---------------------------------------------------------------- correlations, many at once


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (NaN where a side is constant)."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (x * y).sum(axis=-1) / np.where(norm > 0, norm, 1.0), np.nan)


def row_metric(pred: np.ndarray, gt: np.ndarray, metric: str) -> np.ndarray:
    """SROCC (ties: average ranks) or PLCC of each row of ``pred`` against the matching row of ``gt``."""
    if metric == "srocc":
        from scipy.stats import rankdata

        pred, gt = rankdata(pred, axis=-1), rankdata(gt, axis=-1)
    elif metric != "plcc":
        raise ValueError(f"unknown metric {metric!r}")
    return _row_pearson(np.asarray(pred, np.float64), np.asarray(gt, np.float64))


def _interval(samples: np.ndarray) -> Tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_over_draws(values: Sequence[float], size: int, rng: np.random.Generator) -> Tuple[float, float]:
    """The percentile CI of the mean over ISPP draws, the draws resampled with replacement (one draw: that draw)."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    picks = rng.integers(0, values.size, size=(size, values.size))
    return _interval(values[picks].mean(axis=1))


def bootstrap_over_images(pred: np.ndarray, gt: np.ndarray, metric: str, size: int, rng: np.random.Generator,
                          chunk: int = 200) -> Tuple[float, float]:
    """The percentile CI of the mean metric over draws (``pred``: draws x test images) when the test images are
    resampled with replacement (the same resample for every draw)."""
    pred = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    gt = np.asarray(gt, dtype=np.float64)
    n = gt.size
    means = []
    for start in range(0, size, chunk):
        picks = rng.integers(0, n, size=(min(chunk, size - start), n))       # (B, n)
        values = row_metric(pred[:, picks].transpose(1, 0, 2), gt[picks][:, None, :], metric)   # (B, draws)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means.append(np.nanmean(values, axis=1))
    return _interval(np.concatenate(means))


def summarise_curve(pred: np.ndarray, gt: np.ndarray, size: int, seed: Sequence[int]) -> Dict[str, float]:
    """SROCC and PLCC of a prompt size's draws (``pred``: draws x test images): the mean over draws, their std and
    both bootstrap CIs (seeded by ``seed``)."""
    pred = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    out: Dict[str, float] = {"draws": int(pred.shape[0]), "n": int(pred.shape[1])}
    for i, metric in enumerate(("srocc", "plcc")):
        values = row_metric(pred, np.broadcast_to(gt, pred.shape), metric)
        finite = values[np.isfinite(values)]
        out[metric] = float(finite.mean()) if finite.size else math.nan
        out[f"{metric}_std"] = float(finite.std()) if finite.size else math.nan
        rng = np.random.default_rng([*seed, i])
        out[f"{metric}_draws_low"], out[f"{metric}_draws_high"] = bootstrap_over_draws(values, size, rng)
        out[f"{metric}_images_low"], out[f"{metric}_images_high"] = bootstrap_over_images(pred, gt, metric, size, rng)
    return out


# ---------------------------------------------------------------- relabel consistency


def relabel_consistency(score: Callable[[object, "np.ndarray"], np.ndarray], images, scores: np.ndarray
                        ) -> Dict[str, Dict[str, float]]:
    """For each transform: the Spearman correlation of the predictions under the prompt with its scores
    transformed against those under the prompt as it is (``score(images, scores) -> predictions``), and the value a
    model following its prompt gives."""
    scores = np.asarray(scores, dtype=np.float64)
    plain = score(images, scores)
    out = OrderedDict()
    for name, (transform, expected) in TRANSFORMS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            value = srocc(score(images, transform(scores)), plain)
        out[name] = {"spearman": value, "expected": expected}
    return out


# ---------------------------------------------------------------- the requirement matrix


def requirement_groups(test_paths: Mapping[str, Sequence[str]], train_paths: Mapping[str, Sequence[str]]
                       ) -> List[Tuple[List[str], List[str]]]:
    """Datasets that share test images (by resolved path), in the order given: [(keys, common test paths)], the
    common paths being every key's test images that are no key's training image (a group needs two keys)."""
    keys = list(test_paths)
    sets = {k: set(test_paths[k]) for k in keys}
    groups: List[List[str]] = []
    for key in keys:
        joined = [g for g in groups if any(sets[key] & sets[other] for other in g)]
        merged = [k for g in joined for k in g] + [key]
        groups = [g for g in groups if g not in joined] + [sorted(merged, key=keys.index)]
    out = []
    for group in sorted((g for g in groups if len(g) > 1), key=lambda g: keys.index(g[0])):
        trained = set().union(*(set(train_paths[k]) for k in group))
        common = set.intersection(*(sets[k] for k in group)) - trained
        out.append((group, [p for p in test_paths[group[0]] if p in common]))
    return out


def requirement_matrix(pred: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> Dict[str, object]:
    """SROCC of the predictions under each requirement's prompt (rows, ``pred``) against each requirement's labels
    (columns, ``labels``), all on the same images, and each row's margin: its own column minus the best other."""
    rows, columns = list(pred), list(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        matrix = {p: {c: srocc(pred[p], labels[c]) for c in columns} for p in rows}
    margins = {}
    for p in rows:
        others = [v for c, v in matrix[p].items() if c != p and np.isfinite(v)]
        own = matrix[p].get(p, math.nan)
        margins[p] = float(own - max(others)) if others and np.isfinite(own) else math.nan
    return {"rows": rows, "columns": columns, "srocc": matrix, "margin": margins}

