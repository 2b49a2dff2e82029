"""The verdict: a pure function from separability metrics and settings to clean / confounded / inconclusive.

A clean verdict is an equivalence claim, so the three verdicts are one decision on confidence bounds:

- **confounded** when the data show separability above what is tolerated, by either criterion:
  *AUC* — the family-wise permutation p-value (max-statistic over the m models, :mod:`blindcheck.analysis.permutation`)
  is at most alpha and the best model's one-sided lower confidence bound at level 1 - alpha/m exceeds the
  tolerated AUC (default 0.60); *isolated subset* — the family-wise p-value of the isolation statistic is at
  most alpha and the lower bound of the share of one side that a model isolates at 1% FPR exceeds the
  tolerated share (default 10%); or *failures* — clips that cannot be analysed fall on one side
  significantly (Fisher's exact test) and the one-sided 1 - alpha lower bound of the difference in their shares
  (Newcombe's hybrid score interval) exceeds the tolerated share (on the observed difference, a gap exactly at the
  tolerance was called confounded in about half of the splits);
- **clean** only when the data rule separability out: every model's one-sided upper confidence bound at level
  1 - alpha is below the tolerated AUC (the intersection-union test needs no correction for m), no model
  isolates a share of either side whose upper bound reaches the tolerated share, failures do not depend on
  the side, and the relabellings can reach alpha at all;
- **inconclusive** in between, with the number of clips that would decide it.

With speakers known (the manifest's ``speaker`` column, or speakers inferred from the voice modality), a
speaker-disjoint split is named and never clean, and a speaker mix that alone separates the sides beyond the
tolerated AUC is confounded (criterion ``speakers``; see :mod:`blindcheck.analysis.speakers`).

With grouped folds the intervals are cluster-robust and the permutations move whole groups, so the evidence is
counted in groups, not clips. Where every group lies on one side, membership follows from the group itself:
the grouped run can then say whether anything *beyond* the group separates the sides, never that the split
is clean.

Every verdict carries human-readable reasons, most important first.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from blindcheck.analysis import isolation, stats
from blindcheck.analysis.metadata import MetadataReport, metadata_line
from blindcheck.analysis.separability import ModelResult, SeparabilityResult
from blindcheck.features.modalities import Modality
from blindcheck.settings import Settings

CLEAN, CONFOUNDED, INCONCLUSIVE = "clean", "confounded", "inconclusive"


@dataclass
class Failures:
    """Clips left out because they could not be read, decoded or analysed, per side."""

    members_failed: int
    members_total: int
    nonmembers_failed: int
    nonmembers_total: int

    @property
    def p(self) -> float:
        """Two-sided Fisher exact test of equal failure rates on the two sides."""
        from scipy.stats import fisher_exact

        if self.members_failed + self.nonmembers_failed == 0:
            return 1.0
        table = [[self.members_failed, self.members_total - self.members_failed],
                 [self.nonmembers_failed, self.nonmembers_total - self.nonmembers_failed]]
        return float(fisher_exact(table)[1])

    def shares(self) -> tuple[float, float]:
        return (self.members_failed / max(self.members_total, 1),
                self.nonmembers_failed / max(self.nonmembers_total, 1))

    def gap_lower(self, level: float) -> float:
        """One-sided ``level`` lower bound of the absolute difference of the two sides' failure shares: the larger of
        the two directions' Newcombe (1998, method 10) bounds, built from Wilson bounds of each share (0 when
        neither direction's bound is positive)."""
        if self.members_total <= 0 or self.nonmembers_total <= 0:
            return 0.0
        m, n = self.shares()
        lm, um = stats.wilson(self.members_failed, self.members_total, level)
        ln, un = stats.wilson(self.nonmembers_failed, self.nonmembers_total, level)
        return max(0.0, (m - n) - math.hypot(m - lm, un - n), (n - m) - math.hypot(n - ln, um - m))

    def to_dict(self) -> dict:
        m, n = self.shares()
        return {**self.__dict__, "members_share": m, "nonmembers_share": n, "p": self.p}


