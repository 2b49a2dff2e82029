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
    """Logistic regression on several attacks is fitted on a calibration half and Welch's test is run on the
    held-out half only: with 30 pure-noise attacks and 200 clips a side, p <= alpha in alpha's share of 1000
    tables (binomial bounds at 0.001 and 0.999: 30 to 73). The old cross-fit, averaged over 10 partitions and
    tested on every clip, rejected 192 and 213 of 2000 such tables (two seeds): above the bound at 1000 tables with
    probability 0.99."""
    rng = np.random.default_rng(3)
    settings = Settings(di_grid=2, di_resamples=20)
    y = np.r_[np.ones(200), np.zeros(200)]
    reps, hits = 1000, 0
    for r in range(reps):
        attacks = {f"mia_{k}": rng.standard_normal(400) for k in range(30)}
        res = dataset_inference(attacks, y, settings.replace(seed=r))
        hits += res.attack.p <= 0.05
    assert res.attack.n_suspect == res.attack.n_reference == 100 and res.attack.tested_on == "held-out half"
    assert res.calibration == {"n_suspect": 100, "n_reference": 100}
    assert sst.binom.ppf(0.001, reps, 0.05) <= hits <= sst.binom.ppf(0.999, reps, 0.05), hits


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


def test_blind_family_pays_for_choosing_the_best_model():
    """m = 8 blind models of correlated noise: the blind p is Bonferroni's min(1, m * min_j p_j), and it rejects
    in at most alpha's share of tables (binomial bound). Taking the best model by AUC unpenalised, as before,
    rejected in about 16-22%."""
    rng = np.random.default_rng(7)
    settings = Settings(di_grid=2, di_resamples=20)
    y = np.r_[np.ones(150), np.zeros(150)]
    reps, hits, m = 600, 0, 8
    for r in range(reps):
        common = rng.standard_normal(300)
        blind = {f"b{j}": common + rng.standard_normal(300) for j in range(m)}
        res = dataset_inference({"mia_a": rng.standard_normal(300)}, y, settings.replace(seed=r), blind_scores=blind)
        hits += res.blind.p <= 0.05
    assert hits <= sst.binom.ppf(0.999, reps, 0.05), hits
    ps = [sst.ttest_ind(v[y == 1], v[y == 0], equal_var=False, alternative="greater").pvalue for v in blind.values()]
    assert res.blind.p == pytest.approx(min(1.0, m * min(ps)))
    assert res.blind.models == list(blind) and res.blind.model == f"b{int(np.argmin(ps))}"
    assert res.blind.name == "blind" and res.blind.n_suspect == res.attack.n_suspect == 150


def test_blind_family_finds_the_model_that_separates_on_the_attacks_clips():
    rng = np.random.default_rng(8)
    y = np.r_[np.ones(120), np.zeros(120)]
    blind = {f"b{j}": rng.standard_normal(240) for j in range(6)}
    blind["b3"] = blind["b3"] + 1.5 * y
    attacks = {"mia_a": rng.standard_normal(240), "mia_b": rng.standard_normal(240)}
    res = dataset_inference(attacks, y, Settings(di_resamples=100, di_grid=15), blind_scores=blind)
    b = res.blind
    assert b.rejects and b.model == "b3" and b.n_min is not None and b.tested_on == "held-out half"
    # the same held-out clips as the combined attack, and the same grid
    assert (b.n_suspect, b.n_reference, b.grid) == (res.attack.n_suspect, res.attack.n_reference, res.attack.grid)
    assert "Bonferroni over 6 blind models (smallest p: b3)" in " ".join(res.reasons)
    with pytest.raises(BlindcheckError, match="either as blind_score or as blind_scores"):
        dataset_inference(attacks, y, Settings(), blind_score=blind["b3"], blind_scores=blind)


