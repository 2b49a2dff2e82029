"""The ``match`` verb: a distribution-matched subset proposed, re-checked afresh and exported as a manifest."""

from __future__ import annotations

import json
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
        write_match(res, result.manifest, out, manifest_options)
    return res


def manifest_rows(manifest: Any, ids: list[str], manifest_options: Any = None) -> pd.DataFrame:
    """The manifest rows of ``ids`` with every input column as the user wrote it (CSV/TSV/JSONL/Parquet), paths
    made absolute; canonical columns for Kaldi and audiofolder inputs."""
    from blindcheck.inputs.manifest import ManifestOptions, _normalise, _read_table

    src = Path(manifest.source)
    canon = manifest.table.set_index(manifest.table["id"].astype(str))
    if src.is_file():
        opts = manifest_options or ManifestOptions()
        raw = _read_table(src)
        tagged = raw.copy()
        tagged["_bc_row"] = np.arange(len(raw))
        table, _ = _normalise(tagged, src.parent, ManifestOptions(
            label_column=opts.label_column, member_value=opts.member_value, path_column=opts.path_column,
            id_column=opts.id_column, skip_missing=True), str(src))
        row_of = pd.Series(table["_bc_row"].to_numpy(), index=table["id"].astype(str))
        rows = raw.iloc[row_of.loc[ids].to_numpy()].reset_index(drop=True).copy()
        from blindcheck.inputs.manifest import _pick
        from blindcheck.inputs.vocabulary import PATH_COLUMNS

        path_col = _pick(raw, opts.path_column, PATH_COLUMNS, "audio path", str(src))
        rows[path_col] = canon.loc[ids, "path"].to_numpy()
        return rows
    return canon.loc[ids].reset_index(drop=True)


def write_match(res: MatchResult, manifest: Any, out: str | os.PathLike, manifest_options: Any = None) -> dict:
    """``matched.csv`` (design subset) or ``<part>.csv`` (disentangle) for every accepted subset, with every input
    column plus ``match_id``; ``dropped.csv`` (id, label, reason, design part); ``match.json``."""
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    dropped_frames = []
    for part in res.parts:
        name = "matched" if res.design == "subset" else part.name
        target = outp / f"{name}.csv"
        best = part.best
        if part.chosen is not None:
            a = part.chosen
            ids = [str(i) for i in res.ids[a.keep]]
            rows = manifest_rows(manifest, ids, manifest_options)
            rows["match_id"] = [int(x) if x >= 0 else "" for x in a.match_id[a.keep]]
            tmp = outp / f".{name}.csv.tmp"
            rows.to_csv(tmp, index=False)
            os.replace(tmp, target)
            paths[name] = target
        elif target.exists():
            target.unlink()  # a stale subset from an earlier run must not pass for this run's
        if best is not None:
            sel = best.dropped != ""
            sel &= best.dropped != "outside the design"
            dropped_frames.append(pd.DataFrame({"id": res.ids[sel], "label": res.labels[sel],
                                                "reason": best.dropped[sel], "part": part.name}))
    if len(res.extra_dropped):
        dropped_frames.append(res.extra_dropped.assign(part="all"))
    dropped = pd.concat(dropped_frames, ignore_index=True) if dropped_frames else \
        pd.DataFrame(columns=["id", "label", "reason", "part"])
    dropped.to_csv(outp / "dropped.csv", index=False)
    paths["dropped"] = outp / "dropped.csv"
    tmp = outp / ".match.json.tmp"
    tmp.write_text(json.dumps(res.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, outp / "match.json")
    paths["match"] = outp / "match.json"
    return paths


def add_to_result_json(res: MatchResult, out: str | os.PathLike) -> None:
    """The ``match`` section of ``result.json`` (``check --match``): status, design, and per part the method,
    counts and the before/after AUC; the full record is in ``match.json``."""
    from blindcheck.runtime.files import json_ready

    path = Path(out) / "result.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for p in res.parts:
        b = p.best
        s = b.summary() if b else {}
        parts.append({"name": p.name, "success": p.success, "method": b.method if b else None,
                      "retained": {k: v for k, v in (s.get("retained") or {}).items() if k != "groups"},
                      "selection_auc": (s.get("selection_estimate") or {}).get("auc"),
                      "fresh": {k: (s.get("fresh_check") or {}).get(k) for k in ("status", "best_model", "auc",
                                                                                  "ci_low", "ci_high", "p")},
                      "reasons": p.reasons})
    data["match"] = json_ready({"status": res.status, "design": res.design, "before": res.before, "parts": parts,
                            "file": "match.json"})
    tmp = Path(out) / ".result.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)