@dataclass
class Verdict:
    status: str
    reasons: list[str]
    best_model: str
    best_auc: float
    family_p: float  # family-wise p-value of the AUC criterion
    lower_bound: float  # the best model's one-sided lower bound at level 1 - alpha/m
    power_at_tolerated: float  # = power: probability that a split with true AUC 0.5 of this size is called clean
    required_n: int | None
    top_modality: str | None
    upper_bound: float = math.nan  # the highest one-sided upper bound (level 1 - alpha) over the models
    upper_bound_model: str | None = None
    power: float = math.nan
    p_method: str = ""
    criteria: list[str] = field(default_factory=list)  # what made it confounded: "auc", "subset", "failures"
    subset: dict | None = None
    failures: dict | None = None
    groups: dict | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def fmt_value(feature: str, v: float) -> str:
    """A feature value with its unit (:func:`blindcheck.features.units.unit_of`: the extractors' definitions,
    else the name's conventions)."""
    from blindcheck.features.units import unit_of

    if v is None or not math.isfinite(v):
        return "n/a"
    symbol = unit_of(feature).symbol
    if symbol == "Hz":
        return f"{v / 1000:.2f} kHz" if abs(v) >= 1000 else f"{v:.0f} Hz"
    if symbol in ("dBFS", "LUFS", "LU", "dB"):
        return f"{v:.1f} {symbol}"
    if symbol == "s":
        return f"{v * 1000:.0f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if symbol == "%":
        return f"{100 * v:.1f}%"
    return f"{v:.3g}{'' if symbol.startswith('/') else ' '}{symbol}" if symbol else f"{v:.3g}"


def fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def percent(x: float) -> str:
    """A share as a whole percentage (the reasons' and summaries' one format)."""
    return f"{100 * x:.0f}%"


_pct = percent


def _modality_line(sep: SeparabilityResult) -> tuple[str | None, str | None]:
    mods = sep.modality_models()
    if not mods:
        return None, None
    shares = sep.modality_shares()
    # Modalities whose AUCs agree to three decimals are ranked by the evidence of the combined model: the share
    # of its attributions that falls on each modality (no modality is preferred by name).
    ranked = sorted(mods, key=lambda m: (round(m.auc, 3), shares.get(m.modality, 0.0), m.auc), reverse=True)
    top = ranked[0]
    models_of = Counter(m.modality for m in mods)

    def label(m) -> str:  # a modality with more than one model (xgboost and TF-IDF on text) names the model
        return m.name if models_of[m.modality] > 1 else m.modality

    others = "; ".join(f"{label(m)} {m.auc:.2f}" for m in ranked[1:])
    line = (f"{top.modality} features alone separate the sides: AUC {top.auc:.2f} "
            f"[{top.ci_low:.2f}, {top.ci_high:.2f}]" + (f" (other modalities alone: {others})" if others else ""))
    return top.modality, line


def _feature_lines(sep: SeparabilityResult, top_modality: str | None, k: int = 3) -> list[str]:
    lines = []
    tf = sep.top_features
    if tf is None or tf.empty:
        return lines
    # The leading modality's own strongest feature first, then the strongest overall.
    ordered = list(tf[tf["modality"] == top_modality].index[:1]) + list(tf.index)
    seen = []
    for i in ordered:
        if i in seen:
            continue
        seen.append(i)
        r = tf.loc[i]
        if not (math.isfinite(r["auc"]) and abs(r["auc"] - 0.5) >= 0.1):
            continue
        lines.append(
            f"{r['feature']} separates the sides: members {fmt_value(r['feature'], r['member_median'])}, "
            f"non-members {fmt_value(r['feature'], r['nonmember_median'])} (medians; single-feature AUC "
            f"{r['auc']:.2f}, Cohen's d {r['cohen_d']:.1f})"
        )
        if len(lines) >= k:
            break
    return lines


def _side_word(side: str) -> str:
    return "members" if side == "members" else "non-members"


