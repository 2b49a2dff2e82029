"""Dataset inference (DI): was this *set* of clips used to train the model?

The published recipe (Maini et al. 2021/2024 for LLMs, carried over to audio generative models): a suspect
set (label 1, the claimed members) against reference non-members (label 0); one scalar score per clip, and
Welch's one-sided t-test of "suspect scores are higher" at level alpha.

- **One attack**: its score (sign-flipped for ``lower_is_member``) is tested on every clip; nothing is fitted, so
  the test needs no held-out clips.
- **Several attacks**: as in the method, one random stratified partition (``seed``) into a *calibration half*,
  on which a logistic regression combines the attacks, and a *held-out half*, which the fitted combination
  scores and on which alone the test is run. The held-out clips' scores are then independent draws given the
  fit, so Welch's test holds its level. (Fitting on each half in turn and averaging over partitions, as this
  module did before, does not: the two halves' differences share the fitted noise and Welch's variance is too
  small; with 10 or 30 noise attacks and 200 clips a side it rejected 9–10% of null tables at alpha = 0.05, the
  new construction 4.7–5.8%: ``benchmarks/calibration_di.py``, 2000 tables.)
- **The blind scorer**: every blind model's out-of-fold score is tested on the *same clips* as the attack
  (the held-out half when attacks are combined), and the family of m models pays for taking the best of them
  by Bonferroni: the blind p is ``min(1, m * min_j p_j)`` (for the global null "no blind model separates" this
  is also Holm's first step). Choosing the best model by its AUC on all clips and then testing it on the same
  clips, as before, rejected far above alpha on noise.

Two minimal numbers of clips per side are reported for each scorer, over a geometric grid of n from 2 to the
smaller side of the tested clips:

- ``n_min``: the smallest n at which at least ``di_power`` (95%) of ``di_resamples`` random subsamples of n
  suspect and n reference clips (without replacement) reject at alpha: the n at which the test *reliably*
  rejects. Under H0 each subsample rejects with probability at most alpha, so ``n_min`` is never reached by
  chance.
- ``n_min_p``: the figure the dataset-inference papers print: the smallest n of the grid at which Welch's p on
  the first n clips per side of one seeded random order is at most alpha (the p-values of these prefixes are
  ``prefix_curve``). It is comparable with published figures, but it is *not* a test: looking at every n of
  the grid and keeping the first that rejects is repeated testing, and under H0 it is reached in far more than
  alpha of tables (29% at 200 clips a side and a 40-point grid: ``benchmarks/calibration_di.py``). The test is
  ``p`` (``rejects``) on all tested clips.

When the blind scorer needs no more clips than the attack (``n_min``, same clips, same subsamples), the
dataset-inference claim is explainable without the model.

**Groups** (``groups``: the ``di`` verb's ``--group-by`` column, or the speakers the check infers for ``voice``):
clips of one group (a speaker) share its effect and are not independent draws. Welch's test on clips then rejects
far above alpha (with an intra-class correlation of 0.2, groups of 10 clips and whole groups to a side, 15-17%
of null tables at alpha = 0.05: ``benchmarks/calibration_di.py``). With groups every step takes whole groups:

- **the test** is Welch's test on the group means: each group's mean score is one observation (a group with clips
  on both sides gives one mean per side), Student's t on the Welch-Satterthwaite degrees of freedom with K_s - 1
  per side (groups, not clips, count, as in ``correlate``'s grouped statistics); ``mean_diff`` is the difference of
  the mean group means. Why this one: it holds its level whatever the group sizes (the groups, not the clips, are
  the independent draws, and under H0 each group mean has the same expectation on both sides); with every clip its
  own group it *is* Welch's test, to the bit; with equal group sizes it is also the cluster-robust difference of
  clip means. The alternative, the difference of clip means with a cluster-robust (CR1) variance and K_s - 1 df,
  weights groups by their clips and is liberal when sizes differ: with 20 groups a side, ICC 0.2 and one group of
  100 clips among 19 of 5 per side it rejected 18.5% of 1000 null tables (Welch on group means 4.8%), with
  log-normal sizes (1-60 clips) 5.7% (5.2%): ``benchmarks/calibration_di.py``. The price: when the group effect is
  small and sizes differ, large groups count no more than small ones, so power is lower than a clip-weighted test
  would have if it held its level. A group with clips on both sides gives two means that share its effect; their
  covariance is not used, which is conservative for an effect the group shares on both sides.
- **The calibration half** of combined attacks is drawn by whole groups (no group in both halves): groups with clips
  of one side only are permuted per side, groups with clips on both sides apart, and the first groups of each
  permutation whose clips come closest to half of its clips go to calibration (one clip per group: the halves above).
- **The subsamples** of ``n_min`` are k whole groups per side (k on a geometric grid from 2 to the smaller side's
  number of groups): ``n_min_groups`` is the smallest k whose rejection rate reaches ``di_power``, ``n_min`` the clips
  per side those k groups hold (averaged over the two sides and the subsamples; exact with equal group sizes).
  ``n_min_p`` likewise: prefixes of k groups per side of one random order of the groups (``n_min_p_groups``), and the
  clips per side they hold.
- **The blind scorer's** out-of-fold scores already come from grouped folds (the check's ``group_by`` groups its
  cross-validation: no clip is scored by a model that saw its group); they are tested as the attack's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sst

from blindcheck.errors import BlindcheckError
from blindcheck.settings import Settings


def welch_one_sided(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Welch's t statistic, its degrees of freedom and the one-sided p-value of mean(a) > mean(b)."""
    t, df, p = _welch(np.asarray(a, float)[None, :], np.asarray(b, float)[None, :])
    return float(t[0]), float(df[0]), float(p[0])


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise Welch test of (..., n1) against (..., n0) along the last axis."""
    n1, n0 = a.shape[-1], b.shape[-1]
    v1, v0 = a.var(axis=-1, ddof=1) / n1, b.var(axis=-1, ddof=1) / n0
    se2 = v1 + v0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a.mean(axis=-1) - b.mean(axis=-1)) / np.sqrt(se2)
        df = se2 ** 2 / (v1 ** 2 / (n1 - 1) + v0 ** 2 / (n0 - 1))
    t = np.where(se2 > 0, t, 0.0)  # identical constant subsamples: no evidence
    df = np.where(se2 > 0, df, 1.0)
    return t, df, sst.t.sf(t, df)


def group_codes(groups: np.ndarray) -> np.ndarray:
    """Group labels (n,) -> codes 0..K-1, numbered in the order of each group's first clip."""
    g = np.asarray(groups).astype(str)
    _, first, inv = np.unique(g, return_index=True, return_inverse=True)
    rank = np.empty(len(first), int)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inv.reshape(-1)]


