"""The report's sections, built from the result files into the one :class:`~blindcheck.reporting.model.Report`
every format renders. One small function per section: it reads only what it needs and returns a
:class:`~blindcheck.reporting.model.Section` or None; a section whose keys are missing or shaped differently is
left out (and logged), never an error. Numbers are formatted here, once: AUCs and shares clipped to [0, 1], at most
four significant digits. Nothing new is computed: every figure comes from ``result.json`` and its sibling files.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blindcheck.reporting.data import ReportData
from blindcheck.reporting.escape import Raw
from blindcheck.reporting.model import Bullets, Code, Figure, Para, Report, Section, Table

log = logging.getLogger(__name__)
_ABSENT = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "n/a"


def auc(x: Any) -> str:
    """An AUC or an AUC bound: two decimals, inside [0, 1]."""
    return f"{min(max(x, 0.0), 1.0):.2f}" if _finite(x) else "n/a"


def pct(x: Any, digits: int = 0) -> str:
    """A share as a percentage, inside [0, 100]."""
    return f"{100 * min(max(x, 0.0), 1.0):.{digits}f}%" if _finite(x) else "n/a"


def pval(x: Any) -> str:
    """A p-value as a statement: "p < 0.001" or "p = 0.123"."""
    if not _finite(x):
        return "p n/a"
    return "p < 0.001" if x < 0.001 else f"p = {x:.3f}"


def pcell(x: Any) -> str:
    """A p-value in a table column headed "p": "< 0.001" or "0.123"."""
    return pval(x)[len("p "):].removeprefix("= ")


def ci(lo: Any, hi: Any) -> str:
    return f"[{auc(lo)}, {auc(hi)}]"


def level(x: float) -> str:
    """A confidence level such as 1 - 0.05/7, at most four significant digits."""
    return f"{x:.4g}"


def _settings(d: ReportData) -> dict:
    return d.result.get("settings") or {}


def _details(d: ReportData) -> dict:
    return (d.result.get("verdict") or {}).get("details") or {}


HEADLINES = {
    "confounded": "Members and non-members can be told apart without the model: the split is confounded.",
    "clean": "No model-free classifier tells members from non-members beyond the tolerated level.",
    "inconclusive": "The data neither rule separability in nor out at this size.",
}


# ------------------------------------------------------------------------------------------------ the verdict


def verdict(d: ReportData) -> Section:
    v = d.result["verdict"]
    s = Section("verdict", "Verdict")
    s.add(Bullets([str(r) for r in v.get("reasons") or []]))
    return s


def criteria(d: ReportData) -> Section:
    """Every criterion the verdict weighed, with its value, its bound and the threshold it was held against: the
    confounded criteria (any one met decides), the conditions of a clean verdict (all must hold), the speakers and
    the manifest's attributes."""
    v = d.result["verdict"]
    det = _details(d)
    st = _settings(d)
    alpha = det.get("alpha", st.get("alpha", 0.05))
    tau = det.get("tolerated_auc", st.get("tolerated_auc", 0.6))
    tau_s = det.get("tolerated_share", st.get("tolerated_share", 0.1))
    m = det.get("models_compared") or len(d.result.get("models") or []) or 1
    fam = d.result.get("family_test") or det.get("family") or {}
    met = set(v.get("criteria") or [])
    lv = det.get("levels") or {}  # the levels the decision used (alpha split between the criteria)
    ac = det.get("alpha_criteria") or {}

    def at(key: str, default: float, formula: str) -> str:
        return f"level {level(lv.get(key, default))}" + (f", {formula}" if formula else "")

    a_auc, a_sub = level(ac.get("auc", alpha)), level(ac.get("subset", alpha))
    rows, keys, short = [], [], []

    def row(key: str, name: str, value: str, bound: str, threshold: str, result: str) -> None:
        keys.append(key)
        rows.append([name, value, bound, threshold, result])
        short.append([SHORT_NAMES.get(key, key), _head(value), _head(bound), _head(threshold), result.split(":")[0]])

    row("auc", "AUC: best model above the tolerance", f"{auc(v.get('best_auc'))} ({v.get('best_model')})",
        f"lower {auc(v.get('lower_bound'))} (one-sided, "
        f"{at('auc_lower', 1 - alpha / m, f'1 − {a_auc}/{m}')}); "
        f"family-wise {pval(v.get('family_p'))}",
        f"lower bound > {tau:.2f} and family-wise p ≤ {alpha}",
        "met: confounded" if "auc" in met else "not met")
    sub = v.get("subset") or {}
    if sub:
        side = "members" if sub.get("side") == "members" else "non-members"
        row("subset", f"isolated subset: share of one side separable at {pct(sub.get('fpr', 0.01))} FPR",
            f"{pct(sub.get('share'))} of the {side} ({sub.get('model')}: {sub.get('n_isolated')} of "
            f"{sub.get('n_side')})",
            f"[{pct(sub.get('share_low'))}, {pct(sub.get('share_high'))}] (lower at "
            f"{at('subset_lower', 1 - alpha / (2 * m), f'1 − {a_sub}/(2·{m})')}); "
            f"family-wise {pval(fam.get('p_isolation'))}",
            f"lower bound > {pct(tau_s)} and family-wise p ≤ {alpha}",
            "met: confounded" if "subset" in met else "not met")
    f = v.get("failures") or (d.result.get("extraction") or {}).get("failed_by_side") or {}
    if f:
        gap = abs((f.get("members_share") or 0) - (f.get("nonmembers_share") or 0))
        row("failures", "clips that failed fall on one side",
            f"members {f.get('members_failed')} of {f.get('members_total')}, non-members {f.get('nonmembers_failed')} "
            f"of {f.get('nonmembers_total')} (gap {pct(gap, 1)})",
            f"Fisher {pval(f.get('p'))}" + (f"; gap lower {pct(f['gap_lower'], 1)} (level "
                                            f"{level(f.get('gap_lower_level', 1 - alpha))}"
                                            + (f", 1 − {level(ac['failures'])}" if "failures" in ac else "") + ")"
                                            if _finite(f.get("gap_lower")) else ""),
            f"Fisher p ≤ {alpha} and gap lower bound > {pct(tau_s)}",
            "met: confounded" if "failures" in met else "not met")
    sp = d.result.get("speakers") or {}
    if sp:
        o = sp.get("overlap") or {}
        src = "given" if sp.get("source") == "given" else "inferred from the voice"
        row("speaker-overlap", f"speakers ({src}) on both sides",
            f"{o.get('shared')} of {o.get('total')} shared; {o.get('members_only')} members only, "
            f"{o.get('nonmembers_only')} non-members only", f"{pct(o.get('share_clips_one_side'))} of clips one-sided",
            "speaker-disjoint: never clean", "disjoint: never clean" if o.get("disjoint") else "shared speakers")
        sep = sp.get("separability")
        if isinstance(sep, dict):
            grouped = (d.result.get("cv") or {}).get("group_by") in ("speaker", "voice")
            sp_low = lv.get("speakers_lower_bound", sep.get("lower_bound"))
            a_sp = ac.get("speakers", alpha)
            row("speakers", "speakers: who speaks alone separates the sides", f"AUC {auc(sep.get('auc'))}",
                f"lower {auc(sp_low)} ({at('speakers_lower', 1 - alpha, f'1 − {level(a_sp)}')}), "
                f"{pval(sep.get('p'))}",
                f"lower bound > {tau:.2f} and p ≤ {level(a_sp)}" + (" (not applied: folds grouped by speaker)"
                                                                    if grouped else ""),
                "met: confounded" if "speakers" in met else
                "not applied: speaker-disjoint (row above)" if o.get("disjoint") else "not met")
    md = d.result.get("metadata") or {}
    if md.get("columns"):
        cols = md["columns"]
        top = max(cols, key=lambda c: (c.get("lower_bound") if _finite(c.get("lower_bound")) else -1))
        row("metadata", f"manifest attributes ({md.get('family', '')})",
            f"{len(cols)} tested; strongest {top.get('column')}: AUC {auc(top.get('effect_auc'))}",
            f"lower {auc(top.get('lower_bound'))}, Holm {pval(top.get('p_holm'))}",
            f"lower bound > {md.get('tolerated_auc', tau):.2f} and Holm p ≤ {md.get('alpha', alpha)}",
            "met: confounded (" + ", ".join(map(str, md.get("decisive") or [])) + ")" if "metadata" in met
            else "not met")
    # the clean side: every one of these must hold
    up = v.get("upper_bound")
    row("clean-auc", "clean: every model's AUC ruled out at the tolerance",
        f"highest upper bound {auc(up)} ({v.get('upper_bound_model')})",
        f"one-sided, level 1 − {alpha} = {1 - alpha:g}",
        f"< {tau:.2f}", "holds" if _finite(up) and up < tau else "does not hold")
    if sub:
        ua = sub.get("upper_bound_any")
        row("clean-subset", "clean: no model isolates a share of either side",
            f"highest upper bound {pct(ua)} over every model and side",
            f"level 1 − {alpha} = {1 - alpha:g} (threshold placed by the other side's order statistics)",
            f"< {pct(tau_s)}", "holds" if _finite(ua) and ua < tau_s else "does not hold")
    floor = det.get("p_floor", fam.get("p_floor"))
    if _finite(floor):
        row("clean-reachable", "clean: the relabellings can reach alpha",
            f"smallest p {floor:.3g} ({det.get('relabellings', fam.get('relabellings'))} relabellings)", "—",
            f"≤ {alpha}", "holds" if floor <= alpha else "does not hold")
    s = Section("criteria", "What decided the verdict")
    s.add(Table(["criterion", "value", "bound", "threshold", "result"], rows, "lllll", keys=keys, tex=True,
                label="tab:blindcheck-criteria", id="criteria",
                caption=f"The criteria of the verdict ({v.get('status')}). A split is confounded when any criterion "
                        f"is met; clean only when none is, every 'clean:' condition holds and the split is not "
                        f"speaker-disjoint; inconclusive otherwise. m = {m} blind models, alpha = {alpha}, tolerated "
                        f"AUC {tau:.2f}, tolerated share {pct(tau_s)}."
                        + (" Alpha is split between the criteria that can apply: "
                           + ", ".join(f"{k} {level(x)}" for k, x in ac.items()) + "." if ac else ""),
                tex_columns=["Criterion", "Value", "Bound", "Threshold", "Result"], tex_rows=short))
    return s