@dataclass
class Bounds:
    """Phase 1 of the verdict: every number the decision rests on, computed once from the metrics and settings.

    alphas: each criterion's share of alpha (:func:`criterion_alphas`); lower: the best model's one-sided lower
    AUC bound at level 1 - alphas['auc']/m; upper / upper_model: the highest one-sided upper bound at level
    1 - alpha over the m models; share_low / share_high: the exact lower bound of the strongest (model, side)'s
    isolated share at level 1 - alphas['subset']/(2m) and its upper bound at the same level; share_high_any: the
    highest upper bound (level 1 - alpha) of the isolated share over every (model, side); design_effect: the
    clustering of the best model's interval (1 without groups); power: of the equivalence claim at the tolerated
    AUC; fail_p / fail_gap / fail_low: Fisher's p, the difference of the two sides' failure shares and its lower
    bound at 1 - alphas['failures']."""

    alpha: float
    alphas: dict
    tau: float
    tau_s: float
    m: int
    n1: int
    n0: int
    lower: float
    upper: float
    upper_model: ModelResult
    share_low: float
    share_high: float
    share_high_any: float
    design_effect: float
    power: float
    fail_p: float
    fail_gap: float
    fail_low: float
    all_pure: bool
    too_few: bool

    @property
    def member_share(self) -> float:
        return self.n1 / (self.n1 + self.n0)


def criterion_alphas(alpha: float, failures: Failures | None = None, speakers: dict | None = None,
                     metadata: MetadataReport | None = None, group_by: str | None = None) -> dict[str, float]:
    """Alpha split equally between the criteria that can make this split confounded (Bonferroni over criteria:
    ``confounded`` claims that at least one of them exceeds its tolerance, so at the tolerances the union of
    their errors stays at alpha): ``auc`` and ``subset`` always; ``failures`` when a clip failed; ``speakers`` when
    the speaker mix can be scored and the folds are not grouped by the speakers; ``metadata`` when a manifest
    column is tested. The permutation p-values that the AUC and subset criteria also need stay at alpha: they are
    a further condition, which can only lower the rate."""
    names = ["auc", "subset"]
    if failures is not None and failures.members_failed + failures.nonmembers_failed > 0:
        names.append("failures")
    if speakers and speakers.get("separability") and not speakers["overlap"]["disjoint"] \
            and group_by not in ("speaker", "voice"):
        names.append("speakers")
    if metadata is not None and metadata.columns:
        names.append("metadata")
    return {c: alpha / len(names) for c in names}


def bounds(sep: SeparabilityResult, settings: Settings, failures: Failures | None = None,
           alphas: dict[str, float] | None = None) -> Bounds:
    """The confidence bounds, power and failure test of a verdict (phase 1 of :func:`decide`)."""
    alpha, tau = settings.alpha, settings.tolerated_auc
    alphas = alphas or criterion_alphas(alpha, failures)
    m = len(sep.models)
    best = sep.best
    y = sep.labels
    n1, n0 = int(y.sum()), int((1 - y).sum())
    # bounds: the best model's lower bound pays for choosing it among m; each upper bound is its own test
    # (an AUC bound lies in [0, 1]: clipping changes no decision, since 0 < tau < 1)
    lower = max(0.0, best.auc - stats.quantile(1 - alphas["auc"] / m, best.ci_df) * best.se)
    uppers = [(mr.auc + stats.quantile(1 - alpha, mr.ci_df) * mr.se, mr) for mr in sep.models]
    upper, upper_model = max(uppers, key=lambda u: (u[0] if math.isfinite(u[0]) else math.inf))
    upper = min(upper, 1.0) if math.isfinite(upper) else math.inf
    # isolated subset: the strongest (model, side) pays for choosing it among 2m; the clean side needs every
    # (model, side)'s upper bound below the tolerance (intersection-union: no correction)
    sf = sep.subset
    sub_level = 1 - alphas["subset"] / (2 * m)
    side, other, side_groups = sep.sides(sep.model(sf.model), sf.side)
    share_lo = isolation.lower_grouped(side, other, sf.fpr, sub_level, side_groups)
    share_hi = isolation.upper(side, other, sf.fpr, sub_level, side_groups)
    share_hi_all = max(_share_upper(sep, mr, which, sf.fpr, 1 - alpha)
                       for mr in sep.models for which in ("members", "nonmembers"))
    # clustering: design effect of the best model's interval, for the power and the sample size
    deff = 1.0
    if sep.groups is not None and math.isfinite(best.se):
        naive = stats.delong(y, best.scores)[1]
        deff = max(1.0, (best.se / naive) ** 2) if naive > 0 else 1.0
    groups = sep.n_groups
    a_fail = alphas.get("failures", alpha)
    return Bounds(alpha=alpha, alphas=alphas, tau=tau, tau_s=settings.tolerated_share, m=m, n1=n1, n0=n0,
                  lower=lower, upper=upper, upper_model=upper_model, share_low=share_lo, share_high=share_hi,
                  share_high_any=share_hi_all, design_effect=deff,
                  power=_clean_power(sep, settings, n1, n0, deff),
                  fail_p=failures.p if failures else 1.0,
                  fail_gap=abs(failures.shares()[0] - failures.shares()[1]) if failures else 0.0,
                  fail_low=failures.gap_lower(1 - a_fail) if failures else 0.0,
                  all_pure=bool(groups and groups["mixed"] == 0), too_few=sep.family.p_floor > alpha)


