"""Bounds of the *isolated share*: the share of one side that a blind model puts above (members) or below
(non-members) every clip of the other side but the 1% (``fpr``) it lets through.

The threshold is itself estimated, from the other side's order statistics, and these bounds say so:

- **point estimate.** With ``n_other`` clips on the other side the threshold is its (j + 1)-th highest score,
  j = floor(fpr * n_other). Of the ``n_side`` clips of the side, K score above it. A clip that is exchangeable with
  the other side lands there with probability (j + 1) / (n_other + 1) (the mean of the negative hypergeometric
  law), so the estimated share is (K / n - f) / (1 - f) with f = (j + 1) / (n_other + 1).
- **lower bound** (what ``confounded`` rests on): exact, for the *mixture* share — the smallest share of the side
  that must come from a distribution other than the other side's. Write the side as M clips of another kind and
  n - M exchangeable with the other side; M ~ Binomial(n, pi). K is stochastically largest when those M all lie
  above the threshold, and then K = M + N, with N the number of the n - M exchangeable clips above the (j + 1)-th
  of the other side: a negative hypergeometric count, P(N >= r) = P(at most j of the other side among the first
  r + j of the a + n_other ranked clips), a hypergeometric CDF. The test of share <= pi therefore has the p-value
  P(M + N >= K), and the bound is the smallest pi that this test does not reject: exact at every size, whatever
  the scores' distribution, with no normal approximation and no plug-in threshold. Ties are counted against the
  isolated side (a clip tied with the threshold is not above it), which only lowers K.
- **upper bound** (what ``clean`` rests on): for the share separable at the population's 1%-FPR point t*
  (the share a transform touches cannot be bounded from above: a touched clip the model cannot see is not
  counted). It places a threshold t_L at the (j' + 1)-th highest of the other side, j' the smallest count with
  P(Binomial(n_other, fpr) > j') <= beta/2, so that t_L <= t* with probability >= 1 - beta/2; the share above t_L
  bounds the share above t* from above, and a Clopper-Pearson bound at 1 - beta/2 of the count above t_L finishes
  it (union bound: coverage >= 1 - beta).

With groups (clips that come in clusters: speakers, sentences) the counts are scaled by a design effect
1 + (m - 1) ICC of the isolation indicator (Kish's effective sample size), m the size-weighted mean group size.
``benchmarks/calibration_share.py`` measures the coverage of both bounds.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binom, hypergeom


def allowed(n_other: int, fpr: float) -> int:
    """How many clips of the other side the 1%-FPR threshold lets through: floor(fpr * n_other)."""
    return int(math.floor(fpr * n_other + 1e-9))


def chance_rate(n_other: int, j: int) -> float:
    """The probability that a clip exchangeable with the other side lies above its (j + 1)-th highest score."""
    return (j + 1) / (n_other + 1)


def threshold(other: np.ndarray, j: int) -> float:
    """The (j + 1)-th highest score of ``other`` (-inf when j >= len(other): every clip is let through)."""
    other = np.asarray(other, float)
    if j >= len(other):
        return -math.inf
    return float(np.partition(other, len(other) - 1 - j)[len(other) - 1 - j])


def count_above(side: np.ndarray, other: np.ndarray, j: int) -> int:
    """Clips of ``side`` strictly above the (j + 1)-th highest score of ``other`` (all of them when j >= len(other))."""
    return int((np.asarray(side, float) > threshold(other, j)).sum())


def estimate(k: int, n: int, n_other: int, j: int) -> float:
    """Point estimate of the isolated share from K = ``k`` of ``n`` above the (j + 1)-th of ``n_other``."""
    if n <= 0:
        return math.nan
    f = chance_rate(n_other, j)
    return max(0.0, (k / n - f) / (1 - f))


def _exceed_given_m(k: int, n: int, n_other: int, j: int) -> np.ndarray:
    """P(M + N >= k | M) for M = 0..n, N the exchangeable clips above the (j + 1)-th of the other side."""
    m = np.arange(n + 1)
    r = k - m  # what the n - M exchangeable clips must add
    a = n - m
    out = np.zeros(n + 1)
    out[r <= 0] = 1.0
    mid = (r > 0) & (r <= a)
    if mid.any() and j < n_other:
        out[mid] = hypergeom.cdf(j, a[mid] + n_other, n_other, r[mid] + j)
    elif mid.any():  # the threshold lets every clip of the other side through: every clip is above it
        out[mid] = 1.0
    return np.clip(out, 0.0, 1.0)


def lower(k: int, n: int, n_other: int, j: int, level: float, tol: float = 1e-5) -> float:
    """One-sided ``level`` lower bound of the mixture share (the exact test of the module docstring, inverted)."""
    if n <= 0 or k <= 0:
        return 0.0
    beta = 1 - level
    cond = _exceed_given_m(k, n, n_other, j)
    ms = np.arange(n + 1)

    def p(pi: float) -> float:
        return float((binom.pmf(ms, n, pi) * cond).sum())

    if p(0.0) > beta:
        return 0.0
    lo, hi = 0.0, min(1.0, k / n)  # at pi = K / n the p-value is at least about one half
    if p(hi) <= beta:
        return hi
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if p(mid) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


def upper_allowed(n_other: int, fpr: float, beta: float) -> int:
    """The smallest j' >= floor(fpr * n_other) with P(Binomial(n_other, fpr) > j') <= beta: the (j' + 1)-th highest
    score of the other side lies at or below its population (1 - fpr) quantile with probability >= 1 - beta."""
    j = allowed(n_other, fpr)
    while j < n_other and binom.sf(j, n_other, fpr) > beta:
        j += 1
    return j


def upper_from_counts(k_upper: np.ndarray, n: int, fpr: float, level: float) -> np.ndarray:
    """The upper bound from K' = ``k_upper`` clips (a count or an array of them) above the (j' + 1)-th of the
    other side (:func:`upper_allowed` at beta = (1 - level) / 2): a Clopper-Pearson bound of K' / n at level
    1 - (1 - level) / 2, less what the FPR lets through."""
    k = np.asarray(k_upper, dtype=float)
    q = 1 - (1 - level) / 2
    p = np.where(k >= n, 1.0, beta_dist.ppf(q, k + 1, np.maximum(n - k, 1e-12)))
    return np.maximum(0.0, (p - fpr) / (1 - fpr))


def upper_from_count(k_upper: int, n: int, fpr: float, level: float) -> float:
    """:func:`upper_from_counts` of one count (NaN without clips)."""
    return float(upper_from_counts(k_upper, n, fpr, level)) if n > 0 else math.nan


def upper(side: np.ndarray, other: np.ndarray, fpr: float, level: float,
          side_groups: np.ndarray | None = None) -> float:
    """One-sided ``level`` upper bound of the share of ``side`` separable above ``other``'s population
    (1 - ``fpr``) quantile (module docstring); with ``side_groups``, the counts are scaled by the design effect of
    the indicator "above the threshold" among them."""
    n, n_other = len(side), len(other)
    if n == 0 or n_other == 0:
        return math.nan
    beta = (1 - level) / 2
    jp = upper_allowed(n_other, fpr, beta)
    k = count_above(side, other, jp)
    deff = 1.0
    if side_groups is not None:
        deff = design_effect(np.asarray(side, float) > threshold(other, jp), side_groups)
    if deff <= 1.0:
        return upper_from_count(k, n, fpr, level)
    # fewer effective clips: the threshold moves down to the same guarantee on n_other / deff clips (its quantile
    # mapped back onto the real ones), and the count is scaled down with the side
    n_o = max(1, int(round(n_other / deff)))
    jq = upper_allowed(n_o, fpr, beta)
    j_real = min(n_other, math.ceil((jq + 1) * (n_other + 1) / (n_o + 1)) - 1)
    k = count_above(side, other, max(j_real, jp))
    n_e = max(1, int(round(n / deff)))
    return upper_from_count(int(math.ceil(k * n_e / n)), n_e, fpr, level)


def design_effect(indicator: np.ndarray, groups: np.ndarray | None) -> float:
    """Kish's design effect 1 + (m - 1) ICC of a 0/1 ``indicator`` over ``groups`` (1 without groups, and never
    below 1): m the size-weighted mean group size, ICC the one-way ANOVA estimate."""
    if groups is None:
        return 1.0
    x = np.asarray(indicator, dtype=float)
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    sizes = np.bincount(codes)
    g = len(sizes)
    n = len(x)
    if g < 2 or n <= g:
        return 1.0
    means = np.bincount(codes, weights=x) / sizes
    grand = x.mean()
    ss_between = float((sizes * (means - grand) ** 2).sum())
    ss_within = float(((x - means[codes]) ** 2).sum())
    msb, msw = ss_between / (g - 1), ss_within / (n - g)
    m0 = (n - (sizes ** 2).sum() / n) / (g - 1)
    icc = (msb - msw) / (msb + (m0 - 1) * msw) if msb + (m0 - 1) * msw > 0 else 0.0
    icc = min(max(icc, 0.0), 1.0)
    m_w = float((sizes ** 2).sum() / n)
    return max(1.0, 1 + (m_w - 1) * icc)


def lower_grouped(side: np.ndarray, other: np.ndarray, fpr: float, level: float,
                  side_groups: np.ndarray | None) -> float:
    """:func:`lower` on real scores, with the counts scaled by the design effect of the isolation indicator among
    the side's groups (none: exact)."""
    n, n_other = len(side), len(other)
    if n == 0 or n_other == 0:
        return math.nan
    j = allowed(n_other, fpr)
    k = count_above(side, other, j)
    deff = design_effect(np.asarray(side, float) > threshold(other, j), side_groups)
    if deff <= 1.0:
        return lower(k, n, n_other, j, level)
    n_e, n_oe = max(1, int(round(n / deff))), max(1, int(round(n_other / deff)))
    return lower(int(math.floor(k * n_e / n)), n_e, n_oe, allowed(n_oe, fpr), level)

