"""Terminal text for every verb: summaries, the gate line, speakers, matching. Reads results, computes nothing."""

from __future__ import annotations

import json
import math

from blindcheck.analysis.matching import MatchResult, balance_summary
from blindcheck.analysis.verdict import percent
from blindcheck.runtime.files import json_ready
from blindcheck.verbs._check import CheckResult


def format_match_summary(res: MatchResult) -> str:
    """The terminal summary of ``blindcheck match``."""
    b = res.before
    lines = [f"blindcheck match — design {res.design}",
             f"  before: {b.get('status', '?').upper()}, best AUC {b.get('auc', math.nan):.2f} "
             f"[{b.get('ci_low', math.nan):.2f}, {b.get('ci_high', math.nan):.2f}] ({b.get('best_model')}), "
             f"{b.get('members')} members, {b.get('nonmembers')} non-members"]
    for p in res.parts:
        lines += ["", f"  {p.name}: {'MATCHED' if p.success else 'NO SUBSET'} — {p.description}"]
        for a in p.attempts:
            r = a.retained
            fresh = (f"fresh {a.verdict.status}, AUC {a.fresh.best.auc:.2f} [{a.fresh.best.ci_low:.2f}, "
                     f"{a.fresh.best.ci_high:.2f}]" if a.verdict is not None else "not verified")
            sel = f"selection AUC {a.selection['auc']:.2f}; " if a.selection else ""
            lines.append(f"    {a.method:<11} kept {r.get('members', 0):>5} m / {r.get('nonmembers', 0):>5} n "
                         f"({percent(r.get('smaller_side_share', 0))} of the smaller side); {sel}{fresh}"
                         + ("  <- accepted" if a.success else ""))
        best = p.best
        if best is not None and best.balance is not None:
            bs = balance_summary(best.balance)
            for mod, e in bs.items():
                lines.append(f"    balance {mod:<10} |SMD| < 0.1: {percent(e['balanced_share_before'] or 0)} -> "
                             f"{percent(e['balanced_share_after'] or 0)} of {e['features']} features; max |SMD| "
                             f"{_num(e['max_abs_smd_before'])} -> {_num(e['max_abs_smd_after'])}")
        lines += [f"    - {r}" for r in p.reasons]
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None else ("inf" if not math.isfinite(x) else f"{x:.2f}")




def format_summary(result: CheckResult, out: str | None = None) -> str:
    """The terminal summary of ``blindcheck check`` (``out``: its result directory, where advised commands write)."""
    v, sep = result.verdict, result.separability
    lines = [f"blindcheck check — {result.manifest.source}",
             f"  clips: {len(sep.labels)} analysed ({int(sep.labels.sum())} members, "
             f"{int((1 - sep.labels).sum())} non-members), {result.extraction.stats['failed']} failed; "
             f"{sep.folds}-fold CV x {sep.repeats}" + (f", grouped by {sep.group_by}" if sep.group_by else ""),
             "",
             f"  {'model':<22} {'AUC':>5} {f'{100 * (1 - result.settings.alpha):.0f}% CI':>13} {'TPR@1%':>7} "
             f"{'TPR@0.1%':>9} {'isolated':>9} {'bal.acc':>7} {'p (own)':>8}"]
    for mr in sorted(sep.models, key=lambda x: -x.auc):
        iso = max(mr.isolation_members, mr.isolation_nonmembers)
        side = "m" if mr.isolation_members >= mr.isolation_nonmembers else "n"
        lines.append(f"  {mr.name:<22} {mr.auc:>5.2f} {f'[{mr.ci_low:.2f}, {mr.ci_high:.2f}]':>13} "
                     f"{100 * mr.tpr_at_1pct_fpr:>6.0f}% {100 * mr.tpr_at_01pct_fpr:>8.0f}% "
                     f"{100 * iso:>6.0f}% {side} {mr.balanced_accuracy:>7.2f} {mr.p_value:>8.4f}")
    if sep.family is not None:
        f = sep.family
        lines.append(f"  family-wise over {len(sep.models)} models: AUC p = {f.p_auc:.4f}, isolated subset p = "
                     f"{f.p_isolation:.4f} ({f.method}; smallest possible p {f.p_floor:.4f})")
    lines.append("  (isolated: share of members (m) or non-members (n) scored beyond all but 1% of the other side)")
    if sep.fpr_resolution > 0.001:
        lines.append(f"  (with {int((1 - sep.labels).sum())} non-members the finest FPR is "
                     f"{100 * sep.fpr_resolution:.2f}%: TPR@0.1% is TPR at zero false positives)")
    names = {mr.name for mr in sep.models}
    if "single:all" in names:
        lines.append("  (single:all: the one feature that best separates the training folds, chosen afresh in each "
                     "fold)")
    if any(n.startswith("tfidf:text") for n in names) and "text" not in result.extraction.modalities:
        lines.append("  (tfidf:text reads the words of the manifest's texts; it runs even where the text modality's "
                     "sentence embeddings and lexical features were not extracted)")
    below = [mr.name for mr in sep.models if mr.ci_high < 0.5]
    if below:
        lines.append(f"  ({', '.join(below)}: AUC below 0.5 is no signal but cross-validation's anti-learning on "
                     "features balanced across the sides: a fold's training set over-represents what its test "
                     "set lacks)")
    tf = sep.top_features
    if tf is not None and not tf.empty:
        from blindcheck.analysis.verdict import fmt_value

        lines += ["", f"  {'top features (share of attribution)':<44} {'members':>12} {'non-members':>12} "
                      f"{'d':>6} {'AUC':>5}"]
        for r in tf.head(6).itertuples():
            lines.append(f"  {r.feature[:36]:<36} {100 * r.share:>6.1f}% {fmt_value(r.feature, r.member_median):>12} "
                         f"{fmt_value(r.feature, r.nonmember_median):>12} {r.cohen_d:>6.1f} {r.auc:>5.2f}")
    if sep.group_table is not None:
        gt = sep.group_table
        lines += ["", f"  per {sep.group_by} ({len(gt)} groups; blind AUC inside groups holding both sides)",
                  f"  {'group':<20} {'n':>6} {'members':>8} {'non-m.':>7} {'AUC':>6}"]
        for r in gt.head(10).itertuples():
            auc = f"{r.auc:.2f}" if r.auc == r.auc else "—"
            lines.append(f"  {str(r.group)[:20]:<20} {r.n:>6} {r.members:>8} {r.nonmembers:>7} {auc:>6}")
        if len(gt) > 10:
            lines.append(f"  … {len(gt) - 10} more in result.json")
    if result.speakers:
        from blindcheck.reporting.terminal import format_speakers

        lines += ["", *format_speakers(result.speakers)]
    lines += ["", f"  verdict: {v.status.upper()}"]
    lines += [f"  - {r}" for r in v.reasons]
    lines += ["", *format_advice(result, out)]
    return "\n".join(lines)