def _share_upper(sep: SeparabilityResult, model: ModelResult, side: str, fpr: float, level: float) -> float:
    s, other, groups = sep.sides(model, side)
    return isolation.upper(s, other, fpr, level, groups)


def _clean_power(sep: SeparabilityResult, settings: Settings, n1: int, n0: int, deff: float) -> float:
    """Probability that a split like this one with no association between audio and membership is called clean:
    from the permutation test's relabellings where it kept them (every model at once, both conditions), else the
    one-model normal approximation."""
    fam = sep.family
    if fam is not None and fam.null_auc_max is not None and len(fam.null_auc_max):
        return stats.clean_power_from_relabellings(fam.null_auc_max, fam.null_isolation_upper,
                                                   settings.tolerated_auc, settings.tolerated_share, n1, n0,
                                                   settings.alpha, sep.subset.fpr if sep.subset else 0.01, deff)
    return stats.equivalence_power(settings.tolerated_auc, n1, n0, settings.alpha, deff)


def criteria_met(sep: SeparabilityResult, b: Bounds, failures: Failures | None = None) -> list[str]:
    """Phase 2: the criteria by which the split is confounded ("auc", "subset", "failures"; the speakers
    criterion is added with its reasons)."""
    fam = sep.family
    criteria = []
    if fam.p_auc <= b.alpha and b.lower > b.tau:
        criteria.append("auc")
    if fam.p_isolation <= b.alpha and b.share_low > b.tau_s:
        criteria.append("subset")
    if failures and b.fail_p <= b.alpha and b.fail_low > b.tau_s:
        criteria.append("failures")
    return criteria


