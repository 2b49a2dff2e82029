"""The classifier phase on a busy machine: the blind check of the bundled example, alone and beside processes
that keep every core busy, in one run. Prints both times and their ratio (target: at most 2x — with one busy
process per core the check can only get about half the CPU, so 2x is what fair sharing gives).

xgboost's OpenMP threads spin while they wait by default; with other work on the machine that made this phase
20-28x slower before blindcheck set passive waiting and bounded its threads by the cores it may use.

    python benchmarks/busy_classifier.py [--manifest examples/fsdd_speaker_split.csv] [--hogs N] [--active]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _hog(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=str(ROOT / "examples" / "fsdd_speaker_split.csv"))
    ap.add_argument("--hogs", type=int, default=None, help="busy processes (default: one per core)")
    ap.add_argument("--active", action="store_true", help="OMP_WAIT_POLICY=ACTIVE (the old behaviour), to compare")
    args = ap.parse_args()
    if args.active:
        os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
    from blindcheck.analysis.separability import available_threads, run_separability
    from blindcheck.extraction.pipeline import extract_features
    from blindcheck.inputs.manifest import load_manifest
    from blindcheck.settings import Settings

    m = load_manifest(args.manifest)
    with tempfile.TemporaryDirectory() as cache:
        feats = extract_features(m, cache, modalities=["recording", "spectral", "prosodic"]).features
    y = feats["label"].to_numpy()
    settings = Settings(repeats=2)
    threads = available_threads()

    def timed() -> float:
        t = time.perf_counter()
        run_separability(feats, y, settings, threads=threads)
        return time.perf_counter() - t

    timed()  # warm-up: imports, first xgboost fit
    idle = timed()
    hogs = args.hogs or threads
    stop = mp.Event()
    procs = [mp.Process(target=_hog, args=(stop,), daemon=True) for _ in range(hogs)]
    for p in procs:
        p.start()
    try:
        time.sleep(1.0)
        busy = timed()
    finally:
        stop.set()
        for p in procs:
            p.join(5)
    print(f"classifier phase on {len(feats)} clips x {feats.shape[1] - 3} features, {threads} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"  idle machine          {idle:6.1f} s")
    print(f"  {hogs} busy processes      {busy:6.1f} s")
    print(f"  ratio busy / idle     {busy / idle:6.2f}  (target <= 2)")


if __name__ == "__main__":
    main()
