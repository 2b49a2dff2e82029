"""Speed and accuracy of the text modality: ASR real-time factor, packed vs one clip per call, and embeddings.

Real-time factor (RTF) = compute seconds per second of audio, for the bundled Whisper tiny.en through
faster-whisper (int8 on CPU, or float16 with --device cuda). Every configuration runs on the same clips in
the same run, so the ratio packed / single is the figure to read on a noisy machine:

- three sets: short FSDD digit clips (0.1-2.3 s, real speech), Harvard sentences spoken by espeak-ng
  (2-4 s, two speaking rates; skipped without espeak-ng) and 5-15 s clips made by concatenating FSDD clips;
- single (one Whisper call per clip) vs packed (short clips share a window, see blindcheck.features.asr), with 1 and
  N worker processes, beam 1; packed also with beam 5;
- word error rate against the known words, and how many clips packing had to redo.

Worker start-up (spawn + model load) is timed separately and left out of the RTF. Then sentence-embedding
throughput (all-MiniLM-L6-v2) and the whole text modality's RTF (packed ASR, beam 1, N workers, plus
embeddings) against the target of 0.10 on this 2-core CPU.

    python benchmarks/asr_speed.py [--clips 240] [--long 8] [--workers 2] [--device cpu] [--gap 0.5] [--packed-only]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

from blindcheck.features.asr import ASRConfig, transcribe  # noqa: E402
from blindcheck.features.text import default_embedding_model, embed  # noqa: E402

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def normalise(text: str) -> str:
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text.lower())
    return " ".join(re.sub(r"[^a-z' ]", " ", text).split())


def fsdd_long(meta: pd.DataFrame, data: Path, n: int, out: Path, seed: int = 0) -> tuple[list[str], list[str]]:
    """n clips of 5-15 s, each FSDD clips end to end with 0.1 s pauses; returns paths and their words."""
    rng = np.random.default_rng(seed)
    paths, words = [], []
    for k in range(n):
        target, parts, said, total = rng.uniform(5, 15), [], [], 0.0
        while total < target:
            j = int(rng.integers(len(meta)))
            x, sr = sf.read(data / meta["path"].iloc[j], dtype="float32")
            parts += [x, np.zeros(int(0.1 * sr), np.float32)]
            said.append(meta["text"].iloc[j])
            total += len(x) / sr + 0.1
        paths.append(str(out / f"long_{k:03d}.wav"))
        sf.write(paths[-1], np.concatenate(parts), sr, subtype="PCM_16")
        words.append(" ".join(said))
    return paths, words


def harvard(out: Path) -> tuple[list[str], list[str]]:
    sentences = (ROOT / "tests" / "data" / "harvard" / "sentences.txt").read_text().split("\n")
    sentences = [s for s in sentences if s.strip()]
    paths, words = [], []
    for rate in (140, 175):
        for i, s in enumerate(sentences):
            paths.append(str(out / f"harvard_{rate}_{i:02d}.wav"))
            subprocess.run(["espeak-ng", "-s", str(rate), "-w", paths[-1], s], check=True, capture_output=True)
            words.append(s)
    return paths, words


def tasks(paths: list[str]) -> list[dict]:
    return [{"row": i, "path": p, "start": math.nan, "end": math.nan, "duration_s": sf.info(p).duration, "key": p}
            for i, p in enumerate(paths)]


def timed(paths: list[str], config: ASRConfig, workers: int) -> tuple[float, float, list[dict], dict]:
    """(start-up s, transcription s, results, packing stats): start-up measured on one clip, then the set."""
    t = time.perf_counter()
    transcribe(tasks(paths[:1]), config, workers=1)
    startup = time.perf_counter() - t
    stats: dict = {}
    t = time.perf_counter()
    out = transcribe(tasks(paths), config, workers=workers, stats=stats)
    total = time.perf_counter() - t
    assert all(r["error"] is None for r in out), [r["error"] for r in out if r["error"]]
    return startup, max(0.0, total - startup), sorted(out, key=lambda r: r["row"]), stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "tests" / "data" / "fsdd"))
    ap.add_argument("--clips", type=int, default=240)
    ap.add_argument("--long", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gap", type=float, default=ASRConfig.gap_s)
    ap.add_argument("--packed-only", action="store_true", help="skip the one-clip-per-call runs")
    args = ap.parse_args()
    data = Path(args.data)
    meta = pd.read_csv(data / "metadata.csv").sample(frac=1.0, random_state=0)
    short = meta.iloc[: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"short (FSDD)": ([str(data / p) for p in short["path"]], list(short["text"]))}
        if shutil.which("espeak-ng"):
            sets["sentences (espeak)"] = harvard(Path(tmp))
        sets["long (5-15 s)"] = fsdd_long(meta, data, args.long, Path(tmp))
        print(f"{'set':<19} {'mode':<7} {'workers':>7} {'beam':>4} {'audio s':>8} {'start-up s':>10} {'RTF':>6} "
              f"{'WER':>6} {'redone':>6}")
        rtf = {}
        for name, (paths, truth) in sets.items():
            audio = sum(sf.info(p).duration for p in paths)
            runs = [] if args.packed_only else [("single", w, 1) for w in sorted({1, args.workers})]
            runs += [("packed", w, 1) for w in sorted({1, args.workers})] + [("packed", args.workers, 5)]
            for mode, workers, beam in runs:
                config = ASRConfig(device=args.device, beam_size=beam, pack=mode == "packed", gap_s=args.gap)
                startup, el, out, stats = timed(paths, config, workers)
                rtf[(name, mode, workers, beam)] = el / audio
                wer = jiwer.wer(truth, [normalise(r["text"]) or "<empty>" for r in out])
                print(f"{name:<19} {mode:<7} {workers:>7} {beam:>4} {audio:>8.1f} {startup:>10.1f} "
                      f"{el / audio:>6.3f} {wer:>6.3f} {stats.get('clips_redone', 0):>6}", flush=True)
            if not args.packed_only:
                ratio = rtf[(name, "packed", args.workers, 1)] / rtf[(name, "single", args.workers, 1)]
                print(f"{name}: packed / single RTF at {args.workers} workers, beam 1: {ratio:.2f}", flush=True)
        texts = [f"sentence number {i} about membership inference on speech models" for i in range(2000)]
        t = time.perf_counter()
        embed(texts[:1], default_embedding_model(), args.device)
        startup = time.perf_counter() - t
        t = time.perf_counter()
        embed(texts, default_embedding_model(), args.device)
        el = max(1e-9, time.perf_counter() - t - startup)
        print(f"embeddings: {len(texts) / el:.0f} texts/s after {startup:.1f} s start-up")
        for name, (paths, _) in sets.items():
            audio = sum(sf.info(p).duration for p in paths)
            whole = rtf[(name, "packed", args.workers, 1)] + (len(paths) / (len(texts) / el)) / audio
            print(f"whole text modality, {name}, packed, {args.workers} workers, beam 1: RTF {whole:.3f} "
                  f"(target <= 0.10)")


if __name__ == "__main__":
    main()