SHORT_NAMES = {"auc": "AUC", "subset": "isolated subset", "failures": "failures by side",
               "speaker-overlap": "speaker overlap", "speakers": "speaker mix", "metadata": "metadata",
               "clean-auc": "clean: AUC", "clean-subset": "clean: isolated", "clean-reachable": "clean: p reachable"}


_TERSE = (("lower bound > ", "> "), (" and family-wise p ", ", p "), (" and Holm p ", ", Holm p "),
          (" and p ", ", p "), ("highest upper bound ", "max upper "), (" over every model and side", ""),
          ("Fisher p ≤", "p ≤"), (" and gap > ", ", gap > "))


def _head(text: str) -> str:
    """The leading figure of a long cell, for the LaTeX form of a table (before any parenthesis or semicolon)."""
    out = text.split(" (")[0].split(";")[0].strip()
    for long, short in _TERSE:
        out = out.replace(long, short)
    return out


# ------------------------------------------------------------------------------------------------ the evidence


def _colours(d: ReportData) -> dict[str, str]:
    try:
        from blindcheck.reporting.plots import model_colours
    except ImportError:  # plots without the shared colour map
        return {}
    return model_colours(d.result)


def _isolated(mm: dict) -> str:
    a, b = mm.get("isolation_members"), mm.get("isolation_nonmembers")
    if not (_finite(a) and _finite(b)):
        return "n/a"
    return f"{pct(a)} m" if a >= b else f"{pct(b)} n"


