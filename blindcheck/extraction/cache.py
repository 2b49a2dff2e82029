"""On-disk cache of per-clip results, as Parquet, safe against being killed at any instant.

Layout under the cache root::

    index/part-*.parquet            path, size, mtime_ns, start, end -> content_hash   (skip re-hashing)
    features/<tag>/part-*.parquet   content_hash, _notes, <features...>                 (one dir per extractor)
    plans/plan-*.arrow              one extraction run's work list, read by its workers (removed after the run)
    model-digests.json              content digests of model files, by path, size and mtime (see modelid.py)

``<tag>`` is ``name-vVERSION-CONFIGHASH-wPOLICYHASH`` (see :func:`blindcheck.features.cache_tag` and
:func:`policy_tag`), so a changed extractor, or a changed long-file window policy, never reads stale values.
Every part is written to a hidden temporary file in the same directory, flushed to disk and renamed into place, so
a reader sees whole parts or nothing.

The cache holds at scale: a reader asks for the keys it needs (the key column is read first, part by part and
row group by row group, and the other columns only where a wanted key is), so a manifest of a thousand clips
does not load the half million rows other manifests left there; a flush writes one new part and touches nothing
else. Part names begin with the time they were written, so "the last copy of a key wins" means the newest.
:meth:`Store.compact` merges only the *small* parts of a directory (new file first, old parts removed after)
once there are many of them, streaming (one part in memory at a time), so a large table is never rewritten to
add a few rows, and a kill during compaction loses nothing either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from blindcheck.runtime.files import write_parquet_atomic

INDEX_KEY = ["path", "size", "mtime_ns", "start", "end"]
COMPACT_PARTS = 32  # compact a directory once it holds more than this many small parts
SMALL_PART_ROWS = 100_000  # parts at least this large are never rewritten by compaction
STALE_PLAN_S = 7 * 24 * 3600  # a plan left by a killed run is removed by a run this much later


def policy_tag(tag: str, policy: dict) -> str:
    """The feature directory of extractor ``tag`` under the window policy ``policy``
    (:meth:`blindcheck.inputs.audio.WindowPolicy.key`): which samples of a long file were analysed is part of
    what the features are, so another policy is another directory (the whole-files policy too)."""
    return f"{tag}-w{_policy_digest(policy)}"


def windowed_key(content_hash: str, policy: dict) -> str:
    """The cache key of a clip analysed on the windows of ``policy`` in a stage whose directory does not depend on
    the policy (voice, ASR): a clip analysed whole does not depend on the policy and keeps its content hash as
    key (so a policy change, or a cache written before the policy existed, recomputes no short clip); a windowed
    clip's key adds the policy, so another policy recomputes it and the same policy reuses it."""
    return f"{content_hash}-w{_policy_digest(policy)}"


def _policy_digest(policy: dict) -> str:
    return hashlib.blake2b(json.dumps(policy, sort_keys=True).encode(), digest_size=4).hexdigest()




