"""Feature drift between two source trees: every recording/spectral/prosodic feature both compute, old vs new.

Each tree's extractors run in a subprocess (``PYTHONPATH=<tree>``) on the same clips: bundled FSDD clips (short,
8 kHz) and 5-15 s clips concatenated from them (as in ``extract_speed.py``). For each feature present in both,
the script prints the largest absolute difference, the largest relative difference (|new - old| / max(|old|,
1e-9)), and how many clips are NaN on one side only; features only one side has are listed by count.

    python benchmarks/feature_drift.py --old /work/main [--new .] [--clips 120] [--long 6] [--show 1e-6]
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("recording", "spectral", "prosodic")


def dump(paths: list[str], out: str) -> None:
    from blindcheck.features import get_extractor
    from blindcheck.inputs.audio import decode, load_clip, read_bytes

    exts = [get_extractor(m) for m in MODALITIES]
    rows = []
    for p in paths:
        clip = load_clip(p, decode(read_bytes(p)))
        row = {}
        for e in exts:
            row.update({f"{e.name}.{k}": v for k, v in e.extract(clip).items()})
        rows.append(row)
    with open(out, "wb") as f:
        pickle.dump(pd.DataFrame(rows), f)


def run_tree(tree: str, paths: list[str], tmp: Path, tag: str) -> pd.DataFrame:
    lst, out = tmp / f"{tag}.txt", tmp / f"{tag}.pkl"
    lst.write_text("\n".join(paths))
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    subprocess.run([sys.executable, __file__, "--dump", str(lst), str(out)], env=env, check=True, cwd=tree)
    with open(out, "rb") as f:
        return pickle.load(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=False, default="/work/main")
    ap.add_argument("--new", default=str(ROOT))
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--long", type=int, default=6)
    ap.add_argument("--show", type=float, default=1e-6, help="list features whose max relative diff exceeds this")
    ap.add_argument("--dump", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump:
        dump(Path(args.dump[0]).read_text().splitlines(), args.dump[1])
        return

    from extract_speed import make_long

    data = ROOT / "tests" / "data" / "fsdd"
    meta = pd.read_csv(data / "metadata.csv")
    files = [str(data / p) for p in meta["path"]]
    files = files[:: max(1, len(files) // args.clips)][: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        paths = files + make_long(files, args.long, Path(tmp))
        old = run_tree(args.old, paths, Path(tmp), "old")
        new = run_tree(args.new, paths, Path(tmp), "new")
    common = [c for c in old.columns if c in new.columns]
    print(f"{len(paths)} clips ({len(files)} short, {args.long} long); features: old {old.shape[1]}, "
          f"new {new.shape[1]}, common {len(common)}, only new {new.shape[1] - len(common)}, "
          f"only old {old.shape[1] - len(common)}")
    rows = []
    for c in common:
        a, b = old[c].to_numpy(float), new[c].to_numpy(float)
        both = np.isfinite(a) & np.isfinite(b)
        d = np.abs(b[both] - a[both])
        rel = d / np.maximum(np.abs(a[both]), 1e-9)
        rows.append((c, float(d.max()) if d.size else 0.0, float(rel.max()) if rel.size else 0.0,
                     int((np.isfinite(a) != np.isfinite(b)).sum())))
    res = pd.DataFrame(rows, columns=["feature", "max_abs", "max_rel", "nan_mismatch"])
    for mod in MODALITIES:
        r = res[res.feature.str.startswith(mod + ".")]
        print(f"{mod:<10} {len(r):>4} common features: max rel diff {r.max_rel.max():.2e} "
              f"(median {r.max_rel.median():.2e}), NaN mismatches {int(r.nan_mismatch.sum())}")
    shown = res[(res.max_rel > args.show) | (res.nan_mismatch > 0)].sort_values("max_rel", ascending=False)
    if len(shown):
        print(f"\nfeatures with max relative diff > {args.show:g} or a NaN mismatch:")
        with pd.option_context("display.max_rows", None, "display.width", 160):
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