MODEL_NOTES = {
    "single": "single:all: the one feature that best separates the training folds, chosen afresh in each fold",
    "tfidf": "tfidf:text: the transcripts' words (uni- and bigram TF-IDF); it runs whenever the manifest has "
             "text, even when the text modality (sentence embeddings and lexical features) was not extracted",
    "logreg": "logreg:all: an L2 logistic regression on every feature, a second opinion of another kind",
}


def models(d: ReportData) -> Section:
    st = _settings(d)
    alpha = st.get("alpha", 0.05)
    cv = d.result.get("cv") or {}
    fam = d.result.get("family_test") or {}
    colours = _colours(d)
    ms = sorted(d.result["models"], key=lambda m: -(m.get("auc") or 0))
    rows = [[m["name"], str(m.get("modality", "")), str(m.get("n_features", "")), auc(m.get("auc")),
             ci(m.get("ci_low"), m.get("ci_high")), pct(m.get("tpr_at_1pct_fpr")), pct(m.get("tpr_at_01pct_fpr")),
             _isolated(m), pcell(m.get("p_value"))] for m in ms]
    cl = f"{100 * (1 - alpha):.0f}%"
    t = Table(["model", "modality", "features", "AUC", f"{cl} CI", "TPR at 1% FPR", "TPR at 0.1% FPR",
               "isolated at 1% FPR", "p (own)"], rows, "llrrrrrrr", keys=[m["name"] for m in ms],
              swatches=[colours.get(m["name"]) for m in ms] if colours else None, tex=True, label="tab:blindcheck",
              id="models", caption=_tex_caption(d),
              tex_columns=["Model", "AUC", f"{cl} CI", "TPR@1%", "TPR@0.1%", "Isolated", Raw("$p$ (own)")],
              tex_rows=[[r[0], r[3], r[4], r[5], r[6], r[7], r[8]] for r in rows], tex_align="lrrrrrr")
    note = (f"{cv.get('clips', '?')} clips ({cv.get('members', '?')} members, {cv.get('nonmembers', '?')} "
            f"non-members), {cv.get('folds', '?')}-fold cross-validation × {cv.get('repeats') or 1} repeats"
            + (f", folds grouped by {cv['group_by']}" if cv.get("group_by") else "") + ". "
            "Isolated: the share of one side (m members, n non-members) a model separates at 1% FPR. p (own): each "
            "model's own permutation p-value; the verdict uses the family-wise ones in the criteria table"
            + (f" (AUC {pval(fam.get('p_auc'))}, isolated subset {pval(fam.get('p_isolation'))}; "
               f"{fam.get('method', '')})" if fam else "") + ".")
    res = cv.get("fpr_resolution")
    if _finite(res) and res > 0.001:
        note += (f" With {cv.get('nonmembers', '?')} non-members the finest FPR is {100 * res:.2g}%: TPR at 0.1% FPR "
                 "is the TPR at zero false positives.")
    kinds = {str(m["name"]).split(":", 1)[0] for m in ms}
    explained = [MODEL_NOTES[k] for k in ("single", "logreg", "tfidf") if k in kinds]
    if any(mm.get("auc") is not None and (mm.get("ci_high") or 1) < 0.5 for mm in ms):
        explained.append("a model whose interval lies below 0.5 anti-learns: clusters of near-identical clips sit on "
                         "both sides, and a fold's training clips predict the opposite side for their twins held "
                         "out; it is not evidence of separability (see the reasons)")
    s = Section("evidence", "Blind models")
    s.add(t, Para(note), Bullets([e + "." for e in explained]) if explained else None,
          Figure("roc"), Figure("auc"))
    return s


