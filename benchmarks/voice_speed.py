"""Voice modality speed (ms per second of audio, voice vs spectral) and the validation of the speaker clustering.

    python benchmarks/voice_speed.py [--data DIR_WITH_metadata.csv] [--clips N] [--held-out]

One run on the bundled FSDD speech (480 clips of 6 speakers), printing:

1. compute per second of audio, in this process, on clips decoded beforehand: ``voice.*`` (speech detection,
   mel frames, GE2E on one thread) against ``spectral.*`` (the MFCC/spectral-shape modality);
2. the ``extract`` stage end to end from a cold cache with one worker (reading, decoding, worker start-up:
   for voice a spawned process importing torch);
3. the adjusted Rand index of the inferred speakers against the speaker column over cluster thresholds, on all
   six speakers and on random subsets of three and two (the default threshold's validation).

The default threshold was chosen on these same six speakers, so 3. is an in-sample figure. ``--held-out`` skips
1. and 2. and measures it out of sample instead: for each of the 20 splits of the six speakers into three tuning
and three evaluation speakers, the threshold that maximises the ARI on the tuning speakers' clips (clustered on
their own; ties: the median of the maximising thresholds) is applied to the evaluation speakers' clips (clustered
on their own), and the ARI and cluster count there are printed at that threshold and at the default, with their
mean, min and max over the splits.
"""

from __future__ import annotations

import argparse
import itertools
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
    ap.add_argument("--held-out", action="store_true",
                    help="only the held-out threshold figure (3 tuning + 3 evaluation speakers, every split)")
    args = ap.parse_args()
    meta = pd.read_csv(Path(args.data) / "metadata.csv").head(args.clips)
    paths = [str(Path(args.data) / p) for p in meta["path"]]
    clips = [load_clip(p, decode(read_bytes(p))) for p in paths]
    audio_s = sum(len(c.y) / c.sr for c in clips)
    print(f"{len(clips)} clips, {audio_s:.1f} s of audio ({audio_s / len(clips):.2f} s per clip)")

    from threadpoolctl import threadpool_limits

    if args.held_out:
        with threadpool_limits(1):
            voice = VoiceExtractor(threads=1)
            out = []
            for i in range(0, len(clips), 32):
                out += voice.extract_batch(clips[i:i + 32])
        held_out(_embeddings(out), meta["speaker"].to_numpy())
        return

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

    emb = _embeddings(out)
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


def _embeddings(out: list[dict]) -> np.ndarray:
    return np.array([[d[f"emb_{j:03d}"] for j in range(256)] for d in out])


GRID = np.round(np.arange(0.50, 1.301, 0.01), 2)  # the thresholds the tuning speakers choose among


def _ari(emb: np.ndarray, spk: np.ndarray, thr: float) -> tuple[float, int]:
    lab = infer_speakers(emb, thr)
    return adjusted_rand(spk, lab), len(set(lab) - {""})


def held_out(emb: np.ndarray, spk: np.ndarray) -> None:
    """The threshold tuned on three speakers, judged on the other three: every one of the 20 splits."""
    ok = np.isfinite(emb).all(axis=1)
    emb, spk = emb[ok], spk[ok]
    names = sorted(np.unique(spk))
    print(f"held-out threshold: {len(names)} speakers, {len(spk)} clips with an embedding ({(~ok).sum()} left "
          f"out); tuned on 3 speakers' clips over {GRID[0]:.2f}-{GRID[-1]:.2f} (step 0.01), judged on the other 3")
    print(f"  {'tuning speakers':<28} {'tuned':>5} {'tune ARI':>8}  {'eval ARI (cl) tuned':>20} "
          f"{f'eval ARI (cl) {DEFAULT_THRESHOLD:.2f}':>20}")
    rows = []
    for tune in itertools.combinations(names, 3):
        ev = [s for s in names if s not in tune]
        mt, me = np.isin(spk, tune), np.isin(spk, ev)
        scan = np.array([_ari(emb[mt], spk[mt], t)[0] for t in GRID])
        best = GRID[np.isclose(scan, np.nanmax(scan))]
        thr = float(np.median(best))
        a_t, c_t = _ari(emb[me], spk[me], thr)
        a_d, c_d = _ari(emb[me], spk[me], DEFAULT_THRESHOLD)
        rows.append((thr, np.nanmax(scan), a_t, c_t, a_d, c_d))
        print(f"  {', '.join(tune):<28} {thr:5.2f} {np.nanmax(scan):8.2f}  {a_t:13.2f} ({c_t:2d}cl) "
              f"{a_d:13.2f} ({c_d:2d}cl)")
    r = np.array(rows, dtype=float)
    for name, j in (("tuned threshold", 0), ("tuning ARI", 1), ("eval ARI, tuned", 2), ("eval clusters, tuned", 3),
                    (f"eval ARI, {DEFAULT_THRESHOLD:.2f}", 4), (f"eval clusters, {DEFAULT_THRESHOLD:.2f}", 5)):
        print(f"  {name:<22} mean {np.nanmean(r[:, j]):5.2f}  min {np.nanmin(r[:, j]):5.2f}  "
              f"max {np.nanmax(r[:, j]):5.2f}")
    print(f"  (each evaluation set has 3 speakers; {len(rows)} splits)")


if __name__ == "__main__":
    main()
