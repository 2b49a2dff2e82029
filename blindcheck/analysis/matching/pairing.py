"""Pairing on a blind score: the logit and its caliper, greedy nearest-neighbour and optimal (assignment) pairs,
and the score region both sides share (what trimming keeps). Pure numpy/scipy; no settings, no verdicts."""

from __future__ import annotations

import math

import numpy as np

OPTIMAL_MAX_CELLS = 25_000_000  # pairs in one assignment problem (a float64 cost matrix of 200 MB)
TRIM_QUANTILE = 0.01
BIG_COST = 1e9


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def caliper_width(lg: np.ndarray, y: np.ndarray, sd_units: float) -> float:
    """``sd_units`` times the pooled SD of the logit score (root mean of the two sides' variances)."""
    a, b = lg[y == 1], lg[y == 0]
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if len(a) > 1 and len(b) > 1 else 0.0
    return sd_units * pooled if pooled > 0 else 1e-9


class _Free:
    """Sorted positions that are still free, with nearest-free lookups left and right (path-compressed
    union-find over "next free at or after i" and "at or before i")."""

    def __init__(self, n: int):
        self.right = list(range(n + 1))  # n: sentinel (none to the right)
        self.left = list(range(n + 1))  # index i+1 holds position i; 0: sentinel (none to the left)

    def _find(self, parent: list[int], i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def next_right(self, i: int) -> int:
        return self._find(self.right, i)

    def next_left(self, i: int) -> int:
        return self._find(self.left, i + 1) - 1

    def take(self, i: int) -> None:
        self.right[i] = i + 1
        self.left[i + 1] = i


def greedy_pairs(t_score: np.ndarray, c_score: np.ndarray, caliper: float, ratio: int,
                 rng: np.random.Generator) -> list[tuple[int, int]]:
    """Nearest-neighbour 1:``ratio`` matching without replacement on a 1-d score within ``caliper``:
    in each of ``ratio`` rounds every treated unit (seeded random order) takes its nearest free control.
    Returns (treated index, control index) pairs. O((n_t ratio + n_c) log n_c)."""
    order = np.argsort(c_score, kind="mergesort")
    cs = c_score[order]
    free = _Free(len(cs))
    pairs: list[tuple[int, int]] = []
    active = np.ones(len(t_score), bool)
    for _ in range(ratio):
        for t in rng.permutation(len(t_score)):
            if not active[t]:
                continue
            x = t_score[t]
            p = int(np.searchsorted(cs, x))
            r = free.next_right(p) if p <= len(cs) else len(cs)
            lft = free.next_left(p - 1) if p > 0 else -1
            cands = [(abs(cs[j] - x), j) for j in (lft, r) if 0 <= j < len(cs)]
            if not cands:
                active[t] = False
                continue
            d, j = min(cands)
            if d > caliper:
                active[t] = False  # a later round cannot find a closer free partner
                continue
            free.take(j)
            pairs.append((int(t), int(order[j])))
    return pairs


def optimal_pairs(t_feat: np.ndarray, c_feat: np.ndarray, t_score: np.ndarray, c_score: np.ndarray,
                  caliper: float, ratio: int, forbid: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Minimum total feature distance assignment (``scipy.optimize.linear_sum_assignment``), each treated
    unit taking up to ``ratio`` controls, pairs outside the score caliper (or ``forbid``den) excluded."""
    from scipy.optimize import linear_sum_assignment

    cost = _distances(t_feat, c_feat)
    bad = np.abs(t_score[:, None] - c_score[None, :]) > caliper
    if forbid is not None:
        bad |= forbid
    cost[bad] = BIG_COST
    reps = min(ratio, max(1, len(c_score) // max(len(t_score), 1)))
    big = np.repeat(cost, reps, axis=0)
    rows, cols = linear_sum_assignment(big)
    return [(int(r // reps), int(c)) for r, c in zip(rows, cols, strict=True) if big[r, c] < BIG_COST]


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape[1] == 0:
        return np.zeros((len(a), len(b)))
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0) / a.shape[1])


def standardised(X: np.ndarray) -> np.ndarray:
    """Median-imputed, z-scored features; constant columns dropped."""
    with np.errstate(all="ignore"):
        med = np.nanmedian(X, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    Z = np.where(np.isfinite(X), X, med)
    sd = Z.std(axis=0)
    ok = sd > 0
    return (Z[:, ok] - Z[:, ok].mean(axis=0)) / sd[ok]


def greedy_pairs_forbidding(t: np.ndarray, c: np.ndarray, cal: float, ratio: int, forbid: np.ndarray,
                            rng: np.random.Generator) -> list[tuple[int, int]]:
    """:func:`greedy_pairs` on a dense distance matrix, skipping the (treated, control) pairs ``forbid`` marks
    (small strata only: O(n_t n_c))."""
    dist = np.abs(t[:, None] - c[None, :])
    dist[forbid] = np.inf
    used = np.zeros(len(c), bool)
    pairs = []
    for _ in range(ratio):
        for ti in rng.permutation(len(t)):
            row = np.where(used, np.inf, dist[ti])
            j = int(np.argmin(row))
            if row[j] <= cal:
                used[j] = True
                pairs.append((int(ti), j))
    return pairs


def shared_region(a: np.ndarray, b: np.ndarray, q: float = TRIM_QUANTILE) -> tuple[float, float]:
    """The region of (logit) blind score both sides share: from the higher of the two sides' ``q`` quantiles to
    the lower of their ``1 - q`` quantiles (empty when ``lo > hi``). What trimming keeps."""
    return (float(max(np.quantile(a, q), np.quantile(b, q))), float(min(np.quantile(a, 1 - q), np.quantile(b, 1 - q))))


def from_logit(lg: float) -> float:
    """The probability of a logit (0 and 1 at the infinities)."""
    return float(1 / (1 + math.exp(-lg))) if math.isfinite(lg) else (1.0 if lg > 0 else 0.0)

