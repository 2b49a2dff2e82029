"""The refit permutation test (Ojala & Garriga's test 1): the parallel path computes every relabelling's statistic
by the same procedure as the observed one, and gives the p-values of the plain sequential loop it replaced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from blindcheck.analysis import permutation
from blindcheck.analysis import separability as sp
from blindcheck.features.modalities import Modality
from blindcheck.settings import Settings

WORDS = np.array(["red", "green", "blue", "one", "two", "three", "cat", "dog", "fish", "tree", "house", "river"])


def _case(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])
    X = rng.standard_normal((n, 16)).astype(np.float32)
    X[:, 0] += 0.8 * y  # a real difference, so the models have something to fit
    X[rng.random(X.shape) < 0.05] = np.nan
    table = pd.DataFrame(X, columns=[f"recording.f{i}" for i in range(6)] + [f"spectral.f{i}" for i in range(10)])
    table.insert(0, "id", [f"c{i}" for i in range(n)])
    texts = np.array([" ".join(rng.choice(WORDS, int(rng.integers(2, 6)))) for _ in range(n)])
    texts[:3] = ""  # clips without a transcript
    return table, y, texts


def _old_cv(plan, X, y, texts, groups, settings, repeats, rng):
    """The cross-validation loop as it was before the refit test was parallelised (one thread per fit): the
    oracle the new path must reproduce."""
    n = len(y)
    oof = {spec.name: np.zeros((repeats, n)) for spec, _ in plan}
    for r in range(repeats):
        seed = settings.seed + 1000 * r
        for train, test in sp._splits(y, groups, settings.folds, seed):
            train = sp._subsample(train, y, settings.max_train_rows, rng)
            for spec, idx in plan:
                if spec.kind == sp.TFIDF:
                    if sp._has_vocabulary(texts[train]):
                        model = sp._tfidf(seed).fit(texts[train], y[train])
                        oof[spec.name][r, test] = model.predict_proba(texts[test])[:, 1]
                    else:
                        oof[spec.name][r, test] = 0.5
                elif spec.kind == sp.XGBOOST:
                    model = sp._XGB(settings, seed, 1).fit(X[np.ix_(train, idx)], y[train])
                    oof[spec.name][r, test] = model.predict_proba1(X[np.ix_(test, idx)])
                elif spec.kind == sp.SINGLE:
                    model = sp._SingleFeature().fit(X[np.ix_(train, idx)], y[train])
                    oof[spec.name][r, test] = model.predict_proba1(X[np.ix_(test, idx)])
                else:
                    model = sp._logreg(settings, seed).fit(X[np.ix_(train, idx)], y[train])
                    oof[spec.name][r, test] = model.predict_proba(X[np.ix_(test, idx)])[:, 1]
    return np.column_stack([oof[spec.name].mean(axis=0) for spec, _ in plan])


@pytest.mark.parametrize("grouped,repeats,refit_repeats", [(False, 2, 0), (False, 2, 1), (True, 1, 0)])
def test_parallel_refit_gives_the_sequential_p_values(grouped, repeats, refit_repeats):
    """Two workers, one worker and the old loop (observed and relabelled alike at ``k`` repeats: every one with
    ``refit_repeats=0``, the statistic unchanged; the first with 1) give the same relabelled statistics to the
    last bit, hence the same p-values; the verdict's scores keep every repeat."""
    n = 84
    table, y, texts = _case(n, seed=5)
    groups = None
    if grouped:  # 6 speakers of 14 clips, 3 per side: all 20 relabellings of whole groups (exhaustive)
        g = np.repeat(np.arange(6), 14)
        y = (g < 3).astype(int)
        groups = np.array([f"s{k}" for k in g])
    settings = Settings(folds=3, repeats=repeats, xgb_trees=20, permutations=99, refit_permutations=19,
                        refit_repeats=refit_repeats)
    runs = {w: sp.run_separability(table, y, settings, groups=groups, texts=texts, threads=w) for w in (2, 1)}
    two, one = runs[2], runs[1]
    # the oracle: the old loop, observed and relabelled, in this process at one thread
    cols = sp.feature_columns(table)
    X = table[cols].to_numpy(dtype=np.float32)
    plan = sp._plan(cols, True)
    k = refit_repeats or repeats
    with threadpool_limits(1):
        verdict_scores = _old_cv(plan, X, y, texts, groups, settings, repeats, np.random.default_rng(settings.seed))
        observed = _old_cv(plan, X, y, texts, groups, settings, k, np.random.default_rng(settings.seed))
        refit_rng = np.random.default_rng(settings.seed + 13)
        old = permutation.refit_permutation_test(
            observed, y, groups, settings.refit_permutations, np.random.default_rng(settings.seed + 7),
            lambda yp: _old_cv(plan, X, yp, texts, groups, settings, k, refit_rng))
    assert [m.name for m in two.models] == [spec.name for spec, _ in plan]
    # the verdict's scores: every repeat, computed at one thread per fit as the relabellings are
    np.testing.assert_array_equal(np.column_stack([m.scores for m in two.models]), verdict_scores)
    for sep in (two, one):
        f = sep.family
        assert "refit" in f.method and f.exhaustive == grouped
        assert ("1 CV repeat each" in f.method) == (k < repeats)
        assert f.relabellings == (20 if grouped else 19)
        assert (f.auc_max, f.isolation_max) == (old.auc_max, old.isolation_max)
        assert (f.p_auc, f.p_isolation, f.p_auc_raw, f.p_isolation_raw) == \
            (old.p_auc, old.p_isolation, old.p_auc_raw, old.p_isolation_raw)
        assert f.model_p == old.model_p
        np.testing.assert_array_equal(f.null_auc_max, old.null_auc_max)
        np.testing.assert_array_equal(f.null_isolation_sides, old.null_isolation_sides)
    # the relabellings are not all alike (the statistic is recomputed, not copied)
    assert len(np.unique(old.null_auc_max)) > 5


