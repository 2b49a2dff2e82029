"""Dataset inference (DI): was this *set* of clips used to train the model?

The published recipe (Maini et al. 2021/2024 for LLMs, carried over to audio generative models): a suspect
set (label 1, the claimed members) against reference non-members (label 0); one scalar score per clip — an
attack's score, or several attacks combined by a logistic regression fitted on a disjoint calibration half and
applied to the other half, averaged over random partitions — and Welch's one-sided t-test of "suspect scores
are higher" at level alpha. The evidence is summarised by the **minimal number of clips per side** that
rejects H0: for each n of a geometric grid, ``di_resamples`` random subsamples of n suspect and n reference clips
(without replacement), the rejection rate, and the smallest n whose rate reaches ``di_power`` (95%).

The same is run on the out-of-fold blind score. When the blind scorer needs no more clips than the attack, the
dataset-inference claim is explainable without the model.
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
    """Row-wise Welch test of (r, n1) against (r, n0)."""
    n1, n0 = a.shape[1], b.shape[1]
    v1, v0 = a.var(axis=1, ddof=1) / n1, b.var(axis=1, ddof=1) / n0
    se2 = v1 + v0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a.mean(axis=1) - b.mean(axis=1)) / np.sqrt(se2)
        df = se2 ** 2 / (v1 ** 2 / (n1 - 1) + v0 ** 2 / (n0 - 1))
    t = np.where(se2 > 0, t, 0.0)  # identical constant subsamples: no evidence
    df = np.where(se2 > 0, df, 1.0)
    return t, df, sst.t.sf(t, df)


def size_grid(n_max: int, points: int) -> np.ndarray:
    """Geometric grid of sample sizes per side from 2 to ``n_max``."""
    if n_max < 2:
        return np.array([], int)
    return np.unique(np.round(np.geomspace(2, n_max, points)).astype(int))


def rejection_curve(suspect: np.ndarray, reference: np.ndarray, alpha: float, resamples: int,
                    grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rejection rate of Welch's one-sided test at each n of ``grid``: ``resamples`` subsamples of n clips per
    side, drawn without replacement."""
    suspect, reference = np.asarray(suspect, float), np.asarray(reference, float)
    rates = np.empty(len(grid))
    for j, n in enumerate(grid):
        p = _welch(suspect[_draw(rng, len(suspect), n, resamples)], reference[_draw(rng, len(reference), n,
                                                                                      resamples)])[2]
        rates[j] = float((p <= alpha).mean())
    return rates


def _draw(rng: np.random.Generator, pool: int, n: int, rows: int) -> np.ndarray:
    """(rows, n) indices, each row n distinct draws from range(pool)."""
    if n * 10 < pool:  # few from many: per-row sampling without replacement is O(n)
        return np.stack([rng.choice(pool, n, replace=False) for _ in range(rows)])
    return np.argpartition(rng.random((rows, pool)), n - 1, axis=1)[:, :n]


