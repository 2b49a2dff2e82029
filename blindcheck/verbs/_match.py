"""The ``match`` verb: a distribution-matched subset proposed, re-checked afresh and exported as a manifest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blindcheck.analysis.matching import MatchOptions, MatchResult, match_table, matching_model
from blindcheck.errors import BlindcheckError
from blindcheck.settings import Settings


def match_from_check(result: Any, options: MatchOptions | None = None, threads: int | None = None) -> MatchResult:
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


def match(manifest: Any, out: str | os.PathLike | None = None, *, method: str | None = None,
          exact: tuple[str, ...] | list[str] = (), design: str = "subset", cache_dir: str | os.PathLike | None = None,
          modalities: list[str] | None = None, workers: int | None = None, settings: Settings | None = None,
          manifest_options: Any = None, text_options: Any = None, **overrides: Any) -> MatchResult:
    """Run ``check`` (features cached), then match and verify; with ``out``, write ``matched.csv`` (or one CSV per
    disentanglement subset), ``dropped.csv`` and ``match.json``. ``overrides`` are settings
    (``match_caliper``, ``match_target_auc``, ``match_min_retained``, ``match_ratio``, ``seed``, ...)."""
    from blindcheck.inputs.manifest import Manifest, load_manifest
    from blindcheck.verbs._check import check

    options = MatchOptions(method=method, exact=tuple(exact), design=design)
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, manifest_options)
    for col in options.exact:
        if col not in m.table.columns:
            raise BlindcheckError(f"exact '{col}': the manifest has no such column (columns: "
                                  f"{', '.join(map(str, m.table.columns))})")
    if cache_dir is None and out is not None:
        cache_dir = Path(out) / "cache"
    result = check(m, None, cache_dir=cache_dir, modalities=modalities, workers=workers, settings=settings,
                   text_options=text_options, **overrides)
    res = match_from_check(result, options, threads=workers)
    if out is not None:
        from blindcheck.verbs._results import write_match

        write_match(res, result.manifest, out, manifest_options)
    return res