def _parts(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("part-*.parquet") if not p.name.startswith(".")) if d.is_dir() else []


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` with the columns of ``schema``, in its order and types (a column a part lacks: nulls)."""
    cols = [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _select(p: Path, column: str | None, where: pd.Index | None, columns: list[str] | None = None):
    """Yield ``(table, positions)`` per row group of part ``p``: the rows whose ``column`` is in ``where`` (every
    row when ``where`` is None) and, for each, its position in ``where``. The key column is read first and the
    other columns only of row groups that hold a wanted key, so a large part holding other manifests' rows costs
    one row group of memory (a pyarrow ``isin`` filter instead rebuilt its value set for every part: 24 s for
    100k keys over 400 parts, against 1.3 s this way)."""
    pf = pq.ParquetFile(p)
    for g in range(pf.metadata.num_row_groups):
        if where is None:
            yield pf.read_row_group(g, columns=columns), None
            continue
        keys = pf.read_row_group(g, columns=[column]).column(0).to_numpy(zero_copy_only=False)
        pos = where.get_indexer(keys)
        sel = np.nonzero(pos >= 0)[0]
        if not len(sel):
            continue
        t = pf.read_row_group(g, columns=columns)
        yield (t.take(pa.array(sel)) if len(sel) < t.num_rows else t), pos[sel]


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
        the rows whose ``column`` is one of those values (see :func:`_select`)."""
        where = None
        if wanted is not None:
            where = pd.Index(list(dict.fromkeys(wanted)))
            if not len(where):
                return pd.DataFrame()
        tables = []
        for p in parts if parts is not None else _parts(d):
            try:
                tables += [t for t, _ in _select(p, column, where)]
            except Exception:  # a part damaged by a crashed disk write: ignore it, its clips are redone
                continue
        if not tables:
            return pd.DataFrame()
        df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        return df.drop_duplicates(subset=key, keep="last").reset_index(drop=True)

    def _append(self, d: Path, df: pd.DataFrame | pa.Table) -> None:
        if (df.num_rows if isinstance(df, pa.Table) else len(df)):
            write_parquet_atomic(df, d / _part_name())

    def _compact(self, d: Path, key: list[str], min_parts: int = COMPACT_PARTS) -> bool:
        """Merge the small parts of ``d`` into one when there are more than ``min_parts`` of them.

        Streaming: the key columns of every small part are read first to find each key's newest row; then the parts
        are read one at a time and their surviving rows written on to the merged file, so memory holds the keys
        and one part, never the whole table."""
        small = []
        for p in _parts(d):
            try:
                if pq.ParquetFile(p).metadata.num_rows < SMALL_PART_ROWS:
                    small.append(p)
            except Exception:
                small.append(p)  # damaged: merging skips it and removes it
        if len(small) <= max(1, min_parts):
            return False
        schemas = {}
        for p in small:
            with contextlib.suppress(Exception):
                schemas[p] = pq.read_schema(p)
        if schemas:
            schema = pa.unify_schemas(list(schemas.values()), promote_options="permissive")
            # Which row of which part holds each key's newest copy: the key columns only, as Arrow arrays (no Python
            # object per row), numbered in write order (parts are in write order, rows too: the last copy wins),
            # the highest number kept per key by one hash aggregation.
            readable = [p for p in small if p in schemas]
            keys, offsets, total = [], [], 0
            for i, p in enumerate(readable):
                try:
                    t = pq.read_table(p, columns=key)
                except Exception:
                    continue
                t = _conform(t, pa.schema([schema.field(k) for k in key]))
                keys.append(t.append_column("__seq", pa.array(np.arange(total, total + t.num_rows, dtype=np.int64))))
                offsets.append((total, i))
                total += t.num_rows
            newest = None
            if keys:
                seq = pa.concat_tables(keys).group_by(key, use_threads=False).aggregate([("__seq", "max")])
                seq = np.sort(seq.column("__seq_max").to_numpy())
                del keys
                starts = np.array([o for o, _ in offsets], dtype=np.int64)
                slot = np.searchsorted(starts, seq, side="right") - 1
                newest = pd.DataFrame({"part": np.array([i for _, i in offsets])[slot], "row": seq - starts[slot]})
            # named after the newest part it replaces, so it still sorts before any part written since
            target = d / f"{small[-1].stem}-c{uuid.uuid4().hex[:6]}.parquet"
            tmp = d / f".{target.name}.tmp"
            with open(tmp, "wb") as fh:
                with pq.ParquetWriter(fh, schema) as writer:
                    for i, rows in (newest.groupby("part")["row"] if newest is not None else []):
                        try:
                            t = pq.read_table(readable[i])
                        except Exception:
                            continue
                        writer.write_table(_conform(t.take(pa.array(np.sort(rows.to_numpy()))), schema))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        for p in small:
            p.unlink(missing_ok=True)
        return True

    def n_parts(self, d: Path) -> int:
        return len(_parts(d))

    # -- content-hash index ------------------------------------------------------------------------
    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def lookup_index(self, keys: pd.DataFrame) -> np.ndarray:
        """The content hash of each row of ``keys`` (columns :data:`INDEX_KEY`), ``None`` where the index has no
        entry: one vectorised join on the index rows of these paths only (the newest entry of a key wins)."""
        return self.index_state(keys)[0]

    def index_state(self, keys: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`lookup_index`'s hashes, and for each row whether the index holds its path at all (under another
        size, modification time or segment: a file touched or rewritten since, whose content may be unchanged)."""
        found = np.full(len(keys), None, dtype=object)
        seen = np.zeros(len(keys), dtype=bool)
        df = self._read(self.index_dir, INDEX_KEY, "path", pd.unique(keys["path"].to_numpy(dtype=object)))
        if df.empty or not len(keys):
            return found, seen
        seen = keys["path"].isin(df["path"]).to_numpy()
        df = df.astype({"size": "int64", "mtime_ns": "int64", "start": "float64", "end": "float64"})
        joined = keys[INDEX_KEY].reset_index(drop=True).merge(df[[*INDEX_KEY, "content_hash"]], how="left",
                                                              on=INDEX_KEY, sort=False)
        hashes = joined["content_hash"].to_numpy(dtype=object)
        known = pd.notna(hashes)
        found[known] = hashes[known]
        return found, seen

    def append_index(self, rows: list[dict]) -> None:
        self._append(self.index_dir, pd.DataFrame(rows, columns=[*INDEX_KEY, "content_hash"]))

    # -- features per extractor --------------------------------------------------------------------
    def feature_dir(self, tag: str) -> Path:
        return self.root / "features" / tag

    def read_features(self, tag: str, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Cached rows of one extractor, indexed by ``content_hash`` (only the rows of ``keys``, when given)."""
        df = self._read(self.feature_dir(tag), ["content_hash"], "content_hash", keys)
        return df.set_index("content_hash") if not df.empty else df

    def append_features(self, tag: str, df: pd.DataFrame | pa.Table) -> None:
        self._append(self.feature_dir(tag), df)

    def present(self, tag: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` the extractor ``tag`` has rows for (reads the key column only)."""
        keys = pd.unique(np.asarray(list(keys) if not isinstance(keys, np.ndarray) else keys, dtype=object))
        return set(keys[self.present_mask(tag, keys)])

    def present_mask(self, tag: str, keys: np.ndarray) -> np.ndarray:
        """For each of ``keys`` (repeats and ``None`` allowed), whether the extractor ``tag`` has a row for it: a
        boolean array, built without a Python object per key (reads the key column only)."""
        keys = np.asarray(keys, dtype=object)
        inverse, uniq = pd.factorize(keys)  # None -> -1
        found = np.zeros(len(uniq) + 1, dtype=bool)  # the last slot: a None key, never present
        where = pd.Index(uniq)
        for p in _parts(self.feature_dir(tag)) if len(uniq) else []:
            try:
                for _, pos in _select(p, "content_hash", where, ["content_hash"]):
                    found[pos] = True
            except Exception:
                continue
        return found[inverse]

    def read_matrix(self, tag: str, keys: np.ndarray, columns: list[str], dtype=np.float32,
                    out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        """The values of ``columns`` for each of ``keys`` (repeats allowed), as one ``(len(keys), len(columns))``
        array, filled part by part (the newest copy of a key wins) so that memory holds one part and the result.
        Returns the array (NaN where a key has no row), a mask of the keys found, and the non-empty ``_notes``
        by key. ``out`` (shape ``(len(keys), len(columns))``, e.g. a slice of a wider table) receives the values in
        place of a new array."""
        inverse, uniq = pd.factorize(np.asarray(keys, dtype=object))
        distinct = len(uniq) == len(inverse)  # then uniq is keys, in order: fill the destination directly
        if distinct and out is not None:
            out[...] = np.nan
        dest = out
        values = out if distinct and out is not None else np.full((len(uniq), len(columns)), np.nan, dtype=dtype)
        found = np.zeros(len(uniq), dtype=bool)
        notes: dict[str, str] = {}
        where = pd.Index(uniq)
        for p in _parts(self.feature_dir(tag)) if len(uniq) else []:
            # Row group by row group: the key column first, the values only of the row groups holding wanted
            # keys (a large compacted part holds other manifests' rows too), so memory holds one row group.
            try:
                names = set(pq.read_schema(p).names)
                want = [c for c in columns if c in names] + (["_notes"] if "_notes" in names else [])
                for t, pos in _select(p, "content_hash", where, want):
                    for j, c in enumerate(columns):
                        values[pos, j] = t.column(c).to_numpy(zero_copy_only=False).astype(dtype, copy=False) \
                            if c in names else np.nan
                    found[pos] = True
                    if "_notes" in names:
                        for k, note in zip(pos, t.column("_notes").to_pylist(), strict=True):
                            if note:
                                notes[uniq[k]] = note
                            else:
                                notes.pop(uniq[k], None)
            except Exception:  # a damaged part: its clips were redone
                continue
        pa.default_memory_pool().release_unused()
        if distinct:
            return values, found, notes
        if dest is None:
            return values[inverse], found[inverse], notes
        for i in range(0, len(inverse), 8192):  # in row blocks: a strided destination would be copied whole
            dest[i:i + 8192] = values[inverse[i:i + 8192]]
        return dest, found[inverse], notes

    def compact(self, tags: list[str], min_parts: int = COMPACT_PARTS) -> None:
        self._compact(self.index_dir, INDEX_KEY, min_parts)
        for tag in tags:
            self._compact(self.feature_dir(tag), ["content_hash"], min_parts)

    # -- work plans ---------------------------------------------------------------------------------
    def write_plan(self, table: pa.Table) -> Path:
        """Write one run's work list as an Arrow IPC file under ``plans/`` (atomically), for its workers to read
        slices of (:func:`read_plan`): a job then names a file and a row range instead of carrying its clips, so
        neither the driver nor a Dask scheduler holds a Python object per clip. Plans a killed run left behind more
        than :data:`STALE_PLAN_S` ago are removed."""
        d = self.root / "plans"
        d.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in d.glob("plan-*.arrow"):
            with contextlib.suppress(OSError):
                if now - old.stat().st_mtime > STALE_PLAN_S:
                    old.unlink()
        path = d / f"plan-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.arrow"
        tmp = d / f".{path.name}.tmp"
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
        return path


_PLAN: dict[str, pa.Table] = {}
_PLAN_LOCK = threading.Lock()  # a Dask worker may run several jobs at once in threads


def read_plan(path: str, lo: int, hi: int) -> list[dict]:
    """Rows ``lo:hi`` of the plan at ``path`` as dicts. The file is memory-mapped once per process (one plan at a
    time: a worker serves one run), so a job costs only its own rows."""
    with _PLAN_LOCK:
        if path not in _PLAN:
            _PLAN.clear()
            _PLAN[path] = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
        table = _PLAN[path]
    return table.slice(lo, hi - lo).to_pylist()
