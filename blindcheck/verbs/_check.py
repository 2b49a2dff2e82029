"""The ``check`` verb: manifest -> cached features -> blind separability -> verdict -> result files.

:func:`check` is what both the CLI (``blindcheck check`` / ``blindcheck gate``) and notebook users call.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blindcheck import __version__
from blindcheck.analysis.attacks import CorrelateResult, correlate_attacks
from blindcheck.analysis.inference import DIResult
from blindcheck.analysis.metadata import MetadataReport, manifest_evidence
from blindcheck.analysis.separability import ProgressFn as ClassifierProgressFn
from blindcheck.analysis.separability import SeparabilityResult, run_separability
from blindcheck.analysis.verdict import Failures, Verdict, decide
from blindcheck.errors import BlindcheckError
from blindcheck.extraction.modalities import choose_modalities
from blindcheck.extraction.pipeline import (
    ExtractionConfig,
    ExtractionResult,
    ProgressFn,
    extract_features,
)
from blindcheck.inputs.manifest import Manifest, ManifestOptions, load_manifest
from blindcheck.inputs.scores import align_scores, has_attacks, read_scores
from blindcheck.runtime.files import json_ready
from blindcheck.settings import Settings, load_settings

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
    attacks: CorrelateResult | None = None  # when the manifest has mia_* columns or scores were given
    di: DIResult | None = None  # from `blindcheck di`
    speakers: dict | None = None  # speaker overlap between the sides (given or inferred speakers)
    metadata: MetadataReport | None = None  # the manifest's attribute columns tested per side
    workers: int | None = None  # the bound on processes and threads this check ran with (later phases reuse it)

    @property
    def status(self) -> str:
        return self.verdict.status

    def advice(self) -> list[dict]:
        """What to do next (:func:`blindcheck.analysis.advice.advise`): never a ``match`` that cannot succeed."""
        from blindcheck.analysis.advice import advise, score_support
        from blindcheck.analysis.matching import matching_model

        sep = self.separability
        support = score_support(matching_model(sep, self.verdict).scores, sep.labels, self.settings.match_min_retained)
        return advise(self.verdict, self.settings, self.speakers, support,
                      self.metadata.to_dict() if self.metadata is not None else None,
                      has_speaker_column="speaker" in self.manifest.table.columns, group_by=sep.group_by)

    def to_dict(self) -> dict[str, Any]:
        sep = self.separability
        ext = self.extraction
        return json_ready({
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
                "windowed": int(ext.stats.get("windowed", 0)),
                "window_policy": ext.stats.get("window_policy"),
                "notes": self.notes,
            },
            "verdict": self.verdict.to_dict(),
            "advice": self.advice(),
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
            "metadata": self.metadata.to_dict() if self.metadata is not None else None,
            "text_terms": sep.text_terms,
            "command": self.command,
            **({"attacks": self.attacks.to_list(), "attack_ids": self.attacks.mismatch.to_dict(),
                "attack_blind_model": self.attacks.blind_model} if self.attacks is not None else {}),
            **({"di": self.di.to_dict()} if self.di is not None else {}),
            "speakers": self.speakers,
        })




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


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword overrides of a verb split by the object that owns each name: :class:`~blindcheck.settings.Settings`
    fields (the blind check and verdict) and :class:`~blindcheck.extraction.pipeline.ExtractionConfig` fields (how
    features are extracted). Every setting has one name and one home; an unknown name is a TypeError."""
    own = {f.name for f in dataclasses.fields(Settings)}
    ext = {f.name for f in dataclasses.fields(ExtractionConfig)}
    unknown = sorted(set(overrides) - own - ext)
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}: a verb takes Settings fields "
                        f"({', '.join(sorted(own))}) and ExtractionConfig fields ({', '.join(sorted(ext))})")
    return ({k: v for k, v in overrides.items() if k in own and v is not None},
            {k: v for k, v in overrides.items() if k in ext and v is not None})


