"""One small function per report section: result dict -> template context (or None when absent).

Each function reads only what it needs; a section whose keys are missing or shaped differently returns None and
is skipped (see :func:`collect`). Adapt key names here, not in the templates.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Callable
from typing import Any

from blindcheck.reporting.data import ReportData

log = logging.getLogger(__name__)
_ABSENT = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def num(x: Any, digits: int = 2) -> str:
    return "n/a" if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x) else \
        f"{x:.{digits}f}"


def pct(x: Any, digits: int = 0) -> str:
    return "n/a" if not isinstance(x, int | float) or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def pval(x: Any) -> str:
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "n/a"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def ci(lo: Any, hi: Any) -> str:
    return f"[{num(lo)}, {num(hi)}]"


def header(d: ReportData) -> dict:
    r = d.result
    return {"source": (r.get("manifest") or {}).get("source", "?"), "created": r.get("created", ""),
            "version": r.get("blindcheck_version", "?"), "status": (r.get("verdict") or {}).get("status", "?")}


def verdict(d: ReportData) -> dict:
    v = d.result["verdict"]
    alpha = (d.result.get("settings") or {}).get("alpha", 0.05)
    headline = {
        "confounded": "Members and non-members can be told apart without the model: the split is confounded.",
        "clean": "No model-free classifier tells members from non-members beyond the tolerated level.",
        "inconclusive": "The data neither rule separability in nor out at this size.",
    }.get(v.get("status"), "")
    facts = [("best blind model", v.get("best_model")), ("its AUC", num(v.get("best_auc"))),
             (f"lower bound (1 - {alpha}/m)", num(v.get("lower_bound"))),
             ("highest upper bound", num(v.get("upper_bound"))), ("family-wise p", pval(v.get("family_p"))),
             ("top modality", v.get("top_modality") or "n/a")]
    if v.get("criteria"):
        facts.append(("confounded by", ", ".join(map(str, v["criteria"]))))
    if v.get("required_n"):
        facts.append(("clips needed to decide", f"{v['required_n']}"))
    return {"status": v.get("status"), "headline": headline, "reasons": list(v.get("reasons") or []),
            "facts": [(k, "n/a" if val is None else str(val)) for k, val in facts]}


def models(d: ReportData) -> dict:
    rows = []
    for m in sorted(d.result["models"], key=lambda m: -(m.get("auc") or 0)):
        rows.append({"name": m["name"], "modality": m.get("modality", ""), "n_features": m.get("n_features", ""),
                     "auc": num(m.get("auc")), "ci": ci(m.get("ci_low"), m.get("ci_high")),
                     "tpr1": pct(m.get("tpr_at_1pct_fpr")), "tpr01": pct(m.get("tpr_at_01pct_fpr")),
                     "p": pval(m.get("p_value"))})
    cv = d.result.get("cv") or {}
    fam = d.result.get("family_test") or {}
    alpha = (d.result.get("settings") or {}).get("alpha", 0.05)
    note = (f"{cv.get('clips', '?')} clips ({cv.get('members', '?')} members, {cv.get('nonmembers', '?')} "
            f"non-members), {cv.get('folds', '?')}-fold cross-validation x {cv.get('repeats', '?')}"
            + (f", folds grouped by {cv['group_by']}" if cv.get("group_by") else "") + ".")
    if fam:
        note += (f" Family-wise over the models: AUC p {pval(fam.get('p_auc'))}, isolated-subset p "
                 f"{pval(fam.get('p_isolation'))} ({fam.get('method', '')}).")
    res = cv.get("fpr_resolution")
    if isinstance(res, int | float) and res > 0.001:
        note += (f" With {cv.get('nonmembers', '?')} non-members the finest FPR is {100 * res:.2f}%: TPR@0.1% FPR is "
                 "the TPR at zero false positives.")
    return {"rows": rows, "ci_level": f"{100 * (1 - alpha):.0f}%", "note": note,
            "note_short": f"{cv.get('clips', '?')} clips ({cv.get('members', '?')} members, "
                          f"{cv.get('nonmembers', '?')} non-members), {cv.get('folds', '?')}-fold CV"}


def top_features(d: ReportData) -> dict | None:
    from blindcheck.analysis.verdict import fmt_value

    tf = d.result.get("top_features") or []
    if not tf:
        return None
    return {"rows": [{"feature": t["feature"], "share": pct(t.get("share"), 1),
                      "member": fmt_value(t["feature"], t.get("member_median")),
                      "nonmember": fmt_value(t["feature"], t.get("nonmember_median")),
                      "d": num(t.get("cohen_d"), 1), "auc": num(t.get("auc"))} for t in tf]}


def groups(d: ReportData) -> dict | None:
    g = d.result.get("groups")
    if not g:
        return None
    return {"by": (d.result.get("cv") or {}).get("group_by"),
            "rows": [{"group": r["group"], "n": r.get("n"), "members": r.get("members"),
                      "nonmembers": r.get("nonmembers"), "auc": num(r.get("auc"))} for r in g[:20]],
            "more": max(len(g) - 20, 0)}


def text_terms(d: ReportData) -> dict | None:
    t = d.result.get("text_terms") or {}
    if not (t.get("members") or t.get("nonmembers")):
        return None
    return {"members": [str(x) for x in t.get("members") or []],
            "nonmembers": [str(x) for x in t.get("nonmembers") or []]}


def clips(d: ReportData, k: int = 5) -> dict | None:
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
            rows.append({"id": r.id, "side": "member" if side == 1 else "non-member", "score": num(r.blind_score, 3),
                         "text": "" if text is None or r.id not in text.index else str(text[r.id]),
                         "extra": "" if extra is None or r.id not in extra.index else str(extra[r.id])})
    return {"rows": rows, "extra_col": extra_col, "has_text": text is not None}


def extraction(d: ReportData) -> dict:
    e = d.result.get("extraction") or {}
    m = d.result.get("manifest") or {}
    fails = e.get("failed_by_side") or {}
    rows = [("manifest rows", m.get("rows")), ("members / non-members", f"{m.get('members')} / {m.get('nonmembers')}"),
            ("clips analysed", e.get("clips_analysed")), ("clips failed", e.get("clips_failed")),
            ("features", ", ".join(f"{k} {v}" for k, v in (e.get("features") or {}).items()))]
    if e.get("errors_by_stage"):
        rows.append(("failures by stage", ", ".join(f"{k} {v}" for k, v in e["errors_by_stage"].items())))
    if fails:
        rows.append(("failed members / non-members", f"{fails.get('members_failed')} of {fails.get('members_total')}"
                     f" / {fails.get('nonmembers_failed')} of {fails.get('nonmembers_total')} "
                     f"(Fisher p {pval(fails.get('p'))})"))
    errors = []
    if d.errors is not None and len(d.errors):
        cols = [c for c in ("id", "stage", "error", "message") if c in d.errors.columns][:3]
        errors = [[str(r[c]) for c in cols] for _, r in d.errors.head(10).iterrows()]
        return {"rows": [(k, str(v)) for k, v in rows], "error_cols": cols, "errors": errors,
                "more_errors": max(len(d.errors) - 10, 0)}
    return {"rows": [(k, str(v)) for k, v in rows], "error_cols": [], "errors": [], "more_errors": 0}


def attacks(d: ReportData) -> dict | None:
    a = d.section("attacks")
    if not isinstance(a, list) or not a:
        return None

    def val_ci(x: Any, key: str) -> str:
        v = x.get(key)
        if isinstance(v, dict):
            return f"{num(v.get('value', v.get('rho')))} {ci(v.get('ci_low'), v.get('ci_high'))}"
        lo, hi = x.get(f"{key}_ci_low"), x.get(f"{key}_ci_high")
        return num(v) + (f" {ci(lo, hi)}" if lo is not None else "")

    rows = [{"name": x["name"], "direction": x.get("direction", ""), "n": x.get("n", ""), "auc": num(x.get("auc")),
             "ci": ci(x.get("ci_low"), x.get("ci_high")), "tpr1": pct(x.get("tpr_at_1pct_fpr")),
             "tpr01": pct(x.get("tpr_at_01pct_fpr")), "blind_auc": num(x.get("blind_auc")),
             "delong_p": pval(x.get("delong_p")), "spearman": val_ci(x, "spearman"),
             "residual_auc": val_ci(x, "residual_auc"), "stratified_auc": val_ci(x, "stratified_auc"),
             "status": x.get("status", ""), "reasons": [str(r) for r in x.get("reasons") or []]} for x in a]
    return {"rows": rows}


def di(d: ReportData) -> dict | None:
    x = d.section("di")
    if not isinstance(x, dict):
        return None
    minimal = x.get("minimal_n") or x.get("min_n") or {}
    if not isinstance(minimal, dict):
        return None
    rows = [(str(k), "not reached" if v is None else str(v)) for k, v in minimal.items()]
    return {"rows": rows, "alpha": x.get("alpha"), "status": x.get("status"),
            "reasons": [str(r) for r in x.get("reasons") or []]}


def match(d: ReportData) -> dict | None:
    m = d.section("match")
    if not isinstance(m, dict):
        return None
    before, after = m.get("before") or {}, m.get("after") or {}
    retained = m.get("retained") or {}
    bal = [{"feature": b["feature"], "smd_before": num(b.get("smd_before")), "smd_after": num(b.get("smd_after")),
            "vr": num(b.get("variance_ratio", b.get("variance_ratio_after")))}
           for b in (m.get("balance") or [])[:25]]
    return {"method": m.get("method", ""), "status": m.get("status", ""),
            "auc_before": f"{num(before.get('auc'))} {ci(before.get('ci_low'), before.get('ci_high'))}",
            "auc_after": f"{num(after.get('auc'))} {ci(after.get('ci_low'), after.get('ci_high'))}",
            "retained": [(str(k), str(v)) for k, v in retained.items()], "balance": bal,
            "manifest": m.get("manifest") or m.get("output"), "command": m.get("command"),
            "reasons": [str(r) for r in m.get("reasons") or []]}


def next_steps(d: ReportData) -> dict:
    v = d.result.get("verdict") or {}
    src = (d.result.get("manifest") or {}).get("source", "MANIFEST")
    m = d.section("match")
    steps = []
    cmd = None
    if isinstance(m, dict):
        after = m.get("after") or {}
        steps.append(f"Use the matched subset ({', '.join(f'{k} {v}' for k, v in (m.get('retained') or {}).items())}"
                     f"); its verified blind AUC is {num(after.get('auc'))} "
                     f"{ci(after.get('ci_low'), after.get('ci_high'))}.")
        cmd = m.get("command")
    elif v.get("status") == "confounded":
        steps.append("Build a matched member/non-member subset on the separating features, then re-check it.")
        cmd = f"blindcheck match {shlex.quote(str(src))} --out matched"
    elif v.get("status") == "inconclusive" and v.get("required_n"):
        steps.append(f"Collect about {v['required_n']} clips (balanced across the sides) and re-run the check.")
    else:
        steps.append("Nothing to fix at the tolerated level; keep this report with the benchmark.")
    top = (d.result.get("top_features") or [{}])[0].get("feature")
    if v.get("status") == "confounded" and top:
        steps.append(f"The strongest single cue is {top}: normalise or stratify it before any MIA evaluation.")
    return {"steps": steps, "command": cmd}


def reproduce(d: ReportData) -> dict:
    r = d.result
    s = r.get("settings") or {}
    cmd = r.get("command")
    exact = bool(cmd)
    if isinstance(cmd, list):
        cmd = shlex.join(str(c) for c in cmd)
    if not cmd:  # results from the Python API: the equivalent command line
        from blindcheck.settings import Settings

        default = Settings().to_dict()
        parts = ["blindcheck", "check", str((r.get("manifest") or {}).get("source", "MANIFEST")), "--out",
                 str(d.out or "OUT")]
        for k, v in s.items():
            if k in default and v != default[k] and v is not None and k in _CLI_SETTINGS:
                parts += [f"--{k.replace('_', '-')}", str(v)]
        mods = (r.get("extraction") or {}).get("modalities")
        if mods:
            parts += ["--modalities", ",".join(mods)]
        cmd = shlex.join(parts)
    return {"command": cmd, "exact": exact, "seed": r.get("seed"),
            "settings": [(k, str(v)) for k, v in s.items()],
            "versions": [(k, str(v)) for k, v in (r.get("versions") or {}).items()],
            "blindcheck_version": r.get("blindcheck_version"), "created": r.get("created")}


_CLI_SETTINGS = {"group_by", "folds", "repeats", "seed", "alpha", "tolerated_auc", "tolerated_share", "power",
                 "permutations", "refit_permutations", "bootstrap"}

SECTIONS: dict[str, Callable[[ReportData], Any]] = {
    "header": header, "verdict": verdict, "models": models, "top_features": top_features, "groups": groups,
    "text_terms": text_terms, "clips": clips, "extraction": extraction, "attacks": attacks, "di": di, "match": match,
    "next_steps": next_steps, "reproduce": reproduce,
}


def collect(d: ReportData) -> dict[str, Any]:
    """Every section's context; a section that cannot be read from this result is None (and logged)."""
    out = {}
    for name, fn in SECTIONS.items():
        try:
            out[name] = fn(d)
        except _ABSENT as exc:
            log.info("report section %s skipped: %s: %s", name, type(exc).__name__, exc)
            out[name] = None
    return out
