"""Voice modality speed (ms per second of audio, voice vs spectral) and the validation of the speaker clustering.

    python benchmarks/voice_speed.py [--data DIR_WITH_metadata.csv] [--clips N]

One run on the bundled FSDD speech (480 clips of 6 speakers), printing:

1. compute per second of audio, in this process, on clips decoded beforehand: ``voice.*`` (speech detection,
   mel frames, GE2E on one thread) against ``spectral.*`` (the MFCC/spectral-shape modality);
2. the ``extract`` stage end to end from a cold cache with one worker (reading, decoding, worker start-up:
   for voice a spawned process importing torch);
3. the adjusted Rand index of the inferred speakers against the speaker column over cluster thresholds, on all
   six speakers and on random subsets of three and two (the default threshold's validation).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

from blindcheck.analysis.speakers import DEFAULT_THRESHOLD, adjusted_rand, infer_speakers  # noqa: E402
from blindcheck.extraction.pipeline import extract_features  # noqa: E402
from blindcheck.features.spectral import SpectralExtractor  # noqa: E402
from blindcheck.features.voice import VoiceExtractor  # noqa: E402
from blindcheck.inputs.audio import decode, load_clip, read_bytes  # noqa: E402
from blindcheck.inputs.manifest import Manifest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "tests" / "data" / "fsdd"))
    ap.add_argument("--clips", type=int, default=480)
    args = ap.parse_args()
    meta = pd.read_csv(Path(args.data) / "metadata.csv").head(args.clips)
    paths = [str(Path(args.data) / p) for p in meta["path"]]
    clips = [load_clip(p, decode(read_bytes(p))) for p in paths]
    audio_s = sum(len(c.y) / c.sr for c in clips)
    print(f"{len(clips)} clips, {audio_s:.1f} s of audio ({audio_s / len(clips):.2f} s per clip)")

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        spectral = SpectralExtractor()
        spectral.extract(clips[0])  # warm-up (imports)
        t = time.perf_counter()
        for c in clips:
            spectral.extract(c)
        t_spec = time.perf_counter() - t
        voice = VoiceExtractor(threads=1)
        voice.extract(clips[0])  # warm-up (torch import, weights)
        t = time.perf_counter()
        out = []
        for i in range(0, len(clips), 32):
            out += voice.extract_batch(clips[i:i + 32])
        t_voice = time.perf_counter() - t
    print("compute in-process, one thread, warm:")
    print(f"  spectral  {1000 * t_spec / audio_s:7.1f} ms per audio second")
    print(f"  voice     {1000 * t_voice / audio_s:7.1f} ms per audio second  "
          f"(ratio voice/spectral {t_voice / t_spec:.1f})")

    table = pd.DataFrame({"id": meta["id"], "path": paths, "label": [i % 2 for i in range(len(paths))]})
    print("extract stage from a cold cache, 1 worker (reading, decoding, worker start-up included):")
    for mod in ("spectral", "voice"):
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            res = extract_features(Manifest(table=table, source="bench"), cache, modalities=[mod], workers=1)
            el = time.perf_counter() - t
        print(f"  {mod:<9} {1000 * el / audio_s:7.1f} ms per audio second ({el:.1f} s; {res.stats['failed']} failed)")

    emb = np.array([[d[f"emb_{j:03d}"] for j in range(256)] for d in out])
    spk = meta["speaker"].to_numpy()
    ok = np.isfinite(emb).all(axis=1)
    print(f"speaker clustering ({(~ok).sum()} clips without an embedding left out), ARI vs the speaker column:")
    rng = np.random.default_rng(1)
    names = np.unique(spk)
    subsets = [names] + [rng.choice(names, 3, replace=False) for _ in range(3)] + \
        [rng.choice(names, 2, replace=False) for _ in range(3)]
    print("  threshold " + " ".join(f"{len(s)}spk" .rjust(11) for s in subsets) + "   mean")
    for thr in (0.80, 0.85, 0.90, 0.95, 1.00):
        row, aris = [], []
        for s in subsets:
            m = np.isin(spk, s)
            lab = infer_speakers(emb[m], thr)
            ari = adjusted_rand(spk[m], lab)
            aris.append(ari)
            row.append(f"{ari:5.2f} ({len(set(lab) - {''}):2d}cl)")
        mark = " <- default" if thr == DEFAULT_THRESHOLD else ""
        print(f"  {thr:9.2f} " + " ".join(r.rjust(11) for r in row) + f"  {np.mean(aris):5.2f}{mark}")


if __name__ == "__main__":
    main()
