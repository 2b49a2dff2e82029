"""Attack-score files and the manifest's ``mia_*`` columns: reading, validating and aligning them on clip ids."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from blindcheck.errors import BlindcheckError

PREFIX = "mia_"


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """A scores file (CSV, TSV or Parquet): an ``id`` column and one numeric column per attack.

    Errors name the problem and the row: no ``id`` column, duplicate ids, no score column, text in a score
    column. Empty cells, ``nan`` and ``inf`` are kept (as NaN / inf); they are counted per attack later.
    """
    p = Path(path)
    if not p.is_file():
        raise BlindcheckError(f"scores file not found: {p}")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file
        raise BlindcheckError(f"{p}: cannot read scores file: {exc}") from exc
    if "id" not in df.columns:
        raise BlindcheckError(f"{p}: a scores file needs an 'id' column (columns: {', '.join(map(str, df.columns))})")
    df["id"] = df["id"].astype(str)
    dup = df["id"][df["id"].duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        rows = [i + 2 for i in np.nonzero((df["id"] == first).to_numpy())[0]]
        raise BlindcheckError(f"{p}: duplicate id '{first}' (rows {', '.join(map(str, rows))}; "
                              f"{dup.nunique()} ids appear more than once)")
    cols = [c for c in df.columns if c != "id"]
    if not cols:
        raise BlindcheckError(f"{p}: no score column besides 'id'; add one numeric column per attack")
    for c in cols:
        df[c] = _numeric(df[c], c, df["id"], str(p))
        fin = df[c][np.isfinite(df[c])]
        if len(fin) == 0:
            raise BlindcheckError(f"{p}: score column '{c}' holds no finite number")
        if (fin == fin.iloc[0]).all():
            raise BlindcheckError(f"{p}: score column '{c}' gives every clip the same score ({fin.iloc[0]:g}); "
                                  "it ranks nothing")
    return df


def check_scores_ids(manifest_ids: pd.Series | np.ndarray, scores: pd.DataFrame) -> IdMismatch:
    """Before any work: the ids of ``scores`` against the manifest's. No overlap at all is an error; partial
    overlap is returned (counted and named) for the caller to report."""
    ids = pd.Index(np.asarray(manifest_ids).astype(str))
    sid = pd.Index(scores["id"].astype(str))
    mismatch = IdMismatch(scores_only=list(sid.difference(ids, sort=False)), clips_only=list(ids.difference(sid,
                                                                                                        sort=False)))
    if len(mismatch.scores_only) == len(sid):
        raise BlindcheckError(f"no id of the scores file is in the manifest ({len(sid)} ids in the scores, e.g. "
                              f"{', '.join(sid[:3])}; manifest ids e.g. {', '.join(ids[:3])})")
    return mismatch


def _numeric(col: pd.Series, name: str, ids: pd.Series, source: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    text = col.astype(str).str.strip()
    conv = pd.to_numeric(text.replace({"": "nan"}), errors="coerce")
    bad = conv.isna() & ~text.str.lower().isin(["", "nan", "na", "null", "none"])
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        raise BlindcheckError(f"{source}: id '{ids.iloc[i]}': score column '{name}' holds '{col.iloc[i]}', not a "
                              f"number ({int(bad.sum())} such cells)")
    return conv.astype(float)


@dataclass
class IdMismatch:
    """Ids that are in the scores but not among the analysed clips, and the reverse."""

    scores_only: list[str] = field(default_factory=list)
    clips_only: list[str] = field(default_factory=list)

    def message(self) -> str | None:
        parts = []
        if self.scores_only:
            parts.append(f"{len(self.scores_only)} ids in the scores have no analysed clip (e.g. "
                         f"{', '.join(self.scores_only[:5])})")
        if self.clips_only:
            parts.append(f"{len(self.clips_only)} analysed clips have no score (e.g. "
                         f"{', '.join(self.clips_only[:5])}); they are left out of every attack")
        return "; ".join(parts) or None

    def to_dict(self) -> dict:
        return {"scores_only": len(self.scores_only), "scores_only_ids": self.scores_only[:50],
                "clips_only": len(self.clips_only), "clips_only_ids": self.clips_only[:50]}


def align_scores(ids: np.ndarray, table: pd.DataFrame | None, scores: pd.DataFrame | None
                 ) -> tuple[dict[str, np.ndarray], IdMismatch]:
    """Per attack, its scores in the order of ``ids`` (NaN where a clip has none).

    Attacks are the ``mia_*`` columns of the manifest ``table`` and every score column of ``scores`` (which
    wins when a name is in both is an error). Raises when no attack is present or no id of the scores file
    matches an analysed clip; a constant attack is an error (it ranks nothing).
    """
    ids = np.asarray(ids).astype(str)
    out: dict[str, np.ndarray] = {}
    mismatch = IdMismatch()
    if table is not None:
        t = table.assign(id=table["id"].astype(str)).set_index("id")
        for c in [c for c in t.columns if str(c).startswith(PREFIX)]:
            out[c] = t[c].reindex(ids).to_numpy(dtype=float)
    if scores is not None:
        s = scores.set_index("id")
        known = set(ids)
        overlap = [i for i in s.index if i in known]
        mismatch = IdMismatch(scores_only=[i for i in s.index if i not in known],
                              clips_only=[i for i in ids if i not in s.index])
        if not overlap:
            raise BlindcheckError(f"no id of the scores file matches an analysed clip ({len(s)} ids in the scores, "
                                  f"e.g. {', '.join(map(str, s.index[:3]))}; {len(ids)} clips, e.g. "
                                  f"{', '.join(ids[:3])})")
        for c in s.columns:
            if c in out:
                raise BlindcheckError(f"attack '{c}' is both a manifest column and a scores-file column; rename one")
            out[str(c)] = s[c].reindex(ids).to_numpy(dtype=float)
    if not out:
        raise BlindcheckError("no attack scores: give mia_* columns in the manifest or a scores file (--scores)")
    for name, v in out.items():
        fin = v[np.isfinite(v)]
        if len(fin) and np.all(fin == fin[0]):
            raise BlindcheckError(f"attack '{name}' gives every clip the same score ({fin[0]:g}); it ranks nothing")
    return out, mismatch


def has_attacks(table: pd.DataFrame) -> bool:
    return any(str(c).startswith(PREFIX) for c in table.columns)