def _tex_caption(d: ReportData) -> str:
    cv = d.result.get("cv") or {}
    st = _settings(d)
    alpha = st.get("alpha", 0.05)
    v = d.result.get("verdict") or {}
    return (f"Model-free (blind) separability of members and non-members: verdict {v.get('status')} "
            f"(tolerated AUC {st.get('tolerated_auc', 0.6):.2f}). Out-of-fold AUC over {cv.get('clips', '?')} clips "
            f"({cv.get('members', '?')} members, {cv.get('nonmembers', '?')} non-members), {cv.get('folds', '?')}-fold "
            f"cross-validation × {cv.get('repeats') or 1}; {100 * (1 - alpha):.0f}% confidence intervals; seed "
            f"{d.result.get('seed')}.")


def top_features(d: ReportData) -> Section | None:
    from blindcheck.analysis.verdict import fmt_value

    tf = d.result.get("top_features") or []
    if not tf:
        return None
    rows = [[t["feature"], pct(t.get("share"), 1), fmt_value(t["feature"], t.get("member_median")),
             fmt_value(t["feature"], t.get("nonmember_median")), num(t.get("cohen_d"), 1), auc(t.get("auc"))]
            for t in tf]
    s = Section("features", "Features the blind model relies on most")
    s.add(Table(["feature", "share of attribution", "members (median)", "non-members (median)", "Cohen's d",
                 "single-feature AUC"], rows, "lrrrrr", id="top_features"),
          Figure("top_features"), Figure("attribution"))
    return s


def speakers(d: ReportData) -> Section | None:
    sp = d.result.get("speakers")
    if not isinstance(sp, dict) or not sp.get("overlap"):
        return None
    o = sp["overlap"]
    src = "from the manifest" if sp.get("source") == "given" else "inferred from the voices"
    rows = [["speakers", f"{o.get('total')} ({src})"], ["on both sides", str(o.get("shared"))],
            ["members only", str(o.get("members_only"))], ["non-members only", str(o.get("nonmembers_only"))],
            ["clips whose speaker is on one side only", f"{o.get('clips_one_side')} of {o.get('clips')} "
                                                         f"({pct(o.get('share_clips_one_side'))})"]]
    sep = sp.get("separability")
    if isinstance(sep, dict):
        rows.append(["who speaks, alone: AUC", f"{auc(sep.get('auc'))}, lower bound {auc(sep.get('lower_bound'))}, "
                                               f"{pval(sep.get('p'))} ({sep.get('permutations')} permutations)"])
    inf = sp.get("inferred")
    if isinstance(inf, dict):
        rows.append(["voice clusters (inferred speakers)", f"{inf.get('clusters')} at cosine distance "
                                                            f"{num(inf.get('threshold'))}"])
        if _finite(inf.get("ari_vs_given")):
            rows.append(["agreement with the speaker column (ARI)", num(inf["ari_vs_given"])])
    s = Section("speakers", "Who speaks on each side")
    s.add(Table(["", ""], rows, "ll", id="speakers"))
    if o.get("disjoint"):
        s.add(Para("The split is speaker-disjoint: membership follows from who speaks. No subset of it can be clean."))
    return s


