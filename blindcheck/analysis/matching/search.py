"""The search for a matched subset: each method's attempt (pairs, support refinement, trimming), its fresh
verification by a new blind check, the choice among attempts, the disentanglement design and the result types.
See :mod:`blindcheck.analysis.matching` for the methods and the acceptance rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from blindcheck.analysis import stats
from blindcheck.analysis.matching.balance import SMD_BALANCED, balance_summary, balance_table, records, smd
from blindcheck.analysis.matching.pairing import (
    OPTIMAL_MAX_CELLS,
    TRIM_QUANTILE,
    caliper_width,
    from_logit,
    greedy_pairs,
    greedy_pairs_forbidding,
    logit,
    optimal_pairs,
    shared_region,
    standardised,
)
from blindcheck.analysis.metadata import manifest_evidence
from blindcheck.analysis.separability import SeparabilityResult, feature_columns, run_separability
from blindcheck.analysis.speakers import speaker_report
from blindcheck.analysis.verdict import CLEAN, Verdict, decide, fmt_value, percent
from blindcheck.errors import BlindcheckError
from blindcheck.settings import Settings, smallest_permutations

PAIR_GROUPS = "matched pair"  # what the fresh re-check of a paired subset groups its folds by
METHODS = ("optimal", "propensity", "trim")  # the order tried when none is named
DESIGNS = ("subset", "disentangle")
FRESH_SEED_OFFSET = 1_000_003  # the fresh check's seed is the run's seed plus this: new folds, new models
REFINE_FROM = 0.25  # support refinement acts on features with |SMD| at least this before matching
REFINE_Z = 5.0  # and drops sets holding a clip this many robust SDs from the other side's median


@dataclass(frozen=True)
class MatchOptions:
    """What to match on. Numeric thresholds (caliper, ratio, target AUC, minimum retained share) live in
    :class:`~blindcheck.settings.Settings` (``match_*``)."""

    method: str | None = None  # None: optimal, then propensity, then trim (METHODS)
    exact: tuple[str, ...] = ()  # metadata columns matched exactly
    design: str = "subset"  # "subset" or "disentangle"

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in METHODS:
            raise BlindcheckError(f"unknown match method '{self.method}' (known: {', '.join(METHODS)})")
        if self.design not in DESIGNS:
            raise BlindcheckError(f"unknown match design '{self.design}' (known: {', '.join(DESIGNS)})")


@dataclass
class Attempt:
    """One candidate subset, its verification and why it was accepted or not."""

    method: str
    keep: np.ndarray = field(repr=False)  # bool over the feature table's rows
    match_id: np.ndarray = field(repr=False)  # int, -1 where no pair/set (dropped, or trimming)
    dropped: np.ndarray = field(repr=False)  # str reason per row, "" where kept
    retained: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)  # the original OOF scores on the kept clips
    fresh: SeparabilityResult | None = field(default=None, repr=False)
    verdict: Verdict | None = None
    balance: pd.DataFrame | None = field(default=None, repr=False)
    success: bool = False
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        v = self.verdict
        fresh = None
        if v is not None and self.fresh is not None:
            best = self.fresh.best
            fresh = {"status": v.status, "alpha": v.details.get("alpha"), "best_model": best.name, "auc": best.auc,
                     "ci_low": best.ci_low, "ci_high": best.ci_high, "p": v.family_p, "upper_bound": v.upper_bound,
                     "upper_bound_model": v.upper_bound_model, "seed": self.fresh.seed,
                     "folds": self.fresh.folds, "repeats": self.fresh.repeats,
                     "subset_share": (v.subset or {}).get("share"), "reasons": v.reasons,
                     "models": [{"name": m.name, "auc": m.auc, "ci_low": m.ci_low, "ci_high": m.ci_high,
                                 "tpr_at_1pct_fpr": m.tpr_at_1pct_fpr} for m in self.fresh.models]}
        reasons = pd.Series(self.dropped[self.dropped != ""]).value_counts().to_dict()
        return {"method": self.method, "success": self.success, "problems": self.problems,
                "retained": self.retained, "dropped": {str(k): int(c) for k, c in reasons.items()},
                "selection_estimate": self.selection, "fresh_check": fresh,
                "balance_summary": balance_summary(self.balance) if self.balance is not None else None}


@dataclass
class DesignPart:
    """One subset asked for: the matched subset, or one half of a disentanglement design."""

    name: str
    description: str
    attempts: list[Attempt] = field(default_factory=list)
    chosen: Attempt | None = None  # the accepted attempt; None when none succeeded
    best: Attempt | None = None  # the accepted attempt, else the best one found (never written as good)
    reasons: list[str] = field(default_factory=list)
    recheck: dict = field(default_factory=dict)  # the level every fresh re-check of this search ran at (_search)

    @property
    def success(self) -> bool:
        return self.chosen is not None

    def to_dict(self) -> dict:
        best = self.best
        return {"name": self.name, "description": self.description, "success": self.success,
                "method": best.method if best else None, "reasons": self.reasons, "recheck": self.recheck,
                "result": best.summary() if best else None,
                "attempts": [a.summary() for a in self.attempts if a is not best],
                "balance": records(best.balance) if best is not None and best.balance is not None else []}


@dataclass
class MatchResult:
    """Everything ``match`` found; ``to_dict()`` is what ``match.json`` holds."""

    design: str
    parts: list[DesignPart]
    before: dict
    settings: Settings
    options: MatchOptions
    ids: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    extra_dropped: pd.DataFrame = field(repr=False, default_factory=lambda: pd.DataFrame(
        columns=["id", "label", "reason"]))  # manifest rows without features

    @property
    def success(self) -> bool:
        return all(p.success for p in self.parts)

    @property
    def status(self) -> str:
        return "matched" if self.success else ("partial" if any(p.success for p in self.parts) else "failed")

    def part(self, name: str) -> DesignPart:
        return next(p for p in self.parts if p.name == name)

    def to_dict(self) -> dict:
        from blindcheck.runtime.files import json_ready

        s = self.settings
        return json_ready({
            "schema": "blindcheck.match/1", "status": self.status, "design": self.design, "seed": s.seed,
            "fresh_seed": s.seed + FRESH_SEED_OFFSET,
            "options": {"method": self.options.method, "exact": list(self.options.exact),
                        "caliper_sd": s.match_caliper, "ratio": s.match_ratio, "target_auc": s.match_target_auc,
                        "min_retained": s.match_min_retained, "tolerated_auc": s.tolerated_auc},
            "before": self.before,
            "not_analysed": int(len(self.extra_dropped)),
            "parts": [p.to_dict() for p in self.parts],
        })


@dataclass
class _Data:
    """What every attempt needs, aligned on the feature table's rows."""

    features: pd.DataFrame
    meta: pd.DataFrame
    y: np.ndarray
    score: np.ndarray  # the best blind model's out-of-fold score
    cols: list[str]
    X: np.ndarray
    texts: np.ndarray | None
    settings: Settings
    threads: int | None
    _Z: np.ndarray | None = None
    _Xi: np.ndarray | None = None

    @property
    def X_imputed(self) -> np.ndarray:
        if self._Xi is None:
            with np.errstate(all="ignore"):
                med = np.nanmedian(self.X, axis=0) if self.X.size else np.zeros(self.X.shape[1])
            self._Xi = np.where(np.isfinite(self.X), self.X, np.where(np.isfinite(med), med, 0.0))
        return self._Xi

    @property
    def Z(self) -> np.ndarray:
        """Standardised features for optimal matching: those imbalanced before matching (|SMD| >= 0.1 between
        the sides), so that pairs are close where the sides differ; every feature when none is."""
        if self._Z is None:
            off = [j for j in range(self.X.shape[1])
                   if abs(np.nan_to_num(smd(self.X[self.y == 1, j], self.X[self.y == 0, j]), nan=0.0)) >= SMD_BALANCED]
            self._Z = standardised(self.X[:, off] if off else self.X)
        return self._Z

    @property
    def smaller(self) -> int:
        """The side that is matched (the smaller one; members on a tie)."""
        return 1 if (self.y == 1).sum() <= (self.y == 0).sum() else 0