def test_n_min_p_is_the_first_prefix_p_below_alpha_and_is_not_a_test():
    """``n_min_p`` (the papers' figure) is the first n of the grid whose Welch p on the first n clips per side of
    one random order is <= alpha; under H0 it is reached in far more than alpha of tables (repeated looks),
    which is why the test is ``p`` on all clips."""
    from blindcheck.analysis.inference import prefix_p

    rng = np.random.default_rng(9)
    a, b = rng.normal(0.4, 1, 150), rng.normal(0, 1, 150)
    grid = size_grid(150, 20)
    p = prefix_p(a, b, grid, np.random.default_rng(11))
    order = np.random.default_rng(11)
    pa, pb = a[order.permutation(150)], b[order.permutation(150)]
    ref = [sst.ttest_ind(pa[:n], pb[:n], equal_var=False, alternative="greater").pvalue for n in grid]
    assert np.allclose(p, ref)

    settings = Settings(di_grid=40, di_resamples=20)
    y = np.r_[np.ones(150), np.zeros(150)]
    d = score_di("x", np.r_[a, b], y, settings, np.random.default_rng(12))
    prefix = dict(zip(d.grid, d.prefix, strict=True))
    want = next((n for n in d.grid if prefix[n] <= 0.05), None)
    assert d.n_min_p == want is not None and d.n_min is not None and d.n_min_p <= d.n_min
    assert prefix[150] == pytest.approx(d.p)  # all clips in every order
    out = d.to_dict()
    assert out["n_min_p"] == d.n_min_p and out["prefix_curve"][0] == {"n": 2, "p": d.prefix[0]}

    reps = 300
    reached = sum(score_di("x", rng.standard_normal(300), y, settings, rng).n_min_p is not None for _ in range(reps))
    assert reached > sst.binom.ppf(0.999, reps, 0.05), reached


# --- groups (issue 27 item 7) ---------------------------------------------------------------------------------------

def _grouped_table(rng, k_side: int, size: int, icc: float, attacks: int = 1, shift: float = 0.0):
    """``k_side`` groups of ``size`` clips a side, whole groups to a side; each attack has its own group effect."""
    g = np.repeat(np.arange(2 * k_side), size)
    y = (g < k_side).astype(int)
    eff = rng.standard_normal((2 * k_side, attacks))[g]
    S = np.sqrt(icc) * eff + np.sqrt(1 - icc) * rng.standard_normal((len(g), attacks)) + shift * y[:, None]
    return {f"mia_{j}": S[:, j] for j in range(attacks)}, y, g


def test_grouped_test_is_welch_on_group_means_and_on_clips_with_one_clip_per_group():
    from blindcheck.analysis.inference import group_welch_one_sided

    rng = np.random.default_rng(20)
    a, b = rng.normal(0.3, 1.0, 40), rng.normal(0.0, 2.0, 70)
    assert group_welch_one_sided(a, b, np.arange(40), np.arange(70)) == welch_one_sided(a, b)  # to the bit
    # unequal sizes, groups named in any order: one mean per group, then scipy's Welch
    ga = rng.permutation(np.r_[np.zeros(30), np.arange(1, 11)]).astype(int).astype(str)
    gb = rng.integers(0, 9, 70)
    ma = np.array([a[ga == k].mean() for k in np.unique(ga)])
    mb = np.array([b[gb == k].mean() for k in np.unique(gb)])
    ref = sst.ttest_ind(ma, mb, equal_var=False, alternative="greater")
    t, df, p = group_welch_one_sided(a, b, ga, gb)
    assert t == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-12)
    assert df < len(ma) + len(mb) - 2


@pytest.mark.parametrize("attacks", [1, 3])
def test_one_clip_per_group_gives_the_ungrouped_result(attacks):
    """groups = one per clip runs the grouped code (group-mean test, grouped split, whole-group draws) and gives
    today's numbers to the bit: the same halves, the same subsamples, the same p, n_min and n_min_p."""
    rng = np.random.default_rng(21)
    y = np.r_[np.ones(61), np.zeros(60)].astype(int)
    S = {f"mia_{j}": rng.standard_normal(121) + 0.4 * y for j in range(attacks)}
    blind = {"b0": rng.standard_normal(121) + 0.5 * y, "b1": rng.standard_normal(121)}
    settings = Settings(di_grid=12, di_resamples=60, seed=3)
    plain = dataset_inference(S, y, settings, blind_scores=blind).to_dict()
    grouped = dataset_inference(S, y, settings, blind_scores=blind, groups=[f"g{i}" for i in range(121)]).to_dict()
    assert plain["group_by"] is None and plain["n_groups"] is None and grouped["group_by"] == "groups"
    assert plain["test"].startswith("Welch one-sided t-test, ") and "on group means" in grouped["test"]
    for scorer in ("attack", "blind"):
        p, g = plain[scorer], grouped[scorer]
        for key in ("name", "n_suspect", "n_reference", "rejects", "n_min", "n_min_p", "models", "model",
                    "tested_on", "mean_diff", "t", "df", "p"):
            assert p[key] == g[key], (scorer, key)
        assert [{k: v for k, v in c.items() if k != "groups"} for c in g["curve"]] == p["curve"]
        assert [{k: v for k, v in c.items() if k != "groups"} for c in g["prefix_curve"]] == p["prefix_curve"]
        assert [c["n"] for c in g["curve"]] == [c["groups"] for c in g["curve"]]
        assert p["n_groups_suspect"] is None and g["n_groups_suspect"] == g["n_suspect"]
    assert (plain["calibration"] or {}).items() <= (grouped["calibration"] or {}).items()