def metadata(d: ReportData) -> Section | None:
    md = d.result.get("metadata")
    if not isinstance(md, dict) or not (md.get("columns") or md.get("skipped")):
        return None
    rows, keys = [], []
    for c in md.get("columns") or []:
        keys.append(str(c.get("column")))
        test = "chi-square" if c.get("kind") == "categorical" else "rank (AUC)"
        rows.append([str(c.get("column")), str(c.get("summary", "")), test, pcell(c.get("p")), pcell(c.get("p_holm")),
                     auc(c.get("effect_auc")), auc(c.get("lower_bound")), "yes" if c.get("decisive") else "no"])
    s = Section("metadata", "The manifest's attributes per side")
    s.add(Para(f"Every attribute column of the manifest (and the clips' detected content type) tested for a "
               f"difference between the sides: permutation tests, {md.get('family', 'Holm')}, alpha "
               f"{md.get('alpha')}; decisive when the column alone separates the sides with a lower bound above the "
               f"tolerated AUC {md.get('tolerated_auc', 0.6):.2f}."))
    if rows:
        s.add(Table(["column", "difference", "test", "p", "p (Holm)", "AUC alone", "lower bound", "decisive"], rows,
                    "lllrrrrl", keys=keys, id="metadata"))
    ct = next((c for c in md.get("columns") or [] if c.get("column") == "content_type"), None)
    if ct and ct.get("top_levels"):
        s.add(Table(["content type", "members", "non-members"],
                    [[str(lv["level"]), f"{lv['members']} ({pct(lv.get('member_share'))})",
                      f"{lv['nonmembers']} ({pct(lv.get('nonmember_share'))})"] for lv in ct["top_levels"]],
                    "lrr", id="content", caption="What the clips hold (speech, music, other sound), per side."))
    skipped = [f"{x.get('column')}: {x.get('reason')}" for x in md.get("skipped") or []]
    if skipped:
        s.add(Para("Not tested:"), Bullets(skipped))
    if md.get("notes"):
        s.add(Bullets([str(n) for n in md["notes"]]))
    return s


def groups(d: ReportData) -> Section | None:
    g = d.result.get("groups")
    if not g:
        return None
    by = (d.result.get("cv") or {}).get("group_by")
    rows = [[str(r["group"]), str(r.get("n")), str(r.get("members")), str(r.get("nonmembers")), auc(r.get("auc"))]
            for r in g[:20]]
    return Section("groups", f"Per {by}").add(
        Table(["group", "clips", "members", "non-members", "blind AUC inside"], rows, "lrrrr", id="groups",
              more=f"{len(g) - 20} more groups in result.json" if len(g) > 20 else ""))


def text_terms(d: ReportData) -> Section | None:
    t = d.result.get("text_terms") or {}
    rows = []
    if t.get("members") or t.get("nonmembers"):
        rows.append(["transcripts", ", ".join(map(str, t.get("members") or [])) or "—",
                     ", ".join(map(str, t.get("nonmembers") or [])) or "—"])
    for src, st in (t.get("sources") or {}).items():
        if isinstance(st, dict) and (st.get("members") or st.get("nonmembers")):
            rows.append([str(src), ", ".join(map(str, st.get("members") or [])) or "—",
                         ", ".join(map(str, st.get("nonmembers") or [])) or "—"])
    if not rows:
        return None
    return Section("text_terms", "Words that separate the texts").add(
        Table(["text", "typical of members", "typical of non-members"], rows, "lll", id="text_terms"))


def clips(d: ReportData, k: int = 5) -> Section | None:
    """The clips the best blind model places furthest to each side, with what the manifest says about them."""
    if d.scores is None or "blind_score" not in d.scores.columns:
        return None
    s = d.scores[["id", "label", "blind_score"]].copy()
    s["id"] = s["id"].astype(str)
    text = None
    if d.transcripts is not None and {"id", "transcript"} <= set(d.transcripts.columns):
        text = d.transcripts.assign(id=d.transcripts["id"].astype(str)).set_index("id")["transcript"]
    elif d.manifest is not None and {"id", "text"} <= set(d.manifest.columns):
        text = d.manifest.assign(id=d.manifest["id"].astype(str)).set_index("id")["text"]
    extra_col = next((c for c in ("speaker", (d.result.get("cv") or {}).get("group_by")) if c and d.manifest is not None
                      and c in d.manifest.columns), None)
    extra = d.manifest.assign(id=d.manifest["id"].astype(str)).set_index("id")[extra_col] if extra_col else None
    rows = []
    for side, asc in ((1, False), (0, True)):
        part = s[s["label"] == side].sort_values("blind_score", ascending=asc).head(k)
        for r in part.itertuples():
            row = [r.id, "member" if side == 1 else "non-member", num(r.blind_score, 3)]
            if extra is not None:
                row.append("" if r.id not in extra.index else str(extra[r.id]))
            if text is not None:
                row.append("" if r.id not in text.index else str(text[r.id]))
            rows.append(row)
    cols = ["clip id", "side", "blind score"] + ([str(extra_col)] if extra is not None else []) + \
        (["transcript"] if text is not None else [])
    return Section("clips", "Clips the blind model places furthest to each side").add(
        Table(cols, rows, "llr" + "l" * (len(cols) - 3), id="clips"))


