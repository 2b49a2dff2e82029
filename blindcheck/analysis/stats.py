"""ROC statistics: AUC with DeLong or bootstrap intervals, TPR at low FPR, permutation p-values, power.

Plain functions over numpy arrays; ``y`` is 1 for members (positives), 0 for non-members.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm, rankdata

from blindcheck.analysis import isolation


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties counted half)."""
    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong standard error (fast midrank algorithm of Sun & Xu, 2014)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=float)
    pos, neg = s[y], s[~y]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        return auc(y, s), math.nan
    tx, ty, tz = rankdata(pos), rankdata(neg), rankdata(np.concatenate([pos, neg]))
    a = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:m] - tx) / n  # structural components of the positives
    v10 = 1.0 - (tz[m:] - ty) / m  # ... and of the negatives
    var = v01.var(ddof=1) / m + v10.var(ddof=1) / n
    return float(a), float(math.sqrt(max(var, 0.0)))


def delong_clustered(y: np.ndarray, s: np.ndarray, groups: np.ndarray) -> tuple[float, float, int]:
    """AUC, its cluster-robust standard error and the number of clusters (Obuchowski 1997).

    Clips of one group (a speaker, a session) are not independent: the structural components of DeLong's
    estimator are summed per cluster and their variance taken across clusters, so that K clusters, not n
    clips, carry the information. With one clip per cluster it reduces to DeLong's variance (up to K/(K-1)).
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=float)
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    k = int(codes.max()) + 1 if len(codes) else 0
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2 or k < 2:
        return auc(y, s), math.nan, k
    tz = rankdata(s)
    v10 = (tz[y] - rankdata(s[y])) / n  # each member's share of non-members it outranks
    v01 = 1.0 - (tz[~y] - rankdata(s[~y])) / m  # each non-member's share of members that outrank it
    a = float(v10.mean())
    c10 = np.bincount(codes[y], v10, k) - np.bincount(codes[y], minlength=k) * a
    c01 = np.bincount(codes[~y], v01, k) - np.bincount(codes[~y], minlength=k) * a
    f = k / (k - 1)
    var = f * ((c10 ** 2).sum() / m ** 2 + (c01 ** 2).sum() / n ** 2 + 2 * (c10 * c01).sum() / (m * n))
    return a, float(math.sqrt(max(var, 0.0))), k


def quantile(level: float, df: int | None = None) -> float:
    """The one-sided ``level`` quantile of the normal distribution, or of Student's t with ``df`` degrees of
    freedom (cluster-robust intervals over few clusters)."""
    if df is None:
        return float(norm.ppf(level))
    from scipy.stats import t

    return float(t.ppf(level, max(df, 1)))


def auc_ci(y: np.ndarray, s: np.ndarray, level: float = 0.95, bootstrap: int = 0,
           rng: np.random.Generator | None = None, groups: np.ndarray | None = None
           ) -> tuple[float, float, float, float]:
    """AUC, lower and upper bound of a two-sided ``level`` interval, and the standard error.

    DeLong by default (cluster-robust, with a t quantile on K-1 degrees of freedom, when ``groups`` is given);
    with ``bootstrap > 0`` a stratified percentile bootstrap of that many resamples (of whole groups when
    ``groups`` is given).
    """
    if bootstrap <= 0:
        if groups is None:
            a, se = delong(y, s)
            z = norm.ppf(0.5 + level / 2)
        else:
            a, se, k = delong_clustered(y, s, groups)
            z = quantile(0.5 + level / 2, k - 1)
        return a, max(0.0, a - z * se), min(1.0, a + z * se), se
    rng = rng or np.random.default_rng(0)
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, float)
    a = auc(y, s)
    stats = np.full(bootstrap, np.nan)
    if groups is None:
        pos, neg = np.nonzero(y)[0], np.nonzero(~y)[0]
        for b in range(bootstrap):
            idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            stats[b] = auc(y[idx], s[idx])
    else:
        codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
        members_of = [np.nonzero(codes == g)[0] for g in range(codes.max() + 1)]
        for b in range(bootstrap):
            idx = np.concatenate([members_of[g] for g in rng.integers(0, len(members_of), len(members_of))])
            stats[b] = auc(y[idx], s[idx])
        stats = stats[np.isfinite(stats)]  # resamples that drew one class only
    lo, hi = np.quantile(stats, [0.5 - level / 2, 0.5 + level / 2])
    return a, float(lo), float(hi), float(stats.std(ddof=1))


def wilson(k, n: int, level: float) -> tuple:
    """One-sided ``level`` Wilson bounds (lower, upper) of a binomial proportion k / n; ``k`` a count or an array
    of counts (then arrays of bounds)."""
    if n <= 0:
        return math.nan, math.nan
    z = norm.ppf(level)
    p = np.asarray(k, dtype=float) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)
    return (float(lo), float(hi)) if lo.ndim == 0 else (lo, hi)


def tpr_at_fpr(y: np.ndarray, s: np.ndarray, fpr: float) -> float:
    """Highest true-positive rate over thresholds whose false-positive rate is at most ``fpr``.

    With fewer than 1/fpr negatives this is the TPR at zero false positives (the finest FPR measurable).
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, float)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    tp, fp = np.cumsum(yy), np.cumsum(~yy)
    last = np.r_[ss[1:] != ss[:-1], True]  # evaluate only after the last of tied scores
    tp, fp = tp[last], fp[last]
    ok = fp <= fpr * n0
    return float(tp[ok].max() / n1) if ok.any() else 0.0


