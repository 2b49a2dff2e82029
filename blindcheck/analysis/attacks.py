"""Attack vs blind: does a membership-inference attack find more than the blind classifier does?

Input: one or more attacks' per-clip scores (``mia_*`` columns of the manifest, or a scores file joined on
``id``) and a finished blind check on the same clips (out-of-fold blind scores, blind features, verdict).
Per attack, on the clips where both exist and the attack's score is finite:

- ``auc`` with a DeLong interval (cluster-robust with ``group_by``), TPR at 1% and 0.1% FPR, and the one-sided
  p-values of AUC > 0.5 and AUC < 0.5;
- ``blind_auc`` of the best blind model on the same clips and the paired DeLong test of attack vs blind
  (``delong_p``: one-sided, attack above blind);
- ``spearman`` / ``pearson`` against the out-of-fold blind score with bootstrap intervals (within class, or of
  whole groups);
- the attack's signal *beyond* the confound: ``residual_auc``, the AUC of the attack score minus its
  cross-fitted prediction from the blind score (a spline of its rank) and the blind features that a plug-in
  lasso selects for the attack or for membership, refitted unpenalised (post-double-selection), and
  ``confound_inflation``, raw AUC minus residual AUC;
- whether the attack follows the audio: ``within_class_rho``, the within-class rank correlation of the attack
  with the cross-fitted membership prediction from the blind features, and its p-value;
- ``stratified_auc``, the AUC within quantile strata of the blind score pooled with Mann-Whitney weights (van
  Elteren), descriptive only;
- ``status`` and ``reasons`` from :func:`attack_status`, a pure function of these numbers and the settings.

With groups every interval and p-value is cluster-robust and Student's t on K - 1 degrees of freedom.

Direction: higher = member unless the attack is named in ``lower_is_member`` (losses, perplexities); the
scores are negated for those before any statistic, and ``direction`` records it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm, pearsonr, rankdata

from blindcheck.analysis import stats
from blindcheck.errors import BlindcheckError
from blindcheck.inputs.scores import IdMismatch
from blindcheck.settings import Settings

INVERTED, NO_SIGNAL, CONFOUNDED_ATTACK, BEYOND_BLIND, UNRESOLVED = (
    "inverted-direction", "no-signal", "confounded-attack", "beyond-blind", "unresolved")


# ---------------------------------------------------------------------------------------------------- inputs










# ------------------------------------------------------------------------------------------------ statistics
@dataclass
class AttackResult:
    name: str
    direction: str  # "higher-is-member" or "lower-is-member"
    metrics: dict[str, Any]
    status: str
    reasons: list[str]
    scores: np.ndarray = field(repr=False)  # oriented (higher = member), NaN where left out
    residuals: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "direction": self.direction, **self.metrics, "status": self.status,
                "reasons": self.reasons}


@dataclass
class CorrelateResult:
    attacks: list[AttackResult]
    ids: np.ndarray
    labels: np.ndarray
    blind_score: np.ndarray
    blind_model: str
    split_status: str
    mismatch: IdMismatch
    seed: int

    @property
    def confounded(self) -> list[str]:
        return [a.name for a in self.attacks if a.status == CONFOUNDED_ATTACK]

    def to_list(self) -> list[dict]:
        return [a.to_dict() for a in self.attacks]

    def frame(self) -> pd.DataFrame:
        """Per clip: id, label, blind score, each attack's raw score and its residual (``attacks.parquet``)."""
        df = pd.DataFrame({"id": self.ids, "label": self.labels, "blind_score": self.blind_score})
        for a in self.attacks:
            sign = -1.0 if a.direction == "lower-is-member" else 1.0
            df[a.name] = sign * a.scores
            df[f"{a.name}.residual"] = a.residuals
        return df


def _df(groups: np.ndarray | None) -> int | None:
    """Degrees of freedom of every grouped statistic: K - 1 over K groups (None: ungrouped, normal)."""
    return None if groups is None else max(len(np.unique(groups)) - 1, 1)


