"""The ``match`` verb: a distribution-matched subset proposed, re-checked afresh and exported as a manifest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blindcheck.analysis.matching import MatchOptions, MatchResult, match_table, matching_model
from blindcheck.errors import BlindcheckError
from blindcheck.verbs._check import CheckResult, check


def match_from_check(result: CheckResult, options: MatchOptions | None = None,
                     threads: int | None = None) -> MatchResult:
    """Match on what a :class:`~blindcheck.verbs.CheckResult` already holds (features, OOF scores)."""
    sep = result.separability
    feats = result.extraction.features
    meta = result.manifest.table.set_index("id").loc[feats["id"]].reset_index()
    texts = feats["transcript"].to_numpy() if "transcript" in feats.columns else \
        (meta["text"].to_numpy() if "text" in meta.columns else None)
    order = pd.Series(np.arange(len(sep.ids)), index=pd.Index(sep.ids).astype(str))
    v = result.verdict
    best = sep.best
    score_model = matching_model(sep, v)
    scores = score_model.scores[order.loc[feats["id"].astype(str)].to_numpy()]
    before = {"status": v.status, "best_model": best.name, "auc": best.auc, "ci_low": best.ci_low,
              "ci_high": best.ci_high, "p": v.family_p, "upper_bound": v.upper_bound,
              "subset_share": (v.subset or {}).get("share"), "members": int(sep.labels.sum()),
              "nonmembers": int((1 - sep.labels).sum()), "seed": sep.seed, "reasons": v.reasons[:3],
              "score_model": score_model.name}
    res = match_table(feats, meta, scores, result.settings, options, texts=texts, threads=threads, before=before)
    in_table = set(feats["id"].astype(str))
    lost = result.manifest.table[~result.manifest.table["id"].astype(str).isin(in_table)]
    res.extra_dropped = pd.DataFrame({"id": lost["id"], "label": lost["label"],
                                      "reason": "not analysed (see errors.csv)"})
    return res


def check_match_options(table: pd.DataFrame, options: MatchOptions) -> None:
    """Refuse, before any work, what matching on ``table`` cannot do: an ``exact`` column the manifest lacks, and the
    disentangle design without ``speaker`` and ``text`` columns."""
    for col in options.exact:
        if col not in table.columns:
            raise BlindcheckError(f"exact '{col}': the manifest has no such column (columns: "
                                  f"{', '.join(map(str, table.columns))})")
    if options.design == "disentangle":
        missing = [c for c in ("speaker", "text") if c not in table.columns]
        if missing:
            raise BlindcheckError(f"design disentangle needs 'speaker' and 'text' columns; the manifest lacks "
                                  f"{' and '.join(missing)}")


def match_after_check(result: CheckResult, options: MatchOptions | None = None, out: str | os.PathLike | None = None,
                      manifest_options: Any = None, threads: int | None = None) -> tuple[MatchResult, dict]:
    """Match on a finished check and, with ``out`` (the check's result directory), write the match files and the
    ``match`` section of its ``result.json``. What ``match``, ``blindcheck match`` and ``check --match`` all run.
    ``threads`` bounds the fresh re-checks' classifier threads (default: the check's ``workers``). Returns the result
    and the paths written."""
    options = options or MatchOptions()
    check_match_options(result.manifest.table, options)
    res = match_from_check(result, options, threads=threads if threads is not None else result.workers)
    paths: dict = {}
    if out is not None:
        from blindcheck.verbs._results import add_to_result_json, write_match

        paths = write_match(res, result.manifest, out, manifest_options)
        if (Path(out) / "result.json").exists():
            add_to_result_json(res, out)
    return res, paths


def match(manifest: Any, out: str | os.PathLike | None = None, *, method: str | None = None,
          exact: tuple[str, ...] | list[str] = (), design: str = "subset", manifest_options: Any = None,
          **check_kwargs: Any) -> MatchResult:
    """The ``match`` verb, as ``blindcheck match`` runs it: ``check`` (features cached; with ``out``, its
    result.json, blind scores and extraction outputs), then match and verify; with ``out``, also ``matched.csv``
    (or one CSV per disentanglement subset), ``dropped.csv``, ``match.json`` and the ``match`` section of
    result.json. ``check_kwargs`` are :func:`~blindcheck.verbs.check`'s (``cache_dir``, ``settings``,
    ``extraction``, progress callbacks, and Settings or ExtractionConfig fields such as ``match_caliper``,
    ``match_target_auc``, ``modalities``, ``workers``)."""
    from blindcheck.inputs.manifest import Manifest, load_manifest

    options = MatchOptions(method=method, exact=tuple(exact), design=design)
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, manifest_options)
    check_match_options(m.table, options)  # refused before the extraction
    result = check(m, out, **check_kwargs)
    res, _ = match_after_check(result, options, out, manifest_options)
    return res
