"""What to do next, decided from the verdict and the evidence behind it. Pure: no files, no printing.

Advice never proposes a command that cannot succeed on this split. ``match`` is proposed only where a matched
subset can exist: not on a speaker-disjoint split (no subset of it shares a speaker, and ``check`` never calls one
clean), not where every group lies on one side, and not where the blind scores of the two sides share too little
ground for the retained share ``match`` requires (the same trimmed region its ``trim`` method keeps, see
:func:`blindcheck.analysis.matching.shared_region`). Each item is a dict: ``kind`` (a stable name), ``text`` (plain
words) and, where a command follows, ``command``: ``{"verb": ..., "args": [...], "out": suffix}`` — the verb and
the flags to add to the run's own command line; the reporting layer writes the full command from it (the
manifest, the run's settings and ``--out <result dir>/<suffix>``).
"""

from __future__ import annotations

import math

import numpy as np

from blindcheck.analysis.verdict import CONFOUNDED, INCONCLUSIVE, Verdict, fmt_value, percent


def score_support(scores: np.ndarray, labels: np.ndarray, min_retained: float) -> dict:
    """How much of each side lies in the region of blind score both sides share (the 1%–99% quantile region that
    ``match``'s trimming keeps): ``members_inside`` / ``nonmembers_inside`` (shares), ``region`` (probabilities) and
    ``enough`` (the smaller side keeps at least ``min_retained`` of its clips there)."""
    from blindcheck.analysis.matching import TRIM_QUANTILE, logit, shared_region

    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(int)
    ok = np.isfinite(s)
    lg = logit(np.clip(s[ok], 1e-9, 1 - 1e-9))
    yy = y[ok]
    a, b = lg[yy == 1], lg[yy == 0]
    if len(a) < 2 or len(b) < 2:
        return {"members_inside": math.nan, "nonmembers_inside": math.nan, "region": None, "enough": False}
    lo, hi = shared_region(a, b, TRIM_QUANTILE)
    inside_a = float(((a >= lo) & (a <= hi)).mean()) if lo <= hi else 0.0
    inside_b = float(((b >= lo) & (b <= hi)).mean()) if lo <= hi else 0.0
    smaller = inside_a if len(a) <= len(b) else inside_b
    return {"members_inside": inside_a, "nonmembers_inside": inside_b,
            "region": [float(1 / (1 + math.exp(-lo))), float(1 / (1 + math.exp(-hi)))] if lo <= hi else None,
            "enough": bool(smaller >= min_retained)}