def decide(sep: SeparabilityResult, settings: Settings, failures: Failures | None = None,
           speakers: dict | None = None, metadata: MetadataReport | None = None) -> Verdict:
    """Turn separability metrics into a verdict with reasons. Pure: no I/O, no randomness. Three phases:
    :func:`bounds` (the numbers), :func:`criteria_met` and the undecided checks (the status), then the reasons."""
    g = sep.group_by
    alphas = criterion_alphas(settings.alpha, failures, speakers, metadata, g)
    b = bounds(sep, settings, failures, alphas)
    fam, best, sf = sep.family, sep.best, sep.subset
    top_modality, mod_line = _modality_line(sep)
    criteria = criteria_met(sep, b, failures)
    head = (f"best blind classifier {best.name}: AUC {best.auc:.2f} [{best.ci_low:.2f}, {best.ci_high:.2f}], "
            f"TPR {_pct(best.tpr_at_1pct_fpr)} at 1% FPR, {fmt_p(fam.p_auc)} (family-wise over {b.m} models: "
            f"{fam.method})")
    need = None
    if criteria:
        status = CONFOUNDED
        reasons = _confounded_reasons(sep, b, criteria, failures, head, top_modality, mod_line)
    else:
        undecided, need = _undecided_reasons(sep, b, settings, failures)
        if undecided:
            status = INCONCLUSIVE
            reasons = [*undecided, head]
        else:
            status = CLEAN
            reasons = _clean_reasons(sep, b, head, mod_line)
        if failures and b.fail_p > b.alpha and failures.members_failed + failures.nonmembers_failed:
            reasons.append(f"{failures.members_failed + failures.nonmembers_failed} clips could not be analysed "
                           f"({failures.members_failed} members, {failures.nonmembers_failed} non-members; no "
                           f"dependence on the side: Fisher {fmt_p(b.fail_p)})")
    reasons += _context_reasons(sep, b, status)
    levels = {"auc_lower": 1 - alphas["auc"] / b.m, "subset_lower": 1 - alphas["subset"] / (2 * b.m),
              "clean_upper": 1 - b.alpha}
    if "failures" in alphas:
        levels["failures_lower"] = 1 - alphas["failures"]
    if speakers:  # speaker overlap between the sides (blindcheck.analysis.speakers)
        a_sp = alphas.get("speakers", b.alpha)
        status, sp_low = _speaker_reasons(speakers, g, status, reasons, criteria, b.tau, b.tau_s, a_sp)
        if sp_low is not None:
            levels["speakers_lower"], levels["speakers_lower_bound"] = 1 - a_sp, sp_low
    if metadata is not None and metadata.columns:  # the manifest's attributes (blindcheck.analysis.metadata)
        md = metadata.at_alpha(alphas["metadata"])
        levels["metadata_lower"] = 1 - alphas["metadata"] / len(md.columns)
        status = _metadata_reasons(md, status, reasons, criteria)
    subset = {**sf.to_dict(), "family_p": fam.p_isolation, "tolerated": b.tau_s,
              "share_low": b.share_low, "share_high": b.share_high, "share_level": levels["subset_lower"],
              "upper_bound_any": b.share_high_any, "upper_bound_level": 1 - b.alpha,
              "statistic": "isolation at 1% FPR (TPR members / TNR non-members)",
              "bounds": "lower: exact mixture test with the estimated threshold; upper: order-statistic threshold "
                        "and Clopper-Pearson, union bound (blindcheck.analysis.isolation)"}
    return Verdict(status=status, reasons=reasons, best_model=best.name, best_auc=best.auc, family_p=fam.p_auc,
                   lower_bound=b.lower, power_at_tolerated=b.power, required_n=need, top_modality=top_modality,
                   upper_bound=b.upper, upper_bound_model=b.upper_model.name, power=b.power, p_method=fam.method,
                   criteria=criteria, subset=subset,
                   failures={**failures.to_dict(), "gap_lower": b.fail_low,
                             "gap_lower_level": 1 - alphas.get("failures", b.alpha)}
                   if failures else None,
                   groups=sep.n_groups,
                   details={"models_compared": b.m, "alpha": b.alpha, "tolerated_auc": b.tau,
                            "tolerated_share": b.tau_s, "relabellings": fam.relabellings, "p_floor": fam.p_floor,
                            "design_effect": b.design_effect, "family": fam.to_dict(), "alpha_criteria": alphas,
                            "levels": levels})


def _confounded_reasons(sep: SeparabilityResult, b: Bounds, criteria: list[str], failures: Failures | None,
                        head: str, top_modality: str | None, mod_line: str | None) -> list[str]:
    """Why the split is confounded, most important first."""
    fam, best, sf, g, groups = sep.family, sep.best, sep.subset, sep.group_by, sep.n_groups
    reasons: list[str] = []
    if "auc" in criteria:
        reasons.append(f"members and non-members can be told apart without the model — {head}; its lower "
                       f"confidence bound {b.lower:.2f} exceeds the tolerated AUC {b.tau:.2f}")
        if mod_line:
            reasons.append(mod_line)
    if b.all_pure:
        reasons.append(
            f"every '{g}' group lies on one side ({groups['members_only']} member groups, "
            f"{groups['nonmembers_only']} non-member groups): membership also follows from the {g} itself; "
            f"the separation above was found with whole '{g}' groups held out, so it is more than each {g}'s "
            "identity (something the groups of one side share: a recording set-up, a voice type)")
    if "subset" in criteria and ("auc" not in criteria or sf.share < 0.5):  # else: the whole side, said above
        reasons.append(_subset_line(sf, b, fam.p_isolation, diluted="auc" not in criteria, auc=best.auc))
        reasons += _subset_feature_lines(sf)
    if "failures" in criteria:
        reasons.append(_failure_line(failures, b.alphas.get("failures", b.alpha), decisive=True, low=b.fail_low))
    if mod_line and "auc" not in criteria:
        reasons.append(mod_line)
    if top_modality == Modality.TEXT and sep.text_terms:
        t = sep.text_terms
        reasons.append(f"the transcripts differ: words typical of members: {', '.join(t['members']) or '—'}; "
                       f"of non-members: {', '.join(t['nonmembers']) or '—'}")
    elif top_modality and str(top_modality).startswith("text.") and sep.text_terms:
        source = str(top_modality)[len("text."):]  # a caption-like source of its own (text.caption, text.prompt)
        t = (sep.text_terms.get("sources") or {}).get(source)
        if t:
            reasons.append(f"the {source} texts differ: words typical of members: {', '.join(t['members']) or '—'}; "
                           f"of non-members: {', '.join(t['nonmembers']) or '—'}")
    return reasons + _feature_lines(sep, top_modality)