def format_advice(result: CheckResult, out: str | None = None) -> list[str]:
    """What to do next (the report's last section), with the full command of each item that has one."""
    from blindcheck.reporting.sections import advice_command

    lines = ["  next:"]
    res = {"command": result.command, "settings": result.settings.to_dict(),
           "manifest": {"source": result.manifest.source},
           "extraction": {"modalities": list(result.extraction.modalities)}}
    for item in result.advice():
        lines.append(f"  - {item['text']}")
        if isinstance(item.get("command"), dict):
            lines.append(f"      {advice_command(res, out, item['command'])}")
    return lines


def gate_line(result: CheckResult) -> str:
    """One machine-readable JSON line for ``blindcheck gate``."""
    v = result.verdict
    sub = v.subset or {}
    return json.dumps(json_ready({"verdict": v.status, "criteria": v.criteria, "best_model": v.best_model,
                              "auc": round(v.best_auc, 4), "lower_bound": round(v.lower_bound, 4),
                              "upper_bound": round(v.upper_bound, 4), "p": v.family_p,
                              "subset_share": sub.get("share"), "subset_side": sub.get("side"),
                              "subset_p": sub.get("family_p"), "required_n": v.required_n,
                              "top_modality": v.top_modality, "reason": v.reasons[0] if v.reasons else "",
                              **({"confounded_attacks": result.attacks.confounded} if result.attacks else {})}))




def format_speakers(sp: dict) -> list[str]:
    """Summary lines of the speaker overlap (for the CLI)."""
    o = sp["overlap"]
    src = "manifest's speaker column" if sp["source"] == "given" else "speakers inferred from the voice"
    lines = [f"  speakers ({src}): {o['total']} — {o['shared']} on both sides, {o['members_only']} only among "
             f"members, {o['nonmembers_only']} only among non-members; {100 * o['share_clips_one_side']:.0f}% of "
             f"the clips have a speaker on one side only" if o["clips"] else f"  speakers ({src}): none known"]
    if o["disjoint"]:
        lines.append("  the split is speaker-disjoint: membership follows from who speaks")
    sep = sp.get("separability")
    if sep:
        lines.append(f"  who speaks alone separates the sides at AUC {sep['auc']:.2f} (lower bound "
                     f"{sep['lower_bound']:.2f}; each clip scored by its speaker's member share in the other folds)")
    inf = sp.get("inferred")
    if inf:
        ari = inf.get("ari_vs_given")
        lines.append(f"  voice clusters: {inf['clusters']} (threshold {inf['threshold']:.2f}"
                     + (f"; agreement with the speaker column: ARI {ari:.2f}" if ari is not None and ari == ari
                        else "") + (f"; {inf['unclustered']} clips without a voice embedding" if inf['unclustered']
                                    else "") + ")")
    return lines
