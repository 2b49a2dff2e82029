"""The family-wise permutation test behind the verdict: max-statistics over every blind model, min-P over criteria.

Two criteria are tested on the out-of-fold scores of all m models at once:

- **AUC**: the best model's AUC (``max_j AUC_j``);
- **isolation** (a separable *subset*): the largest share of one side that some model isolates at a low error on
  the other side — ``max_j max(TPR_j at FPR <= f, TNR_j at FNR <= f)``, i.e. members isolated at the top of the
  scores or non-members at the bottom (default f = 1%). A transform that touches a fraction of one side dilutes
  the AUC towards 0.5 but not this.

Each relabelling of the clips (at the level the split was made: whole groups where a group lies on one side,
clips within a group where a group holds both) gives one value of each max-statistic, so the null distribution
already accounts for choosing the best of m models (Westfall & Young's max-T): no Bonferroni factor, and the
smallest p-value is 1/(R+1) whatever m is. The two criteria are combined by the single-step min-P method
(each criterion's p-value is adjusted against the permutation distribution of the smaller of the two), which
keeps the family-wise error at alpha for the pair, again with no factor.

With few groups on one side each, the number of distinct relabellings is small: they are enumerated exactly and
the smallest reachable p-value is 1 / (number of relabellings), which the verdict reports.

**Score relabellings are widened.** The cheap test relabels the clips against their *fixed* out-of-fold scores, but
those scores were fitted to the labels: a clip's score depends on the labels of the clips it was trained on, so an
AUC computed from them is, to first order, a quadratic form in the labels, ``sum_ij w_ij y_i y_j`` (w: how much
clip j's label moves clip i's score; i and j in different folds). Relabelling with the scores held fixed varies only
one of the two label factors and sees about half that form's variance (for a symmetric w, exactly half). The null
of such a test is too narrow: on independent synthetic clips with no association (30 noise features, the default
six models, 150 tables each of 200, 480 and 1000 clips) the family-wise p-value of the AUC came out <= 0.05 in
15-18% of the tables, and the relabelled per-model AUCs had 1.4-2.1 times less variance than the models' AUCs over
tables (``benchmarks/calibration.py``, section 5). Each relabelled AUC's deviation from 0.5 is therefore widened by
``sqrt(SCORE_VARIANCE_FACTOR)`` (2) before the maxima are taken: the rate became 1.3-2.7%, and the power of a clean
verdict read from these relabellings matched the share of clean verdicts. The refit test
(:func:`refit_permutation_test`) re-runs the training on every relabelling and needs no such factor; it stays
exact. The isolation statistic's relabellings are not widened (its null rate is reported by the same section).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from blindcheck.analysis import isolation

FPR_TARGET = 0.01
_EPS = 1e-12
# Variance of an out-of-fold AUC over relabellings with the training re-run, relative to that of the same AUC
# relabelled against fixed scores (see the module docstring): the score relabellings' deviations from 0.5 are
# widened by its square root.
SCORE_VARIANCE_FACTOR = 2.0


@dataclass
class GroupLayout:
    """How the labels can be exchanged: ``pure`` groups (one label each) move as units, ``mixed`` groups
    shuffle their clips' labels within the group."""

    codes: np.ndarray  # group code per clip, shape (n,)
    pure: np.ndarray  # codes of the groups holding one side only
    pure_labels: np.ndarray  # their labels (bool), aligned with ``pure``
    mixed_idx: np.ndarray  # clips of the mixed groups, ordered by group
    mixed_codes: np.ndarray  # their group codes, same order
    n_groups: int

    @property
    def all_pure(self) -> bool:
        return len(self.mixed_idx) == 0

    def log_count(self, y: np.ndarray) -> float:
        """Natural log of the number of distinct relabellings."""
        k = int(self.pure_labels.sum())
        total = _log_comb(len(self.pure), k)
        for g in np.unique(self.mixed_codes):
            sel = self.mixed_idx[self.mixed_codes == g]
            total += _log_comb(len(sel), int(y[sel].sum()))
        return total


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def group_layout(y: np.ndarray, groups: np.ndarray) -> GroupLayout:
    y = np.asarray(y).astype(bool)
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    k = int(codes.max()) + 1
    members = np.bincount(codes, y.astype(int), k)
    sizes = np.bincount(codes, minlength=k)
    pure = np.nonzero((members == 0) | (members == sizes))[0]
    mixed_mask = ~np.isin(codes, pure)
    mixed_idx = np.nonzero(mixed_mask)[0]
    order = np.argsort(codes[mixed_idx], kind="mergesort")
    mixed_idx = mixed_idx[order]
    return GroupLayout(codes=codes, pure=pure, pure_labels=members[pure] > 0, mixed_idx=mixed_idx,
                       mixed_codes=codes[mixed_idx], n_groups=k)


