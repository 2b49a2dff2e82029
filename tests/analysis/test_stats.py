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


def test_permutation_pvalue_is_uniform_under_the_null():
    rng = np.random.default_rng(5)
    ps = []
    for _ in range(200):
        y = rng.permutation(np.r_[np.ones(60, int), np.zeros(60, int)])
        ps.append(stats.permutation_pvalue(y, rng.normal(size=120), 199, rng)[0])
    ps = np.array(ps)
    assert binomtest(int((ps < 0.05).sum()), 200, 0.05).pvalue > 0.001
    assert binomtest(int((ps < 0.5).sum()), 200, 0.5).pvalue > 0.001


def test_permutation_pvalue_normal_limit_agrees_with_monte_carlo():
    rng = np.random.default_rng(6)
    y = rng.permutation(np.r_[np.ones(400, int), np.zeros(400, int)])
    s = rng.normal(y * 0.15, 1.0)
    mc, _ = stats.permutation_pvalue(y, s, 5000, np.random.default_rng(7))
    nl, method = stats.permutation_pvalue(y, s, 5000, np.random.default_rng(7), exact_limit=0)
    assert "normal" in method
    assert nl == pytest.approx(mc, abs=0.02)


def test_power_formula_matches_simulation():
    """At the sample size required_n says, the one-sided test detects AUC 0.6 about 80% of the time."""
    from scipy.stats import norm

    n = stats.required_n(0.6, 0.5, 0.05, 0.8)
    assert 200 < n < 320
    d = np.sqrt(2) * norm.ppf(0.6)
    rng, hits = np.random.default_rng(8), 0
    for _ in range(300):
        y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
        a, _ = stats.delong(y, rng.normal(y * d, 1.0))
        se0 = np.sqrt((n + 1) / (12 * (n // 2) * (n - n // 2)))
        hits += (a - 0.5) / se0 > norm.ppf(0.95)
    assert 0.72 < hits / 300 < 0.88, hits
