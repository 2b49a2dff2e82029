"""Attack vs blind: does a membership-inference attack find more than the blind classifier does?

Input: one or more attacks' per-clip scores (``mia_*`` columns of the manifest, or a scores file joined on
``id``) and a finished blind check on the same clips (out-of-fold blind scores, blind features, verdict).
Per attack, on the clips where both exist and the attack's score is finite:

- ``auc`` with a DeLong interval (cluster-robust with ``group_by``), TPR at 1% and 0.1% FPR, and the one-sided
  p-values of AUC > 0.5 and AUC < 0.5;
- ``blind_auc`` of the best blind model on the same clips and the paired DeLong test of attack vs blind
  (``delong_p``: one-sided, attack above blind);
- ``spearman`` / ``pearson`` against the out-of-fold blind score with stratified bootstrap intervals;
- the attack's signal *beyond* the confound: ``residual_auc``, the AUC of the attack score minus what a ridge
  regression on the blind features and a spline of the blind score predicts of it (out of fold, so no clip's
  prediction saw its own attack score), and ``stratified_auc``, the AUC within quantile strata of the blind
  score pooled with Mann-Whitney weights (van Elteren);
- ``status`` and ``reasons`` from :func:`attack_status`, a pure function of these numbers and the settings.

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


def _p_above(a: float, se: float) -> float:
    if not math.isfinite(se):
        return math.nan
    if se == 0:
        return 0.0 if a > 0.5 else 1.0
    return float(norm.sf((a - 0.5) / se))


def _folds(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None and len(np.unique(groups)) >= 2:
        k = min(folds, len(np.unique(groups)))
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, groups))
    k = max(2, min(folds, int(np.bincount(y).min())))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))


def residualize(s: np.ndarray, X: np.ndarray, blind: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                folds: int, seed: int) -> np.ndarray:
    """The attack score minus its out-of-fold prediction from the blind features and the blind score.

    The predictor is least squares on the blind score and a cubic spline of its rank (any smooth function of
    the blind score is removed in full), then a ridge regression (penalty by efficient leave-one-out CV) of what
    is left on the standardized features (medians imputed). ``s``: (n,), ``X``: (n, p) (p may be 0),
    ``blind``: (n,). Folds are stratified by label (grouped with ``groups``). Labels are never a regressor.
    """
    from threadpoolctl import threadpool_limits

    n = len(s)
    r = (rankdata(blind) - 0.5) / n
    bz = (blind - blind.mean()) / (blind.std() or 1.0)
    pred = np.empty(n)
    with threadpool_limits(1):  # small solves: threads only contend
        for train, test in _folds(y, groups, folds, seed):
            pred[test] = _ridge_fold(s, X, bz, r, train, test)
    return s - pred


def _ridge_fold(s: np.ndarray, X: np.ndarray, bz: np.ndarray, r: np.ndarray, train: np.ndarray, test: np.ndarray
                ) -> np.ndarray:
    """Out-of-fold prediction for ``test``: least squares on the blind score and its rank spline (unpenalised,
    so that the blind score's part is removed in full), then ridge on the features for what is left."""
    from sklearn.linear_model import LinearRegression, RidgeCV
    from sklearn.preprocessing import SplineTransformer, StandardScaler

    spl = SplineTransformer(n_knots=4, degree=3, extrapolation="linear").fit(r[train, None])
    btr = np.hstack([bz[train, None], spl.transform(r[train, None])])
    bte = np.hstack([bz[test, None], spl.transform(r[test, None])])
    first = LinearRegression().fit(btr, s[train])
    pred = first.predict(bte)
    if X.shape[1]:
        with warnings.catch_warnings():  # a feature with no value in the training fold: filled with 0 below
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(X[train], axis=0)
        med = np.where(np.isfinite(med), med, 0.0)
        xtr = np.where(np.isfinite(X[train]), X[train], med)
        xte = np.where(np.isfinite(X[test]), X[test], med)
        sc = StandardScaler().fit(xtr)
        left = s[train] - first.predict(btr)
        pred = pred + RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(np.nan_to_num(sc.transform(xtr)), left).predict(
            np.nan_to_num(sc.transform(xte)))
    return pred


def stratified_auc(y: np.ndarray, s: np.ndarray, blind: np.ndarray, strata: int) -> tuple[float, float, int, int]:
    """AUC of ``s`` within quantile strata of ``blind``, pooled with weights m_k x n_k (van Elteren).

    Returns (AUC, standard error, strata used, clips in them). Strata without two clips of each class carry no
    within-stratum comparison and are skipped; with none left the AUC is NaN.
    """
    y = np.asarray(y).astype(bool)
    edges = np.quantile(blind, np.linspace(0, 1, strata + 1)[1:-1])
    k = np.searchsorted(edges, blind, side="right")
    num = wsum = var = 0.0
    used = clips = 0
    for j in np.unique(k):
        idx = k == j
        m, n0 = int(y[idx].sum()), int((~y[idx]).sum())
        if m < 2 or n0 < 2:
            continue
        a, se = stats.delong(y[idx], s[idx])
        w = m * n0
        num += w * a
        wsum += w
        var += w * w * (se * se if math.isfinite(se) else 0.0)
        used += 1
        clips += int(idx.sum())
    if wsum == 0:
        return math.nan, math.nan, 0, 0
    return num / wsum, math.sqrt(var) / wsum, used, clips


def correlations(a: np.ndarray, b: np.ndarray, y: np.ndarray, reps: int, level: float, rng: np.random.Generator
               ) -> tuple[float, float, float, float, float, float]:
    """Spearman and Pearson of ``a`` and ``b`` with percentile bootstrap intervals (resampling within class)."""
    ra, rb = rankdata(a), rankdata(b)
    sp, pe = float(np.corrcoef(ra, rb)[0, 1]), float(pearsonr(a, b)[0])
    pos, neg = np.nonzero(y)[0], np.nonzero(~y.astype(bool))[0]
    idx = np.concatenate([pos[rng.integers(0, len(pos), (reps, len(pos)))],
                          neg[rng.integers(0, len(neg), (reps, len(neg)))]], axis=1)
    x1, x2 = a[idx], b[idx]
    pes = _rowcorr(x1, x2)
    sps = _rowcorr(rankdata(x1, axis=1), rankdata(x2, axis=1))
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
                   groups: np.ndarray | None = None, rng: np.random.Generator | None = None
                   ) -> tuple[dict[str, Any], np.ndarray]:
    """Every number of one attack (scores already oriented so that higher = member, all finite) and its
    residuals. Shapes: ``s``, ``y``, ``blind``: (n,); ``X``: (n, p)."""
    rng = rng or np.random.default_rng(settings.seed)
    level = 1 - settings.alpha
    y = np.asarray(y).astype(int)
    if int(y.sum()) < 2 or int((1 - y).sum()) < 2:
        raise BlindcheckError("an attack needs at least 2 scored members and 2 scored non-members")
    auc, lo, hi, se = stats.auc_ci(y, s, level, groups=groups)
    p_above = _p_above(auc, se)
    p_below = _p_above(1 - auc, se)
    blind_auc, blind_lo, blind_hi, _ = stats.auc_ci(y, blind, level, groups=groups)
    _, _, se_d, p_d = stats.delong_paired(y, s, blind, groups)
    zq = norm.ppf(0.5 + level / 2)
    sp, sp_lo, sp_hi, pe, pe_lo, pe_hi = correlations(s, blind, y, settings.correlation_bootstrap, level, rng)
    res = residualize(s, X, blind, y, groups, settings.folds, settings.seed)
    r_auc, r_lo, r_hi, r_se = stats.auc_ci(y, res, level, groups=groups)
    st_auc, st_se, st_used, st_clips = stratified_auc(y, s, blind, settings.attack_strata)
    n0 = int((1 - y).sum())
    m = {
        "n": int(len(y)), "members": int(y.sum()), "nonmembers": n0,
        "auc": auc, "ci_low": lo, "ci_high": hi, "se": se, "p_auc": p_above, "p_below_chance": p_below,
        "tpr_at_1pct_fpr": stats.tpr_at_fpr(y, s, 0.01), "tpr_at_01pct_fpr": stats.tpr_at_fpr(y, s, 0.001),
        "fpr_resolution": 1 / n0,
        "blind_auc": blind_auc, "blind_ci_low": blind_lo, "blind_ci_high": blind_hi,
        "auc_diff": auc - blind_auc, "auc_diff_ci_low": auc - blind_auc - zq * se_d,
        "auc_diff_ci_high": auc - blind_auc + zq * se_d, "delong_p": p_d,
        "spearman": sp, "spearman_ci_low": sp_lo, "spearman_ci_high": sp_hi,
        "pearson": pe, "pearson_ci_low": pe_lo, "pearson_ci_high": pe_hi,
        "residual_auc": r_auc, "residual_ci_low": r_lo, "residual_ci_high": r_hi, "residual_p": _p_above(r_auc, r_se),
        "stratified_auc": st_auc,
        "stratified_ci_low": max(0.0, st_auc - zq * st_se) if math.isfinite(st_se) else math.nan,
        "stratified_ci_high": min(1.0, st_auc + zq * st_se) if math.isfinite(st_se) else math.nan,
        "stratified_p": _p_above(st_auc, st_se), "strata_used": st_used, "strata_clips": st_clips,
    }
    return m, res