def _undecided_reasons(sep: SeparabilityResult, b: Bounds, settings: Settings,
                       failures: Failures | None) -> tuple[list[str], int | None]:
    """What keeps a split that is not confounded from being clean (empty: clean), and the clips that would decide
    it."""
    fam, best, sf, g, groups = sep.family, sep.best, sep.subset, sep.group_by, sep.n_groups
    alpha, tau, tau_s = b.alpha, b.tau, b.tau_s
    undecided: list[str] = []
    need = None
    if b.too_few:
        undecided.append(
            f"too few {'groups' if g else 'clips'} to decide: the {round(1 / fam.p_floor)} possible relabellings"
            + (f" of whole '{g}' groups" if g else "")
            + f" cannot give a p-value at or below alpha = {alpha} (smallest {fam.p_floor:.3f})"
            + (f"; with {groups['total']} groups ({groups['with_members']} holding members, "
               f"{groups['with_nonmembers']} holding non-members) this needs more groups" if groups else ""))
    if b.all_pure:
        undecided.append(
            f"every '{g}' group lies on one side ({groups['members_only']} member groups, "
            f"{groups['nonmembers_only']} non-member groups): membership follows from the {g} itself, "
            f"a confound in its own right that an attack can exploit; this run, grouped by '{g}', only asks "
            f"whether anything beyond the {g} separates the sides, so it cannot make the split clean")
    if b.upper >= tau:
        deff = b.design_effect
        need = stats.n_to_decide(
            max(best.auc, 0.5), max(abs(max(best.auc, 0.5) - tau), 0.01), b.member_share,
            stats.quantile(1 - alpha / b.m) if best.auc > tau else stats.quantile(1 - alpha), settings.power,
            deff)
        undecided.append(
            f"cannot rule out separability at the tolerated AUC {tau:.2f}: {b.upper_model.name}'s upper "
            f"confidence bound is {b.upper:.2f} (AUC {b.upper_model.auc:.2f}) and the best model's lower bound "
            f"{b.lower:.2f} does not exceed the tolerance either; about {need} clips would decide it at this "
            f"balance ({_pct(settings.power)} power"
            + (f", counting the clustering of clips in '{g}' groups: design effect {deff:.1f}" if deff > 1.05
               else "") + ")")
    if b.share_high_any >= tau_s:
        undecided.append(
            f"cannot rule out an isolated subset: up to {_pct(b.share_high_any)} of one side may be separable at "
            f"1% FPR (upper bound; tolerated {_pct(tau_s)}); now {sf.model} isolates {sf.n_isolated} of "
            f"{sf.n_side} {_side_word(sf.side)}")
    if failures and b.fail_p <= alpha:
        undecided.append(_failure_line(failures, alpha, decisive=False))
    return undecided, need


# What a clean verdict tests: the separability the blind classifiers learn from this split at its size (a shift
# too weak for them to learn from these clips is not ruled out: at a Bayes AUC equal to the tolerance, 200 clips
# are called clean 18% of the time, benchmarks/calibration.py section 3), hence the wording.
_CLEAN_LEAD = "what the blind classifiers learn from this split rules out separability beyond the tolerance:"


def _clean_reasons(sep: SeparabilityResult, b: Bounds, head: str, mod_line: str | None) -> list[str]:
    """Why the data rule separability out, and a weak separation below the tolerance if there is one."""
    fam = sep.family
    reasons = [
        f"{_CLEAN_LEAD} every blind classifier's upper confidence "
        f"bound is below the tolerated AUC {b.tau:.2f} (highest {b.upper:.2f}, {b.upper_model.name}), and no "
        f"model isolates more than {_pct(max(b.share_high_any, 0.0))} of either side at 1% FPR (upper bound; "
        f"tolerated {_pct(b.tau_s)}) — {head}"]
    if fam.p_auc <= b.alpha:
        exact = "refit" in fam.method
        reasons.append(
            f"a weak separation below the tolerance ({fmt_p(fam.p_auc)}): "
            + ("report it next to attack results" if exact else
               "permutation p-values of cross-validated scores run small when clips come in clusters of "
               "near-identical recordings (the same speaker and words on both sides), so confirm it with "
               "the refit permutation test (refit-permutations = 99) before reporting it"))
        if mod_line:
            reasons.append(mod_line)
    return reasons


