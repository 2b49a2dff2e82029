"""Dataset inference: Welch's one-sided test, the minimal n by subsampling, the cross-fitted combination."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sst

from blindcheck.analysis.inference import (
    DIScorer,
    dataset_inference,
    di_reasons,
    rejection_curve,
    score_di,
    size_grid,
    welch_one_sided,
)
from blindcheck.errors import BlindcheckError
from blindcheck.settings import Settings


def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1.0, 40), rng.normal(0.0, 2.0, 70)
    t, df, p = welch_one_sided(a, b)
    ref = sst.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue) and 40 < df < 108


def test_identical_distributions_reject_at_alpha_at_every_n():
    """Suspect and reference drawn from one distribution: at every n the rejection rate is near alpha."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(4000), rng.standard_normal(4000)
    grid = size_grid(60, 12)
    rates = rejection_curve(a, b, 0.05, 800, grid, rng)
    # 800 subsamples: binomial SD of a rate 0.05 is 0.008; the finite pools add a little (their mean difference
    # shifts t by < 0.2 at n = 60). At n = 2 Welch's Satterthwaite df (between 1 and 2) makes it conservative.
    low = np.where(grid <= 2, 0.01, 0.025)
    assert np.all((rates > low) & (rates < 0.085)), dict(zip(grid.tolist(), rates.round(3).tolist(), strict=True))
    assert 0.035 < rates.mean() < 0.065


def _analytic_n(delta: float, alpha: float, power: float) -> int:
    """Smallest n per side at which Welch's one-sided test (equal variances 1, df = 2n - 2) has ``power``."""
    for n in range(2, 10_000):
        df = 2 * n - 2
        if sst.nct.sf(sst.t.ppf(1 - alpha, df), df, delta / np.sqrt(2 / n)) >= power:
            return n
    raise AssertionError


@pytest.mark.parametrize("delta", [0.5, 1.0])
def test_known_mean_shift_gives_the_analytic_minimal_n(delta):
    rng = np.random.default_rng(2)
    a, b = rng.normal(delta, 1.0, 3000), rng.normal(0.0, 1.0, 3000)
    a = a - a.mean() + delta + b.mean()  # the pools' mean difference is exactly delta
    settings = Settings(di_grid=70, di_resamples=400)
    d = score_di("x", np.r_[a, b], np.r_[np.ones(3000), np.zeros(3000)], settings, rng)
    want = _analytic_n(delta, 0.05, 0.95)  # 88 for delta 0.5, 23 for delta 1
    assert d.rejects and d.n_min is not None
    assert abs(d.n_min - want) <= 0.15 * want + 1, (d.n_min, want)
    rates = dict(zip(d.grid, d.rates, strict=True))
    below = [r for n, r in rates.items() if n < 0.7 * want]
    assert below and max(below) < 0.9


def test_combining_noise_attacks_does_not_leak_labels():
    """Logistic regression on several attacks is fitted on a calibration half only: pure-noise attacks give
    p < alpha at about alpha's rate, not more (fitting and testing on the same clips would inflate it)."""
    rng = np.random.default_rng(3)
    settings = Settings(di_grid=2, di_resamples=20, di_partitions=4)
    ps = []
    for _ in range(60):
        y = np.r_[np.ones(60), np.zeros(60)]
        attacks = {f"mia_{k}": rng.standard_normal(120) for k in range(5)}
        ps.append(dataset_inference(attacks, y, settings).attack.p)
    # binomial(60, 0.05): P(more than 8) < 0.01
    assert sum(p < 0.05 for p in ps) <= 8, sorted(ps)[:10]


def test_combined_attacks_find_a_shift_and_lower_is_member_flips():
    rng = np.random.default_rng(4)
    y = np.r_[np.ones(100), np.zeros(100)]
    attacks = {"mia_a": 0.6 * y + rng.standard_normal(200), "mia_loss": -0.6 * y + rng.standard_normal(200)}
    settings = Settings(di_resamples=100, di_grid=15)
    res = dataset_inference(attacks, y, settings, lower_is_member=["mia_loss"])
    assert res.attack.name == "combined(mia_a,mia_loss)" and res.attack.rejects and res.attack.n_min is not None
    assert res.combined_from == ["mia_a", "mia_loss"]
    flipped = dataset_inference({"mia_loss": attacks["mia_loss"]}, y, settings)
    assert not flipped.attack.rejects  # without the flag the loss points the wrong way
    with pytest.raises(BlindcheckError, match="unknown attack 'mia_nope'"):
        dataset_inference(attacks, y, settings, lower_is_member=["mia_nope"])


def test_blind_scorer_needing_no_more_clips_flags_the_claim():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(150), np.zeros(150)]
    settings = Settings(di_resamples=200, di_grid=25)
    weak = {"mia_a": 0.3 * y + rng.standard_normal(300)}
    strong_blind = 2.0 * y + rng.standard_normal(300)
    res = dataset_inference(weak, y, settings, blind_score=strong_blind)
    assert res.blind.n_min is not None and (res.attack.n_min is None or res.blind.n_min <= res.attack.n_min)
    assert res.explainable_without_model is True and "explainable without the model" in res.reasons[0]
    strong = {"mia_a": 2.0 * y + rng.standard_normal(300)}
    res = dataset_inference(strong, y, settings, blind_score=rng.standard_normal(300))
    assert res.explainable_without_model is False and res.attack.n_min is not None and res.blind.n_min is None
    d = res.to_dict()
    assert {"attack", "blind", "explainable_without_model", "reasons", "alpha", "power", "seed"} <= set(d)
    assert d["attack"]["curve"][0] == {"n": 2, "rate": d["attack"]["curve"][0]["rate"]}


def test_di_reasons_is_pure_and_orders_by_need():
    s = Settings()

    def scorer(n_min):
        return DIScorer("x", 100, 100, 1.0, 5.0, 190.0, 1e-6, True, [10, 20], [0.5, 0.96], n_min)

    assert di_reasons(scorer(20), scorer(10), s)[0] is True
    assert di_reasons(scorer(10), scorer(20), s)[0] is False
    assert di_reasons(scorer(None), scorer(20), s)[0] is True
    assert di_reasons(scorer(10), None, s)[0] is None


def test_too_few_clips_is_an_error():
    with pytest.raises(BlindcheckError, match="at least 2 suspect and 2 reference"):
        dataset_inference({"mia_a": np.array([1.0, 2.0, 3.0])}, np.array([1, 0, 0]), Settings())


def test_logistic_fit_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    from blindcheck.analysis.inference import logistic_fit

    rng = np.random.default_rng(6)
    X = rng.standard_normal((300, 3))
    y = (X @ np.array([1.0, -0.5, 0.0]) + rng.standard_normal(300) > 0).astype(int)
    w = logistic_fit(X, y, l2=1.0)
    ref = LogisticRegression(C=1.0).fit(X, y)
    assert np.allclose(w, np.r_[ref.intercept_, ref.coef_[0]], atol=2e-3)
