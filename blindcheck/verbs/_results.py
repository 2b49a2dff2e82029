"""The result directory, written in one place: every file a verb leaves in ``OUT`` (``result.json``,
``blind_scores.parquet``, ``attacks.parquet``, the extraction outputs, the match files, ``summary.txt``) is written
here, each atomically (:mod:`blindcheck.runtime.files`), so that an interrupted run never leaves half a file
that a later reader would take for a result."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blindcheck.analysis.matching import MatchResult
from blindcheck.extraction.pipeline import ExtractionResult
from blindcheck.inputs.manifest import Manifest
from blindcheck.runtime.files import (
    json_ready,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def write_outputs(result: ExtractionResult, manifest: Manifest, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``features.parquet``, ``errors.csv``, ``notes.csv`` and ``manifest.parquet`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "features": out / "features.parquet",
        "errors": out / "errors.csv",
        "notes": out / "notes.csv",
        "manifest": out / "manifest.parquet",
    }
    write_parquet_atomic(result.features, paths["features"])
    if result.transcripts is not None:
        paths["transcripts"] = out / "transcripts.parquet"
        write_parquet_atomic(result.transcripts, paths["transcripts"])
    write_parquet_atomic(manifest.table, paths["manifest"])
    write_csv_atomic(result.errors, paths["errors"])
    write_csv_atomic(result.notes, paths["notes"])
    return paths


def write_results(result: Any, out: str | os.PathLike) -> dict[str, Path]:
    outp = Path(out)
    paths = write_outputs(result.extraction, result.manifest, outp)
    paths["result"] = outp / "result.json"
    paths["blind_scores"] = outp / "blind_scores.parquet"
    write_json_atomic(paths["result"], result.to_dict())
    write_parquet_atomic(result.separability.scores_frame(), paths["blind_scores"])
    if result.attacks is not None:
        paths["attacks"] = outp / "attacks.parquet"
        write_parquet_atomic(result.attacks.frame(), paths["attacks"])
    return paths


def manifest_rows(manifest: Any, ids: list[str], manifest_options: Any = None) -> pd.DataFrame:
    """The manifest rows of ``ids`` with every input column as the user wrote it (CSV/TSV/JSONL/Parquet), paths
    made absolute; canonical columns for Kaldi and audiofolder inputs."""
    from blindcheck.inputs.manifest import ManifestOptions, normalise_table, read_table

    src = Path(manifest.source)
    canon = manifest.table.set_index(manifest.table["id"].astype(str))
    if src.is_file():
        opts = manifest_options or ManifestOptions()
        raw = read_table(src)
        tagged = raw.copy()
        tagged["_bc_row"] = np.arange(len(raw))
        table, _ = normalise_table(tagged, src.parent, ManifestOptions(
            label_column=opts.label_column, member_value=opts.member_value, path_column=opts.path_column,
            id_column=opts.id_column, skip_missing=True), str(src))
        row_of = pd.Series(table["_bc_row"].to_numpy(), index=table["id"].astype(str))
        rows = raw.iloc[row_of.loc[ids].to_numpy()].reset_index(drop=True).copy()
        from blindcheck.inputs.manifest import pick_column
        from blindcheck.inputs.vocabulary import PATH_COLUMNS

        path_col = pick_column(raw, opts.path_column, PATH_COLUMNS, "audio path", str(src))
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
            write_csv_atomic(rows, target)
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
    write_csv_atomic(dropped, outp / "dropped.csv")
    paths["dropped"] = outp / "dropped.csv"
    write_json_atomic(outp / "match.json", res.to_dict())
    paths["match"] = outp / "match.json"
    return paths


def add_to_result_json(res: MatchResult, out: str | os.PathLike) -> None:
    """The ``match`` section of ``result.json`` (``check --match``): status, design, and per part the method,
    counts and the before/after AUC; the full record is in ``match.json``."""
    path = Path(out) / "result.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for p in res.parts:
        b = p.best
        s = b.summary() if b else {}
        parts.append({"name": p.name, "success": p.success, "method": b.method if b else None,
                      "retained": {k: v for k, v in (s.get("retained") or {}).items() if k != "groups"},
                      "selection_auc": (s.get("selection_estimate") or {}).get("auc"),
                      "fresh": {k: (s.get("fresh_check") or {}).get(k) for k in ("status", "alpha", "best_model",
                                                                                  "auc", "ci_low", "ci_high", "p")},
                      "recheck": p.recheck, "reasons": p.reasons})
    data["match"] = json_ready({"status": res.status, "design": res.design, "before": res.before, "parts": parts,
                            "file": "match.json"})
    write_json_atomic(path, data)


def write_summary(out: str | None, summary: str) -> None:
    """OUT/summary.txt: the terminal summary, kept beside result.json."""
    if out is not None:
        path = Path(out) / "summary.txt"
        write_text_atomic(path, summary + "\n")
