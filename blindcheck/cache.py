"""On-disk cache of per-clip results, as Parquet, safe against being killed at any instant.

Layout under the cache root::

    index/part-*.parquet            path, size, mtime_ns, start, end -> content_hash   (skip re-hashing)
    features/<tag>/part-*.parquet   content_hash, _notes, <features...>                 (one dir per extractor)
    model-digests.json              content digests of model files, by path, size and mtime (see modelid.py)

``<tag>`` is ``name-vVERSION-CONFIGHASH`` (see :func:`blindcheck.features.cache_tag`), so a changed extractor
never reads stale values. Every part is written to a hidden temporary file in the same directory, flushed to
disk and renamed into place, so a reader sees whole parts or nothing.

The cache holds at scale: a reader asks for the keys it needs (a pyarrow filter on the key column, applied
part by part), so a manifest of a thousand clips does not load the half million rows other manifests left
there; a flush writes one new part and touches nothing else. Part names begin with the time they were
written, so "the last copy of a key wins" means the newest. :meth:`Store.compact` merges only the *small*
parts of a directory (new file first, old parts removed after) once there are many of them, so a large
table is never rewritten to add a few rows, and a kill during compaction loses nothing either.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

INDEX_KEY = ["path", "size", "mtime_ns", "start", "end"]
COMPACT_PARTS = 32  # compact a directory once it holds more than this many small parts
SMALL_PART_ROWS = 100_000  # parts at least this large are never rewritten by compaction


def write_parquet_atomic(df: pd.DataFrame | pa.Table, path: Path) -> None:
    """Write ``df`` to ``path`` so that the file appears complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _parts(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("part-*.parquet") if not p.name.startswith(".")) if d.is_dir() else []


def _part_name() -> str:
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"


class Store:
    """The cache root. Cheap to create; every method reads or writes whole Parquet parts."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- generic keyed parts ------------------------------------------------------------------------
    def _read(self, d: Path, key: list[str], column: str | None = None, wanted: Iterable | None = None,
              parts: list[Path] | None = None) -> pd.DataFrame:
        """Rows of the parts of ``d`` (de-duplicated on ``key``, the newest copy kept); with ``wanted``, only
        the rows whose ``column`` is one of those values (read with a filter, part by part)."""
        filt = None
        if wanted is not None:
            values = list(dict.fromkeys(wanted))
            if not values:
                return pd.DataFrame()
            filt = pc.field(column).isin(pa.array(values))
        tables = []
        for p in parts if parts is not None else _parts(d):
            try:
                t = pq.read_table(p, filters=filt) if filt is not None else pq.read_table(p)
            except Exception:  # a part damaged by a crashed disk write: ignore it, its clips are redone
                continue
            if t.num_rows:
                tables.append(t)
        if not tables:
            return pd.DataFrame()
        df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        return df.drop_duplicates(subset=key, keep="last").reset_index(drop=True)

    def _append(self, d: Path, df: pd.DataFrame) -> None:
        if not df.empty:
            write_parquet_atomic(df, d / _part_name())

    def _compact(self, d: Path, key: list[str], min_parts: int = COMPACT_PARTS) -> bool:
        """Merge the small parts of ``d`` into one when there are more than ``min_parts`` of them."""
        small = []
        for p in _parts(d):
            try:
                if pq.ParquetFile(p).metadata.num_rows < SMALL_PART_ROWS:
                    small.append(p)
            except Exception:
                small.append(p)  # damaged: merging skips it and removes it
        if len(small) <= max(1, min_parts):
            return False
        merged = self._read(d, key, parts=small)
        if not merged.empty:
            # named after the newest part it replaces, so it still sorts before any part written since
            write_parquet_atomic(merged, d / f"{small[-1].stem}-c{uuid.uuid4().hex[:6]}.parquet")
        for p in small:
            p.unlink(missing_ok=True)
        return True

    def n_parts(self, d: Path) -> int:
        return len(_parts(d))

    # -- content-hash index ------------------------------------------------------------------------
    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def read_index(self, paths: Iterable[str] | None = None) -> dict[tuple, str]:
        """The index (only the entries of ``paths``, when given)."""
        df = self._read(self.index_dir, INDEX_KEY, "path", paths)
        if df.empty:
            return {}
        return {
            (r.path, int(r.size), int(r.mtime_ns), float(r.start), float(r.end)): r.content_hash
            for r in df.itertuples(index=False)
        }

    def append_index(self, rows: list[dict]) -> None:
        self._append(self.index_dir, pd.DataFrame(rows, columns=[*INDEX_KEY, "content_hash"]))

    # -- features per extractor --------------------------------------------------------------------
    def feature_dir(self, tag: str) -> Path:
        return self.root / "features" / tag

    def read_features(self, tag: str, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Cached rows of one extractor, indexed by ``content_hash`` (only the rows of ``keys``, when given)."""
        df = self._read(self.feature_dir(tag), ["content_hash"], "content_hash", keys)
        return df.set_index("content_hash") if not df.empty else df

    def append_features(self, tag: str, df: pd.DataFrame) -> None:
        self._append(self.feature_dir(tag), df)

    def compact(self, tags: list[str], min_parts: int = COMPACT_PARTS) -> None:
        self._compact(self.index_dir, INDEX_KEY, min_parts)
        for tag in tags:
            self._compact(self.feature_dir(tag), ["content_hash"], min_parts)
