"""The feature cache at scale: one flush, and the read a manifest does at start-up, with 100k and 500k rows.

"Before" is the cache as it was: a flush concatenated the whole in-memory table (every row the cache had ever
stored, other manifests' too) with the new rows and wrote a part; a run began by reading every row. "After" is
:class:`blindcheck.extraction.cache.Store` now: a flush writes one new part and keeps the new rows aside (joined once at
the end), and a run reads only the rows of its own manifest (a pyarrow filter on the key column).

    python benchmarks/cache_scale.py [--rows 100000 500000] [--columns 80] [--batch 64] [--manifest 1000]

Prints, per size, milliseconds per flush before/after, the start-up read (seconds, rows loaded) and the
end-of-run compaction (before: the whole table rewritten; after: only the small parts merged).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

from blindcheck.extraction.cache import Store  # noqa: E402


def frame(keys: list[str], columns: int, rng) -> pd.DataFrame:
    df = pd.DataFrame(rng.normal(size=(len(keys), columns)), columns=[f"f{j:03d}" for j in range(columns)])
    df.insert(0, "_notes", "")
    df.insert(0, "content_hash", keys)
    return df


def old_read_all(store: Store, tag: str) -> pd.DataFrame:
    """The former Store.read_features: every part, every row."""
    return store._read(store.feature_dir(tag), ["content_hash"]).set_index("content_hash")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 500_000])
    ap.add_argument("--columns", type=int, default=80, help="feature columns (spectral has ~80)")
    ap.add_argument("--batch", type=int, default=64, help="rows per flush")
    ap.add_argument("--flushes", type=int, default=5)
    ap.add_argument("--manifest", type=int, default=1000, help="clips of the manifest that starts a run")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.columns} feature columns, {args.batch} rows per flush, mean of {args.flushes} flushes")
    print(f"{'rows':>8} {'flush before ms':>16} {'flush after ms':>15} {'ratio':>6} | {'read all s':>10} "
          f"{'rows':>8} | {'read manifest s':>15} {'rows':>6} | {'compact old s':>10} {'new s':>9}")
    rows: list[str] = []
    for n in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp)
            keys = [f"{i:032x}" for i in range(n)]
            store.append_features("t", frame(keys, args.columns, rng))  # one compacted part of n rows
            t0 = time.perf_counter()
            cached = old_read_all(store, "t")
            read_all = time.perf_counter() - t0
            before, after, fresh = [], [], []
            for k in range(args.flushes):
                new = frame([f"new-{k}-{i}" for i in range(args.batch)], args.columns, rng)
                t0 = time.perf_counter()  # before: append a part, then concatenate the whole table in memory
                store.append_features("t", new)
                cached = pd.concat([cached, new.set_index("content_hash")])
                before.append(time.perf_counter() - t0)
                new = frame([f"new2-{k}-{i}" for i in range(args.batch)], args.columns, rng)
                t0 = time.perf_counter()  # after: append a part; the new rows wait aside
                store.append_features("t", new)
                fresh.append(new.set_index("content_hash"))
                after.append(time.perf_counter() - t0)
            wanted = list(rng.choice(keys, size=args.manifest, replace=False))
            t0 = time.perf_counter()
            mine = store.read_features("t", wanted)
            read_mine = time.perf_counter() - t0
            assert len(mine) == args.manifest
            t0 = time.perf_counter()  # after: only the small parts are merged (forced here; a run waits for 32)
            store.compact(["t"], min_parts=1)
            compact_after = time.perf_counter() - t0
            t0 = time.perf_counter()  # before: each run's end rewrote the whole table
            merged = old_read_all(store, "t").reset_index()
            store.append_features("t", merged)
            compact_before = time.perf_counter() - t0
            b, a = 1000 * float(np.mean(before)), 1000 * float(np.mean(after))
            rows.append(f"{n:>8} {b:>16.1f} {a:>15.1f} {b / a:>6.1f} | {read_all:>10.2f} {len(cached):>8} | "
                        f"{read_mine:>15.2f} {len(mine):>6} | {compact_before:>10.2f} {compact_after:>9.2f}")
            print(rows[-1], flush=True)


if __name__ == "__main__":
    main()
