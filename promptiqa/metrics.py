"""IQA correlation metrics: SROCC, PLCC, KRCC, RMSE.

PLCC is the plain Pearson correlation of the raw predictions, as the paper reports it; ``plcc_logistic`` is the
VQEG convention (Pearson after a 4-parameter logistic fit from predictions to ground truth), always labelled as
such. Undefined correlations (fewer than 2 points, a constant side, non-finite values) are NaN with a
RuntimeWarning, never an exception, so one degenerate dataset does not end a long evaluation.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence

import numpy as np

# scipy (a core dependency: score's requirement check is an SROCC) is imported where a metric is computed, so a
# module importing this one, and every command's --help, loads without it.

METRICS = ("srocc", "plcc", "krcc", "rmse")


def _pair(pred: Sequence[float], gt: Sequence[float]):
    pred, gt = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(gt, dtype=np.float64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"predictions and ground truth differ in length: {pred.size} vs {gt.size}")
    return pred, gt


def undefined_reason(pred, gt) -> Optional[str]:
    """Why a correlation of ``pred`` and ``gt`` is undefined ("constant predictions (0.5)", ...), or None."""
    pred, gt = _pair(pred, gt)
    if pred.size < 2:
        return f"only {pred.size} point(s)"
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        bad = int((~np.isfinite(pred)).sum() + (~np.isfinite(gt)).sum())
        return f"{bad} non-finite value(s)"
    if np.ptp(pred) == 0:
        return f"constant predictions ({pred[0]:.6g})"
    if np.ptp(gt) == 0:
        return f"constant ground truth ({gt[0]:.6g})"
    return None


def _degenerate(pred: np.ndarray, gt: np.ndarray, name: str) -> bool:
    """True (after a RuntimeWarning naming the reason) when a correlation is undefined for these inputs."""
    reason = undefined_reason(pred, gt)
    if reason is not None:
        warnings.warn(f"{name} undefined for {pred.size} points: {reason}; reporting NaN", RuntimeWarning,
                      stacklevel=3)
        return True
    return False


def srocc(pred, gt) -> float:
    """Spearman rank-order correlation (ties get average ranks)."""
    pred, gt = _pair(pred, gt)
    from scipy import stats

    return float("nan") if _degenerate(pred, gt, "SROCC") else float(stats.spearmanr(pred, gt)[0])


def plcc(pred, gt) -> float:
    """Pearson linear correlation of the raw predictions (the paper's PLCC; no logistic fit)."""
    pred, gt = _pair(pred, gt)
    from scipy import stats

    return float("nan") if _degenerate(pred, gt, "PLCC") else float(stats.pearsonr(pred, gt)[0])


def krcc(pred, gt) -> float:
    """Kendall rank-order correlation (tau-b, which accounts for ties)."""
    pred, gt = _pair(pred, gt)
    from scipy import stats

    return float("nan") if _degenerate(pred, gt, "KRCC") else float(stats.kendalltau(pred, gt)[0])


def rmse(pred, gt) -> float:
    """Root mean squared error on the label scale (defined for constant inputs; NaN when empty)."""
    pred, gt = _pair(pred, gt)
    return float(np.sqrt(np.mean((pred - gt) ** 2))) if pred.size else float("nan")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic mapping (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    with np.errstate(over="ignore"):
        return (b1 - b2) / (1 + np.exp(-(x - b3) / (abs(b4) + 1e-12))) + b2


def plcc_logistic(pred, gt) -> float:
    """Pearson correlation after fitting the 4-parameter logistic from predictions to ground truth (VQEG)."""
    from scipy import optimize, stats

    pred, gt = _pair(pred, gt)
    if _degenerate(pred, gt, "PLCC (logistic)"):
        return float("nan")
    # The fit has local minima: start from a few slopes and centres and keep the smallest squared error.
    spread = float(np.std(pred)) or 1.0
    best, fitted = np.inf, None
    for centre in (float(np.mean(pred)), float(np.median(pred))):
        for slope in (spread, spread / 4):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optimize.OptimizeWarning)
                    params, _ = optimize.curve_fit(logistic4, pred, gt, p0=[gt.max(), gt.min(), centre, slope],
                                                   maxfev=20000)
            except (RuntimeError, ValueError):
                continue
            candidate = logistic4(pred, *params)
            error = float(np.sum((candidate - gt) ** 2))
            if np.isfinite(error) and error < best:
                best, fitted = error, candidate
    if fitted is None or np.ptp(fitted) == 0:
        warnings.warn("logistic fit did not converge; PLCC (logistic) falls back to the raw predictions",
                      RuntimeWarning, stacklevel=2)
        return float(stats.pearsonr(pred, gt)[0])
    return float(stats.pearsonr(fitted, gt)[0])


def undefined_notes(pred, gt, metrics: Dict[str, float]) -> Dict[str, str]:
    """``<metric>_note`` ("undefined: constant predictions (0.5)") for each metric of ``metrics`` that is NaN: the
    reason a results file writes beside its null (promptiqa.fileio.json_text)."""
    reason = undefined_reason(pred, gt) or "no points"
    return {f"{name}_note": f"undefined: {reason}" for name, value in metrics.items()
            if isinstance(value, float) and np.isnan(value)}


def compute_metrics(pred, gt, logistic: bool = False) -> Dict[str, float]:
    """SROCC, PLCC, KRCC, RMSE (and ``plcc_logistic`` when asked); one warning when the correlations are undefined."""
    pred, gt = _pair(pred, gt)
    names = ("srocc", "plcc", "krcc") + (("plcc_logistic",) if logistic else ())
    if _degenerate(pred, gt, "correlation"):
        out = {name: float("nan") for name in names}
    else:
        out = {"srocc": srocc(pred, gt), "plcc": plcc(pred, gt), "krcc": krcc(pred, gt)}
        if logistic:
            out["plcc_logistic"] = plcc_logistic(pred, gt)
    out["rmse"] = rmse(pred, gt)
    return {name: out[name] for name in METRICS + names[3:]}