def side_cells(x: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One side's scores (n,) or (n, m) and their groups (n,) -> per-group sums (K, m) and clip counts (K,), the
    groups in the order of their first clip."""
    a = _columns(x)
    codes = group_codes(groups)
    k = int(codes.max()) + 1 if len(codes) else 0
    sums = np.zeros((k, a.shape[1]))
    np.add.at(sums, codes, a)
    return sums, np.bincount(codes, minlength=k)


def _group_welch(sa: np.ndarray, ca: np.ndarray, sb: np.ndarray, cb: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's test on the group means, from each side's group sums (..., K_s, m) and clip counts (..., K_s): t, df
    and one-sided p of (..., m). Every count 1: Welch's test on the clips, to the bit."""
    ma, mb = sa / ca[..., None], sb / cb[..., None]
    return _welch(np.moveaxis(ma, -1, -2), np.moveaxis(mb, -1, -2))


def group_welch_one_sided(a: np.ndarray, b: np.ndarray, groups_a: np.ndarray, groups_b: np.ndarray
                          ) -> tuple[float, float, float]:
    """Welch's one-sided test of "suspect scores are higher" with groups: each group's mean score is one observation
    (``groups_*``: the group of each clip of ``a`` and ``b``; a group on both sides gives one mean per side). The t
    statistic, its degrees of freedom (Welch-Satterthwaite on K_s - 1 per side) and the p-value; every clip its own
    group: :func:`welch_one_sided`."""
    (sa, ca), (sb, cb) = side_cells(a, groups_a), side_cells(b, groups_b)
    if len(ca) < 2 or len(cb) < 2:
        raise BlindcheckError(f"the grouped test needs at least 2 groups per side ({len(ca)} and {len(cb)})")
    t, df, p = _group_welch(sa[None], ca[None], sb[None], cb[None])
    return float(t[0, 0]), float(df[0, 0]), float(p[0, 0])


def size_grid(n_max: int, points: int) -> np.ndarray:
    """Geometric grid of sample sizes per side from 2 to ``n_max``."""
    if n_max < 2:
        return np.array([], int)
    return np.unique(np.round(np.geomspace(2, n_max, points)).astype(int))


def _columns(x: np.ndarray) -> np.ndarray:
    """Scores as (clips, m): one column per scorer of a family."""
    x = np.asarray(x, float)
    return x[:, None] if x.ndim == 1 else x


def family_p(p: np.ndarray) -> np.ndarray:
    """Bonferroni p of a family of m scorers along the last axis: ``min(1, m * min_j p_j)`` (m = 1: p)."""
    p = np.asarray(p, float)
    return np.minimum(1.0, p.shape[-1] * p.min(axis=-1))


def rejection_curve(suspect: np.ndarray, reference: np.ndarray, alpha: float, resamples: int,
                    grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rejection rate of Welch's one-sided test at each n of ``grid``: ``resamples`` subsamples of n clips per
    side, drawn without replacement. ``suspect`` (n1,) or (n1, m), ``reference`` likewise: with m scorers a
    subsample rejects when their Bonferroni p (:func:`family_p`, on the same clips for all m) is <= alpha."""
    a, b = _columns(suspect), _columns(reference)
    rates = np.empty(len(grid))
    for j, n in enumerate(grid):
        ia, ib = _draw(rng, len(a), n, resamples), _draw(rng, len(b), n, resamples)
        p = _welch(np.moveaxis(a[ia], 2, 1), np.moveaxis(b[ib], 2, 1))[2]  # (resamples, m)
        rates[j] = float((family_p(p) <= alpha).mean())
    return rates


def prefix_p(suspect: np.ndarray, reference: np.ndarray, grid: np.ndarray, rng: np.random.Generator
             ) -> np.ndarray:
    """The papers' curve: in one random order of each side, the (Bonferroni, with m scorers) Welch p of the
    first n clips per side, for each n of ``grid``."""
    a, b = _columns(suspect), _columns(reference)
    a, b = a[rng.permutation(len(a))], b[rng.permutation(len(b))]
    return np.array([float(family_p(_welch(a[:n].T, b[:n].T)[2])) for n in grid])


def grouped_rejection_curve(cells_a: tuple[np.ndarray, np.ndarray], cells_b: tuple[np.ndarray, np.ndarray],
                            alpha: float, resamples: int, grid: np.ndarray, rng: np.random.Generator
                            ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rejection_curve` over whole groups: at each k of ``grid``, ``resamples`` subsamples of k groups per
    side (without replacement), tested by Welch's test on the group means (Bonferroni over m scorers). ``cells_*``:
    (group sums (K, m), clip counts (K,)) of each side (:func:`side_cells`). Returns the rejection rates and the
    clips per side the drawn groups hold, averaged over both sides and the subsamples. One clip per group: the draws
    and rates of :func:`rejection_curve`."""
    (sa, ca), (sb, cb) = cells_a, cells_b
    rates, clips = np.empty(len(grid)), np.empty(len(grid))
    for j, k in enumerate(grid):
        ia, ib = _draw(rng, len(ca), k, resamples), _draw(rng, len(cb), k, resamples)
        p = _group_welch(sa[ia], ca[ia], sb[ib], cb[ib])[2]  # (resamples, m)
        rates[j] = float((family_p(p) <= alpha).mean())
        clips[j] = float((ca[ia].sum(axis=1) + cb[ib].sum(axis=1)).mean() / 2)
    return rates, clips


def grouped_prefix_p(cells_a: tuple[np.ndarray, np.ndarray], cells_b: tuple[np.ndarray, np.ndarray],
                     grid: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`prefix_p` over whole groups: in one random order of each side's groups, the (Bonferroni) group-mean
    Welch p of the first k groups per side for each k of ``grid``, and the clips per side those groups hold
    (averaged over the two sides)."""
    (sa, ca), (sb, cb) = cells_a, cells_b
    oa, ob = rng.permutation(len(ca)), rng.permutation(len(cb))
    p, clips = np.empty(len(grid)), np.empty(len(grid))
    for j, k in enumerate(grid):
        ia, ib = oa[:k], ob[:k]
        p[j] = float(family_p(_group_welch(sa[ia][None], ca[ia][None], sb[ib][None], cb[ib][None])[2])[0])
        clips[j] = (ca[ia].sum() + cb[ib].sum()) / 2
    return p, clips


def _draw(rng: np.random.Generator, pool: int, n: int, rows: int) -> np.ndarray:
    """(rows, n) indices, each row n distinct draws from range(pool)."""
    if n * 10 < pool:  # few from many: per-row sampling without replacement is O(n)
        return np.stack([rng.choice(pool, n, replace=False) for _ in range(rows)])
    return np.argpartition(rng.random((rows, pool)), n - 1, axis=1)[:, :n]


def split_halves(labels: np.ndarray, rng: np.random.Generator, groups: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One random stratified partition: (calibration, held-out) indices, each side halved (the held-out half
    takes the odd clip). With ``groups`` whole groups go to one half: the groups with clips of one side only are
    permuted per side (suspect, then reference), those with clips of both sides apart, and of each permutation the
    first j groups (1 <= j < its number of groups) whose clips come closest to half of its clips (ties: the
    smaller j) go to calibration; one clip per group gives the partition without groups."""
    y = np.asarray(labels).astype(int)
    if groups is None:
        cal, test = [], []
        for side in (1, 0):
            idx = rng.permutation(np.nonzero(y == side)[0])
            cal.append(idx[: len(idx) // 2])
            test.append(idx[len(idx) // 2:])
        return np.sort(np.concatenate(cal)), np.sort(np.concatenate(test))
    codes = group_codes(groups)
    k = int(codes.max()) + 1
    size = np.bincount(codes, minlength=k)
    has1 = np.bincount(codes, weights=y, minlength=k) > 0
    has0 = np.bincount(codes, weights=1 - y, minlength=k) > 0
    chosen = []
    for kind in (has1 & ~has0, has0 & ~has1, has1 & has0):
        gs = np.nonzero(kind)[0]
        if len(gs) == 0:
            continue
        gs = rng.permutation(gs)
        c = np.cumsum(size[gs])
        j = 1 + int(np.argmin(np.abs(c[:-1] - c[-1] / 2))) if len(gs) > 1 else 0
        chosen.append(gs[:j])
    in_cal = np.isin(codes, np.concatenate(chosen))
    return np.nonzero(in_cal)[0], np.nonzero(~in_cal)[0]


def fit_combination(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardisation and logistic weights fitted on calibration clips: (mu, sd, w)."""
    S = np.asarray(scores, float)
    mu, sd = S.mean(axis=0), S.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return mu, sd, logistic_fit((S - mu) / sd, np.asarray(labels).astype(int))


def apply_combination(fit: tuple[np.ndarray, np.ndarray, np.ndarray], scores: np.ndarray) -> np.ndarray:
    """The fitted combination's linear score for each clip."""
    mu, sd, w = fit
    return w[0] + ((np.asarray(scores, float) - mu) / sd) @ w[1:]


def combine(scores: np.ndarray, labels: np.ndarray, rng: np.random.Generator, groups: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Several attacks' scores (n, k) -> (held-out indices, their combined score): a logistic regression fitted
    on the calibration half of one random stratified partition (by whole ``groups`` when given) scores the
    held-out half, on which alone the test may be run (no clip tested is scored by a model fitted on it, on a clip
    it is tested with, or on a clip of its group)."""
    y = np.asarray(labels).astype(int)
    S = np.asarray(scores, float)
    cal, test = split_halves(y, rng, groups)
    if len(np.unique(y[cal])) < 2:
        raise BlindcheckError("the calibration half of the groups holds one side only: too few groups to combine "
                              "attacks; give one attack or more groups")
    return test, apply_combination(fit_combination(S[cal], y[cal]), S[test])


def logistic_fit(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> np.ndarray:
    """L2-penalised logistic regression by Newton's method (intercept unpenalised): weights (1 + k,)."""
    A = np.column_stack([np.ones(len(y)), X])
    w = np.zeros(A.shape[1])
    pen = np.full(A.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(A @ w)))
        grad = A.T @ (p - y) + pen * w
        hess = (A * (p * (1 - p))[:, None]).T @ A + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass
class DIScorer:
    """One scorer's dataset inference. ``p`` / ``rejects``: Welch's one-sided test on every tested clip (with groups
    Welch's test on the group means; for a family of m blind models, the Bonferroni p over them), the test;
    ``n_min``: smallest n per side at which at least di_power of the subsamples reject (None: not reached);
    ``n_min_p``: smallest n per side at which the p of the first n clips of one random order is <= alpha, the
    papers' figure, not a test (None: not reached); ``models``: the m scorers of the family (one: its name);
    ``model``: the one with the smallest p on all tested clips; ``tested_on``: "all clips" or "held-out half".
    With groups: ``n_groups_suspect`` / ``n_groups_reference`` groups with tested clips on each side, the subsamples
    and prefixes are k whole groups per side (``group_grid``), ``n_min_groups`` / ``n_min_p_groups`` the k reached and
    ``n_min`` / ``n_min_p`` (and ``grid``, ``prefix_n``) the clips per side those groups hold (None: ungrouped)."""

    name: str
    n_suspect: int
    n_reference: int
    mean_diff: float
    t: float
    df: float
    p: float
    rejects: bool
    grid: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    n_min: int | None = None  # smallest n per side whose rejection rate reaches di_power; None: not reached
    prefix: list[float] = field(default_factory=list)  # p of the first n clips per side, at each n of grid
    n_min_p: int | None = None  # smallest n of grid whose prefix p <= alpha (papers' figure); None: not reached
    models: list[str] = field(default_factory=list)
    model: str | None = None
    tested_on: str = "all clips"
    n_groups_suspect: int | None = None
    n_groups_reference: int | None = None
    group_grid: list[int] = field(default_factory=list)  # groups per side at each n of grid (grouped only)
    prefix_n: list[int] = field(default_factory=list)  # clips per side of each prefix (grouped only)
    n_min_groups: int | None = None
    n_min_p_groups: int | None = None

    @property
    def grouped(self) -> bool:
        return self.n_groups_suspect is not None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        grid, rates, prefix = d.pop("grid"), d.pop("rates"), d.pop("prefix")
        ks, prefix_n = d.pop("group_grid"), d.pop("prefix_n")
        if ks:
            d["curve"] = [{"n": n, "groups": k, "rate": r} for n, k, r in zip(grid, ks, rates, strict=True)]
            d["prefix_curve"] = [{"n": n, "groups": k, "p": q} for n, k, q in zip(prefix_n, ks, prefix, strict=False)]
        else:
            d["curve"] = [{"n": n, "rate": r} for n, r in zip(grid, rates, strict=True)]
            d["prefix_curve"] = [{"n": n, "p": q} for n, q in zip(grid, prefix, strict=False)]
        return d


WELCH_TEST = ("Welch one-sided t-test, suspect (label 1) > reference (label 0); several attacks: logistic combination "
              "fitted on a calibration half, tested on the held-out half; blind: Bonferroni over the blind models")
GROUPED_TEST = ("Welch one-sided t-test on group means, suspect (label 1) > reference (label 0): one mean score per "
                "group and side, Welch-Satterthwaite df with K - 1 per side; several attacks: logistic combination "
                "fitted on a calibration half of whole groups, tested on the held-out groups; subsamples and "
                "prefixes of whole groups; blind: Bonferroni over the blind models (out-of-fold scores from grouped "
                "folds)")


@dataclass
class DIResult:
    attack: DIScorer
    blind: DIScorer | None
    combined_from: list[str]
    explainable_without_model: bool | None
    reasons: list[str]
    alpha: float
    power: float
    resamples: int
    seed: int
    calibration: dict[str, int] | None = None  # {"n_suspect", "n_reference"} of the calibration half; None: none
    group_by: str | None = None  # the group column (None: clips independent)
    n_groups: dict[str, int] | None = None  # {"suspect", "reference", "both_sides"} of the tested clips' groups

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack.to_dict(), "blind": self.blind.to_dict() if self.blind else None,
                "combined_from": self.combined_from, "explainable_without_model": self.explainable_without_model,
                "reasons": self.reasons, "alpha": self.alpha, "power": self.power, "resamples": self.resamples,
                "seed": self.seed, "calibration": self.calibration, "group_by": self.group_by,
                "n_groups": self.n_groups, "test": GROUPED_TEST if self.group_by is not None else WELCH_TEST}


def score_di(name: str, score: np.ndarray, labels: np.ndarray, settings: Settings, rng: np.random.Generator,
             models: list[str] | None = None, tested_on: str = "all clips", groups: np.ndarray | None = None
             ) -> DIScorer:
    """Welch's test on every clip, the rejection curve over the size grid and the prefix p-values for one
    scalar score (n,), or for a family of m scores (n, m) tested together by Bonferroni (``models`` names
    the columns). The curves are drawn from ``rng`` in a fixed order, so two calls with generators in the same
    state on the same labels use the same subsamples. With ``groups`` (n,): Welch's test on the group means, and
    subsamples and prefixes of whole groups (a group with clips on both sides is a group of each side)."""
    y = np.asarray(labels).astype(bool)
    s = _columns(score)
    if models is None:
        models = [name] if s.shape[1] == 1 else [f"{name}:{j}" for j in range(s.shape[1])]
    models = list(models)
    if len(models) != s.shape[1]:
        raise BlindcheckError(f"{name}: {s.shape[1]} score columns but {len(models)} model names")
    a, b = s[y], s[~y]
    if len(a) < 2 or len(b) < 2:
        raise BlindcheckError(f"dataset inference needs at least 2 suspect and 2 reference clips with a score "
                              f"({name}: {len(a)} and {len(b)})")
    if groups is None:
        t, df, p = _welch(a.T, b.T)
        grid = size_grid(min(len(a), len(b)), settings.di_grid)
        rates = rejection_curve(a, b, settings.alpha, settings.di_resamples, grid, rng)
        prefix = prefix_p(a, b, grid, rng)
        n_grid, ks, prefix_n, kg = grid, [], [], (None, None)
    else:
        g = np.asarray(groups).astype(str)
        ca, cb = side_cells(a, g[y]), side_cells(b, g[~y])
        kg = (len(ca[1]), len(cb[1]))
        if min(kg) < 2:
            raise BlindcheckError(f"grouped dataset inference needs at least 2 suspect and 2 reference groups with a "
                                  f"score ({name}: {kg[0]} and {kg[1]})")
        t, df, p = (x[0] for x in _group_welch(ca[0][None], ca[1][None], cb[0][None], cb[1][None]))
        grid = size_grid(min(kg), settings.di_grid)
        rates, clips = grouped_rejection_curve(ca, cb, settings.alpha, settings.di_resamples, grid, rng)
        prefix, pclips = grouped_prefix_p(ca, cb, grid, rng)
        n_grid, ks = np.round(clips).astype(int), grid.tolist()
        prefix_n = np.round(pclips).astype(int).tolist()
    j = int(np.argmin(p))
    pf = float(family_p(p))
    hit, hit_p = np.nonzero(rates >= settings.di_power)[0], np.nonzero(prefix <= settings.alpha)[0]
    diff = a[:, j].mean() - b[:, j].mean() if groups is None else \
        (ca[0][:, j] / ca[1]).mean() - (cb[0][:, j] / cb[1]).mean()
    d = DIScorer(name, len(a), len(b), float(diff), float(t[j]), float(df[j]), pf,
                 bool(pf <= settings.alpha), n_grid.tolist(), rates.tolist(),
                 int(n_grid[hit[0]]) if len(hit) else None, prefix.tolist(),
                 int(grid[hit_p[0]]) if len(hit_p) else None, models, models[j], tested_on)
    if groups is not None:
        d.n_groups_suspect, d.n_groups_reference = kg
        d.group_grid, d.prefix_n = ks, prefix_n
        d.n_min_groups = int(grid[hit[0]]) if len(hit) else None
        d.n_min_p_groups = int(grid[hit_p[0]]) if len(hit_p) else None
        d.n_min_p = prefix_n[hit_p[0]] if len(hit_p) else None
    return d


def dataset_inference(attacks: dict[str, np.ndarray], labels: np.ndarray, settings: Settings,
                      blind_score: np.ndarray | None = None, lower_is_member: tuple[str, ...] | list[str] = (),
                      blind_scores: dict[str, np.ndarray] | None = None, groups: np.ndarray | None = None,
                      group_by: str | None = None) -> DIResult:
    """Dataset inference for the attacks (one scalar score; several are combined on a calibration half and
    tested on the held-out half) and, when given, for the blind scorer on the same clips: ``blind_scores``
    (model name -> out-of-fold scores (n,), every blind model that was fitted, tested together by Bonferroni)
    or ``blind_score`` (one score; it pays for no choice, so pass the models it was chosen from as
    ``blind_scores``). ``attacks``: name -> raw scores (n,); clips with a non-finite score in any used attack
    (or blind model) are left out (counted in ``n_suspect`` / ``n_reference``). ``groups`` (n,): the group of each
    clip (a speaker); every step then takes whole groups (module docstring); ``group_by`` names them in the result
    (default "groups")."""
    if not attacks:
        raise BlindcheckError("dataset inference needs at least one attack score")
    if blind_score is not None and blind_scores is not None:
        raise BlindcheckError("give the blind scores either as blind_score or as blind_scores, not both")
    unknown = [a for a in lower_is_member if a not in attacks]
    if unknown:
        raise BlindcheckError(f"lower-is-member names unknown attack '{unknown[0]}' (attacks: {', '.join(attacks)})")
    y = np.asarray(labels).astype(int)
    names = list(attacks)
    S = np.column_stack([(-1.0 if n in lower_is_member else 1.0) * np.asarray(attacks[n], float) for n in names])
    blind_names: list[str] = []
    B = None
    if blind_scores is not None:
        if not blind_scores:
            raise BlindcheckError("blind_scores is empty")
        blind_names = list(blind_scores)
        B = np.column_stack([np.asarray(blind_scores[n], float) for n in blind_names])
    elif blind_score is not None:
        blind_names, B = ["blind"], np.asarray(blind_score, float)[:, None]
    g = None
    if groups is not None:
        g = np.asarray(groups).astype(str)
        if g.shape != y.shape:
            raise BlindcheckError(f"groups has {len(g)} entries for {len(y)} clips")
        group_by = group_by or "groups"
    else:
        group_by = None
    ok = np.isfinite(S).all(axis=1) & (np.isfinite(B).all(axis=1) if B is not None else True)
    idx = np.nonzero(ok)[0]
    rng = np.random.default_rng(settings.seed + 7)
    calibration, where = None, "all clips"
    if len(names) == 1:
        score, label = S[idx, 0], names[0]
    else:
        unit = "clips scored by all" if g is None else "groups with clips scored by all"
        yi = y[idx]
        counts = (int(yi.sum()), int((1 - yi).sum())) if g is None else \
            (len(np.unique(g[idx][yi == 1])), len(np.unique(g[idx][yi == 0])))
        if min(counts) < 4:
            raise BlindcheckError(f"combining attacks needs at least 4 suspect and 4 reference {unit}")
        test, score = combine(S[idx], yi, rng, None if g is None else g[idx])
        cal = np.setdiff1d(np.arange(len(idx)), test)
        calibration = {"n_suspect": int(yi[cal].sum()), "n_reference": int((1 - yi[cal]).sum())}
        if g is not None:
            gc, yc = g[idx][cal], yi[cal]
            calibration.update(n_groups_suspect=len(np.unique(gc[yc == 1])),
                               n_groups_reference=len(np.unique(gc[yc == 0])))
        idx, label, where = idx[test], "combined(" + ",".join(names) + ")", "held-out half"
    gt = None if g is None else g[idx]
    curve_seed = int(rng.integers(2 ** 63))  # attack and blind draw the same subsamples of the same clips
    att = score_di(label, score, y[idx], settings, np.random.default_rng(curve_seed), tested_on=where, groups=gt)
    blind = None
    if B is not None:
        blind = score_di("blind", B[idx], y[idx], settings, np.random.default_rng(curve_seed), models=blind_names,
                         tested_on=where, groups=gt)
    explainable, reasons = di_reasons(att, blind, settings)
    n_groups = None
    if gt is not None:
        s1, s0 = set(gt[y[idx] == 1]), set(gt[y[idx] == 0])
        n_groups = {"suspect": len(s1), "reference": len(s0), "both_sides": len(s1 & s0)}
        both = f"; {n_groups['both_sides']} have clips on both sides" if n_groups["both_sides"] else ""
        reasons.append(f"clips are grouped by {group_by} ({n_groups['suspect']} suspect and {n_groups['reference']} "
                       f"reference groups tested{both}): the test is Welch's on the group means (Student's t on "
                       f"groups, not clips), subsamples and prefixes take whole groups")
    if calibration is not None:
        unit_c = "" if g is None else (f", {calibration['n_groups_suspect']} and "
                                       f"{calibration['n_groups_reference']} groups")
        reasons.append(f"the {len(names)} attacks are combined by a logistic regression fitted on a calibration "
                       f"half ({calibration['n_suspect']} suspect, {calibration['n_reference']} reference clips"
                       f"{unit_c}); both scorers are tested on the held-out half only")
    return DIResult(att, blind, names if len(names) > 1 else [], explainable, reasons, settings.alpha,
                    settings.di_power, settings.di_resamples, settings.seed, calibration, group_by, n_groups)


def di_reasons(att: DIScorer, blind: DIScorer | None, settings: Settings) -> tuple[bool | None, list[str]]:
    """Pure: whether the DI claim is explainable without the model, and why (with groups the scorers are compared
    on the groups per side they need, which the same subsamples turn into the same clips)."""
    pw = f"{100 * settings.di_power:.0f}%"

    def need(d: DIScorer) -> str:
        if d.n_min is None:
            return f"more than the {min(d.n_suspect, d.n_reference)} clips per side available"
        return f"{d.n_min} clips per side" + (f" ({d.n_min_groups} groups)" if d.n_min_groups is not None else "")

    def first(d: DIScorer) -> str:
        groups = f" ({d.n_min_p_groups} groups)" if d.n_min_p_groups is not None else ""
        return (f"; p <= {settings.alpha:g} first at {d.n_min_p} clips per side{groups} of one random order (the "
                f"papers' figure, not a test)" if d.n_min_p is not None else "")

    test = "group-mean Welch" if att.grouped else "Welch"
    reasons = [f"{att.name}: {test} one-sided p = {att.p:.2g} on {att.tested_on}; rejects H0 in {pw} of subsamples "
               f"with {need(att)}{first(att)}"]
    if blind is None:
        return None, reasons
    fam = (f"Bonferroni over {len(blind.models)} blind models (smallest p: {blind.model})" if len(blind.models) > 1
           else "one blind score")
    reasons.append(f"blind score: p = {blind.p:.2g} ({fam}); rejects in {pw} of subsamples with {need(blind)}"
                   f"{first(blind)}")
    if blind.n_min is None:
        return False, reasons
    if blind.n_min_groups is not None and att.n_min_groups is not None:
        explainable = blind.n_min_groups <= att.n_min_groups
    else:
        explainable = att.n_min is None or blind.n_min <= att.n_min
    if explainable:
        reasons.insert(0, "the blind scorer, which never saw the model, needs no more clips than the attack: the "
                          "dataset-inference claim is explainable without the model")
    return explainable, reasons
