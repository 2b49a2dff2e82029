"""The ROC statistics, checked against independent computations and by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score, roc_curve

from blindcheck.analysis import stats


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: many ties
    assert stats.auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_delong_se_agrees_with_bootstrap():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(150, int), np.zeros(150, int)]
    s = rng.normal(y * 0.7, 1.0)
    a, se = stats.delong(y, s)
    _, lo, hi, bse = stats.auc_ci(y, s, 0.95, bootstrap=2000, rng=np.random.default_rng(2))
    assert se == pytest.approx(bse, rel=0.15)
    # The percentile interval is about a +- 1.96 SE: centred on the estimate, as wide as DeLong's.
    assert (lo + hi) / 2 == pytest.approx(a, abs=0.01)
    assert hi - lo == pytest.approx(2 * 1.959964 * se, rel=0.15)


def test_delong_ci_covers_truth_at_nominal_rate():
    # True AUC of N(d,1) vs N(0,1) is Phi(d / sqrt 2).
    from scipy.stats import norm

    d, truth, hits, rng = 0.6, norm.cdf(0.6 / np.sqrt(2)), 0, np.random.default_rng(3)
    for _ in range(300):
        y = np.r_[np.ones(80, int), np.zeros(80, int)]
        _, lo, hi, _ = stats.auc_ci(y, rng.normal(y * d, 1.0), 0.95)
        hits += lo <= truth <= hi
    assert binomtest(hits, 300, 0.95).pvalue > 0.001, hits


def test_tpr_at_fpr_matches_roc_curve():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 2000)
    s = rng.normal(y * 1.5, 1.0)
    fpr, tpr, _ = roc_curve(y, s)
    for target in (0.01, 0.001, 0.1):
        assert stats.tpr_at_fpr(y, s, target) == pytest.approx(tpr[fpr <= target].max())


