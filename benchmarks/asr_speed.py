"""Speed of the text modality: ASR real-time factor and embedding throughput.

Real-time factor (RTF) = compute seconds per second of audio, for the bundled Whisper tiny.en through
faster-whisper (int8 on CPU, or float16 with --device cuda), with 1 and N worker processes and beam 1 vs 5, on
the short FSDD clips and on 5-15 s clips made by concatenating them. Worker start-up (spawn + model load) is
timed separately and left out of the RTF. Then sentence-embedding throughput (all-MiniLM-L6-v2), and the whole
text modality's RTF (ASR beam 1 + embeddings) against the target of 0.10 on this 2-core CPU.

    python benchmarks/asr_speed.py [--clips 48] [--long 4] [--workers 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from extract_speed import make_long  # noqa: E402

from blindcheck.text import ASRConfig, default_embedding_model, embed, transcribe  # noqa: E402


def tasks(paths: list[str]) -> list[dict]:
    return [{"row": i, "path": p, "start": math.nan, "end": math.nan} for i, p in enumerate(paths)]


def timed(paths: list[str], config: ASRConfig, workers: int) -> tuple[float, float]:
    """(start-up seconds, transcription seconds): start-up measured on one clip, then the whole set."""
    t = time.perf_counter()
    transcribe(tasks(paths[:1]), config, workers=1)
    startup = time.perf_counter() - t
    t = time.perf_counter()
    out = transcribe(tasks(paths), config, workers=workers)
    total = time.perf_counter() - t
    assert all(r["error"] is None for r in out), [r["error"] for r in out if r["error"]]
    return startup, max(0.0, total - startup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "tests" / "data" / "fsdd"))
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--long", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    meta = pd.read_csv(Path(args.data) / "metadata.csv")
    files = [str(Path(args.data) / p) for p in meta["path"]]
    short = files[:: max(1, len(files) // args.clips)][: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"short (FSDD clips)": short, "long (5-15 s)": make_long(files, args.long, Path(tmp))}
        print(f"{'set':<20} {'workers':>7} {'beam':>4} {'audio s':>8} {'start-up s':>10} {'RTF':>6}")
        rtf_beam1 = {}
        for name, paths in sets.items():
            audio = sum(sf.info(p).duration for p in paths)
            for workers in sorted({1, args.workers}):
                for beam in (1, 5):
                    startup, el = timed(paths, ASRConfig(device=args.device, beam_size=beam), workers)
                    rtf = el / audio
                    if beam == 1:
                        rtf_beam1[(name, workers)] = rtf
                    print(f"{name:<20} {workers:>7} {beam:>4} {audio:>8.1f} {startup:>10.1f} {rtf:>6.3f}",
                          flush=True)
        texts = [f"sentence number {i} about membership inference on speech models" for i in range(2000)]
        t = time.perf_counter()
        embed(texts[:1], default_embedding_model(), args.device)
        startup = time.perf_counter() - t
        t = time.perf_counter()
        embed(texts, default_embedding_model(), args.device)
        el = max(1e-9, time.perf_counter() - t - startup)
        print(f"embeddings: {len(texts) / el:.0f} texts/s after {startup:.1f} s start-up")
        for name, paths in sets.items():
            audio = sum(sf.info(p).duration for p in paths)
            whole = rtf_beam1[(name, args.workers)] + (len(paths) / (len(texts) / el)) / audio
            print(f"whole text modality, {name}, {args.workers} workers, beam 1: RTF {whole:.3f} (target <= 0.10)")


if __name__ == "__main__":
    main()