def _context_reasons(sep: SeparabilityResult, b: Bounds, status: str) -> list[str]:
    """What every verdict adds: below-chance scores, and how grouped folds counted the evidence."""
    best, g, groups = sep.best, sep.group_by, sep.n_groups
    reasons: list[str] = []
    below = [mr for mr in sep.models if mr.ci_high < 0.5]
    if best.auc < 0.5 and below:
        worst = min(below, key=lambda mr: mr.auc)
        reasons.append(
            f"the blind classifiers score below chance (best AUC {best.auc:.2f}, {worst.name} {worst.auc:.2f}): "
            "members and non-members are "
            "balanced within clusters of near-identical clips (e.g. the same speaker and words on both sides), "
            "which cross-validation anti-learns; scores below chance also lower the upper bounds a clean verdict "
            "rests on, so they make it optimistic rather than conservative — group the folds by the cluster "
            "column (group-by = speaker, sentence) for a sharper test")
    if sep.group_table is not None and g:
        mixed = sep.group_table.dropna(subset=["auc"])
        reasons.append(f"folds and permutations grouped by '{g}': {groups['total']} groups, "
                       f"{groups['with_members']} holding members and {groups['with_nonmembers']} holding "
                       f"non-members; confidence intervals are cluster-robust (t on {groups['total'] - 1} df)")
        if len(mixed) and status == CONFOUNDED:
            reasons.append(f"within the {len(mixed)} groups holding both sides, the blind AUC has median "
                           f"{mixed['auc'].median():.2f}")
        single = groups["members_only"] + groups["nonmembers_only"]
        if single and not b.all_pure:
            reasons.append(f"{single} of {groups['total']} '{g}' groups lie entirely on one side: group identity "
                           "alone would separate them")
    return reasons


def _subset_line(sf, b: Bounds, p: float, diluted: bool, auc: float) -> str:
    side = _side_word(sf.side)
    other = "non-members" if sf.side == "members" else "members"
    level = 1 - b.alphas["subset"] / (2 * b.m)
    line = (f"a subset of the {side} separates: {sf.model} isolates {sf.n_isolated} of {sf.n_side} {side} at "
            f"{_pct(sf.fpr)} error on the {other} — an estimated {_pct(sf.share)} of the {side} "
            f"[{_pct(b.share_low)}, {_pct(b.share_high)}] are separable (exact bounds at {level:.4g}, the estimated "
            f"threshold included), above the tolerated {_pct(b.tau_s)}, {fmt_p(p)} (family-wise)")
    if diluted:
        line += (f"; the AUC ({auc:.2f}) stays low because the rest of the {side} look like the {other}, "
                 "but an attack's TPR at low FPR will pick these clips up")
    return line


def _subset_feature_lines(sf, k: int = 3) -> list[str]:
    side = _side_word(sf.side)
    other = "non-members" if sf.side == "members" else "members"
    lines = []
    for f in sf.features[:k]:
        if abs(f["auc"] - 0.5) < 0.1:
            continue
        lines.append(f"the isolated {side} differ in {f['feature']}: {fmt_value(f['feature'], f['isolated_median'])} "
                     f"vs {fmt_value(f['feature'], f['other_median'])} among the {other} (medians; AUC "
                     f"{f['auc']:.2f})")
    return lines


def _failure_line(f: Failures, alpha: float, decisive: bool, low: float | None = None) -> str:
    sm, sn = f.shares()
    line = (f"clips that could not be analysed fall on one side: {f.members_failed} of {f.members_total} members "
            f"({_pct(sm)}) and {f.nonmembers_failed} of {f.nonmembers_total} non-members ({_pct(sn)}) failed, "
            f"Fisher {fmt_p(f.p)}" + (f", the difference at least {_pct(low)} ({1 - alpha:.0%} lower bound)"
                                       if low is not None else ""))
    if decisive:
        return line + ("; which files fail is itself a confound (a codec, container or source only one side "
                       "uses): see errors.csv")
    return line + "; the difference is small, but see errors.csv for what fails"


