"""On-disk cache of per-clip results, as Parquet, safe against being killed at any instant.

Layout under the cache root::

    index/part-*.parquet            path, size, mtime_ns, start, end -> content_hash   (skip re-hashing)
    features/<tag>/part-*.parquet   content_hash, _notes, <features...>                 (one dir per extractor)

``<tag>`` is ``name-vVERSION-CONFIGHASH`` (see :func:`blindcheck.features.cache_tag`), so a changed extractor
never reads stale values. Every part is written to a hidden temporary file in the same directory, flushed to
disk and renamed into place, so a reader sees whole parts or nothing. :meth:`Store.compact` merges the parts
of a directory into one (new file first, old parts removed after), and readers de-duplicate by key, so a
kill during compaction loses nothing either.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

INDEX_KEY = ["path", "size", "mtime_ns", "start", "end"]


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` so that the file appears complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    table = pa.Table.from_pandas(df, preserve_index=False)
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _parts(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("part-*.parquet") if not p.name.startswith(".")) if d.is_dir() else []


class Store:
    """The cache root. Cheap to create; every method reads or writes whole Parquet parts."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- generic keyed parts ------------------------------------------------------------------------
    def _read(self, d: Path, key: list[str]) -> pd.DataFrame:
        frames = []
        for p in _parts(d):
            try:
                frames.append(pq.read_table(p).to_pandas())
            except Exception:  # a part damaged by a crashed disk write: ignore it, its clips are redone
                continue
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        return df.drop_duplicates(subset=key, keep="last").reset_index(drop=True)

    def _append(self, d: Path, df: pd.DataFrame) -> None:
        if not df.empty:
            write_parquet_atomic(df, d / f"part-{uuid.uuid4().hex}.parquet")

    def _compact(self, d: Path, key: list[str]) -> None:
        parts = _parts(d)
        if len(parts) <= 1:
            return
        merged = self._read(d, key)
        write_parquet_atomic(merged, d / f"part-{uuid.uuid4().hex}.parquet")
        for p in parts:
            p.unlink(missing_ok=True)

    # -- content-hash index ------------------------------------------------------------------------
    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def read_index(self) -> dict[tuple, str]:
        df = self._read(self.index_dir, INDEX_KEY)
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

    def read_features(self, tag: str) -> pd.DataFrame:
        """Cached rows of one extractor, indexed by ``content_hash``."""
        df = self._read(self.feature_dir(tag), ["content_hash"])
        return df.set_index("content_hash") if not df.empty else df

    def append_features(self, tag: str, df: pd.DataFrame) -> None:
        self._append(self.feature_dir(tag), df)

    def compact(self, tags: list[str]) -> None:
        self._compact(self.index_dir, INDEX_KEY)
        for tag in tags:
            self._compact(self.feature_dir(tag), ["content_hash"])