def relabel(y: np.ndarray, layout: GroupLayout | None, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` random relabellings of ``y``, shape (k, n), bool."""
    y = np.asarray(y).astype(bool)
    n = len(y)
    if layout is None:
        return np.take_along_axis(np.broadcast_to(y, (k, n)), np.argsort(rng.random((k, n)), axis=1), axis=1)
    out = np.empty((k, n), dtype=bool)
    if len(layout.pure):
        perm = np.argsort(rng.random((k, len(layout.pure))), axis=1)
        group_label = np.zeros((k, layout.n_groups), dtype=bool)
        group_label[:, layout.pure] = layout.pure_labels[perm]
        pure_clips = np.nonzero(np.isin(layout.codes, layout.pure))[0]
        out[:, pure_clips] = group_label[:, layout.codes[pure_clips]]
    if len(layout.mixed_idx):
        # Sorting random keys offset by the group code shuffles within each group and never across.
        keys = layout.mixed_codes[None, :] + rng.random((k, len(layout.mixed_idx)))
        within = np.argsort(keys, axis=1)
        out[:, layout.mixed_idx] = y[layout.mixed_idx][within]
    return out


def all_relabellings(y: np.ndarray, layout: GroupLayout) -> np.ndarray:
    """Every distinct relabelling of pure groups (only for a layout without mixed groups), the observed one
    included; shape (count, n)."""
    k = int(layout.pure_labels.sum())
    rows = []
    for chosen in itertools.combinations(range(len(layout.pure)), k):
        group_label = np.zeros(layout.n_groups, dtype=bool)
        group_label[layout.pure[list(chosen)]] = True
        rows.append(group_label[layout.codes])
    return np.array(rows)


class FamilyStatistics:
    """Vectorised max-statistics of a fixed score matrix (n clips x m models) under many label vectors."""

    def __init__(self, scores: np.ndarray, fpr: float = FPR_TARGET):
        self.scores = np.asarray(scores, dtype=float)
        self.fpr = fpr
        self.ranks = np.column_stack([rankdata(c) for c in self.scores.T]).astype(np.float64)
        self.order = [np.argsort(-c, kind="mergesort") for c in self.scores.T]
        self.tie_end = []
        for j, o in enumerate(self.order):
            ss = self.scores[o, j]
            self.tie_end.append(np.r_[ss[1:] != ss[:-1], True])  # evaluate only after the last of tied scores
        self.tie_end_asc = []
        for j, o in enumerate(self.order):
            ss = self.scores[o[::-1], j]
            self.tie_end_asc.append(np.r_[ss[1:] != ss[:-1], True])

    def aucs(self, Y: np.ndarray) -> np.ndarray:
        """AUC of every model under each label row of ``Y`` (k, n): shape (k, m)."""
        Y = np.asarray(Y, dtype=bool)
        n1 = Y.sum(axis=1).astype(float)
        n0 = Y.shape[1] - n1
        rank_sums = Y.astype(np.float64) @ self.ranks
        with np.errstate(invalid="ignore", divide="ignore"):
            return (rank_sums - (n1 * (n1 + 1) / 2)[:, None]) / (n1 * n0)[:, None]

    def isolation(self, Y: np.ndarray, upper_beta: float | None = None):
        """Share of members isolated at the top (TPR at FPR <= f) and of non-members at the bottom (TNR at
        FNR <= f) for every model under each label row: two arrays of shape (k, m). With ``upper_beta``, also the
        same shares above the lower threshold of the upper bound (:func:`blindcheck.analysis.isolation.
        upper_allowed` at ``upper_beta``): four arrays."""
        Y = np.asarray(Y, dtype=bool)
        k, n = Y.shape
        n1 = Y.sum(axis=1)
        n0 = n - n1
        ends = [(np.floor(self.fpr * n0 + 1e-9), np.floor(self.fpr * n1 + 1e-9))]
        if upper_beta is not None:
            ends.append((_upper_allowed(n0, self.fpr, upper_beta), _upper_allowed(n1, self.fpr, upper_beta)))
        out = [np.empty((k, len(self.order))) for _ in range(2 * len(ends))]
        rows = np.arange(k)
        for j, o in enumerate(self.order):
            ys = Y[:, o]
            his = _end_rates(ys, n1, self.tie_end[j], [e[0] for e in ends], rows)
            los = _end_rates(~ys[:, ::-1], n0, self.tie_end_asc[j], [e[1] for e in ends], rows)
            for e in range(len(ends)):
                out[2 * e][:, j], out[2 * e + 1][:, j] = his[e], los[e]
        return tuple(out)


def _upper_allowed(n_other: np.ndarray, fpr: float, beta: float) -> np.ndarray:
    cache = {int(v): isolation.upper_allowed(int(v), fpr, beta) for v in np.unique(n_other)}
    return np.array([cache[int(v)] for v in n_other], dtype=float)


def _end_rates(pos_sorted: np.ndarray, n_pos: np.ndarray, tie_end: np.ndarray, allowed: list[np.ndarray],
               rows: np.ndarray) -> list[np.ndarray]:
    """Highest share of positives above a threshold that lets at most ``allowed`` (per row) of the negatives
    through, for each entry of ``allowed``."""
    tp = np.cumsum(pos_sorted, axis=1, dtype=np.int32)[:, tie_end]
    fp = np.cumsum(~pos_sorted, axis=1, dtype=np.int32)[:, tie_end]
    out = []
    for a in allowed:
        ok = (fp <= a[:, None]).sum(axis=1)  # fp grows along the sorted scores: the admissible ones are a prefix
        got = np.where(ok > 0, tp[rows, np.maximum(ok - 1, 0)], 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(got / n_pos)
    return out


@dataclass
class FamilyTest:
    """Result of the family-wise test; p-values are adjusted for the choice of model and of criterion."""

    auc_max: float
    isolation_max: float
    p_auc: float
    p_isolation: float
    p_auc_raw: float  # max-T over models only
    p_isolation_raw: float
    relabellings: int
    exhaustive: bool
    p_floor: float  # the smallest p-value this test can give
    method: str
    model_p: list[float]  # each model's own (unadjusted) p-value of AUC > 0.5 from the same relabellings
    # per relabelling: the best AUC over the models, and each side's best isolation over the models (r, 2); what
    # the power of a clean verdict is read from (not in result.json)
    null_auc_max: np.ndarray | None = field(default=None, repr=False)
    null_isolation_sides: np.ndarray | None = field(default=None, repr=False)
    # the same, above the lower threshold of the isolated share's upper bound (with ``upper_beta``)
    null_isolation_upper: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("null_")}


def max_statistics(fs: FamilyStatistics, Y: np.ndarray, upper_beta: float | None = None) -> tuple:
    """Per label row: the best AUC over models, the best isolation over models and ends, every model's AUC
    (k, m), and the best isolation of each side over the models (k, 2: members, non-members); with
    ``upper_beta``, a fifth item: each side's best share above the upper bound's threshold (k, 2)."""
    iso = fs.isolation(Y, upper_beta)
    hi, lo = iso[0], iso[1]
    aucs = fs.aucs(Y)
    sides = np.stack([np.nanmax(hi, axis=1), np.nanmax(lo, axis=1)], axis=1)
    out = (np.nanmax(aucs, axis=1), np.nanmax(np.maximum(hi, lo), axis=1), aucs, sides)
    if upper_beta is not None:
        out += (np.stack([np.nanmax(iso[2], axis=1), np.nanmax(iso[3], axis=1)], axis=1),)
    return out


def combine(obs: tuple[float, float], null: tuple[np.ndarray, np.ndarray], exhaustive: bool) -> dict:
    """Max-T p-values of both criteria and their single-step min-P adjustment.

    ``null`` holds the statistics under the relabellings; with ``exhaustive`` they are every relabelling, the
    observed one included (p = share at least as extreme), otherwise a Monte Carlo sample (p = (1 + #)/(R + 1)).
    """
    r = len(null[0])
    denom = r if exhaustive else r + 1
    extra = 0 if exhaustive else 1
    raw, row_p = [], []
    for o, nl in zip(obs, null, strict=True):
        srt = np.sort(nl)
        raw.append((extra + (r - np.searchsorted(srt, o - _EPS, "left"))) / denom)
        # each relabelling's own p-value against the same reference set (the observed value included)
        at_least = r - np.searchsorted(srt, nl - _EPS, "left") + (0 if exhaustive else (o >= nl - _EPS))
        row_p.append(at_least / denom)
    min_p = np.sort(np.minimum(row_p[0], row_p[1]))
    adj = [min(1.0, (extra + np.searchsorted(min_p, p + _EPS, "right")) / denom) for p in raw]
    return {"p_auc_raw": float(raw[0]), "p_isolation_raw": float(raw[1]), "p_auc": float(max(adj[0], raw[0])),
            "p_isolation": float(max(adj[1], raw[1]))}


def _enumerable(y: np.ndarray, layout, permutations: int) -> bool:
    """Whether every relabelling of whole groups can be run instead of ``permutations`` random ones: every group
    on one side, and no more relabellings than ``permutations`` + 1."""
    # exp(log C(6, 3)) is 20.000000000000007: the tolerance keeps 20 relabellings enumerable with R = 19
    return layout is not None and layout.all_pure and _distinct(y, layout) <= permutations + 1 + 1e-6


def score_permutation_test(scores: np.ndarray, y: np.ndarray, groups: np.ndarray | None, permutations: int,
                           rng: np.random.Generator, fpr: float = FPR_TARGET, budget: float = 3e8,
                           min_permutations: int = 199, upper_beta: float | None = None,
                           variance_factor: float = SCORE_VARIANCE_FACTOR) -> FamilyTest:
    """Relabel the clips against their fixed out-of-fold scores (cheap; see :func:`refit_permutation_test` for
    the test that re-runs the cross-validation), each relabelled AUC's deviation from 0.5 widened by
    ``sqrt(variance_factor)`` for the training's own variability (module docstring; 1: the plain score
    relabelling). Above ``budget`` clip x model x relabelling operations the number of relabellings is reduced,
    never below ``min_permutations``; the method string says how many ran."""
    y = np.asarray(y).astype(bool)
    n, m = scores.shape
    fs = FamilyStatistics(scores, fpr)
    a0, i0, model_obs, _ = max_statistics(fs, y[None, :])
    obs = (float(a0[0]), float(i0[0]))
    layout = group_layout(y, groups) if groups is not None else None
    widened = "" if variance_factor == 1 else f", AUC deviations widened by sqrt({variance_factor:g})"
    if _enumerable(y, layout, permutations):
        Y = all_relabellings(y, layout)
        a, i, per, sides, *up = max_statistics(fs, Y, upper_beta)
        a, per = _widen(per, variance_factor)
        return _result(obs, (a, i), model_obs[0], per, True,
                       f"all {len(Y)} relabellings of whole groups{widened}", sides, up[0] if up else None)
    r = int(min(permutations, max(min_permutations, budget // max(n * m, 1))))
    chunk = max(1, int(2_000_000 // max(n, 1)))
    auc_null, iso_null, per_null, side_null, up_null = [], [], [], [], []
    done = 0
    while done < r:
        k = min(chunk, r - done)
        a, i, per, sides, *up = max_statistics(fs, relabel(y, layout, k, rng), upper_beta)
        a, per = _widen(per, variance_factor)
        up_null += up
        auc_null.append(a)
        iso_null.append(i)
        per_null.append(per)
        side_null.append(sides)
        done += k
    level = "of whole groups and within mixed groups" if layout is not None else "of clips"
    return _result(obs, (np.concatenate(auc_null), np.concatenate(iso_null)), model_obs[0], np.vstack(per_null),
                   False, f"max-statistic score permutation ({r} relabellings {level}{widened})",
                   np.vstack(side_null),
                   np.vstack(up_null) if up_null else None, _distinct(y, layout))


def _widen(per: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Relabelled per-model AUCs (k, m) with their deviations from 0.5 scaled by sqrt(``factor``), and their
    maximum over the models per relabelling."""
    if factor == 1:
        return np.nanmax(per, axis=1), per
    per = 0.5 + math.sqrt(factor) * (per - 0.5)
    return np.nanmax(per, axis=1), per


def _result(obs: tuple[float, float], null: tuple[np.ndarray, np.ndarray], model_obs: np.ndarray,
            model_null: np.ndarray, exhaustive: bool, method: str, side_null: np.ndarray | None = None,
            up_null: np.ndarray | None = None, distinct: float = math.inf) -> FamilyTest:
    res = combine(obs, null, exhaustive)
    r = len(null[0])
    extra = 0 if exhaustive else 1
    model_p = ((extra + (model_null >= model_obs[None, :] - _EPS).sum(axis=0)) / (r + extra)).tolist()
    return FamilyTest(*obs, res["p_auc"], res["p_isolation"], res["p_auc_raw"], res["p_isolation_raw"],
                      relabellings=r, exhaustive=exhaustive, p_floor=max(1 / (r + extra), 1 / distinct),
                      method=method,
                      model_p=model_p, null_auc_max=np.asarray(null[0]), null_isolation_sides=side_null,
                      null_isolation_upper=up_null)


def refit_permutation_test(scores: np.ndarray, y: np.ndarray, groups: np.ndarray | None, permutations: int,
                           rng: np.random.Generator, refit: Callable[[np.ndarray], np.ndarray],
                           fpr: float = FPR_TARGET, progress: Callable[[int, int], None] | None = None,
                           upper_beta: float | None = None) -> FamilyTest:
    """Ojala & Garriga's test 1, family-wise: for each relabelling ``refit(labels)`` re-runs the whole
    cross-validation of every model and returns their out-of-fold scores (n, m); the best AUC and the best
    isolation over all models are kept. Exact for any data structure the relabelling respects.

    ``scores`` (n, m) are the observed out-of-fold scores, computed as ``refit`` computes each relabelling's. A
    ``refit`` object may carry: ``map`` (``refit.map(label_rows) -> iterator of (n, m) scores``, in the rows'
    order), which gets every relabelling at once, to run them in parallel (the rows are drawn from ``rng`` here
    first, so the relabellings, and where ``refit`` computes each one alone the p-values, do not depend on how it
    runs them); ``observed``, the observed scores of its own procedure where that is not the one that gave
    ``scores`` (fewer cross-validation repeats, say), used instead of them; ``what``, words for the method."""
    y = np.asarray(y).astype(bool)
    observed_scores = getattr(refit, "observed", None)
    scores = np.asarray(scores if observed_scores is None else observed_scores)
    fs = FamilyStatistics(scores, fpr)
    a0, i0, model_obs, side_obs, *up_obs = max_statistics(fs, y[None, :], upper_beta)
    obs = (float(a0[0]), float(i0[0]))
    layout = group_layout(y, groups) if groups is not None else None
    exhaustive = _enumerable(y, layout, permutations)
    rows = list(all_relabellings(y, layout)) if exhaustive else \
        [relabel(y, layout, 1, rng)[0] for _ in range(permutations)]
    total = len(rows)
    auc_null, iso_null = np.empty(total), np.empty(total)
    per_null = np.empty((total, scores.shape[1]))
    side_null = np.empty((total, 2))
    up_null = np.empty((total, 2)) if upper_beta is not None else None
    observed = [b for b, yp in enumerate(rows) if exhaustive and np.array_equal(yp, y)]
    for b in observed:  # the observed labelling among every relabelling: its statistics are known
        auc_null[b], iso_null[b], per_null[b], side_null[b] = obs[0], obs[1], model_obs[0], side_obs[0]
        if up_null is not None:
            up_null[b] = up_obs[0][0]
    todo = [b for b in range(total) if b not in observed]
    fit_all: Callable[[list[np.ndarray]], Iterator[np.ndarray]] = getattr(refit, "map", None) or \
        (lambda ys: map(refit, ys))
    done = len(observed)
    for b, refitted in zip(todo, fit_all([rows[b].astype(int) for b in todo]), strict=True):
        yp = rows[b]
        a, i, per, sides, *up = max_statistics(FamilyStatistics(refitted, fpr), yp[None, :], upper_beta)
        auc_null[b], iso_null[b], per_null[b], side_null[b] = a[0], i[0], per[0], sides[0]
        if up_null is not None:
            up_null[b] = up[0][0]
        done += 1
        if progress:
            progress(done, total)
    what = getattr(refit, "what", "")
    how = (f"max-statistic refit permutation ({total} full cross-validations of every model on relabelled clips"
           + (f", {what}" if what else "") + (", every relabelling of whole groups" if exhaustive else "") + ")")
    return _result(obs, (auc_null, iso_null), model_obs[0], per_null, exhaustive, how, side_null, up_null,
                   math.inf if exhaustive else _distinct(y, layout))


def _distinct(y: np.ndarray, layout: GroupLayout | None) -> float:
    """How many distinct relabellings the layout allows (inf without groups). Random relabellings drawn from
    fewer than R + 1 distinct ones hit the observed labelling about once in that many draws, so a p-value cannot
    go below about 1/count whatever R is: the floor the verdict must compare with alpha."""
    return math.exp(min(layout.log_count(y), 700.0)) if layout is not None else math.inf