def attacks(d: ReportData) -> Section | None:
    a = d.section("attacks")
    if not isinstance(a, list) or not a:
        return None

    def val_ci(x: Any, key: str, fmt: Callable[[Any], str] = auc) -> str:
        v = x.get(key)
        if isinstance(v, dict):
            v, lo, hi = v.get("value", v.get("rho")), v.get("ci_low"), v.get("ci_high")
        else:
            lo, hi = x.get(f"{key}_ci_low"), x.get(f"{key}_ci_high")
        return fmt(v) + (f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None else "")

    def rho(v: Any) -> str:  # a correlation: two decimals in [-1, 1]
        return f"{min(max(v, -1.0), 1.0):.2f}" if _finite(v) else "n/a"

    rows, reasons = [], []
    for x in a:
        rows.append([str(x["name"]), str(x.get("direction", "")), str(x.get("n", "")),
                     f"{auc(x.get('auc'))} {ci(x.get('ci_low'), x.get('ci_high'))}", pct(x.get("tpr_at_1pct_fpr")),
                     auc(x.get("blind_auc")), pcell(x.get("delong_p")), val_ci(x, "spearman", rho),
                     val_ci(x, "residual_auc"), str(x.get("status", ""))])
        reasons += [f"{x['name']}: {r}" for r in x.get("reasons") or []]
    s = Section("attacks", "Attacks against the blind baseline")
    s.add(Table(["attack", "direction", "n", "AUC [CI]", "TPR at 1% FPR", "blind AUC", "DeLong p", "Spearman ρ",
                 "residual AUC", "status"], rows, "llrrrrrrrl", keys=[str(x["name"]) for x in a], tex=True,
                label="tab:blindcheck-attacks", id="attacks", caption="Attacks against the blind baseline."),
          Bullets(reasons) if reasons else None, Figure("attacks"))
    return s


def di(d: ReportData) -> Section | None:
    x = d.section("di")
    if not isinstance(x, dict):
        return None
    minimal = x.get("minimal_n") or x.get("min_n") or {}
    if not isinstance(minimal, dict):
        return None
    rows = [[str(k), "not reached" if v is None else str(v)] for k, v in minimal.items()]
    s = Section("di", "Dataset inference")
    s.add(Table(["scorer", "clips per side to reject"], rows, "lr", id="di"))
    extra = []
    if x.get("tested_on"):
        extra.append(f"tested on: {x['tested_on']}")
    if x.get("alpha") is not None:
        extra.append(f"alpha = {x['alpha']}")
    if extra:
        s.add(Para("; ".join(map(str, extra)) + "."))
    s.add(Bullets([str(r) for r in x.get("reasons") or []]) if x.get("reasons") else None, Figure("di"))
    return s


def match(d: ReportData) -> Section | None:
    m = d.section("match")
    if not isinstance(m, dict):
        return None
    before, after = m.get("before") or {}, m.get("after") or {}
    rows = [["blind AUC before", f"{auc(before.get('auc'))} {ci(before.get('ci_low'), before.get('ci_high'))}"],
            ["blind AUC after (fresh check" + (f", alpha {level(after['alpha'])})" if after.get("alpha") else ")"),
             f"{auc(after.get('auc'))} {ci(after.get('ci_low'), after.get('ci_high'))}"]]
    rows += [[f"retained {k}", str(v)] for k, v in (m.get("retained") or {}).items()]
    if m.get("manifest") or m.get("output"):
        rows.append(["matched manifest", str(m.get("manifest") or m.get("output"))])
    s = Section("match", f"Matched subset ({m.get('method', '')}{', ' + m['status'] if m.get('status') else ''})")
    s.add(Table(["", ""], rows, "ll", id="match"))
    if m.get("reasons"):
        s.add(Bullets([str(r) for r in m["reasons"]]))
    bal = [[str(b["feature"]), num(b.get("smd_before")), num(b.get("smd_after")),
            num(b.get("variance_ratio", b.get("variance_ratio_after")))] for b in (m.get("balance") or [])[:25]]
    if bal:
        s.add(Table(["feature", "SMD before", "SMD after", "variance ratio"], bal, "lrrr", id="balance"))
    if m.get("command"):
        s.add(Code(str(m["command"])))
    s.add(Figure("love"))
    return s


