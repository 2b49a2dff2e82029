"""The ``check`` verb: manifest -> cached features -> blind separability -> verdict -> result files.

:func:`check` is what both the CLI (``blindcheck check`` / ``blindcheck gate``) and notebook users call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from blindcheck import __version__
from blindcheck.cache import write_parquet_atomic
from blindcheck.errors import BlindcheckError
from blindcheck.extract import ExtractionConfig, ExtractionResult, ProgressFn, extract_features, write_outputs
from blindcheck.manifest import Manifest, ManifestOptions, load_manifest
from blindcheck.modalities import choose_modalities
from blindcheck.separability import ProgressFn as ClassifierProgressFn
from blindcheck.separability import SeparabilityResult, run_separability
from blindcheck.settings import Settings, load_settings
from blindcheck.verdict import Failures, Verdict, decide

SCHEMA = "blindcheck.result/1"


@dataclass
class CheckResult:
    """Everything ``check`` found. ``to_dict()`` is what ``result.json`` holds."""

    verdict: Verdict
    separability: SeparabilityResult
    extraction: ExtractionResult
    manifest: Manifest
    settings: Settings
    notes: list[str] = field(default_factory=list)  # e.g. why a default modality was skipped
    command: list[str] | None = None  # the command line that ran this check (None from the Python API)
    attacks: Any = None  # CorrelateResult when the manifest has mia_* columns or scores were given
    di: Any = None  # DIResult from `blindcheck di`
    speakers: dict | None = None  # speaker overlap between the sides (given or inferred speakers)

    @property
    def status(self) -> str:
        return self.verdict.status

    def to_dict(self) -> dict[str, Any]:
        sep = self.separability
        ext = self.extraction
        return _clean({
            "schema": SCHEMA,
            "blindcheck_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            "seed": self.settings.seed,
            "settings": self.settings.to_dict(),
            "manifest": {
                "source": self.manifest.source,
                "rows": len(self.manifest.table) + len(self.manifest.missing),
                "members": self.manifest.n_members,
                "nonmembers": self.manifest.n_nonmembers,
            },
            "extraction": {
                "modalities": ext.modalities,
                "clips_analysed": int(len(ext.features)),
                "clips_failed": int(ext.stats["failed"]),
                "features": {m: len(ext.feature_columns(m)) for m in ext.modalities},
                "errors_by_stage": ext.errors.groupby("stage")["id"].nunique().to_dict() if len(ext.errors) else {},
                "failed_by_side": self.verdict.failures,
                "notes": self.notes,
            },
            "verdict": self.verdict.to_dict(),
            "cv": {"folds": sep.folds, "repeats": sep.repeats, "group_by": sep.group_by,
                   "fpr_resolution": sep.fpr_resolution, "clips": int(len(sep.labels)),
                   "members": int(sep.labels.sum()), "nonmembers": int((1 - sep.labels).sum()),
                   "groups": sep.n_groups},
            "family_test": sep.family.to_dict() if sep.family else None,
            "models": [m.to_dict() for m in sep.models],
            "modality_shares": sep.modality_shares(),
            "top_features": sep.top_features.to_dict("records"),
            "attributions": sep.attributions.head(50).to_dict("records"),
            "groups": sep.group_table.to_dict("records") if sep.group_table is not None else None,
            "text_terms": sep.text_terms,
            "command": self.command,
            **({"attacks": self.attacks.to_list(), "attack_ids": self.attacks.mismatch.to_dict(),
                "attack_blind_model": self.attacks.blind_model} if self.attacks is not None else {}),
            **({"di": self.di.to_dict()} if self.di is not None else {}),
            "speakers": self.speakers,
        })


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "pandas", "scikit-learn", "xgboost", "xgboost-cpu", "librosa", "praat-parselmouth",
                "soundfile", "pyloudnorm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def check(
    manifest: str | os.PathLike | Manifest,
    out: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    modalities: list[str] | str | None = None,
    workers: int | None = None,
    settings: Settings | None = None,
    manifest_options: ManifestOptions | None = None,
    progress: ProgressFn | None = None,
    text_options: Any = None,
    classifier_progress: ClassifierProgressFn | None = None,
    allow_truncated: bool = False,
    extraction: ExtractionConfig | None = None,
    command: list[str] | None = None,
    scores: Any = None,
    lower_is_member: tuple[str, ...] | list[str] = (),
    **overrides: Any,
) -> CheckResult:
    """Run extraction (cached), blind separability and the verdict.

    ``settings`` defaults to ``[tool.blindcheck]`` of the nearest pyproject.toml over the defaults; keyword
    ``overrides`` (e.g. ``group_by="speaker"``, ``tolerated_auc=0.55``) take precedence. With ``out``, writes
    ``result.json``, ``blind_scores.parquet`` and the extraction outputs there. Without ``cache_dir`` the cache
    is ``out/cache`` (or a temporary directory when there is no ``out``). ``modalities`` (a list or a
    comma-separated string) defaults to the CLI's rule (:func:`blindcheck.modalities.choose_modalities`): every
    acoustic modality, plus text where it can run; what was skipped is in ``result.notes``. ``workers`` also
    bounds the threads of the classifier phase; ``classifier_progress(phase, done, total, seconds_left)`` reports
    on it.
    ``allow_truncated`` analyses files shorter than their header declares instead of excluding them.
    ``extraction`` (:class:`blindcheck.extract.ExtractionConfig`): where and how features are extracted (executor,
    chunk size, ...); ``workers``, ``text_options`` and ``allow_truncated``, when given, take precedence over it.
    ``command`` (the CLI's argv) is recorded in result.json for the report's reproduce section.
    """
    settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None}) if settings else \
        load_settings(overrides)
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, manifest_options)
    # The same rule as the CLI's: without ``modalities``, every acoustic one plus voice and text where they run.
    cfg = extraction or ExtractionConfig()
    text_options = text_options or cfg.text
    choice = choose_modalities(m.table, modalities, text_options)
    modalities = choice.modalities
    if settings.group_by == "voice" and "voice" not in m.table.columns:  # the inferred speakers
        from blindcheck.features.voice import voice_unavailable

        why = voice_unavailable()
        if why:
            raise BlindcheckError(f"group-by 'voice' groups by speakers inferred from the voice modality: {why}")
        modalities += [] if "voice" in modalities else ["voice"]
    elif settings.group_by and settings.group_by not in m.table.columns:
        raise BlindcheckError(f"group-by '{settings.group_by}': the manifest has no such column "
                              f"(columns: {', '.join(m.table.columns)})")
    cfg = dataclasses.replace(cfg, modalities=tuple(modalities), workers=workers or cfg.workers, text=text_options,
                              allow_truncated=allow_truncated or cfg.allow_truncated)
    workers = cfg.workers
    if cache_dir is None and out is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            ext = extract_features(m, tmp, cfg, progress=progress)
    else:
        cache = Path(cache_dir) if cache_dir else Path(out) / "cache"
        ext = extract_features(m, cache, cfg, progress=progress)
    feats = ext.features
    if feats["label"].nunique() < 2:
        raise BlindcheckError("after excluding clips that failed, only one class is left; see errors.csv")
    meta = m.table.set_index("id").loc[feats["id"]]
    speakers = None
    if "voice" in ext.modalities or "speaker" in meta.columns:
        from blindcheck.speakers import speaker_report

        speakers = speaker_report(feats, meta, settings)  # adds feats["voice_cluster"] with the voice modality
    if settings.group_by == "voice" and "voice" not in m.table.columns:
        vc = feats["voice_cluster"].astype(str)
        groups = np.where(vc != "", vc, "unclustered:" + feats["id"].astype(str)).astype(str)
    else:
        groups = meta[settings.group_by].astype(str).to_numpy() if settings.group_by else None
    # TF-IDF reads the transcripts the text modality used (given or ASR), else the manifest's text.
    texts = feats["transcript"].to_numpy() if "transcript" in feats.columns else \
        (meta["text"].to_numpy() if "text" in meta.columns else None)
    sep = run_separability(feats, feats["label"].to_numpy(), settings, groups=groups, texts=texts,
                           threads=workers, progress=classifier_progress)
    result = CheckResult(verdict=decide(sep, settings, failures_by_side(m, ext), speakers=speakers), separability=sep,
                         extraction=ext, manifest=m, settings=settings, speakers=speakers,
                         notes=[choice.note, *sep.notes] if choice.note else list(sep.notes), command=command)
    from blindcheck.correlate import attach_attacks  # attacks vs blind, when there are any (mia_* or scores)

    result.attacks = attach_attacks(result, scores, lower_is_member)
    if out is not None:
        write_results(result, out)
    return result


def failures_by_side(m: Manifest, ext: ExtractionResult) -> Failures:
    """Clips left out (missing, unreadable, failed analysis) counted per side, against each side's total."""
    labels = m.table.set_index("id")["label"]
    missing = m.missing.set_index("id")["label"] if "label" in m.missing.columns else labels.iloc[:0]
    failed = set(ext.errors["id"]) if len(ext.errors) else set()
    failed_labels = [int(missing[i]) if i in missing.index else int(labels[i]) for i in failed
                     if i in missing.index or i in labels.index]
    members_total = int((labels == 1).sum() + (missing == 1).sum())
    nonmembers_total = int((labels == 0).sum() + (missing == 0).sum())
    return Failures(members_failed=sum(failed_labels), members_total=members_total,
                    nonmembers_failed=len(failed_labels) - sum(failed_labels), nonmembers_total=nonmembers_total)


def write_results(result: CheckResult, out: str | os.PathLike) -> dict[str, Path]:
    outp = Path(out)
    paths = write_outputs(result.extraction, result.manifest, outp)
    paths["result"] = outp / "result.json"
    paths["blind_scores"] = outp / "blind_scores.parquet"
    tmp = outp / ".result.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, paths["result"])
    write_parquet_atomic(result.separability.scores_frame(), paths["blind_scores"])
    if result.attacks is not None:
        paths["attacks"] = outp / "attacks.parquet"
        write_parquet_atomic(result.attacks.frame(), paths["attacks"])
    return paths


def format_summary(result: CheckResult) -> str:
    """The terminal summary of ``blindcheck check``."""
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
    below = [mr.name for mr in sep.models if mr.ci_high < 0.5]
    if below:
        lines.append(f"  ({', '.join(below)}: AUC below 0.5 is no signal but cross-validation's anti-learning on "
                     "features balanced across the sides: a fold's training set over-represents what its test "
                     "set lacks)")
    tf = sep.top_features
    if tf is not None and not tf.empty:
        from blindcheck.verdict import fmt_value

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
        from blindcheck.speakers import format_speakers

        lines += ["", *format_speakers(result.speakers)]
    lines += ["", f"  verdict: {v.status.upper()}"]
    lines += [f"  - {r}" for r in v.reasons]
    return "\n".join(lines)


def gate_line(result: CheckResult) -> str:
    """One machine-readable JSON line for ``blindcheck gate``."""
    v = result.verdict
    sub = v.subset or {}
    return json.dumps(_clean({"verdict": v.status, "criteria": v.criteria, "best_model": v.best_model,
                              "auc": round(v.best_auc, 4), "lower_bound": round(v.lower_bound, 4),
                              "upper_bound": round(v.upper_bound, 4), "p": v.family_p,
                              "subset_share": sub.get("share"), "subset_side": sub.get("side"),
                              "subset_p": sub.get("family_p"), "required_n": v.required_n,
                              "top_modality": v.top_modality, "reason": v.reasons[0] if v.reasons else "",
                              **({"confounded_attacks": result.attacks.confounded} if result.attacks else {})}))
