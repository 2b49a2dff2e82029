"""The verdict's statistics, checked by simulation on scores whose truth is known by construction.

These tests drive the real code path from out-of-fold scores onwards (``evaluate_scores``: intervals, the
family-wise permutation test, the isolated-subset finding; then ``decide``). The cross-validation in front of it
is exercised on real speech in test_check.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from blindcheck.analysis import permutation, stats
from blindcheck.analysis.separability import ModelResult, ModelSpec, best_model, evaluate_scores
from blindcheck.analysis.verdict import Failures, decide
from blindcheck.errors import BlindcheckError
from blindcheck.settings import Settings

SPECS = [ModelSpec("xgboost", "all"), ModelSpec("xgboost", "recording"), ModelSpec("xgboost", "spectral"),
         ModelSpec("logreg", "all")]


def _scores(y: np.ndarray, auc: float, rng: np.random.Generator, shared: float = 0.7) -> list:
    """Scores of len(SPECS) correlated models, each with true AUC ``auc`` (binormal, equal variances)."""
    d = math.sqrt(2) * norm.ppf(auc)
    common = rng.normal(size=len(y))
    out = []
    for spec in SPECS:
        noise = math.sqrt(shared) * common + math.sqrt(1 - shared) * rng.normal(size=len(y))
        out.append((spec, 10, d * y + noise))
    return out


def _labels(n: int) -> np.ndarray:
    return np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]


def test_vectorised_statistics_match_the_stats_module():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(bool)
    s = np.column_stack([np.round(rng.normal(y * 0.5, 1), 1), rng.normal(size=300), rng.normal(y * 2, 1)])
    fs = permutation.FamilyStatistics(s)
    Y = np.vstack([y, rng.permutation(y), rng.permutation(y)])
    aucs, (hi, lo) = fs.aucs(Y), fs.isolation(Y)
    for r in range(3):
        for j in range(3):
            assert aucs[r, j] == pytest.approx(stats.auc(Y[r], s[:, j]), abs=1e-12)
            assert hi[r, j] == pytest.approx(stats.tpr_at_fpr(Y[r], s[:, j], 0.01), abs=1e-12)
            assert lo[r, j] == pytest.approx(stats.tpr_at_fpr(~Y[r], -s[:, j], 0.01), abs=1e-12)


def test_family_wise_error_is_controlled_on_null_scores():
    """Pure noise, four correlated models, two criteria: the family-wise rejection rate stays at alpha."""
    rng = np.random.default_rng(1)
    settings = Settings(permutations=199)
    rejections, runs = 0, 300
    for _ in range(runs):
        y = rng.permutation(_labels(200))
        sep = evaluate_scores(_scores(y, 0.5, rng), y, settings)
        rejections += min(sep.family.p_auc, sep.family.p_isolation) <= 0.05
    # at most alpha, allowing for Monte Carlo noise: above the 99.9% quantile of Binomial(300, 0.05) fails
    assert rejections <= binom.ppf(0.999, runs, 0.05), rejections


@pytest.mark.parametrize("permutations", [99, 199])
def test_no_factor_m_in_the_floor(permutations):
    """With R relabellings the family-wise p of an obvious split is 1/(R+1), however many models there are."""
    rng = np.random.default_rng(2)
    y = _labels(120)
    sep = evaluate_scores(_scores(y, 0.99, rng), y, Settings(permutations=permutations))
    assert sep.family.p_auc == pytest.approx(1 / (permutations + 1))
    assert decide(sep, Settings(permutations=permutations)).status == "confounded"


def test_unreachable_permutation_counts_are_refused():
    with pytest.raises(BlindcheckError, match="use at least 19"):
        Settings(refit_permutations=10)
    with pytest.raises(BlindcheckError, match="use at least 999"):
        Settings(alpha=0.001, permutations=500)
    assert Settings(refit_permutations=19).refit_permutations == 19


@pytest.mark.parametrize("true_auc,n,most_clean,most_confounded", [
    (0.50, 480, None, 0.05),   # null: false alarms at most alpha
    (0.65, 480, 0.05, None),   # above the tolerance: never (at most alpha) called clean
    (0.70, 200, 0.05, None),
])
def test_equivalence_decision_rates(true_auc, n, most_clean, most_confounded):
    rng = np.random.default_rng(3)
    settings = Settings(permutations=199)
    runs, counts = 150, {"clean": 0, "confounded": 0, "inconclusive": 0}
    for _ in range(runs):
        y = rng.permutation(_labels(n))
        counts[decide(evaluate_scores(_scores(y, true_auc, rng), y, settings), settings).status] += 1
    limit = lambda share: binom.ppf(0.999, runs, share)  # noqa: E731
    if most_clean is not None:
        assert counts["clean"] <= limit(most_clean), counts
    if most_confounded is not None:
        assert counts["confounded"] <= limit(most_confounded), counts
    if true_auc == 0.5:  # at this size a truly non-separable split is called clean most of the time
        assert counts["clean"] >= 0.6 * runs, counts


def test_clean_needs_the_upper_bound_below_the_tolerance():
    rng = np.random.default_rng(4)
    y = rng.permutation(_labels(60))
    sep = evaluate_scores(_scores(y, 0.5, rng), y, Settings())
    v = decide(sep, Settings())
    assert v.status == "inconclusive" and v.upper_bound >= 0.6
    assert v.required_n and v.required_n > 60 and f"about {v.required_n} clips" in " ".join(v.reasons)
    # the sample size given is the one at which a split whose true AUC is the one observed gets an upper bound
    # under 0.6 with 80% power
    a = max(v.best_auc, 0.5)
    assert a < 0.6
    n1 = v.required_n // 2
    se = stats._hm_se(a, n1, v.required_n - n1)
    assert (norm.ppf(0.95) + norm.ppf(0.8)) * se == pytest.approx(0.6 - a, rel=0.02)


def test_best_model_rule_breaks_ties_by_standard_error_then_name():
    def mr(name, auc, se):
        return ModelResult(name=name, modality="all", kind=name.split(":")[0], n_features=1, auc=auc, ci_low=0,
                           ci_high=1, se=se, tpr_at_1pct_fpr=0, tpr_at_01pct_fpr=0, balanced_accuracy=0.5,
                           p_value=1, p_method="", scores=np.zeros(2))

    assert best_model([mr("b:x", 0.8, 0.02), mr("a:x", 0.8, 0.03), mr("c:x", 0.7, 0.01)]).name == "b:x"
    assert best_model([mr("b:x", 0.8, 0.02), mr("a:x", 0.8, 0.02)]).name == "a:x"
    assert best_model([mr("b:x", 0.81, 0.05), mr("a:x", 0.8, 0.01)]).name == "b:x"


def test_partial_isolation_is_flagged_though_the_auc_is_diluted():
    """20% of the non-members sit far below everything else; the rest are like the members."""
    rng = np.random.default_rng(5)
    y = rng.permutation(_labels(480))
    touched = (y == 0) & (rng.random(480) < 0.2)
    scored = [(spec, 5, rng.normal(size=480) - 6 * touched) for spec in SPECS]
    sep = evaluate_scores(scored, y, Settings())
    v = decide(sep, Settings())
    assert v.best_auc < 0.7 and v.lower_bound < 0.6  # the AUC criterion alone would not flag it
    assert v.status == "confounded" and v.criteria == ["subset"]
    assert v.subset["side"] == "nonmembers"
    truth = touched.sum() / (y == 0).sum()
    assert abs(v.subset["share"] - truth) < 0.05
    assert v.subset["share_low"] <= truth <= v.subset["share_high"]
    assert "a subset of the non-members separates" in v.reasons[0]


def test_failures_on_one_side_are_a_confound():
    rng = np.random.default_rng(6)
    y = rng.permutation(_labels(400))
    sep = evaluate_scores(_scores(y, 0.5, rng), y, Settings())
    v = decide(sep, Settings(), Failures(members_failed=0, members_total=200, nonmembers_failed=50,
                                         nonmembers_total=250))
    assert v.status == "confounded" and v.criteria == ["failures"]
    assert "0 of 200 members (0%) and 50 of 250 non-members (20%) failed" in v.reasons[0]
    v = decide(sep, Settings(), Failures(2, 202, 3, 203))
    assert "failures" not in v.criteria and any("no dependence on the side" in r for r in v.reasons)


def test_failures_at_the_tolerated_gap_are_confounded_at_most_alpha():
    """Failure rates 15% and 5% (a gap exactly at the tolerated 10%), 400 clips a side: the criterion, on the lower
    bound of the gap, fires in at most alpha of the draws (binomial allowance); on the observed gap it fired in
    about half. The decision is the verdict's own (criteria on fixed null scores)."""
    rng = np.random.default_rng(4)
    y = rng.permutation(_labels(800))
    sep = evaluate_scores(_scores(y, 0.5, rng), y, Settings(permutations=199))
    reps, fired, observed = 400, 0, 0
    for _ in range(reps):
        f = Failures(int(rng.binomial(400, 0.15)), 400, int(rng.binomial(400, 0.05)), 400)
        fired += "failures" in decide(sep, Settings(permutations=199), f).criteria
        observed += f.p <= 0.05 and abs(f.shares()[0] - f.shares()[1]) > 0.10
    assert fired <= binom.ppf(0.999, reps, 0.05), fired
    assert observed > 0.3 * reps, observed  # the rule it replaces: the test can tell them apart
    assert Failures(0, 200, 120, 200).gap_lower(0.95) > 0.5 and Failures(5, 200, 5, 200).gap_lower(0.95) == 0