def _p_above(a: float, se: float, df: int | None = None, centre: float = 0.5) -> float:
    """One-sided p of a statistic above ``centre``: normal, or Student's t on ``df`` degrees of freedom (the
    distribution of the grouped intervals, so that p < alpha and the interval excluding ``centre`` agree)."""
    if not math.isfinite(se) or not math.isfinite(a):
        return math.nan
    if se == 0:
        return 0.0 if a > centre else 1.0
    z = (a - centre) / se
    if df is None:
        return float(norm.sf(z))
    from scipy.stats import t

    return float(t.sf(z, df))


def _codes(groups: np.ndarray | None) -> np.ndarray | None:
    return None if groups is None else np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]


def _concordance(y: np.ndarray, s: np.ndarray, codes: np.ndarray | None, k: int | None = None
                 ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mann-Whitney concordance count C (ties half) and pair count P of ``s`` (members over non-members), and
    with ``codes`` (a group index per clip) the same counts with each group left out in turn, (K,) each, in
    O(n log n): pairs that involve the group's members, plus those that involve its non-members, less those
    inside it. ``k``: the number of groups (default: the largest code + 1)."""
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    tz = rankdata(s)
    above = tz[y] - rankdata(s[y])  # per member: non-members it outranks
    below = m - (tz[~y] - rankdata(s[~y]))  # per non-member: members that outrank it
    c = float(above.sum())
    if codes is None:
        return c, float(m * n), np.empty(0), np.empty(0)
    k = int(codes.max()) + 1 if k is None else k
    inside = np.zeros(k)
    order = np.argsort(codes, kind="stable")
    cuts = np.searchsorted(codes[order], np.arange(k + 1))
    for g in range(k):
        idx = order[cuts[g]:cuts[g + 1]]
        yy = y[idx]
        mg = int(yy.sum())
        if mg and mg < len(yy):
            t = rankdata(s[idx])
            inside[g] = (t[yy] - rankdata(s[idx][yy])).sum()
    mk = np.bincount(codes[y], minlength=k)
    nk = np.bincount(codes[~y], minlength=k)
    c_out = c - np.bincount(codes[y], above, k) - np.bincount(codes[~y], below, k) + inside
    return c, float(m * n), c_out, ((m - mk) * (n - nk)).astype(float)


def _jackknife_se(full: float, left_out: np.ndarray) -> float:
    """Standard error from leave-one-group-out estimates (Tukey's jackknife over the groups that leave an
    estimate). With Student's t on K - 1 df it holds the size at K = 4..10 groups where the cluster-robust
    DeLong variance (Obuchowski) does not (6% at alpha = 5%; benchmarks/calibration_correlate.py)."""
    v = left_out[np.isfinite(left_out)]
    k = len(v)
    if k < 2 or not math.isfinite(full):
        return math.nan
    return float(math.sqrt((k - 1) / k * ((v - v.mean()) ** 2).sum()))


def _auc_se(y: np.ndarray, s: np.ndarray, codes: np.ndarray | None) -> tuple[float, float]:
    """AUC and its standard error: DeLong, or the jackknife over groups."""
    if codes is None:
        return stats.delong(y, s)
    c, p, c_out, p_out = _concordance(y, s, codes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return c / p, _jackknife_se(c / p, c_out / p_out)


def _diff_se(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, codes: np.ndarray | None) -> tuple[float, float]:
    """AUC(s1) - AUC(s2) on the same clips and its standard error: paired DeLong, or the jackknife over groups
    of the difference."""
    if codes is None:
        a1, a2, se, _ = stats.delong_paired(y, s1, s2)
        return a1 - a2, se
    c1, p, o1, q = _concordance(y, s1, codes)
    c2, _, o2, _ = _concordance(y, s2, codes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (c1 - c2) / p, _jackknife_se((c1 - c2) / p, (o1 - o2) / q)


def _interval(a: float, se: float, zq: float) -> tuple[float, float]:
    if not math.isfinite(se):
        return math.nan, math.nan
    return max(0.0, a - zq * se), min(1.0, a + zq * se)


def auc_interval(y: np.ndarray, s: np.ndarray, level: float, groups: np.ndarray | None = None
                 ) -> tuple[float, float, float, float, float, float]:
    """AUC, its two-sided ``level`` interval, standard error and the one-sided p-values of AUC > 0.5 and
    AUC < 0.5, all from one distribution: DeLong and the normal, or with ``groups`` the jackknife over the K
    groups and Student's t on K - 1 df (so the interval excludes 0.5 exactly when a p is below (1 - level)/2)."""
    df = _df(groups)
    a, se = _auc_se(y, s, _codes(groups))
    lo, hi = _interval(a, se, stats.quantile(0.5 + level / 2, df))
    return a, lo, hi, se, _p_above(a, se, df), _p_above(1 - a, se, df)


def _folds(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None and len(np.unique(groups)) >= 2:
        k = min(folds, len(np.unique(groups)))
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, groups))
    k = max(2, min(folds, int(np.bincount(y).min())))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))