def attack_status(m: dict[str, Any], split_status: str, settings: Settings) -> tuple[str, list[str]]:
    """The status of one attack with its reasons. Pure: a function of :func:`attack_metrics`' numbers, the
    blind verdict's status and the settings (``alpha``, ``attack_rho``).

    In order: ``inverted-direction`` (AUC significantly below 0.5), ``no-signal`` (not significantly above
    0.5), ``confounded-attack`` (|Spearman| >= attack_rho, or the split is confounded and the blind AUC is not
    significantly below the attack's), ``beyond-blind`` (residual and stratified AUCs significantly above 0.5;
    the stratified one is not required where no stratum holds both sides), else ``unresolved``.
    """
    a, alpha = settings.alpha, settings.alpha
    ci = f"AUC {m['auc']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
    if m["p_below_chance"] < alpha:
        return INVERTED, [f"{ci} is significantly below 0.5 (p = {m['p_below_chance']:.2g}): the score's direction "
                          "looks inverted (flip it with lower-is-member), not weak"]
    if not m["p_auc"] < alpha:
        return NO_SIGNAL, [f"{ci} is not significantly above chance (p = {m['p_auc']:.2g})"]
    residual = (f"residual AUC {m['residual_auc']:.3f} [{m['residual_ci_low']:.3f}, {m['residual_ci_high']:.3f}] "
                "after removing what the blind features predict of the score")
    strat = (f"AUC within {m['strata_used']} strata of the blind score {m['stratified_auc']:.3f} "
             f"[{m['stratified_ci_low']:.3f}, {m['stratified_ci_high']:.3f}]")
    beyond_res = m["residual_p"] < alpha
    strat_defined = math.isfinite(m["stratified_p"])
    beyond_strat = strat_defined and m["stratified_p"] < alpha
    why = []
    if abs(m["spearman"]) >= settings.attack_rho:
        why.append(f"Spearman rho = {m['spearman']:.2f} [{m['spearman_ci_low']:.2f}, {m['spearman_ci_high']:.2f}] "
                   f"with the blind score: |rho| >= {settings.attack_rho}, the attack ranks clips much as a classifier "
                   "that never saw the model does")
    if split_status == "confounded" and not m["delong_p"] < a:
        why.append(f"the split is confounded and the blind baseline (AUC {m['blind_auc']:.3f}) is not significantly "
                   f"below the attack ({ci}; paired DeLong p = {m['delong_p']:.2g})")
    if why:
        if beyond_res:
            why.append(f"the attack does keep some signal beyond the confound: {residual}")
        return CONFOUNDED_ATTACK, why
    if beyond_res and (beyond_strat or not strat_defined):
        out = [f"{ci} with signal beyond the blind baseline: {residual}"]
        out.append(f"{strat}" if strat_defined else "no stratum of the blind score holds both sides; the residual "
                   "AUC alone carries the claim")
        return BEYOND_BLIND, out
    out = [f"{ci} is above chance, but not shown beyond what the blind features explain: {residual}"]
    if strat_defined:
        out.append(strat)
    return UNRESOLVED, out


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
        m, res = attack_metrics(s[ok], y[ok], blind[ok], X[ok], settings, None if g is None else g[ok], rng)
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