def test_grouped_halves_keep_groups_whole():
    from blindcheck.analysis.inference import split_halves

    rng = np.random.default_rng(22)
    sizes = rng.integers(1, 12, 40)
    g = np.repeat(np.arange(40), sizes)
    y = (g < 18).astype(int)
    y[np.isin(g, [30, 31, 32, 33])] = rng.integers(0, 2, int(np.isin(g, [30, 31, 32, 33]).sum()))  # some straddle
    y[g == 30] = np.arange((g == 30).sum()) % 2  # one certainly does
    cal, test = split_halves(y, np.random.default_rng(1), g.astype(str))
    assert len(np.intersect1d(cal, test)) == 0 and len(cal) + len(test) == len(y)
    assert not set(g[cal]) & set(g[test])
    for side in (0, 1):
        n_side = int((y == side).sum())
        assert abs(int((y[cal] == side).sum()) - n_side / 2) <= 12, side  # halved up to about a group
    # one clip per group: the ungrouped halves
    y1 = rng.integers(0, 2, 75)
    plain = split_halves(y1, np.random.default_rng(5))
    single = split_halves(y1, np.random.default_rng(5), np.arange(75))
    assert all(np.array_equal(a, b) for a, b in zip(plain, single, strict=True))


def test_grouped_curves_draw_whole_groups():
    """Equal groups of 6 clips: every subsample and prefix holds k * 6 clips per side; a large shift reaches n_min
    (in groups and clips), which the blind scorer, drawing the same groups, is compared on."""
    rng = np.random.default_rng(23)
    attacks, y, g = _grouped_table(rng, 15, 6, 0.2, shift=1.5)
    blind = {"b": rng.standard_normal(len(y))}
    res = dataset_inference(attacks, y, Settings(di_grid=10, di_resamples=80), blind_scores=blind, groups=g,
                            group_by="speaker")
    a, d = res.attack, res.to_dict()
    assert a.grid == [6 * k for k in a.group_grid] and a.prefix_n == a.grid and a.group_grid[0] == 2
    assert a.group_grid[-1] == 15 and a.n_groups_suspect == a.n_groups_reference == 15
    assert a.rejects and a.n_min_groups is not None and a.n_min == 6 * a.n_min_groups
    assert a.n_min_p == 6 * a.n_min_p_groups and 14 <= a.df <= 28  # groups, not clips, count
    assert res.blind.grid == a.grid and res.blind.n_min is None and res.explainable_without_model is False
    assert d["group_by"] == "speaker" and d["n_groups"] == {"suspect": 15, "reference": 15, "both_sides": 0}
    assert d["attack"]["curve"][0] == {"n": 12, "groups": 2, "rate": a.rates[0]}
    assert d["attack"]["prefix_curve"][0] == {"n": 12, "groups": 2, "p": a.prefix[0]}
    assert "grouped by speaker (15 suspect and 15 reference groups tested)" in " ".join(res.reasons)
    with pytest.raises(BlindcheckError, match="at least 2 suspect and 2 reference groups"):
        dataset_inference(attacks, y, Settings(), groups=(g >= 15).astype(int))
    with pytest.raises(BlindcheckError, match="4 suspect and 4 reference groups"):
        dataset_inference({**attacks, "mia_b": attacks["mia_0"] + 1}, y, Settings(), groups=g // 5)


@pytest.mark.parametrize("attacks, size", [(1, 5), (10, 5)])
def test_grouped_null_holds_alpha_where_clip_welch_does_not(attacks, size):
    """Null tables with a group effect (ICC 0.2), 12 groups of 5 clips a side, whole groups to a side: with the
    groups, DI rejects in alpha's share of 1000 tables (binomial bounds at 0.001 and 0.999: 30 to 73); without
    them (clips as independent), far more (about 11% with one attack, more with ten: the calibration half shares
    the held-out half's groups), so the test can fail."""
    rng = np.random.default_rng(24 + attacks)
    settings = Settings(di_grid=2, di_resamples=20)
    reps, hits, hits_plain = 1000, 0, 0
    for r in range(reps):
        S, y, g = _grouped_table(rng, 12, size, 0.2, attacks)
        hits += dataset_inference(S, y, settings.replace(seed=r), groups=g).attack.p <= 0.05
        hits_plain += dataset_inference(S, y, settings.replace(seed=r)).attack.p <= 0.05
    lo, hi = sst.binom.ppf(0.001, reps, 0.05), sst.binom.ppf(0.999, reps, 0.05)
    assert lo <= hits <= hi, (hits, hits_plain)
    assert hits_plain > hi, (hits, hits_plain)