def test_clustered_interval_matches_a_cluster_bootstrap():
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(40), 12)
    y = np.tile(np.r_[np.ones(6, int), np.zeros(6, int)], 40)
    s = rng.normal(size=40)[groups] * 1.5 + rng.normal(size=480) + 0.6 * y  # strong within-group correlation
    a, se_c, k = stats.delong_clustered(y, s, groups)
    _, se_naive = stats.delong(y, s)
    boot = stats.auc_ci(y, s, 0.95, bootstrap=1500, rng=np.random.default_rng(8), groups=groups)[3]
    assert k == 40 and se_c == pytest.approx(boot, rel=0.2)
    # each clip its own cluster: DeLong's variance again (up to K/(K-1))
    assert stats.delong_clustered(y, s, np.arange(480))[1] == pytest.approx(se_naive, rel=0.01)


def test_too_few_groups_cannot_be_decided():
    """Four speakers, two on each side: 6 relabellings, so no p-value can reach 0.05."""
    rng = np.random.default_rng(9)
    groups = np.repeat(["a", "b", "c", "d"], 50)
    y = np.isin(groups, ["a", "b"]).astype(int)
    scored = [(spec, 5, y * 3 + rng.normal(size=200)) for spec in SPECS]
    settings = Settings(group_by="speaker")
    sep = evaluate_scores(scored, y, settings, groups=groups)
    v = decide(sep, settings)
    assert sep.family.exhaustive and sep.family.relabellings == 6
    assert v.status == "inconclusive"
    assert any("too few groups" in r and "6 possible relabellings" in r for r in v.reasons)
    assert any("every 'speaker' group lies on one side" in r for r in v.reasons)