def data(d: ReportData) -> Section:
    e = d.result.get("extraction") or {}
    mf = d.result.get("manifest") or {}
    rows = [["manifest rows", str(mf.get("rows"))],
            ["members / non-members", f"{mf.get('members')} / {mf.get('nonmembers')}"],
            ["clips analysed", str(e.get("clips_analysed"))], ["clips failed", str(e.get("clips_failed"))],
            ["modalities", ", ".join(map(str, e.get("modalities") or [])) or "—"],
            ["features", ", ".join(f"{k} {v}" for k, v in (e.get("features") or {}).items()) or "—"]]
    if e.get("errors_by_stage"):
        rows.append(["failures by stage", ", ".join(f"{k} {v}" for k, v in e["errors_by_stage"].items())])
    if e.get("windowed"):
        wp = e.get("window_policy") or {}
        rows.append(["long files analysed in windows", f"{e['windowed']} (beyond {wp.get('long_s')} s: "
                                                        f"{wp.get('count')} windows of {wp.get('window_s')} s)"])
    s = Section("data", "Data")
    s.add(Table(["", ""], rows, "ll", id="data"))
    notes = [str(n) for n in e.get("notes") or []]
    if notes:
        s.add(Para("Notes:"), Bullets(notes))
    if d.errors is not None and len(d.errors):
        cols = [c for c in ("id", "stage", "error", "message") if c in d.errors.columns][:3]
        s.add(Table(cols, [[str(r[c]) for c in cols] for _, r in d.errors.head(10).iterrows()], id="errors",
                    more=f"{len(d.errors) - 10} more in errors.csv" if len(d.errors) > 10 else ""))
    s.add(Figure("overview"))
    return s


# ------------------------------------------------------------------------------------------------ what to do


def advice_command(result: dict, out, cmd: dict) -> str:
    """The full command line of an advice item (``result.json``'s ``advice[i]["command"]``) for the result
    ``result`` (a dict with at least ``command``, ``settings`` and ``manifest``) written to ``out``."""
    return _command_for(ReportData(result=result, out=None if out is None else Path(out)), cmd)


def _command_for(d: ReportData, cmd: dict) -> str:
    """The full command line of an advice item: the run's own command (or its equivalent) with the verb, the
    output directory (inside this result directory) and the item's flags."""
    base = _base_command(d)
    verb = str(cmd.get("verb", "check"))
    args = [str(a) for a in cmd.get("args") or []]
    out_dir = str(d.out) if d.out is not None else "OUT"
    parts = ["blindcheck", verb]
    rest = base[2:]
    skip_next = False
    for i, a in enumerate(rest):
        if skip_next:
            skip_next = False
            continue
        flag = a.split("=", 1)[0]
        if flag in _DROP_WITH_VALUE or flag in {x for x in args if x.startswith("--")}:
            skip_next = "=" not in a and i + 1 < len(rest)
            continue
        if flag in _DROP_FLAGS:
            continue
        parts.append(a)
    parts += ["--out", f"{out_dir.rstrip('/')}/{cmd.get('out', verb)}", *args]
    return shlex.join(parts)


# flags of the run's command that do not carry over to a follow-up command (their own output, the gate's format)
_DROP_WITH_VALUE = {"--out", "--format", "--scores", "--method", "--exact", "--design"}
_DROP_FLAGS = {"--match", "--no-progress"}


def _base_command(d: ReportData) -> list[str]:
    cmd = d.result.get("command")
    if isinstance(cmd, list) and len(cmd) >= 3:
        return [str(c) for c in cmd]
    if isinstance(cmd, str) and cmd:
        return shlex.split(cmd)
    return shlex.split(_equivalent_command(d))


def next_steps(d: ReportData) -> Section:
    from blindcheck.analysis.advice import strongest_cue

    v = d.result.get("verdict") or {}
    items = d.result.get("advice")
    s = Section("next", "What to do next")
    m = d.section("match")
    if isinstance(m, dict):
        after = m.get("after") or {}
        s.add(Para(f"Use the matched subset ({', '.join(f'{k} {x}' for k, x in (m.get('retained') or {}).items())}); "
                   f"its verified blind AUC is {auc(after.get('auc'))} {ci(after.get('ci_low'), after.get('ci_high'))}."
                   if m.get("manifest") else "The matched subset was not accepted: see its reasons below."))
    if not isinstance(items, list):  # a result written before advice existed
        items = [{"text": "Read the reasons above."}]
    for it in items:
        if not isinstance(it, dict):
            continue
        if isinstance(m, dict) and it.get("kind") == "match":
            continue  # done: its outcome is shown
        s.add(Para(str(it.get("text", ""))))
        if isinstance(it.get("command"), dict):
            s.add(Code(_command_for(d, it["command"])))
    if v.get("status") == "confounded":
        line = strongest_cue(d.result.get("top_features") or [])
        if line:
            s.add(Para(line))
    return s


