"""promptiqa.metrics against scipy and hand-computed values, including the degenerate inputs of a real evaluation."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from promptiqa.metrics import METRICS, compute_metrics, krcc, logistic4, plcc, plcc_logistic, rmse, srocc

RNG = np.random.default_rng(0)
PRED = RNG.uniform(0, 1, 50)
GT = 0.6 * PRED + RNG.normal(0, 0.15, 50)


def test_match_scipy_on_random_data():
    assert srocc(PRED, GT) == pytest.approx(stats.spearmanr(PRED, GT)[0], abs=1e-12)
    assert plcc(PRED, GT) == pytest.approx(stats.pearsonr(PRED, GT)[0], abs=1e-12)
    assert krcc(PRED, GT) == pytest.approx(stats.kendalltau(PRED, GT)[0], abs=1e-12)
    assert rmse(PRED, GT) == pytest.approx(math.sqrt(np.mean((PRED - GT) ** 2)), abs=1e-12)


def test_hand_computed_values():
    # 5 points, one swapped pair: SROCC 1 - 6*2/(5*24) = 0.9, KRCC (10 - 2*1)/10 = 0.8
    pred, gt = [1, 2, 3, 4, 5], [1, 2, 4, 3, 5]
    assert srocc(pred, gt) == pytest.approx(0.9)
    assert krcc(pred, gt) == pytest.approx(0.8)
    assert plcc(pred, gt) == pytest.approx(0.9)            # for ranks without ties PLCC = SROCC
    assert rmse([0.0, 0.5], [1.0, 0.5]) == pytest.approx(math.sqrt(0.5))
    assert srocc([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0) and krcc([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    # ties: tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)); pred has one tied pair: (5 - 0) / sqrt(5 * 6)
    assert krcc([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))


def test_plcc_is_plain_pearson_and_the_logistic_one_is_separate():
    x = np.linspace(-3, 3, 40)
    gt = logistic4(x, 1.0, 0.0, 0.2, 0.7)                  # a monotone, strongly non-linear relation
    assert plcc(x, gt) < 0.98                              # plain Pearson sees the curvature
    assert plcc_logistic(x, gt) == pytest.approx(1.0, abs=1e-6)
    assert srocc(x, gt) == pytest.approx(1.0)
    out = compute_metrics(x, gt, logistic=True)
    assert list(out) == [*METRICS, "plcc_logistic"] and out["plcc"] == plcc(x, gt)
    assert list(compute_metrics(x, gt)) == list(METRICS)


@pytest.mark.parametrize("pred, gt, reason", [
    ([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], "constant predictions"),
    ([0.1, 0.2, 0.3], [0.4, 0.4, 0.4], "constant ground truth"),
    ([0.3], [0.2], "only 1 point"),
    ([0.1, float("nan"), 0.3], [0.1, 0.2, 0.3], "non-finite"),
])
def test_undefined_correlations_are_nan_with_a_warning(pred, gt, reason):
    for fn in (srocc, plcc, krcc, plcc_logistic):
        with pytest.warns(RuntimeWarning, match=reason):
            assert math.isnan(fn(pred, gt))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = compute_metrics(pred, gt, logistic=True)
    assert len(caught) == 1 and reason in str(caught[0].message)      # one warning, not one per metric
    assert all(math.isnan(out[k]) for k in ("srocc", "plcc", "krcc", "plcc_logistic"))
    if reason.startswith("constant"):
        assert out["rmse"] == pytest.approx(rmse(pred, gt)) and not math.isnan(out["rmse"])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        srocc([1, 2, 3], [1, 2])