def combine(scores: np.ndarray, labels: np.ndarray, partitions: int, rng: np.random.Generator) -> np.ndarray:
    """Several attacks' scores (n, k) -> one score per clip: a logistic regression fitted on one half of a
    random stratified partition scores the other half (and vice versa); each clip's score is the mean of its
    held-out scores over ``partitions`` partitions, so no clip is scored by a model fitted on it."""
    y = np.asarray(labels).astype(int)
    S = np.asarray(scores, float)
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    total = np.zeros(len(y))
    for _ in range(partitions):
        p, q = rng.permutation(pos), rng.permutation(neg)
        half_a = np.r_[p[: len(p) // 2], q[: len(q) // 2]]
        half_b = np.r_[p[len(p) // 2:], q[len(q) // 2:]]
        for cal, test in ((half_a, half_b), (half_b, half_a)):
            mu, sd = S[cal].mean(axis=0), S[cal].std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            w = logistic_fit((S[cal] - mu) / sd, y[cal])
            total[test] += w[0] + ((S[test] - mu) / sd) @ w[1:]
    return total / partitions


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

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["curve"] = [{"n": n, "rate": r} for n, r in zip(d.pop("grid"), d.pop("rates"), strict=True)]
        return d


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

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack.to_dict(), "blind": self.blind.to_dict() if self.blind else None,
                "combined_from": self.combined_from, "explainable_without_model": self.explainable_without_model,
                "reasons": self.reasons, "alpha": self.alpha, "power": self.power, "resamples": self.resamples,
                "seed": self.seed, "test": "Welch one-sided t-test, suspect (label 1) > reference (label 0)"}


def score_di(name: str, score: np.ndarray, labels: np.ndarray, settings: Settings, rng: np.random.Generator
             ) -> DIScorer:
    """Welch's test on every clip and the rejection curve over the size grid for one scalar score."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(score, float)
    a, b = s[y], s[~y]
    if len(a) < 2 or len(b) < 2:
        raise BlindcheckError(f"dataset inference needs at least 2 suspect and 2 reference clips with a score "
                              f"({name}: {len(a)} and {len(b)})")
    t, df, p = welch_one_sided(a, b)
    grid = size_grid(min(len(a), len(b)), settings.di_grid)
    rates = rejection_curve(a, b, settings.alpha, settings.di_resamples, grid, rng)
    hit = np.nonzero(rates >= settings.di_power)[0]
    return DIScorer(name, len(a), len(b), float(a.mean() - b.mean()), t, df, p, bool(p <= settings.alpha),
                    grid.tolist(), rates.tolist(), int(grid[hit[0]]) if len(hit) else None)


def dataset_inference(attacks: dict[str, np.ndarray], labels: np.ndarray, settings: Settings,
                      blind_score: np.ndarray | None = None, lower_is_member: tuple[str, ...] | list[str] = ()
                      ) -> DIResult:
    """Dataset inference for the attacks (one scalar score, combined when there are several) and, when given,
    for the blind score. ``attacks``: name -> raw scores (n,); clips with a non-finite score in any used attack
    are left out of the attack's test (counted in ``n_suspect`` / ``n_reference``)."""
    if not attacks:
        raise BlindcheckError("dataset inference needs at least one attack score")
    unknown = [a for a in lower_is_member if a not in attacks]
    if unknown:
        raise BlindcheckError(f"lower-is-member names unknown attack '{unknown[0]}' (attacks: {', '.join(attacks)})")
    y = np.asarray(labels).astype(int)
    names = list(attacks)
    S = np.column_stack([(-1.0 if n in lower_is_member else 1.0) * np.asarray(attacks[n], float) for n in names])
    ok = np.isfinite(S).all(axis=1)
    rng = np.random.default_rng(settings.seed + 7)
    if len(names) == 1:
        score, label = S[ok, 0], names[0]
    else:
        if int(y[ok].sum()) < 4 or int((1 - y[ok]).sum()) < 4:
            raise BlindcheckError("combining attacks needs at least 4 suspect and 4 reference clips scored by all")
        score, label = combine(S[ok], y[ok], settings.di_partitions, rng), "combined(" + ",".join(names) + ")"
    att = score_di(label, score, y[ok], settings, rng)
    blind = None
    if blind_score is not None:
        b = np.asarray(blind_score, float)
        okb = np.isfinite(b)
        blind = score_di("blind", b[okb], y[okb], settings, rng)
    explainable, reasons = di_reasons(att, blind, settings)
    return DIResult(att, blind, names if len(names) > 1 else [], explainable, reasons, settings.alpha,
                    settings.di_power, settings.di_resamples, settings.seed)


def di_reasons(att: DIScorer, blind: DIScorer | None, settings: Settings) -> tuple[bool | None, list[str]]:
    """Pure: whether the DI claim is explainable without the model, and why."""
    pw = f"{100 * settings.di_power:.0f}%"

    def need(d: DIScorer) -> str:
        return (f"{d.n_min} clips per side" if d.n_min is not None else
                f"more than the {min(d.n_suspect, d.n_reference)} clips per side available")

    reasons = [f"{att.name}: Welch one-sided p = {att.p:.2g} on all clips; rejects H0 in {pw} of subsamples with "
               f"{need(att)}"]
    if blind is None:
        return None, reasons
    reasons.append(f"blind score: p = {blind.p:.2g}; rejects in {pw} of subsamples with {need(blind)}")
    if blind.n_min is None:
        return False, reasons
    explainable = att.n_min is None or blind.n_min <= att.n_min
    if explainable:
        reasons.insert(0, "the blind scorer, which never saw the model, needs no more clips than the attack: the "
                          "dataset-inference claim is explainable without the model")
    return explainable, reasons