def test_a_relabelling_is_computed_alone():
    """A relabelling's scores depend on its labels and its number only, not on what its process ran before (its
    random draws, the training subsample here, come from a generator seeded by its number)."""
    table, y, texts = _case(60, seed=2)
    settings = Settings(folds=3, repeats=1, xgb_trees=10, max_train_rows=30)  # 40 training rows: subsampled
    cols = sp.feature_columns(table)
    X = table[cols].to_numpy(dtype=np.float32)
    cv = sp._CV(sp._plan(cols, True), X, y, {Modality.TEXT: texts}, None, settings, 1, 1)
    yp = np.random.default_rng(0).permutation(y)
    first = cv.relabelled(yp, 3)
    cv.relabelled(np.random.default_rng(1).permutation(y), 4)
    np.testing.assert_array_equal(cv.relabelled(yp, 3), first)
    assert not np.array_equal(cv.relabelled(yp, 4), first)  # another number, another subsample


@pytest.mark.parametrize("rows", [1, 2, 7, 480, 700])
def test_column_medians_and_ranks_are_numpys_and_scipys(rows):
    """The CV's column medians and ranks (each fold's imputation and single-feature AUCs) give the values of
    np.nanmedian and scipy's rankdata to the last bit: ties, NaN, all-NaN columns, infinities, signed zeros."""
    import warnings

    from scipy.stats import rankdata

    rng = np.random.default_rng(rows)
    X = rng.standard_normal((rows, 40)).astype(np.float32)
    X[:, :10] = np.round(X[:, :10])  # many ties
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 10] = np.nan  # all NaN
    X[: rows // 2, 11] = np.nan  # half NaN: an even count where rows is even
    X[0, 12], X[-1, 13] = np.inf, -np.inf
    X[:, 14] = rng.choice(np.array([-0.0, 0.0, 1.0], dtype=np.float32), rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(X, axis=0)
    got = sp._column_medians(X)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    Xi = sp._MedianImpute().fit_transform(X)
    assert not np.isnan(Xi).any()
    np.testing.assert_array_equal(sp._column_ranks(Xi), rankdata(Xi, axis=0))