def _hm_se(a, n1: int, n0: int):
    """Hanley & McNeil (1982) standard error of an AUC estimate ``a`` (a number, or an array of them)."""
    a = np.asarray(a, dtype=float)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    se = np.sqrt(np.maximum(var, 1e-18))
    return float(se) if se.ndim == 0 else se


def clean_power_from_relabellings(auc_max: np.ndarray, isolation_upper: np.ndarray | None, tolerated: float,
                                  tolerated_share: float, n1: int, n0: int, alpha: float, fpr: float,
                                  deff: float = 1.0) -> float:
    """The power of a clean verdict read from the permutation test's relabellings: the share of relabelled splits
    (no association between scores and labels, the models and their correlation as observed) whose every model
    has an upper AUC bound (one-sided 1 - ``alpha``, Hanley-McNeil SE times the design effect) below
    ``tolerated`` and whose every model isolates, on either side, a share whose upper bound
    (:func:`blindcheck.analysis.isolation.upper_from_counts` at 1 - ``alpha``, from ``isolation_upper``: each side's
    best share above the upper bound's own threshold) lies below ``tolerated_share``. Where
    :func:`equivalence_power` pictures one model, this counts the maximum over all of them and the isolated-share
    condition, as the verdict does."""
    a = np.asarray(auc_max, dtype=float)
    if not len(a) or n1 < 2 or n0 < 2:
        return 0.0
    z = float(norm.ppf(1 - alpha))
    ok = a + z * _hm_se(a, n1, n0) * math.sqrt(deff) < tolerated
    if isolation_upper is not None:
        for col, n in ((0, n1), (1, n0)):
            p = np.clip(np.asarray(isolation_upper, dtype=float)[:, col], 0.0, 1.0)
            ok &= isolation.upper_from_counts(np.round(p * n), n, fpr, 1 - alpha) < tolerated_share
    return float(ok.mean())


def n_to_decide(a: float, margin: float, share_members: float, q: float, power: float, deff: float = 1.0,
                limit: int = 10_000_000) -> int:
    """Smallest total number of clips, at the given member share, for which a one-sided bound at quantile
    ``q`` around a true AUC ``a`` stays ``margin`` away from the estimate with probability ``power``:
    (q + z_power) x SE(a) x sqrt(deff) <= margin, SE from Hanley & McNeil, ``deff`` the design effect of
    clustered clips."""
    zp = norm.ppf(power)
    a = min(max(a, 0.5), 0.999)

    def ok(n: int) -> bool:
        n1 = max(2, round(n * share_members))
        return (q + zp) * _hm_se(a, n1, max(2, n - n1)) * math.sqrt(deff) <= margin

    lo, hi = 4, 8
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > limit:
            return limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if not ok(mid) else (lo, mid)
    return hi


def equivalence_power(tolerated: float, n1: int, n0: int, alpha: float, deff: float = 1.0) -> float:
    """Probability that a split whose true blind AUC is 0.5 gets an upper confidence bound (one-sided,
    1 - ``alpha``) below ``tolerated``: the power of a "clean" decision at this size."""
    if n1 < 2 or n0 < 2:
        return 0.0
    se = _hm_se(0.5, n1, n0) * math.sqrt(deff)
    return float(norm.cdf((tolerated - 0.5) / se - norm.ppf(1 - alpha)))


def delong_paired(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, groups: np.ndarray | None = None
                  ) -> tuple[float, float, float, float]:
    """Paired DeLong test of two correlated AUCs on the same clips (DeLong, DeLong & Clarke-Pearson 1988).

    Returns (AUC of ``s1``, AUC of ``s2``, standard error of their difference, one-sided p-value of
    AUC(s1) > AUC(s2)). The variance of the difference comes from the per-clip difference of the two scores'
    structural components, so the correlation between the scores is accounted for; with ``groups`` the
    components are summed per cluster (Obuchowski 1997), as in :func:`delong_clustered`.
    """
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return auc(y, s1), auc(y, s2), math.nan, math.nan

    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(s, dtype=float)
        tz = rankdata(s)
        return (tz[y] - rankdata(s[y])) / n, 1.0 - (tz[~y] - rankdata(s[~y])) / m

    a10, a01 = components(s1)
    b10, b01 = components(s2)
    a1, a2 = float(a10.mean()), float(b10.mean())
    d10, d01 = a10 - b10, a01 - b01
    if groups is None:
        var = d10.var(ddof=1) / m + d01.var(ddof=1) / n
    else:
        codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
        k = int(codes.max()) + 1
        if k < 2:
            return a1, a2, math.nan, math.nan
        d = a1 - a2
        c10 = np.bincount(codes[y], d10, k) - np.bincount(codes[y], minlength=k) * d
        c01 = np.bincount(codes[~y], d01, k) - np.bincount(codes[~y], minlength=k) * d
        var = k / (k - 1) * ((c10 ** 2).sum() / m ** 2 + (c01 ** 2).sum() / n ** 2 + 2 * (c10 * c01).sum() / (m * n))
    se = math.sqrt(max(var, 0.0))
    if se == 0:
        return a1, a2, 0.0, (0.0 if a1 > a2 else 1.0)
    return a1, a2, se, float(norm.sf((a1 - a2) / se))
