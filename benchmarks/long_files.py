"""Cost of a long file under the window policy: extraction time and peak memory of a 5-minute file against a 10 s
file, both built from the bundled speech (every FSDD clip once, 0.2 s apart, resampled to 44.1 kHz, as a spaced
stereo pair: the right channel 3 samples later at 0.6 of the level), 16-bit FLAC.

Each file is measured in a fresh subprocess (extractors warmed up first): the wall time of one clip's whole path
(read, hash, decode, resample, every extractor: ``_process_clip``), best of ``--reps``; and the peak of the Python
heap (numpy's arrays included) during it, by tracemalloc, with and without the file's encoded bytes, which the
pipeline holds whole to hash them. Prints one row per file and the ratios (target: within 2x).

    python benchmarks/long_files.py [--reps 3] [--long-s 300] [--short-s 10] [--formats flac,mp3]
                                    [--policy 30,3,5 | whole]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "fsdd"
RATE = 44_100
MODALITIES = ["recording", "spectral", "prosodic"]


def build(folder: Path, seconds: float, fmt: str) -> Path:
    import pandas as pd
    import soundfile as sf
    import soxr

    meta = pd.read_csv(DATA / "metadata.csv")
    gap = np.zeros(1600, np.float32)
    xs, total = [], 0
    while total < seconds * 8000:  # loop over the clips as often as needed
        for p in meta["path"]:
            x = sf.read(DATA / p, dtype="float32")[0]
            xs += [x, gap]
            total += len(x) + len(gap)
            if total >= seconds * 8000:
                break
    x = soxr.resample(np.concatenate(xs)[: int(seconds * 8000)], 8000, RATE).astype(np.float32)
    pair = np.stack([x, 0.6 * np.concatenate([np.zeros(3, np.float32), x[:-3]])], axis=1)
    path = folder / f"speech_{seconds:g}s.{fmt}"
    sf.write(path, np.clip(pair, -1, 1), RATE, format=fmt.upper(),
             subtype={"flac": "PCM_16", "mp3": "MPEG_LAYER_III", "wav": "PCM_16"}[fmt])
    return path


def measure(path: str, reps: int, policy: str) -> dict:
    """In this (fresh) process: time and heap peak of one clip's extraction."""
    import time
    import tracemalloc

    from blindcheck.extraction.pipeline import WindowPolicy, _process_clip, _warm_worker

    _warm_worker(MODALITIES)
    pol = WindowPolicy(None) if policy == "whole" else WindowPolicy(*map(float, policy.split(",")))
    pol = WindowPolicy(pol.long_s, int(pol.count), pol.window_s)
    task = {"row": 0, "id": "c", "path": path, "start": float("nan"), "end": float("nan"),
            "modalities": MODALITIES, "policy": pol}
    res = _process_clip(task, 16_000, False)  # also fills the source cache: time what a fresh file costs below
    assert not res["errors"], res["errors"]
    from blindcheck.inputs import audio

    times = []
    for _ in range(reps):
        audio._LAST_SOURCE.clear()
        t0 = time.perf_counter()
        _process_clip(task, 16_000, False)
        times.append(time.perf_counter() - t0)
    audio._LAST_SOURCE.clear()
    size = Path(path).stat().st_size
    tracemalloc.start()
    _process_clip(task, 16_000, False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    notes = res["notes"].get("recording", [])
    return {"seconds": min(times), "peak_mb": peak / 2**20, "peak_without_bytes_mb": (peak - size) / 2**20,
            "file_mb": size / 2**20, "windowed": any(n.startswith("windowed") for n in notes)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="timed runs per file (the best is kept)")
    ap.add_argument("--seed", type=int, default=0, help="unused: the files are deterministic (kept for the flags' "
                                                         "convention)")
    ap.add_argument("--long-s", type=float, default=300.0)
    ap.add_argument("--short-s", type=float, default=10.0)
    ap.add_argument("--formats", default="flac,mp3")
    ap.add_argument("--policy", default="30,3,5", help="long_s,count,window_s of the window policy, or 'whole' "
                                                       "(every file analysed whole; default: the default policy)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure this file in this process
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.reps, args.policy)))
        return
    with tempfile.TemporaryDirectory() as d:
        print(f"{'file':<22} {'MB':>6} {'windowed':>8} {'time s':>8} {'heap MB':>8} {'heap-bytes MB':>13}")
        for fmt in args.formats.split(","):
            rows = {}
            for seconds in (args.short_s, args.long_s):
                path = build(Path(d), seconds, fmt)
                out = subprocess.run([sys.executable, __file__, "--measure", str(path), "--reps", str(args.reps),
                                      "--policy", args.policy], check=True, capture_output=True, text=True).stdout
                r = rows[seconds] = json.loads(out.strip().splitlines()[-1])
                print(f"{path.name:<22} {r['file_mb']:>6.1f} {str(r['windowed']):>8} {r['seconds']:>8.3f} "
                      f"{r['peak_mb']:>8.1f} {r['peak_without_bytes_mb']:>13.1f}")
            s, lg = rows[args.short_s], rows[args.long_s]
            print(f"  {fmt}: {args.long_s:g} s / {args.short_s:g} s: time x{lg['seconds'] / s['seconds']:.2f}, heap "
                  f"x{lg['peak_mb'] / s['peak_mb']:.2f}, heap without the encoded bytes "
                  f"x{lg['peak_without_bytes_mb'] / s['peak_without_bytes_mb']:.2f} (target: within 2x)")


if __name__ == "__main__":
    main()