def check(
    manifest: str | os.PathLike | Manifest,
    out: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    settings: Settings | None = None,
    extraction: ExtractionConfig | None = None,
    manifest_options: ManifestOptions | None = None,
    progress: ProgressFn | None = None,
    classifier_progress: ClassifierProgressFn | None = None,
    command: list[str] | None = None,
    scores: Any = None,
    lower_is_member: tuple[str, ...] | list[str] = (),
    **overrides: Any,
) -> CheckResult:
    """Run extraction (cached), blind separability and the verdict.

    Two objects hold every setting, and each setting has one name: ``settings``
    (:class:`~blindcheck.settings.Settings`: the blind classifiers and the verdict; default ``[tool.blindcheck]`` of
    the nearest pyproject.toml over the defaults) and ``extraction``
    (:class:`~blindcheck.extraction.pipeline.ExtractionConfig`: modalities, workers, executor, chunk size, text
    options, ``allow_truncated``). Keyword ``overrides`` name fields of either (``group_by="speaker"``,
    ``tolerated_auc=0.55``, ``modalities=["spectral"]``, ``workers=2``) and take precedence over the object; any
    other name is a TypeError. With ``out``, writes ``result.json``, ``blind_scores.parquet`` and the extraction
    outputs there. Without ``cache_dir`` the cache is ``out/cache`` (or a temporary directory when there is no
    ``out``). ``modalities`` (a list or a comma-separated string; None: the CLI's rule,
    :func:`blindcheck.extraction.modalities.choose_modalities`: every acoustic modality, plus voice and text where
    they can run; what was skipped is in ``result.notes``). ``workers`` also bounds the threads of the classifier
    phase; ``classifier_progress(phase, done, total, seconds_left)`` reports on it.
    ``command`` (the CLI's argv) is recorded in result.json for the report's reproduce section.
    """
    own, ext_kw = split_overrides(overrides)
    settings = settings.replace(**own) if settings else load_settings(own)
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, manifest_options)
    requested = ext_kw.pop("modalities", None)
    cfg = dataclasses.replace(extraction or ExtractionConfig(), **ext_kw)
    # The same rule as the CLI's: without ``modalities``, every acoustic one plus voice and text where they run.
    choice = choose_modalities(m.table, requested if requested is not None else
                               ([str(x) for x in cfg.modalities] if cfg.modalities else None), cfg.text)
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
    cfg = dataclasses.replace(cfg, modalities=tuple(modalities))
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
        from blindcheck.analysis.speakers import speaker_report

        speakers = speaker_report(feats, meta, settings)  # adds feats["voice_cluster"] with the voice modality
    if settings.group_by == "voice" and "voice" not in m.table.columns:
        vc = feats["voice_cluster"].astype(str)
        groups = np.where(vc != "", vc, "unclustered:" + feats["id"].astype(str)).astype(str)
    else:
        groups = meta[settings.group_by].astype(str).to_numpy() if settings.group_by else None
    metadata = manifest_evidence(meta, feats, feats["label"].to_numpy(), settings, groups)
    # TF-IDF reads the transcripts the text modality used (given or ASR), else the manifest's text.
    texts = feats["transcript"].to_numpy() if "transcript" in feats.columns else \
        (meta["text"].to_numpy() if "text" in meta.columns else None)
    sep = run_separability(feats, feats["label"].to_numpy(), settings, groups=groups, texts=texts,
                           threads=workers, progress=classifier_progress)
    verdict = decide(sep, settings, failures_by_side(m, ext), speakers=speakers, metadata=metadata)
    if metadata is not None and "metadata" in verdict.details["alpha_criteria"]:
        metadata = metadata.at_alpha(verdict.details["alpha_criteria"]["metadata"])  # decided at its share of alpha
    result = CheckResult(verdict=verdict,
                         separability=sep, extraction=ext, manifest=m, settings=settings, speakers=speakers,
                         metadata=metadata,
                         notes=[choice.note, *sep.notes] if choice.note else list(sep.notes), command=command,
                         workers=workers)
    result.attacks = attach_attacks(result, scores, lower_is_member)
    if out is not None:
        from blindcheck.verbs._results import write_results

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












def correlate_check(result: CheckResult, scores: pd.DataFrame | str | os.PathLike | None = None,
                    lower_is_member: tuple[str, ...] | list[str] = ()) -> CorrelateResult:
    """Attacks of a finished :class:`~blindcheck.verbs.CheckResult`: the manifest's ``mia_*`` columns and
    ``scores`` (a frame with ``id`` or a file), on the clips the blind check analysed."""
    from blindcheck.analysis.separability import feature_columns

    sep = result.separability
    if scores is not None and not isinstance(scores, pd.DataFrame):
        scores = read_scores(scores)
    ids = np.asarray(sep.ids).astype(str)
    attacks, mismatch = align_scores(ids, result.manifest.table, scores)
    feats = result.extraction.features.assign(id=result.extraction.features["id"].astype(str)).set_index("id")
    X = feats.loc[ids, feature_columns(feats.reset_index())].to_numpy(dtype=float)
    best = sep.best
    return correlate_attacks(attacks, sep.labels, best.scores, X, result.settings, ids=ids,
                             lower_is_member=tuple(lower_is_member), groups=sep.groups,
                             split_status=result.verdict.status, blind_model=best.name, mismatch=mismatch)


def attach_attacks(result: CheckResult, scores: pd.DataFrame | str | os.PathLike | None,
                   lower_is_member: tuple[str, ...] | list[str] = ()) -> CorrelateResult | None:
    """The hook of ``check``: the attacks section when the manifest has ``mia_*`` columns or scores are given,
    else None (and ``lower_is_member`` must then be empty)."""
    if scores is None and not has_attacks(result.manifest.table):
        if lower_is_member:
            raise BlindcheckError("lower-is-member given but there are no attack scores (no mia_* column, no scores "
                                  "file)")
        return None
    return correlate_check(result, scores, lower_is_member)
