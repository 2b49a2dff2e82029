"""Cost of a long file under the window policy: time and peak memory of a 5-minute file against a 10 s file in each
stage that reads audio, both files built from the bundled speech (every FSDD clip once, 0.2 s apart, resampled to
44.1 kHz, as a spaced stereo pair: the right channel 3 samples later at 0.6 of the level), 16-bit FLAC.

Each file is measured per stage in a fresh subprocess (the stage's models loaded and warmed up on the short file
first), on the code a worker runs for one clip:

- ``acoustic``: read, hash, decode, resample, every acoustic extractor (``_process_clip``; recording, spectral,
  prosodic);
- ``voice``: read, hash, decode, speech detection and the GE2E speaker encoder (``extraction.voice._embed_batch``);
- ``asr``: Whisper tiny.en int8 through the real scheduler (``features.asr.transcribe`` with packing, its windows
  run in this process, CTranslate2 on one thread), a long file as its windows, keyed as the text stage keys it
  (its content hash, with the policy for a windowed file: the packing order of its windows hangs on the key). Its
  ASR jobs are the packed windows and lone clips of every round (a clip over 30 s transcribed whole is one job of
  several 30 s chunks).

Figures: the wall time, best of ``--reps``; the peak of the Python heap (numpy's arrays included) during one run, by
tracemalloc, with and without the file's encoded bytes, which the pipeline holds whole to hash them; and the
process's peak resident memory (``ru_maxrss``: the models and the native libraries' buffers too, which
tracemalloc does not see), with its growth over the peak before the run. Prints one row per file and stage and the
ratios (target: within 2x).

    python benchmarks/long_files.py [--reps 3] [--long-s 300] [--short-s 10] [--formats flac,mp3]
                                    [--stages acoustic,voice,asr] [--policy 30,3,5 | whole]
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


def _policy(policy: str):
    from blindcheck.inputs.audio import WindowPolicy

    if policy == "whole":
        return WindowPolicy(None)
    long_s, count, window_s = policy.split(",")
    return WindowPolicy(float(long_s), int(count), float(window_s))


class _InProcess:
    """An executor that runs each job here, in turn (so that this process's clock and memory see the work)."""

    workers = 1

    def run(self, fn, jobs, max_in_flight=None):
        for job in jobs:
            yield job, fn(job)


def _stage(stage: str, path: str, policy):
    """The function that runs one clip of ``stage`` (models loaded, warmed up on ``path``) and checks its result."""
    import dataclasses
    import math

    if stage == "acoustic":
        from blindcheck.extraction.pipeline import _process_clip, _warm_worker

        _warm_worker(MODALITIES)
        task = {"row": 0, "id": "c", "path": path, "start": math.nan, "end": math.nan, "modalities": MODALITIES,
                "policy": policy}

        def run() -> dict:
            res = _process_clip(task, 16_000, False)
            assert not res["errors"], res["errors"]
            return {"windowed": any(n.startswith("windowed") for n in res["notes"].get("recording", [])),
                    "seconds_fed": math.nan}
        return run
    import soundfile as sf

    duration = sf.info(path).duration
    pol = dataclasses.asdict(policy) if policy.long_s is not None else None
    windowed = pol is not None and duration > policy.long_s  # as the acoustic stage decides (its note)
    if stage == "voice":
        from blindcheck.extraction.voice import _embed_batch, _init_worker

        _init_worker()
        task = {"row": 0, "id": "c", "hash": None, "key": "c", "path": path, "start": math.nan, "end": math.nan,
                "policy": pol if windowed else None}

        def run() -> dict:
            res = _embed_batch([task])[0]
            assert res["error"] is None and math.isfinite(next(iter(res["feats"].values()))), res
            return {"windowed": windowed, "seconds_fed": res["seconds"]}
        return run
    from blindcheck.extraction.cache import windowed_key
    from blindcheck.features.asr import ASRConfig, transcribe
    from blindcheck.inputs.audio import content_hash

    config = ASRConfig()
    # the key the text stage gives the clip (its packing order hangs on it): the content hash, with the policy
    key = content_hash(Path(path).read_bytes())
    key = windowed_key(key, policy.key()) if windowed else key
    task = {"row": 0, "key": key, "path": path, "start": math.nan, "end": math.nan, "policy": pol}
    if not windowed:  # as the text stage plans it
        task = {**task, "policy": None, "duration_s": duration}
    if duration > config.max_packed_clip_s and task["policy"] is None:
        config = dataclasses.replace(config, pack=False)

    def run() -> dict:
        stats: dict = {}
        res = transcribe([task], config, executor=_InProcess(), stats=stats)[0]
        assert res["error"] is None and res["text"], res
        return {"windowed": stats["windowed_clips"] == 1, "seconds_fed": stats["audio_seconds"],
                "whisper_calls": stats["windows"]}
    return run


def measure(path: str, reps: int, policy: str, stage: str, warm_path: str) -> dict:
    """In this (fresh) process: time and memory peaks of one clip's ``stage``."""
    import resource
    import time
    import tracemalloc

    from blindcheck.inputs import audio

    _stage(stage, warm_path, _policy(policy))()  # models loaded and every path run once, on the short file
    run = _stage(stage, path, _policy(policy))
    out = run()  # also fills the source cache: time what a fresh file costs below
    times = []
    for _ in range(reps):
        audio._LAST_SOURCE.clear()
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    audio._LAST_SOURCE.clear()
    size = Path(path).stat().st_size
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": min(times), "peak_mb": peak / 2**20, "peak_without_bytes_mb": (peak - size) / 2**20,
            "file_mb": size / 2**20, "rss_mb": rss, "rss_growth_mb": rss - before, **out}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="timed runs per file (the best is kept)")
    ap.add_argument("--seed", type=int, default=0, help="unused: the files are deterministic (kept for the flags' "
                                                         "convention)")
    ap.add_argument("--long-s", type=float, default=300.0)
    ap.add_argument("--short-s", type=float, default=10.0)
    ap.add_argument("--formats", default="flac,mp3")
    ap.add_argument("--stages", default="acoustic,voice,asr", help="which stages to measure (acoustic, voice, asr)")
    ap.add_argument("--policy", default="30,3,5", help="long_s,count,window_s of the window policy, or 'whole' "
                                                       "(every file analysed whole; default: the default policy)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure this file in this process
    ap.add_argument("--stage", default="acoustic", help=argparse.SUPPRESS)
    ap.add_argument("--warm", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.reps, args.policy, args.stage, args.warm or args.measure)))
        return
    print(f"policy {args.policy}, best of {args.reps}")
    with tempfile.TemporaryDirectory() as d:
        print(f"{'stage':<9} {'file':<22} {'MB':>6} {'windowed':>8} {'fed s':>6} {'time s':>8} {'heap MB':>8} "
              f"{'heap-bytes MB':>13} {'rss MB':>7} {'rss+ MB':>7}")
        for fmt in args.formats.split(","):
            files = {seconds: build(Path(d), seconds, fmt) for seconds in (args.short_s, args.long_s)}
            for stage in args.stages.split(","):
                rows = {}
                for seconds, path in files.items():
                    out = subprocess.run([sys.executable, __file__, "--measure", str(path), "--reps", str(args.reps),
                                          "--policy", args.policy, "--stage", stage, "--warm",
                                          str(files[args.short_s])], check=True, capture_output=True,
                                         text=True).stdout
                    r = rows[seconds] = json.loads(out.strip().splitlines()[-1])
                    print(f"{stage:<9} {path.name:<22} {r['file_mb']:>6.1f} {str(r['windowed']):>8} "
                          f"{r['seconds_fed']:>6.1f} {r['seconds']:>8.3f} {r['peak_mb']:>8.1f} "
                          f"{r['peak_without_bytes_mb']:>13.1f} {r['rss_mb']:>7.0f} {r['rss_growth_mb']:>7.0f}",
                          flush=True)
                s, lg = rows[args.short_s], rows[args.long_s]
                print(f"  {stage} {fmt}: {args.long_s:g} s / {args.short_s:g} s: time "
                      f"x{lg['seconds'] / s['seconds']:.2f}, heap x{lg['peak_mb'] / s['peak_mb']:.2f}, heap without "
                      f"the encoded bytes x{lg['peak_without_bytes_mb'] / s['peak_without_bytes_mb']:.2f}, peak RSS "
                      f"x{lg['rss_mb'] / s['rss_mb']:.2f} (target: within 2x)"
                      + (f"; ASR jobs {s['whisper_calls']} and {lg['whisper_calls']}" if stage == "asr" else ""),
                      flush=True)


if __name__ == "__main__":
    main()
