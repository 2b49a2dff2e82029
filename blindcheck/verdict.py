"""The verdict: a pure function from separability metrics and settings to clean / confounded / inconclusive.

With m models compared, the best model (highest blind AUC) is judged with the family-wise corrections that
choosing it requires (Bonferroni):

- **confounded** when its permutation p-value x m < alpha *and* its one-sided lower confidence bound at
  level 1 - alpha/m exceeds the tolerated AUC (default 0.60);
- otherwise **inconclusive** when the sample is too small to detect a blind AUC equal to the tolerated AUC
  with the asked power (default 80%) at level alpha/m (Hanley-McNeil variance, the split's class balance);
  the reasons say how many clips would be needed;
- otherwise **clean**.

Every verdict carries human-readable reasons, most important first.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from blindcheck import stats
from blindcheck.separability import SeparabilityResult
from blindcheck.settings import Settings

CLEAN, CONFOUNDED, INCONCLUSIVE = "clean", "confounded", "inconclusive"


@dataclass
class Verdict:
    status: str
    reasons: list[str]
    best_model: str
    best_auc: float
    family_p: float
    lower_bound: float  # simultaneous one-sided lower confidence bound of the best AUC
    power_at_tolerated: float
    required_n: int | None
    top_modality: str | None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def fmt_value(feature: str, v: float) -> str:
    """A feature value with the unit its name implies."""
    if v is None or not math.isfinite(v):
        return "n/a"
    name = feature.rsplit(".", 1)[-1]
    if name.endswith("_hz") or name == "sample_rate":
        return f"{v / 1000:.2f} kHz" if abs(v) >= 1000 else f"{v:.0f} Hz"
    if name.endswith("_dbfs"):
        return f"{v:.1f} dBFS"
    if name.endswith("_lufs"):
        return f"{v:.1f} LUFS"
    if name.endswith("_db"):
        return f"{v:.1f} dB"
    if name.endswith("_s"):
        return f"{v * 1000:.0f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if name.endswith(("_ratio", "_fraction")):
        return f"{100 * v:.1f}%"
    return f"{v:.3g}"


def fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _modality_line(sep: SeparabilityResult) -> tuple[str | None, str | None]:
    mods = sep.modality_models()
    if not mods:
        return None, None
    shares = sep.modality_shares()
    # Ties (to 3 decimals) go to the text modality first: different words make different sounds, not the
    # other way round; then to the modality the combined model leans on most.
    ranked = sorted(mods, key=lambda m: (round(m.auc, 3), m.modality == "text", shares.get(m.modality, 0.0)),
                    reverse=True)
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


def decide(sep: SeparabilityResult, settings: Settings) -> Verdict:
    """Turn separability metrics into a verdict with reasons. Pure: no I/O, no randomness."""
    m = len(sep.models)
    best = sep.best
    family_p = min(1.0, best.p_value * m)
    level = 1 - settings.alpha / m
    lower = stats.lower_bound(best.auc, best.se, level)
    n1, n0 = int(sep.labels.sum()), int((1 - sep.labels).sum())
    pw = stats.power_auc(settings.tolerated_auc, n1, n0, settings.alpha / m)
    need = None
    top_modality, mod_line = _modality_line(sep)
    head = (f"best blind classifier {best.name}: AUC {best.auc:.2f} [{best.ci_low:.2f}, {best.ci_high:.2f}], "
            f"TPR {100 * best.tpr_at_1pct_fpr:.0f}% at 1% FPR, {fmt_p(family_p)} (permutation, corrected for {m} "
            f"models)")
    reasons: list[str] = []
    if family_p < settings.alpha and lower > settings.tolerated_auc:
        status = CONFOUNDED
        reasons.append(f"members and non-members can be told apart without the model — {head}; its lower "
                       f"confidence bound {lower:.2f} exceeds the tolerated AUC {settings.tolerated_auc:.2f}")
        if mod_line:
            reasons.append(mod_line)
        if top_modality == "text" and sep.text_terms:
            t = sep.text_terms
            reasons.append(f"the transcripts differ: words typical of members: {', '.join(t['members']) or '—'}; "
                           f"of non-members: {', '.join(t['nonmembers']) or '—'}")
        reasons += _feature_lines(sep, top_modality)
    else:
        share = n1 / (n1 + n0)
        if pw < settings.power:
            status = INCONCLUSIVE
            need = stats.required_n(settings.tolerated_auc, share, settings.alpha / m, settings.power)
            reasons.append(
                f"too few clips to tell: with {n1 + n0} clips ({n1} members, {n0} non-members) a blind AUC of "
                f"{settings.tolerated_auc:.2f} would be detected with only {100 * pw:.0f}% power; about {need} "
                f"clips are needed at this balance for {100 * settings.power:.0f}%")
            reasons.append(head)
        else:
            status = CLEAN
            reasons.append(f"no model-free classifier separates the sides beyond the tolerated AUC "
                           f"{settings.tolerated_auc:.2f} — {head}")
            if family_p < settings.alpha:
                exact = best.p_method.startswith("refit")
                reasons.append(
                    f"a weak separation below the tolerance (lower bound {lower:.2f}, {fmt_p(family_p)}): "
                    + ("report it next to attack results" if exact else
                       "permutation p-values of cross-validated scores run small when clips come in clusters of "
                       "near-identical recordings (the same speaker and words on both sides), so confirm it with "
                       "--refit-permutations 99 before reporting it"))
        if mod_line and status == CLEAN and family_p < settings.alpha:
            reasons.append(mod_line)
    below = [mr for mr in sep.models if mr.ci_high < 0.5]
    if best.auc < 0.5 and below:
        worst = min(below, key=lambda mr: mr.auc)
        reasons.append(
            f"the blind classifiers score below chance (best AUC {best.auc:.2f}, {worst.name} {worst.auc:.2f}): "
            "members and non-members are "
            "balanced within clusters of near-identical clips (e.g. the same speaker and words on both sides), "
            "which cross-validation anti-learns; this makes the check conservative — rerun with --group-by on "
            "the cluster column (speaker, sentence) for a sharper test")
    if sep.group_table is not None and sep.group_by:
        mixed = sep.group_table.dropna(subset=["auc"])
        if len(mixed) and status == CONFOUNDED:
            reasons.append(f"folds grouped by '{sep.group_by}': within the {len(mixed)} groups holding both sides, "
                           f"the blind AUC has median {mixed['auc'].median():.2f}")
        single = int(((sep.group_table["members"] == 0) | (sep.group_table["nonmembers"] == 0)).sum())
        if single:
            reasons.append(f"{single} of {len(sep.group_table)} '{sep.group_by}' groups lie entirely on one side: "
                           "group identity alone would separate them")
    return Verdict(status=status, reasons=reasons, best_model=best.name, best_auc=best.auc, family_p=family_p,
                   lower_bound=lower, power_at_tolerated=pw, required_n=need, top_modality=top_modality,
                   details={"models_compared": m, "alpha": settings.alpha, "tolerated_auc": settings.tolerated_auc})