def _speaker_reasons(speakers: dict, g: str | None, status: str, reasons: list[str], criteria: list[str],
                     tau: float, tau_s: float, alpha: float) -> tuple[str, float | None]:
    """A speaker-disjoint split is named (and never called clean): membership follows from who speaks; so is a
    speaker mix that alone separates the sides beyond the tolerated AUC (criterion ``speakers``, except in a run
    grouped by the speakers, which asks what lies beyond them), its lower bound at 1 - ``alpha`` (the criterion's
    share of alpha). Returns the status and that lower bound (None without a speaker score); reasons and criteria
    are extended in place."""
    o = speakers["overlap"]
    src = "from the manifest" if speakers["source"] == "given" else "inferred from the voice"
    sp = speakers.get("separability")
    low = None
    if sp:
        low = sp["auc"] - stats.quantile(1 - alpha) * sp["se"] if math.isfinite(sp["se"]) else math.nan
    if sp and not o["disjoint"] and sp["p"] <= alpha and low > tau:
        line = (f"the speakers ({src}) are split unevenly between the sides: who speaks alone tells members from "
                f"non-members at AUC {sp['auc']:.2f} (lower confidence bound {low:.2f} at {1 - alpha:.4g} above the "
                f"tolerated {tau:.2f}, {fmt_p(sp['p'])}; each clip scored by its speaker's member share in the other "
                "folds) — an attack on a model that heard those voices can exploit it")
        if g in ("speaker", "voice"):
            reasons.append(line + f"; this run, grouped by '{g}', asks whether anything beyond the speakers "
                                  "separates the sides")
        else:
            if status != CONFOUNDED:
                reasons.insert(0, line)
                status = CONFOUNDED
            else:
                reasons.insert(1, line)
            criteria.append("speakers")
    if o["disjoint"]:
        line = (f"the split is speaker-disjoint: the {o['members_only']} speakers among the members and the "
                f"{o['nonmembers_only']} among the non-members ({src}) are different people — membership follows "
                "from who speaks, which an attack on a model that heard those voices can exploit")
        if g in ("speaker", "voice"):
            line += (f"; this run, grouped by '{g}', asks a different question — whether anything beyond the voice "
                     "separates the sides — and cannot make the split clean")
        else:
            line += ("; group-by = speaker (or voice) would ask whether anything beyond the voice separates the "
                     "sides, which never makes a speaker-disjoint split clean")
        if status == CLEAN:
            status = INCONCLUSIVE
            # the clean reason no longer holds as worded: the features rule separability out, the speakers do not
            reasons[:] = [("the blind classifiers find no separability beyond the tolerance in the features, but "
                           "that cannot make this split clean:" + r[len(_CLEAN_LEAD):])
                          if r.startswith(_CLEAN_LEAD) else r for r in reasons]
        reasons.insert(1 if status == CONFOUNDED and reasons else 0, line)
    elif o["clips"] and o["share_clips_one_side"] > tau_s:
        reasons.append(f"{o['members_only'] + o['nonmembers_only']} of {o['total']} speakers ({src}) appear on one "
                       f"side only, {_pct(o['share_clips_one_side'])} of the clips: for those clips membership "
                       "follows from who speaks")
    return status, low


def _metadata_reasons(md: MetadataReport, status: str, reasons: list[str], criteria: list[str]) -> str:
    """The metadata criterion: a column that alone separates the sides beyond the tolerated AUC makes the split
    confounded (its line leads when it alone decides); a column associated with membership below that level is
    said, as context. Returns the status."""
    k = len(md.columns)
    decisive = sorted(md.decisive, key=lambda d: -d["lower_bound"])
    if decisive:
        lines = [f"metadata: {metadata_line(d, md.alpha, md.tolerated_auc, k)}" for d in decisive]
        criteria.append("metadata")
        if status != CONFOUNDED:
            reasons[:0] = lines  # the only criterion met: it leads
            status = CONFOUNDED
        else:
            reasons[1:1] = lines
    for d in md.significant:
        if not d["decisive"]:
            reasons.append(f"metadata: {metadata_line(d, md.alpha, md.tolerated_auc, k)} (associated with "
                           "membership, but not shown beyond the tolerated AUC)")
    return status