def advise(verdict: Verdict, settings, speakers: dict | None = None, support: dict | None = None,
           metadata: dict | None = None, has_speaker_column: bool = False, group_by: str | None = None
           ) -> list[dict]:
    """The next steps for this verdict, most useful first (see the module docstring for the items' shape).
    ``support``: :func:`score_support` of the scores ``match`` would match on; ``metadata``: result.json's
    ``metadata`` section; ``has_speaker_column``: the manifest names speakers (``match --exact speaker`` can pair
    within them); ``group_by``: the column the folds were grouped by."""
    out: list[dict] = []
    status = verdict.status
    overlap = (speakers or {}).get("overlap") or {}
    disjoint = bool(overlap.get("disjoint"))
    groups = verdict.groups or {}
    g = group_by
    all_pure = bool(groups and groups.get("mixed") == 0)
    criteria = set(verdict.criteria)
    if disjoint:
        src = "given in the manifest" if (speakers or {}).get("source") == "given" else "inferred from the voices"
        out.append({"kind": "build-shared-speaker-split",
                    "text": f"No subset of this split can be clean: the speakers ({src}) of the members and of the "
                            f"non-members are different people ({overlap.get('members_only')} and "
                            f"{overlap.get('nonmembers_only')}), so `match` has nothing to pair. Build the split "
                            "from the same speakers instead: put some clips of every speaker on each side (the "
                            "members the model trained on, the non-members held out from the same speakers, "
                            "corpus and recording set-up), then re-check it. For a speaker-level attack, draw "
                            "member and non-member speakers from one corpus and recording set-up and check with "
                            "the folds grouped by speaker."})
        if g not in ("speaker", "voice") and has_speaker_column:
            out.append({"kind": "group-by-speaker",
                        "text": "Meanwhile, this command asks whether anything beyond the voices separates the "
                                "sides (it cannot make this split clean):",
                        "command": {"verb": "check", "args": ["--group-by", "speaker"], "out": "by_speaker"}})
        return out
    if all_pure:
        out.append({"kind": "build-mixed-groups",
                    "text": f"Every '{g}' group lies on one side, so membership follows from the group and no "
                            f"subset of this split can be clean. Build a split in which each '{g}' holds clips of "
                            "both sides, then re-check it."})
        return out
    if status == CONFOUNDED:
        if "failures" in criteria:
            out.append({"kind": "fix-failures",
                        "text": "The clips that fail to decode or analyse lie on one side: see errors.csv, convert "
                                "or replace those files (a codec or container one source uses) and re-run."})
        if criteria - {"failures"}:
            out += _match_advice(verdict, settings, support, criteria, has_speaker_column, metadata)
        return out
    if status == INCONCLUSIVE:
        details = verdict.details or {}
        if details.get("p_floor", 0) > details.get("alpha", 0.05):
            out.append({"kind": "more-groups" if g else "more-permutations",
                        "text": (f"The relabellings of whole '{g}' groups cannot reach alpha: add groups (more "
                                 f"'{g}' values holding both sides) and re-run." if g else
                                 "Too few relabellings to reach alpha: re-run with more permutations.")})
        if verdict.required_n:
            out.append({"kind": "collect-more",
                        "text": f"Collect about {verdict.required_n} clips in all (at this balance of the sides) "
                                "and re-run the check: this split is too small to rule the tolerated separability "
                                "in or out."})
        if (verdict.subset or {}).get("upper_bound_any", 0) >= settings.tolerated_share and not verdict.required_n:
            out.append({"kind": "collect-more",
                        "text": "A larger split would narrow the bound on the isolated share of one side; re-run "
                                "with more clips per side."})
        if not out:
            out.append({"kind": "read-reasons", "text": "Read the reasons above: they name what keeps the split "
                                                        "from a decision."})
        return out
    # clean
    below = any("below chance" in r for r in verdict.reasons)
    weak = verdict.family_p <= settings.alpha
    if below and not g:
        out.append({"kind": "group-for-sharper-test",
                    "text": "The blind classifiers score below chance: clips come in near-identical clusters on "
                            "both sides, which cross-validation anti-learns. Group the folds by the cluster "
                            "column for a sharper test" + (":" if has_speaker_column else
                                                           " (--group-by COLUMN)."),
                    **({"command": {"verb": "check", "args": ["--group-by", "speaker"], "out": "by_speaker"}}
                       if has_speaker_column else {})})
    if weak and "refit" not in str(verdict.p_method):
        out.append({"kind": "confirm-weak-separation",
                    "text": "A weak separation below the tolerance is significant; confirm it with the refit "
                            "permutation test before reporting it next to attack results:",
                    "command": {"verb": "check", "args": ["--refit-permutations", "99"], "out": "refit"}})
    md_sig = [str(c.get("column")) for c in (metadata or {}).get("columns") or []
              if isinstance(c, dict) and c.get("p_holm", 1.0) <= settings.alpha and not c.get("decisive")]
    if md_sig:
        out.append({"kind": "metadata-associated",
                    "text": f"The manifest's {', '.join(md_sig)} differ by side below the tolerated level: report "
                            "it with the benchmark."})
    if not out:
        out.append({"kind": "nothing-to-fix",
                    "text": "Nothing to fix at the tolerated level: keep this report with the benchmark."})
    return out


def _match_advice(verdict: Verdict, settings, support: dict | None, criteria: set[str], has_speaker_column: bool,
                  metadata: dict | None) -> list[dict]:
    out = []
    if support is not None and not support.get("enough"):
        share = min(support.get("members_inside", 0.0), support.get("nonmembers_inside", 0.0))
        region = support.get("region")
        where = (f"only {percent(share)} of the smaller side falls in the blind-score region both sides share "
                 f"({region[0]:.3g}–{region[1]:.3g})" if region else
                 "the blind scores of the two sides share no region at all (1%–99% quantiles)")
        out.append({"kind": "no-matched-subset",
                    "text": f"A matched subset cannot be found here: {where}, below the "
                            f"{percent(settings.match_min_retained)} that `match` must keep. Remove the cause at "
                            "the source instead: record or convert both sides alike (same rate, codec, level and "
                            "set-up), or draw the non-members from the same corpus as the members, then re-check."})
        return out
    args: list[str] = []
    if "speakers" in criteria and has_speaker_column:
        args = ["--exact", "speaker"]
    out.append({"kind": "match",
                "text": "Build a distribution-matched subset on the separating features and verify it afresh "
                        + ("(pairs within each speaker, since the speaker mix separates the sides)" if args else
                           "(it writes matched.csv when the fresh check is clean)") + ":",
                "command": {"verb": "match", "args": args, "out": "matched"}})
    return out


def strongest_cue(top_features: list[dict]) -> str | None:
    """One line on the strongest single feature, for the advice of a confounded split."""
    if not top_features:
        return None
    t = top_features[0]
    f = t.get("feature")
    if not f:
        return None
    return (f"The strongest single cue is {f} (members {fmt_value(f, t.get('member_median', math.nan))}, "
            f"non-members {fmt_value(f, t.get('nonmember_median', math.nan))}): normalise or stratify it before "
            "any MIA evaluation.")


__all__ = ["advise", "score_support", "strongest_cue"]