# ------------------------------------------------------------------------------------------------ reproduce


# Settings that apply to every check; the rest only to the verb or section named
_APPLIES = {"match": "match_", "attacks": "attack_", "di": "di_", "correlation": "correlation_"}


def _applicable_settings(d: ReportData) -> list[tuple[str, str]]:
    present = {"match": d.section("match") is not None, "attacks": d.section("attacks") is not None,
               "di": d.section("di") is not None, "correlation": d.section("attacks") is not None}
    settings = _settings(d)
    refit_ran = bool(settings.get("refit_permutations"))  # refit_repeats shapes only the refit test's statistic
    out = []
    for k, v in settings.items():
        owner = next((o for o, prefix in _APPLIES.items() if k.startswith(prefix)), None)
        if owner and not present[owner]:
            continue
        if k == "refit_repeats" and not refit_ran:
            continue
        if v is None or v == [] or v == "":
            continue
        out.append((k, ", ".join(map(str, v)) if isinstance(v, list) else str(v)))
    return out


def _equivalent_command(d: ReportData) -> str:
    from blindcheck.settings import Settings

    r = d.result
    s = r.get("settings") or {}
    default = Settings().to_dict()
    parts = ["blindcheck", "check", str((r.get("manifest") or {}).get("source", "MANIFEST")), "--out",
             str(d.out or "OUT")]
    for k, v in s.items():
        if k not in _CLI_SETTINGS or k not in default or v is None:
            continue
        if isinstance(v, list | tuple):  # a repeatable flag (--ignore-column COL), once per value
            if tuple(v) != tuple(default[k]):
                for x in v:
                    parts += [_CLI_SETTINGS[k], str(x)]
        elif v != default[k]:
            parts += [_CLI_SETTINGS[k], str(v)]
    mods = (r.get("extraction") or {}).get("modalities")
    if mods:
        parts += ["--modalities", ",".join(mods)]
    return shlex.join(parts)


def reproduce(d: ReportData) -> Section:
    r = d.result
    cmd = r.get("command")
    exact = bool(cmd)
    cmd = shlex.join(str(c) for c in cmd) if isinstance(cmd, list) else (cmd or _equivalent_command(d))
    s = Section("reproduce", "Reproduce")
    s.add(Para("The command that produced this result:" if exact else
               "An equivalent command (the result came from the Python API):"), Code(cmd),
          Para(f"Seed {r.get('seed')}; blindcheck {r.get('blindcheck_version')}; created {r.get('created')}."),
          Table(["setting", "value"], [[k, v] for k, v in _applicable_settings(d)], "ll", id="settings"),
          Table(["package", "version"], [[k, str(v)] for k, v in (r.get("versions") or {}).items()], "ll",
                id="versions"))
    return s


# Settings field -> its flag on ``blindcheck check`` (every field check has a flag for: tests/reporting checks it
# against the CLI's parser); the match_* and di_* settings have flags on their own verbs only.
_CLI_SETTINGS = {k: f"--{k.replace('_', '-')}" for k in (
    "group_by", "folds", "repeats", "seed", "alpha", "tolerated_auc", "tolerated_share", "power", "permutations",
    "refit_permutations", "refit_repeats", "bootstrap", "voice_cluster_threshold", "metadata_permutations")}
_CLI_SETTINGS["metadata_ignore"] = "--ignore-column"

SECTIONS: dict[str, Callable[[ReportData], Section | None]] = {
    "verdict": verdict, "criteria": criteria, "evidence": models, "features": top_features, "speakers": speakers,
    "metadata": metadata, "groups": groups, "text_terms": text_terms, "clips": clips, "attacks": attacks, "di": di,
    "match": match, "data": data, "next": next_steps, "reproduce": reproduce,
}
REQUIRED = ("verdict", "criteria", "evidence", "reproduce")


def build(d: ReportData) -> Report:
    """The report of ``d``: every section the result allows, in reading order."""
    from blindcheck.errors import BlindcheckError

    r = d.result
    sections = []
    for name, fn in SECTIONS.items():
        try:
            sec = fn(d)
        except _ABSENT as exc:
            if name in REQUIRED:
                raise BlindcheckError(f"report: result.json has no readable '{name}' section "
                                      f"({type(exc).__name__}: {exc})") from exc
            log.info("report section %s skipped: %s: %s", name, type(exc).__name__, exc)
            continue
        if sec is not None:
            sections.append(sec)
    status = str((r.get("verdict") or {}).get("status", "?"))
    src = str((r.get("manifest") or {}).get("source", "?"))
    return Report(title=f"blindcheck report — {src}", source=src, status=status, headline=HEADLINES.get(status, ""),
                  meta=f"{r.get('created', '')} · blindcheck {r.get('blindcheck_version', '?')}", sections=sections)