def test_a_speaker_disjoint_split_keeps_no_clean_wording():
    """Scores that rule separability out, on a split whose speakers are disjoint: inconclusive, and no reason says
    the data rule separability out."""
    from blindcheck.analysis.speakers import speaker_overlap

    rng = np.random.default_rng(12)
    y = rng.permutation(_labels(1200))
    sep = evaluate_scores(_scores(y, 0.5, rng), y, Settings())
    clean = decide(sep, Settings())
    assert clean.status == "clean"
    assert clean.reasons[0].startswith("what the blind classifiers learn from this split rules out")
    speakers = np.where(y == 1, "a", "b")
    report = {"source": "given", "overlap": speaker_overlap(speakers, y), "separability": None}
    v = decide(sep, Settings(), speakers=report)
    assert v.status == "inconclusive" and v.reasons[0].startswith("the split is speaker-disjoint")
    assert not any("rule out" in r for r in v.reasons)
    assert any(r.startswith("the blind classifiers find no separability beyond the tolerance") for r in v.reasons)


def test_printed_power_matches_the_share_of_null_splits_called_clean():
    """`power` is read from the relabellings (every model and the isolated-share condition at once): on null splits
    of 200 clips its mean agrees with the share the verdict calls clean, which the one-model normal approximation
    (0.79 here) overstates."""
    rng = np.random.default_rng(21)
    runs, power, clean = 80, [], 0
    for _ in range(runs):
        y = rng.permutation(_labels(200))
        v = decide(evaluate_scores(_scores(y, 0.5, rng), y, Settings(permutations=499)), Settings())
        power.append(v.power)
        clean += v.status == "clean"
    share = clean / runs
    se = math.sqrt(max(share * (1 - share), 0.05) / runs)
    assert abs(np.mean(power) - share) < 3 * se, (np.mean(power), share)
    assert share < stats.equivalence_power(0.6, 100, 100, 0.05) - 3 * se


def test_p_floor_counts_the_distinct_relabellings_of_a_small_layout():
    """Three speakers, each with one member and one non-member clip: 2^3 = 8 distinct relabellings within the
    groups. Random relabellings (199 of them) cannot take the p-value much below 1/8, so the floor is 1/8, not
    1/200, and the verdict says the split is too small to decide rather than clean or confounded."""
    rng = np.random.default_rng(3)
    y = np.array([1, 0] * 3)
    groups = np.repeat(["a", "b", "c"], 2)
    settings = Settings(permutations=199)
    sep = evaluate_scores([(spec, 1, y + 0.01 * rng.normal(size=6)) for spec in SPECS], y, settings, groups=groups)
    assert sep.family.p_floor == pytest.approx(1 / 8)
    assert sep.family.p_auc >= 1 / 8 - 0.08  # Monte Carlo around 1/8
    v = decide(sep, settings)
    assert v.status == "inconclusive" and any("too few" in r for r in v.reasons), v.reasons