def _side(label: int) -> str:
    return "members" if label == 1 else "non-members"


def _strata(meta: pd.DataFrame, exact: tuple[str, ...], n: int) -> np.ndarray:
    if not exact:
        return np.zeros(n, dtype=int)
    return meta[list(exact)].astype(str).apply(lambda r: "\x1f".join(r), axis=1).factorize()[0] \
        if len(exact) > 1 else pd.factorize(meta[exact[0]].astype(str))[0]


def _pairs_attempt(d: _Data, method: str, exact: tuple[str, ...], mask: np.ndarray,
                   forbid_same: str | None = None) -> Attempt:
    """Propensity or optimal matching within exact strata, among the rows in ``mask``."""
    s = d.settings
    lg = logit(d.score)
    n = len(d.y)
    cal = caliper_width(lg[mask], d.y[mask], s.match_caliper)
    strata = _strata(d.meta, exact, n)
    t_side = d.smaller
    rng = np.random.default_rng(s.seed)
    match_id = np.full(n, -1)
    dropped = np.where(mask, "", "outside the design").astype(object)
    next_id = 0
    exact_words = ", ".join(exact)
    problems = []
    for g in np.unique(strata[mask]):
        in_g = mask & (strata == g)
        t_idx = np.nonzero(in_g & (d.y == t_side))[0]
        c_idx = np.nonzero(in_g & (d.y != t_side))[0]
        if len(t_idx) == 0 or len(c_idx) == 0:
            lacking = _side(1 - t_side) if len(c_idx) == 0 else _side(t_side)
            dropped[in_g] = f"no {lacking} with the same {exact_words}"
            continue
        forbid = None
        if forbid_same is not None:
            col = d.meta[forbid_same].astype(str).to_numpy()
            forbid = col[t_idx][:, None] == col[c_idx][None, :]
        if method == "optimal":
            cells = len(t_idx) * len(c_idx) * min(s.match_ratio, max(1, len(c_idx) // len(t_idx)))
            if cells > OPTIMAL_MAX_CELLS:
                return _failed(d, method, mask, f"the sides are too large for optimal matching ({len(t_idx)} x "
                                                f"{len(c_idx)} pairs in one stratum; at most {OPTIMAL_MAX_CELLS})")
            pairs = optimal_pairs(d.Z[t_idx], d.Z[c_idx], lg[t_idx], lg[c_idx], cal, s.match_ratio, forbid)
        elif forbid is not None:  # greedy on the score, skipping forbidden partners (small strata only)
            pairs = greedy_pairs_forbidding(lg[t_idx], lg[c_idx], cal, s.match_ratio, forbid, rng)
        else:
            pairs = greedy_pairs(lg[t_idx], lg[c_idx], cal, s.match_ratio, rng)
        ids_of_t: dict[int, int] = {}
        for ti, ci in pairs:
            if ti not in ids_of_t:
                ids_of_t[ti] = next_id
                next_id += 1
            match_id[t_idx[ti]] = ids_of_t[ti]
            match_id[c_idx[ci]] = ids_of_t[ti]
        # why the rest were dropped
        ct = np.sort(lg[t_idx])
        for idx, other in ((t_idx, lg[c_idx]), (c_idx, ct)):
            other = np.sort(other)
            for i in idx:
                if match_id[i] >= 0:
                    continue
                p = np.searchsorted(other, lg[i])
                near = min(abs(other[j] - lg[i]) for j in (p - 1, p) if 0 <= j < len(other))
                dropped[i] = ("no partner within the caliper" if near > cal else
                              "not needed: its possible partners were matched to closer clips")
    refined = refine_balance(d, match_id, dropped, mask)
    keep = match_id >= 0
    if forbid_same is not None and not keep.any():
        problems.append(f"no pair with a different {forbid_same} within the caliper")
    att = Attempt(method=method, keep=keep, match_id=match_id, dropped=dropped, problems=problems)
    att.retained = _retained(d, keep, mask, {"caliper_logit": cal, "balance_refinement": refined})
    return att


def refine_balance(d: _Data, match_id: np.ndarray, dropped: np.ndarray, mask: np.ndarray) -> dict:
    """Support refinement: pairs close on the score can still hold a clip far outside the other side's range in a
    feature that was clearly off before matching (a touched clip the blind model ranked like an untouched one).
    Such a clip's set is dropped: robust z (median, 1.4826 MAD of the other side's kept clips) above
    ``REFINE_Z`` in any feature whose pool |SMD| is at least ``REFINE_FROM`` and three standard errors of a
    random split's SMD. Gaussian noise never reaches z = 5 at these sizes, so this removes outliers, not the
    sampling noise of balance. Repeated until stable; edits ``match_id`` and ``dropped`` in place."""
    y = d.y
    pool1, pool0 = mask & (y == 1), mask & (y == 0)
    cut = max(REFINE_FROM, 3 * math.sqrt(1 / max(pool1.sum(), 1) + 1 / max(pool0.sum(), 1)))
    if not (match_id >= 0).any() or not d.cols:
        return {"features": 0, "sets_dropped": 0, "from_abs_smd": cut}
    before = np.array([smd(d.X[pool1, j], d.X[pool0, j]) for j in range(d.X.shape[1])])
    F = np.nonzero(np.abs(np.nan_to_num(before, nan=0.0, posinf=1e9, neginf=-1e9)) >= cut)[0]
    removed = 0
    scaled = {j: _refine_scale(d.X[mask, j], d.X[:, j]) for j in F}
    for _ in range(5):
        kept = match_id >= 0
        out = np.zeros(len(y), bool)
        why = np.full(len(y), "", dtype=object)
        for j in F:
            v = scaled[j]
            for side in (0, 1):
                other = v[kept & (y != side) & np.isfinite(v)]
                if len(other) < 5:
                    continue
                med = np.median(other)
                mad = 1.4826 * np.median(np.abs(other - med))
                if mad <= 0:
                    continue
                far = kept & (y == side) & np.isfinite(v) & (np.abs(v - med) / mad > REFINE_Z) & ~out
                out |= far
                why[far] = f"outside the other side's range in {d.cols[j]}"
        if not out.any():
            break
        gone_sets = np.unique(match_id[out])
        for k in gone_sets:
            rows = np.nonzero(match_id == k)[0]
            reason = next((why[r] for r in rows if why[r]), "")
            match_id[rows] = -1
            dropped[rows] = reason
        removed += len(gone_sets)
    return {"features": int(len(F)), "sets_dropped": removed, "from_abs_smd": cut, "z": REFINE_Z}


def _refine_scale(pool: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The scale the refinement measures a feature on: its logarithm where the feature is positive and spans more
    than two decades over the pool (spectral flatness, energies: on the linear scale the MAD of such a skewed
    feature is tiny against its natural tail, and robust z would flag untouched clips by the dozen), else itself."""
    fin = pool[np.isfinite(pool)]
    if len(fin) < 5 or fin.min() <= 0:
        return v
    lo, hi = np.quantile(fin, [0.01, 0.99])
    if lo <= 0 or hi / lo <= 100:
        return v
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)


def _trim_attempt(d: _Data, exact: tuple[str, ...], mask: np.ndarray) -> Attempt:
    lg = logit(d.score)
    n = len(d.y)
    q = TRIM_QUANTILE
    a, b = lg[mask & (d.y == 1)], lg[mask & (d.y == 0)]
    lo, hi = shared_region(a, b, q)
    dropped = np.where(mask, "", "outside the design").astype(object)
    keep = mask & (lg >= lo) & (lg <= hi)
    dropped[mask & ~keep] = "blind score outside the region both sides share"
    problems = []
    if lo > hi:
        problems.append(f"the blind scores of the two sides share no region: members' scores run "
                        f"{from_logit(np.quantile(a, q)):.3g}–{from_logit(np.quantile(a, 1 - q)):.3g}, non-members' "
                        f"{from_logit(np.quantile(b, q)):.3g}–{from_logit(np.quantile(b, 1 - q)):.3g} "
                        f"({100 * q:g}%–{100 * (1 - q):g}% quantiles, the region trimming keeps)")
    if exact:
        strata = _strata(d.meta, exact, n)
        for g in np.unique(strata[keep]):
            in_g = keep & (strata == g)
            if len(np.unique(d.y[in_g])) < 2:
                lacking = _side(0) if d.y[in_g][0] == 1 else _side(1)
                keep &= ~in_g
                dropped[in_g] = f"no {lacking} with the same {', '.join(exact)}"
    att = Attempt(method="trim", keep=keep, match_id=np.full(n, -1), dropped=dropped, problems=problems)
    att.retained = _retained(d, keep, mask, {"score_region": [from_logit(lo), from_logit(hi)]})
    return att


def _failed(d: _Data, method: str, mask: np.ndarray, problem: str) -> Attempt:
    n = len(d.y)
    att = Attempt(method=method, keep=np.zeros(n, bool), match_id=np.full(n, -1),
                  dropped=np.where(mask, "method not applicable", "outside the design").astype(object),
                  problems=[problem])
    att.retained = _retained(d, att.keep, mask, {})
    return att


def _retained(d: _Data, keep: np.ndarray, mask: np.ndarray, extra: dict) -> dict:
    y = d.y
    out = {"members": int((keep & (y == 1)).sum()), "nonmembers": int((keep & (y == 0)).sum()),
           "members_available": int((mask & (y == 1)).sum()), "nonmembers_available": int((mask & (y == 0)).sum())}
    small = d.smaller
    avail = out["members_available"] if small == 1 else out["nonmembers_available"]
    kept = out["members"] if small == 1 else out["nonmembers"]
    out["smaller_side"] = _side(small)
    out["smaller_side_share"] = kept / avail if avail else 0.0
    out.update(extra)
    return out


def _group_counts(d: _Data, keep: np.ndarray, mask: np.ndarray, columns: list[str], limit: int = 200) -> dict:
    out = {}
    for col in columns:
        df = pd.DataFrame({"g": d.meta[col].astype(str).to_numpy(), "y": d.y, "k": keep, "m": mask})[lambda x: x.m]
        rows = []
        for g, part in df.groupby("g", sort=True):
            rows.append({"group": g, "members": int((part.y == 1).sum()), "nonmembers": int((part.y == 0).sum()),
                         "members_kept": int(((part.y == 1) & part.k).sum()),
                         "nonmembers_kept": int(((part.y == 0) & part.k).sum())})
        out[col] = rows[:limit]
    return out


def recheck_settings(settings: Settings, alpha: float) -> Settings:
    """The settings of a fresh re-check at level ``alpha``: a new seed (new folds, new models), and as many
    relabellings as that level needs to be reachable (``smallest_permutations``), where the run's are fewer."""
    need = smallest_permutations(alpha)
    changes: dict = {"seed": settings.seed + FRESH_SEED_OFFSET, "alpha": alpha}
    if settings.permutations < need:
        changes["permutations"] = need
    if 0 < settings.refit_permutations < need:
        changes["refit_permutations"] = need
    return settings.replace(**changes)


def _verify(d: _Data, att: Attempt, mask: np.ndarray, group_columns: list[str], alpha: float) -> Attempt:
    """Selection estimate, fresh check (at level ``alpha``: see :func:`_search`), balance table and the
    decision."""
    s = d.settings
    keep, y = att.keep, d.y
    att.retained["groups"] = _group_counts(d, keep, mask, group_columns)
    att.balance = balance_table_masked(d, keep, mask)  # "before": the design's pool (every clip for a subset)
    share = att.retained["smaller_side_share"]
    if share < s.match_min_retained:
        side = att.retained["smaller_side"]
        att.problems.append(f"keeps {percent(share)} of the {side} "
                            f"({att.retained['members'] if side == 'members' else att.retained['nonmembers']} of "
                            f"{att.retained['members_available'] if side == 'members' else att.retained['nonmembers_available']}), "  # noqa: E501
                            f"below the minimum retained share {percent(s.match_min_retained)}")
    yk = y[keep]
    if att.problems:  # too few kept: not worth a fresh check (it could not make the subset acceptable)
        return att
    if (yk == 1).sum() < 2 or (yk == 0).sum() < 2:
        att.problems.append("too few clips of one side kept to verify")
        return att
    a, lo, hi, _ = stats.auc_ci(yk, d.score[keep], 1 - s.alpha, 0, np.random.default_rng(s.seed))
    att.selection = {"auc": a, "ci_low": lo, "ci_high": hi,
                     "note": "the original out-of-fold scores on the kept clips; the selection used them, so this "
                             "estimate is optimistic — the fresh check is the one to trust"}
    fresh_settings = recheck_settings(s, alpha)
    table = d.features.loc[keep].reset_index(drop=True)
    groups = d.meta[s.group_by].astype(str).to_numpy()[keep] if s.group_by else None
    pair = att.match_id[keep]
    if groups is None and len(pair) and (pair >= 0).all():
        # A matched pair split across folds anti-learns (its member trains, its twin is scored the other way):
        # on truly balanced subsets the ungrouped fresh AUC had median 0.467 against 0.509 grouped, and scores
        # below chance lower the upper bounds a clean verdict rests on. Folds keep each pair (or set) whole.
        groups = np.char.add("pair ", pair.astype(str))
        fresh_settings = fresh_settings.replace(group_by=PAIR_GROUPS)
    texts = d.texts[keep] if d.texts is not None else None
    try:
        att.fresh = run_separability(table, yk, fresh_settings, groups=groups, texts=texts, threads=d.threads)
    except BlindcheckError as exc:
        att.problems.append(f"the fresh check could not run: {exc}")
        return att
    # the speakers of the kept clips (given, or inferred from voice.emb_*; None without either), as check weighs
    # them: a speaker-disjoint subset is never clean
    speakers = speaker_report(table, d.meta.loc[keep].reset_index(drop=True), fresh_settings)
    # and the manifest's attributes of the kept clips: a subset whose metadata still differs by side is no cure
    kept_meta = manifest_evidence(d.meta.loc[keep], table, yk, fresh_settings, groups)
    att.verdict = decide(att.fresh, fresh_settings, speakers=speakers, metadata=kept_meta)
    best = att.fresh.best
    if att.verdict.status != CLEAN:
        att.problems.append(f"the fresh check on the subset is {att.verdict.status}: "
                            + (att.verdict.reasons[0] if att.verdict.reasons else ""))
    if best.auc > s.match_target_auc:
        att.problems.append(f"the fresh check's best AUC {best.auc:.2f} ({best.name}) is above the target "
                            f"{s.match_target_auc:.2f}")
    att.success = not att.problems
    return att


def balance_table_masked(d: _Data, keep: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    sub = np.nonzero(mask)[0]
    return balance_table(d.X[sub], d.cols, d.y[sub], keep[sub])


def _score_key(att: Attempt) -> tuple:
    """Order for "the best attempt found" when none succeeds: verified ones first, then the lowest fresh upper
    bound, then the most clips kept."""
    ub = att.verdict.upper_bound if att.verdict is not None else math.inf
    return (att.verdict is None, ub if math.isfinite(ub) else math.inf, -int(att.keep.sum()))


def _search(part: DesignPart, d: _Data, options: MatchOptions, mask: np.ndarray, group_columns: list[str],
            forbid_same: str | None = None, exact: tuple[str, ...] | None = None) -> list[Attempt]:
    """Try the methods in turn and keep the first whose fresh re-check is clean; fills ``part.attempts`` and
    ``part.recheck``.

    A clean re-check is an equivalence claim (every upper bound below the tolerance). Trying up to k subsets and
    keeping the first that passes gives k chances of a wrong "clean", so each re-check runs at alpha / k, k being
    the number of methods this search may try (fixed before any is tried: 1 when one is named): by Bonferroni the
    chance that the accepted subset is wrongly clean stays at most alpha. The speaker and metadata criteria of the
    re-check run at the same level; they only ever withhold a clean verdict, so the bound holds."""
    methods = [options.method] if options.method else list(METHODS)
    if forbid_same is not None:  # a design made of pairs: trimming forms none
        methods = [m for m in methods if m != "trim"]
    exact = options.exact if exact is None else exact
    s = d.settings
    alpha = s.alpha / len(methods)
    fresh = recheck_settings(s, alpha)
    part.recheck = {"alpha": alpha, "run_alpha": s.alpha, "tries": len(methods), "methods": methods,
                    "seed": fresh.seed, "permutations": fresh.permutations,
                    "permutations_raised": fresh.permutations != s.permutations,
                    "refit_permutations": fresh.refit_permutations,
                    "refit_permutations_raised": fresh.refit_permutations != s.refit_permutations}
    attempts = part.attempts = []
    for method in methods:
        att = _trim_attempt(d, exact, mask) if method == "trim" else \
            _pairs_attempt(d, method, exact, mask, forbid_same)
        if att.keep.any():
            att = _verify(d, att, mask, group_columns, alpha)
        elif not att.problems:
            att.problems.append("no clip could be matched")
        attempts.append(att)
        if att.success:
            break
    return attempts


def recheck_line(recheck: dict) -> str:
    """Plain words for the level of a search's fresh re-checks (``DesignPart.recheck``)."""
    k, a, run = recheck["tries"], recheck["alpha"], recheck["run_alpha"]
    if k > 1:
        line = (f"each fresh re-check ran at alpha = {a:.4g} ({run:g} / {k}): the search may try {k} methods "
                f"({', '.join(recheck['methods'])}) and keeps the first subset that re-checks clean, {k} chances of "
                f"a wrong clean verdict, so each pays for all {k}: the chance that the accepted subset is wrongly "
                f"called clean stays at most {run:g}")
    else:
        line = f"the fresh re-check ran at alpha = {a:g}: one method named, one chance of a wrong clean verdict"
    more = [f"{recheck[key]} {what}" for key, what in (("permutations", "permutations"),
                                                         ("refit_permutations", "refit permutations"))
            if recheck.get(f"{key}_raised")]
    return line + (f" (with {' and '.join(more)}, the fewest that reach it)" if more else "")


def no_overlap_reasons(d: _Data, mask: np.ndarray, k: int = 3) -> list[str]:
    """Plain words for features in which the two sides do not overlap at all."""
    found = []
    y = d.y[mask]
    for j, c in enumerate(d.cols):
        v = d.X[mask, j]
        a, b = v[(y == 1) & np.isfinite(v)], v[(y == 0) & np.isfinite(v)]
        if len(a) == 0 or len(b) == 0:
            continue
        if a.max() < b.min() or b.max() < a.min():
            gap = max(b.min() - a.max(), a.min() - b.max())
            spread = np.std(np.r_[a, b]) or 1.0
            found.append((gap / spread, c, a, b))
    found.sort(key=lambda f: -f[0])
    return [f"no overlap in {c}: {_describe('member', a, c)}, {_describe('non-member', b, c)}"
            for _, c, a, b in found[:k]]


def _describe(who: str, v: np.ndarray, col: str) -> str:
    if v.min() == v.max():
        return f"every {who} is {fmt_value(col, float(v[0]))}"
    return f"{who}s span {fmt_value(col, float(v.min()))} to {fmt_value(col, float(v.max()))}"


def _finish(part: DesignPart, d: _Data, mask: np.ndarray, options: MatchOptions) -> DesignPart:
    ok = [a for a in part.attempts if a.success]
    if ok:
        part.chosen = part.best = ok[0]
        a = ok[0]
        part.reasons.append(
            f"{a.method} matching kept {a.retained['members']} members and {a.retained['nonmembers']} non-members "
            f"({percent(a.retained['smaller_side_share'])} of the {a.retained['smaller_side']}); a fresh blind check "
            f"on them is clean at alpha = {part.recheck['alpha']:.4g} with best AUC {a.fresh.best.auc:.2f} "
            f"({a.fresh.best.name}), at most the target {d.settings.match_target_auc:.2f}")
        part.reasons.append(recheck_line(part.recheck))
        return part
    part.best = min(part.attempts, key=_score_key) if part.attempts else None
    part.reasons.append("no method found a subset that a fresh blind check calls clean at the target "
                        f"AUC {d.settings.match_target_auc:.2f} while keeping at least "
                        f"{percent(d.settings.match_min_retained)} of the smaller side; no matched manifest written")
    if any(a.verdict is not None for a in part.attempts):
        part.reasons.append(recheck_line(part.recheck))
    part.reasons += no_overlap_reasons(d, mask)
    if options.exact:
        strata = _strata(d.meta, options.exact, len(d.y))
        both = [g for g in np.unique(strata[mask]) if len(np.unique(d.y[mask & (strata == g)])) == 2]
        if not both:
            part.reasons.append(f"no value of {', '.join(options.exact)} holds both members and non-members: "
                                "there is nothing to match within it")
    for a in part.attempts:
        part.reasons += [f"{a.method}: {p}" for p in a.problems]
    return part


def match_table(features: pd.DataFrame, meta: pd.DataFrame, scores: np.ndarray, settings: Settings,
                options: MatchOptions | None = None, texts: np.ndarray | None = None, threads: int | None = None,
                before: dict | None = None) -> MatchResult:
    """Match on a feature table (rows aligned with ``meta``, the manifest rows of the same clips, and with
    ``scores``, the best blind model's out-of-fold scores) and verify each candidate afresh."""
    options = options or MatchOptions()
    for col in options.exact:
        if col not in meta.columns:
            raise BlindcheckError(f"exact '{col}': the manifest has no such column (columns: "
                                  f"{', '.join(map(str, meta.columns))})")
    d = _data(features, meta, scores, settings, texts, threads)
    features, y = d.features, d.y
    group_columns = list(dict.fromkeys([*options.exact, *([settings.group_by] if settings.group_by else []),
                                        *(["speaker"] if "speaker" in meta.columns else [])]))
    all_rows = np.ones(len(y), bool)
    if options.design == "subset":
        part = DesignPart("matched", "members and non-members matched on the blind score")
        _search(part, d, options, all_rows, group_columns)
        parts = [_finish(part, d, all_rows, options)]
    else:
        parts = _disentangle(d, options, group_columns)
    return MatchResult(design=options.design, parts=parts, before=before or {}, settings=settings, options=options,
                       ids=features["id"].to_numpy(), labels=y)


def _data(features: pd.DataFrame, meta: pd.DataFrame, scores: np.ndarray, settings: Settings, texts,
          threads: int | None) -> _Data:
    """The matching inputs of :func:`match_table` and :func:`match_attempt`: rows renumbered from 0, the feature
    columns and their matrix, the labels."""
    features = features.reset_index(drop=True)
    cols = feature_columns(features)
    y = features["label"].to_numpy().astype(int)
    return _Data(features=features, meta=meta.reset_index(drop=True), y=y, score=np.asarray(scores, float),
                 cols=cols, X=features[cols].to_numpy(dtype=float) if cols else np.zeros((len(y), 0)), texts=texts,
                 settings=settings, threads=threads)


def match_attempt(features: pd.DataFrame, meta: pd.DataFrame, scores: np.ndarray, settings: Settings,
                  method: str = "propensity", exact: tuple[str, ...] = (), threads: int | None = None) -> Attempt:
    """One candidate subset by ``method`` (propensity, optimal or trim), exactly within the ``exact`` columns of
    ``meta``, on every row (inputs as for :func:`match_table`), *not* verified: no fresh check, no acceptance
    rule. What :func:`match_table` tries before it verifies; for timing the matching alone and for inspection."""
    if method not in METHODS:
        raise BlindcheckError(f"unknown matching method '{method}' (choose from {', '.join(METHODS)})")
    d = _data(features, meta, scores, settings, None, threads)
    mask = np.ones(len(d.y), bool)
    return _trim_attempt(d, tuple(exact), mask) if method == "trim" else \
        _pairs_attempt(d, method, tuple(exact), mask)


def _disentangle(d: _Data, options: MatchOptions, group_columns: list[str]) -> list[DesignPart]:
    missing = [c for c in ("speaker", "text") if c not in d.meta.columns]
    if missing:
        raise BlindcheckError(f"the disentangle design needs 'speaker' and 'text' columns; the manifest lacks "
                              f"{' and '.join(repr(c) for c in missing)}")
    if options.method == "trim":
        raise BlindcheckError("the disentangle design is made of pairs: use the propensity or optimal method, "
                              "not trim")
    spk = d.meta["speaker"].astype(str).to_numpy()
    txt = d.meta["text"].astype(str).str.strip().str.lower().to_numpy()
    y = d.y
    parts = []
    specs = [("same_text_other_speaker", "members against non-members saying the same text in another speaker's "
              "voice (does an attack respond to the words alone?)", txt, "text", "speaker"),
             ("same_speaker_other_text", "members against non-members of the same speaker saying other texts "
              "(does an attack respond to the voice alone?)", spk, "speaker", "text")]
    for name, desc, key, same, other in specs:
        part = DesignPart(name, desc)
        has_value = key != ""
        member_keys = set(key[(y == 1) & has_value])
        nonmember_keys = set(key[(y == 0) & has_value])
        shared = member_keys & nonmember_keys
        # the pool: clips whose `same` value appears on both sides
        mask = np.isin(key, list(shared)) & has_value
        if not shared:
            part.reasons.append(f"no {same} occurs on both sides: the data have no repeated {same}s across members "
                                f"and non-members to draw on ({len(member_keys)} {same}s among members, "
                                f"{len(nonmember_keys)} among non-members)")
            parts.append(part)
            continue
        d.meta = d.meta.assign(_bc_same=key, _bc_other=(txt if other == "text" else spk))
        _search(part, d, MatchOptions(method=options.method, exact=("_bc_same",), design="subset"), mask,
                group_columns, forbid_same="_bc_other", exact=("_bc_same",))
        kept = part.attempts[-1].keep if part.attempts else np.zeros(len(y), bool)
        part.reasons.append(f"{len(shared)} {same}s occur on both sides ({int(mask.sum())} clips); pairs must "
                            f"differ in {other}")
        if not kept.any():
            part.reasons.append(f"no member has a non-member with the same {same} and a different {other}")
        parts.append(_finish(part, d, mask, MatchOptions()))
    return parts


def matching_model(sep: SeparabilityResult, verdict: Verdict):
    """Whose out-of-fold scores are matched on: the model that isolates a subset of one side when that is what
    made the split confounded (a shift in part of one side: the best-AUC model may be one that ranks the rest
    well and the shifted clips less sharply), else the best model
    (:func:`~blindcheck.analysis.separability.best_model`)."""
    if "subset" in verdict.criteria and "auc" not in verdict.criteria and sep.subset is not None:
        return sep.model(sep.subset.model)
    return sep.best