def lasso_support(Z: np.ndarray, t: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Columns of ``Z`` that a lasso with the plug-in penalty of Belloni, Chen, Chernozhukov & Hansen (2012)
    keeps for predicting ``t``: penalty 1.1 sigma Phi^-1(1 - gamma / 2p) / sqrt(n), gamma = 0.1 / log n, sigma
    re-estimated from the least-squares refit on the kept columns until the support is stable. ``Z``: (n, p),
    columns centred with unit variance; ``t``: (n,). No cross-validation: the penalty dominates the noise, so
    columns kept by chance are rare and a column that carries ``t`` strongly is never dropped."""
    from sklearn.linear_model import Lasso

    n, p = Z.shape
    if p == 0 or n < 3:
        return np.array([], int)
    t = t - t.mean()
    unit = 1.1 * norm.ppf(1 - 0.1 / math.log(max(n, 3)) / (2 * p)) / math.sqrt(n)
    sigma = float(t.std())
    support = np.array([], int)
    for _ in range(iterations):
        if sigma <= 0:
            break
        with warnings.catch_warnings():  # a last duality gap above tol changes no support worth the time
            warnings.simplefilter("ignore")
            coef = Lasso(alpha=unit * sigma, fit_intercept=False, max_iter=2000, tol=1e-3).fit(Z, t).coef_
        new = np.flatnonzero(coef)
        if len(new):
            beta, *_ = np.linalg.lstsq(Z[:, new], t, rcond=None)
            rss = float(((t - Z[:, new] @ beta) ** 2).sum())
            sigma = math.sqrt(rss / max(n - len(new) - 1, 1))
        if np.array_equal(new, support):
            break
        support = new
    return support


@dataclass
class _Fold:
    train: np.ndarray
    test: np.ndarray
    label_support: np.ndarray  # features the lasso keeps for membership (the second selection)


@dataclass
class ResidualDesign:
    """What the residualisation of every attack on the same clips shares: the folds with the features selected
    for membership in each, the blind score's parts and the out-of-fold membership prediction from the blind
    score and features (``membership``, (n,)). The fold matrices are rebuilt per attack (O(n p)), not kept."""

    folds: list[_Fold]
    membership: np.ndarray
    bz: np.ndarray = field(repr=False)  # standardised blind score
    rank: np.ndarray = field(repr=False)  # its rank, in (0, 1)


@dataclass
class _Matrices:
    btr: np.ndarray  # intercept, blind score and its rank spline (training clips)
    bte: np.ndarray
    q: np.ndarray  # orthonormal basis of btr
    xtr: np.ndarray  # features, imputed and standardised on the training clips
    xte: np.ndarray
    zr: np.ndarray  # training features with the blind part projected out, unit variance (the lasso's design)


def _matrices(X: np.ndarray, bz: np.ndarray, rank: np.ndarray, train: np.ndarray, test: np.ndarray) -> _Matrices:
    from sklearn.preprocessing import SplineTransformer

    spl = SplineTransformer(n_knots=4, degree=3, extrapolation="linear").fit(rank[train, None])
    btr = np.hstack([np.ones((len(train), 1)), bz[train, None], spl.transform(rank[train, None])])
    bte = np.hstack([np.ones((len(test), 1)), bz[test, None], spl.transform(rank[test, None])])
    q = np.linalg.qr(btr)[0]
    xtr, xte = _standardise(X[train], X[test])
    zr = xtr - q @ (q.T @ xtr)
    sd = zr.std(axis=0)
    keep = sd > 1e-9 * max(1.0, float(sd.max(initial=0.0)))
    zr = np.where(keep, zr / np.where(keep, sd, 1.0), 0.0)
    return _Matrices(btr, bte, q, xtr, xte, zr)


def residual_design(X: np.ndarray, blind: np.ndarray, y: np.ndarray, groups: np.ndarray | None, folds: int,
                    seed: int) -> ResidualDesign:
    """The cross-fitting of :func:`residualize`, fitted once for the clips (it does not depend on the attack).

    Per fold (stratified by label, grouped with ``groups``): the blind design (intercept, the standardised blind
    score, a cubic spline of its rank), the features (training medians imputed, standardised), the features
    that a plug-in lasso keeps for membership once the blind part is removed, and the out-of-fold membership
    prediction: least squares of the label on the blind design and those features."""
    from threadpoolctl import threadpool_limits

    n = len(y)
    X = np.asarray(X, float).reshape(n, -1)
    rank = (rankdata(blind) - 0.5) / n
    bz = (blind - blind.mean()) / (blind.std() or 1.0)
    yf = np.asarray(y, float)
    membership = np.empty(n)
    out = []
    with threadpool_limits(1):  # small solves: threads only contend
        for train, test in _folds(np.asarray(y).astype(int), groups, folds, seed):
            mx = _matrices(X, bz, rank, train, test)
            t = yf[train]
            support = lasso_support(mx.zr, t - mx.q @ (mx.q.T @ t))
            membership[test] = _refit(mx, t, support)
            out.append(_Fold(train, test, support))
    return ResidualDesign(out, membership, bz, rank)


def _standardise(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not xtr.shape[1]:
        return xtr, xte
    with warnings.catch_warnings():  # a feature with no value in the training fold: filled with 0
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(xtr, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    xtr = np.where(np.isfinite(xtr), xtr, med)
    xte = np.where(np.isfinite(xte), xte, med)
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (xtr - mu) / sd, (xte - mu) / sd


def _refit(mx: _Matrices, t: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Least squares of ``t`` (training clips) on the blind design and the ``support`` features, unpenalised
    (what is removed is removed in full); the prediction for the fold's test clips. At most a quarter of the
    training clips in columns: beyond that, the features most correlated with ``t`` (blind part removed)."""
    cap = max(1, len(t) // 4 - mx.btr.shape[1])
    if len(support) > cap:
        left = t - mx.q @ (mx.q.T @ t)
        score = np.abs(mx.zr[:, support].T @ left)
        support = support[np.argsort(-score, kind="stable")[:cap]]
    a = np.hstack([mx.btr, mx.xtr[:, support]])
    beta, *_ = np.linalg.lstsq(a, t, rcond=None)
    return np.hstack([mx.bte, mx.xte[:, support]]) @ beta


def residualize(s: np.ndarray, X: np.ndarray, blind: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                folds: int, seed: int, design: ResidualDesign | None = None, info: dict | None = None) -> np.ndarray:
    """The attack score minus its out-of-fold prediction from the blind score and the blind features.

    Post-double-selection (Belloni, Chernozhukov & Hansen 2014), cross-fitted: in each training fold the
    features a plug-in lasso keeps for the attack's score and those it keeps for membership (both once the blind
    score and a cubic spline of its rank are removed) enter one unpenalised least-squares fit together with the
    blind design; its prediction for the held-out clips is removed. Unpenalised, so a confound the attack
    follows is removed in full, not shrunk (a ridge over hundreds of features leaves part of it in the
    residual, and the residual AUC then reports it as signal beyond the blind baseline); selected twice, so a
    feature that separates members strongly is removed even where the attack carries it weakly. ``s``: (n,),
    ``X``: (n, p) (p may be 0), ``blind``: (n,). Labels are never a regressor of the attack. ``design``: from
    :func:`residual_design` on the same clips (built here if None). ``info``, if given, receives
    ``features_removed``, the mean number of features per fold in the refit.
    """
    design = design or residual_design(X, blind, y, groups, folds, seed)
    from threadpoolctl import threadpool_limits

    s = np.asarray(s, float)
    X = np.asarray(X, float).reshape(len(s), -1)
    pred = np.empty(len(s))
    used = []
    with threadpool_limits(1):
        for fold in design.folds:
            mx = _matrices(X, design.bz, design.rank, fold.train, fold.test)
            t = s[fold.train]
            support = np.union1d(lasso_support(mx.zr, t - mx.q @ (mx.q.T @ t)), fold.label_support)
            pred[fold.test] = _refit(mx, t, support)
            used.append(len(support))
    if info is not None:
        info["features_removed"] = float(np.mean(used)) if used else 0.0
    return s - pred


def within_class_association(s: np.ndarray, g: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
                             ) -> tuple[float, float]:
    """Pooled within-class Spearman correlation of ``s`` with ``g`` and its one-sided p-value (positive).

    Ranks are standardised within each class; the statistic is their mean product. Under independence of ``s``
    and ``g`` given the label its variance is known from the within-class permutation distribution
    (sum over classes of n_c^2 / (n_c - 1), normal limit); with ``groups`` the products are summed per group
    and the variance taken across groups (Student's t on K - 1 degrees of freedom)."""
    y = np.asarray(y).astype(bool)
    u, v = np.zeros(len(y)), np.zeros(len(y))
    var = 0.0
    for c in (y, ~y):
        nc = int(c.sum())
        if nc < 3:
            continue
        a, b = rankdata(s[c]), rankdata(g[c])
        if a.std() == 0 or b.std() == 0:
            continue
        u[c], v[c] = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
        var += nc * nc / (nc - 1)
    prod = u * v
    rho = float(prod.mean())
    if var == 0:
        return math.nan, math.nan
    if groups is None:
        return rho, _p_above(float(prod.sum()), math.sqrt(var), None, 0.0)
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    k = int(codes.max()) + 1
    if k < 2:
        return rho, math.nan
    tot = np.bincount(codes, prod, k)
    se = math.sqrt(k / (k - 1) * ((tot - tot.mean()) ** 2).sum())
    return rho, _p_above(float(tot.sum()), se, k - 1, 0.0)


def stratified_auc(y: np.ndarray, s: np.ndarray, blind: np.ndarray, strata: int, groups: np.ndarray | None = None
                   ) -> tuple[float, float, int, int]:
    """AUC of ``s`` within quantile strata of ``blind``, pooled with weights m_k x n_k (van Elteren).

    Returns (AUC, standard error, strata used, clips in them). Strata without two clips of each class carry no
    within-stratum comparison and are skipped; with none left the AUC is NaN. The standard error is DeLong's
    per stratum, pooled; with ``groups`` the jackknife over the groups (a group spans strata, so its clips'
    errors are shared between them).
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, float)
    codes = _codes(groups)
    edges = np.quantile(blind, np.linspace(0, 1, strata + 1)[1:-1])
    k = np.searchsorted(edges, blind, side="right")
    num = wsum = var = 0.0
    c_out = p_out = 0.0
    used = clips = 0
    for j in np.unique(k):
        idx = k == j
        m, n0 = int(y[idx].sum()), int((~y[idx]).sum())
        if m < 2 or n0 < 2:
            continue
        w = m * n0
        if codes is None:
            a, se = stats.delong(y[idx], s[idx])
            num += w * a
            var += w * w * (se * se if math.isfinite(se) else 0.0)
        else:
            c, _, co, po = _concordance(y[idx], s[idx], codes[idx], int(codes.max()) + 1)
            num += c
            c_out, p_out = c_out + co, p_out + po
        wsum += w
        used += 1
        clips += int(idx.sum())
    if wsum == 0:
        return math.nan, math.nan, 0, 0
    if codes is None:
        return num / wsum, math.sqrt(var) / wsum, used, clips
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / wsum, _jackknife_se(num / wsum, np.asarray(c_out) / np.asarray(p_out)), used, clips


def correlations(a: np.ndarray, b: np.ndarray, y: np.ndarray, reps: int, level: float, rng: np.random.Generator,
                 groups: np.ndarray | None = None) -> tuple[float, float, float, float, float, float]:
    """Spearman and Pearson of ``a`` and ``b`` with percentile bootstrap intervals: resampling within class, or
    whole groups with ``groups`` (clips of one speaker are not independent draws)."""
    ra, rb = rankdata(a), rankdata(b)
    sp, pe = float(np.corrcoef(ra, rb)[0, 1]), float(pearsonr(a, b)[0])
    if groups is None:
        pos, neg = np.nonzero(y)[0], np.nonzero(~y.astype(bool))[0]
        idx = np.concatenate([pos[rng.integers(0, len(pos), (reps, len(pos)))],
                              neg[rng.integers(0, len(neg), (reps, len(neg)))]], axis=1)
        pes = _rowcorr(a[idx], b[idx])
        sps = _rowcorr(rankdata(a[idx], axis=1), rankdata(b[idx], axis=1))
    else:
        codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
        members = [np.flatnonzero(codes == g) for g in range(int(codes.max()) + 1)]
        pes, sps = np.full(reps, np.nan), np.full(reps, np.nan)
        for i in range(reps):  # resamples of whole groups differ in size: one at a time
            idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
            x1, x2 = a[idx], b[idx]
            pes[i] = _rowcorr(x1[None], x2[None])[0]
            sps[i] = _rowcorr(rankdata(x1)[None], rankdata(x2)[None])[0]
    q = [0.5 - level / 2, 0.5 + level / 2]
    s_lo, s_hi = np.nanquantile(sps, q)
    p_lo, p_hi = np.nanquantile(pes, q)
    return sp, float(s_lo), float(s_hi), pe, float(p_lo), float(p_hi)


def _rowcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def attack_metrics(s: np.ndarray, y: np.ndarray, blind: np.ndarray, X: np.ndarray, settings: Settings,
                   groups: np.ndarray | None = None, rng: np.random.Generator | None = None,
                   design: ResidualDesign | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Every number of one attack (scores already oriented so that higher = member, all finite) and its
    residuals. Shapes: ``s``, ``y``, ``blind``: (n,); ``X``: (n, p). ``design``: :func:`residual_design` of
    the same clips, shared between attacks (built here if None). With ``groups`` every interval and p-value is
    Student's t on K - 1 degrees of freedom, over the K groups."""
    rng = rng or np.random.default_rng(settings.seed)
    level = 1 - settings.alpha
    y = np.asarray(y).astype(int)
    if int(y.sum()) < 2 or int((1 - y).sum()) < 2:
        raise BlindcheckError("an attack needs at least 2 scored members and 2 scored non-members")
    df = _df(groups)
    codes = _codes(groups)
    zq = stats.quantile(0.5 + level / 2, df)
    auc, lo, hi, se, p_above, p_below = auc_interval(y, s, level, groups)
    blind_auc, blind_se = _auc_se(y, blind, codes)
    blind_lo, blind_hi = _interval(blind_auc, blind_se, zq)
    d_blind, se_d = _diff_se(y, s, blind, codes)
    sp, sp_lo, sp_hi, pe, pe_lo, pe_hi = correlations(s, blind, y, settings.correlation_bootstrap, level, rng, groups)
    design = design or residual_design(X, blind, y, groups, settings.folds, settings.seed)
    info: dict = {}
    res = residualize(s, X, blind, y, groups, settings.folds, settings.seed, design, info)
    r_auc, r_se = _auc_se(y, res, codes)
    r_lo, r_hi = _interval(r_auc, r_se, zq)
    infl, se_i = _diff_se(y, s, res, codes)
    w_rho, w_p = within_class_association(s, design.membership, y, groups)
    st_auc, st_se, st_used, st_clips = stratified_auc(y, s, blind, settings.attack_strata, groups)
    n0 = int((1 - y).sum())
    m = {
        "n": int(len(y)), "members": int(y.sum()), "nonmembers": n0,
        "clusters": None if df is None else df + 1,
        "auc": auc, "ci_low": lo, "ci_high": hi, "se": se, "p_auc": p_above, "p_below_chance": p_below,
        "tpr_at_1pct_fpr": stats.tpr_at_fpr(y, s, 0.01), "tpr_at_01pct_fpr": stats.tpr_at_fpr(y, s, 0.001),
        "fpr_resolution": 1 / n0,
        "blind_auc": blind_auc, "blind_ci_low": blind_lo, "blind_ci_high": blind_hi,
        "auc_diff": d_blind, "auc_diff_ci_low": d_blind - zq * se_d, "auc_diff_ci_high": d_blind + zq * se_d,
        "delong_p": _p_above(d_blind, se_d, df, 0.0),
        "spearman": sp, "spearman_ci_low": sp_lo, "spearman_ci_high": sp_hi,
        "pearson": pe, "pearson_ci_low": pe_lo, "pearson_ci_high": pe_hi,
        "residual_auc": r_auc, "residual_ci_low": r_lo, "residual_ci_high": r_hi,
        "residual_p": _p_above(r_auc, r_se, df), "residual_features": info["features_removed"],
        "confound_inflation": infl, "confound_inflation_ci_low": infl - zq * se_i,
        "confound_inflation_ci_high": infl + zq * se_i,
        "within_class_rho": w_rho, "within_class_p": w_p,
        "stratified_auc": st_auc,
        "stratified_ci_low": max(0.0, st_auc - zq * st_se) if math.isfinite(st_se) else math.nan,
        "stratified_ci_high": min(1.0, st_auc + zq * st_se) if math.isfinite(st_se) else math.nan,
        "stratified_p": _p_above(st_auc, st_se, df), "strata_used": st_used, "strata_clips": st_clips,
    }
    return m, res


def attack_status(m: dict[str, Any], split_status: str, settings: Settings) -> tuple[str, list[str]]:
    """The status of one attack with its reasons. Pure: a function of :func:`attack_metrics`' numbers, the
    blind verdict's status and the settings (``alpha``, ``attack_rho``).

    The status describes the attack, not the split (whether the split is confounded is the verdict's). In order:
    ``inverted-direction`` (AUC significantly below 0.5), ``no-signal`` (not significantly above 0.5); then the
    residual evidence decides: ``beyond-blind`` (residual AUC significantly above 0.5: membership signal that the
    blind score and features do not explain), ``confounded-attack`` (no such signal, and within each class the
    attack's score follows the blind features' prediction of membership: ``within_class_p`` < alpha; under an
    attack independent of the audio given membership, noise included, this happens at rate alpha at most),
    else ``unresolved``. The reasons give the raw AUC against the residual AUC (how far the blind features
    inflate the raw one) and, where |Spearman| >= ``attack_rho``, that the attack ranks clips as the blind
    classifier does.
    """
    alpha = settings.alpha
    ci = f"AUC {m['auc']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
    if m["p_below_chance"] < alpha:
        return INVERTED, [f"{ci} is significantly below 0.5 (p = {m['p_below_chance']:.2g}): the score's direction "
                          "looks inverted (flip it with lower-is-member), not weak"]
    if not m["p_auc"] < alpha:
        return NO_SIGNAL, [f"{ci} is not significantly above chance (p = {m['p_auc']:.2g})"]
    removed = m.get("residual_features")
    what = ("the blind score predicts" if not removed else
            f"the blind score and {removed:.3g} selected blind feature{'s' if removed != 1 else ''} (mean per fold) "
            "predict")
    residual = (f"residual AUC {m['residual_auc']:.3f} [{m['residual_ci_low']:.3f}, {m['residual_ci_high']:.3f}] "
                f"(p = {m['residual_p']:.2g}) after removing what {what} of the score")
    infl = m.get("confound_inflation", m["auc"] - m["residual_auc"])
    inflation = f"the blind features account for {infl:+.3f} of the raw AUC ({m['auc']:.3f} -> {m['residual_auc']:.3f}"
    if math.isfinite(m.get("confound_inflation_ci_low", math.nan)):
        inflation += f"; {m['confound_inflation_ci_low']:+.3f} to {m['confound_inflation_ci_high']:+.3f}"
    inflation += ")"
    rho_note = (f"Spearman rho = {m['spearman']:.2f} [{m['spearman_ci_low']:.2f}, {m['spearman_ci_high']:.2f}] "
                f"with the blind score: |rho| >= {settings.attack_rho}, the attack ranks clips much as a classifier "
                "that never saw the model does") if abs(m["spearman"]) >= settings.attack_rho else None
    w_p = m.get("within_class_p", math.nan)
    within = (f"within each class the attack's score follows the blind features' prediction of membership "
              f"(within-class Spearman rho = {m['within_class_rho']:.2f}, p = {w_p:.2g})") if math.isfinite(w_p) \
        else None
    strat = None
    if math.isfinite(m["stratified_p"]):
        strat = (f"AUC within {m['strata_used']} strata of the blind score {m['stratified_auc']:.3f} "
                 f"[{m['stratified_ci_low']:.3f}, {m['stratified_ci_high']:.3f}] (descriptive: a confound the best "
                 "model does not carry stays inside each stratum)")
    split_note = ("the split itself is confounded (see the verdict): compare attacks on it by their residual AUC, "
                  "not the raw one") if split_status == "confounded" else None
    if m["residual_p"] < alpha:
        out = [f"{ci} keeps membership signal beyond the blind baseline: {residual}", inflation]
        if w_p < alpha:
            out.append(f"part of it is the confound: {within}")
        out += [x for x in (rho_note, split_note, strat) if x]
        return BEYOND_BLIND, out
    if w_p < alpha:
        out = [x for x in (rho_note, within, inflation) if x]
        out.append(f"no signal shown beyond the confound: {residual}")
        return CONFOUNDED_ATTACK, out + [x for x in (split_note, strat) if x]
    out = [f"{ci} is above chance, but not shown beyond what the blind features explain: {residual}", inflation]
    if within:
        out.append(f"nor shown to follow the audio: {within.replace('follows', 'does not significantly follow')}")
    return UNRESOLVED, out + [x for x in (rho_note, split_note, strat) if x]


# --------------------------------------------------------------------------------------------------- the verb
def correlate_attacks(
    attacks: dict[str, np.ndarray],
    labels: np.ndarray,
    blind_score: np.ndarray,
    features: np.ndarray,
    settings: Settings,
    *,
    ids: np.ndarray,
    lower_is_member: tuple[str, ...] | list[str] = (),
    groups: np.ndarray | None = None,
    split_status: str = "clean",
    blind_model: str = "",
    mismatch: IdMismatch | None = None,
) -> CorrelateResult:
    """Every attack against the blind score. ``attacks``: name -> raw scores (n,), NaN/inf where missing;
    ``features``: (n, p) blind features; the rest (n,). Non-finite scores are left out of that attack only and
    counted (``n_missing``, ``n_nonfinite``)."""
    unknown = [a for a in lower_is_member if a not in attacks]
    if unknown:
        raise BlindcheckError(f"lower-is-member names unknown attack '{unknown[0]}' (attacks: {', '.join(attacks)})")
    y = np.asarray(labels).astype(int)
    blind = np.asarray(blind_score, float)
    X = np.asarray(features, float).reshape(len(y), -1)
    g = None if groups is None else np.asarray(groups).astype(str)
    out = []
    designs: dict[bytes, ResidualDesign] = {}  # one cross-fitting per set of scored clips, shared by its attacks
    for k, (name, raw) in enumerate(attacks.items()):
        raw = np.asarray(raw, float)
        lower = name in lower_is_member
        ok = np.isfinite(raw)
        if int(y[ok].sum()) < 2 or int((1 - y[ok]).sum()) < 2:
            raise BlindcheckError(f"attack '{name}': only {int(ok.sum())} clips have a finite score "
                                  f"({int(y[ok].sum())} members, {int((1 - y[ok]).sum())} non-members); "
                                  "it needs at least 2 of each")
        s = np.where(ok, -raw if lower else raw, np.nan)
        rng = np.random.default_rng(settings.seed + 101 * (k + 1))
        gk = None if g is None else g[ok]
        key = np.packbits(ok).tobytes()
        if key not in designs:
            designs[key] = residual_design(X[ok], blind[ok], y[ok], gk, settings.folds, settings.seed)
        m, res = attack_metrics(s[ok], y[ok], blind[ok], X[ok], settings, gk, rng, designs[key])
        m = {"n_missing": int(np.isnan(raw).sum()), "n_nonfinite": int(np.isinf(raw).sum()), **m}
        status, reasons = attack_status(m, split_status, settings)
        if m["n_missing"] or m["n_nonfinite"]:
            reasons.append(f"{m['n_missing']} clips without a score and {m['n_nonfinite']} with an infinite one are "
                           "left out of this attack")
        resid = np.full(len(y), np.nan)
        resid[ok] = res
        out.append(AttackResult(name, "lower-is-member" if lower else "higher-is-member", m, status, reasons, s,
                                resid))
    return CorrelateResult(out, np.asarray(ids), y, blind, blind_model, split_status, mismatch or IdMismatch(),
                           settings.seed)
