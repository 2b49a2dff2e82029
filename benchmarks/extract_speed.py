"""Acoustic extraction speed: blindcheck (its default acoustic modalities: content + recording + spectral + prosodic)
vs openSMILE eGeMAPSv02 functionals.

Both run in this process's run on the same files, with 1 and N workers, from a cold cache, and the script
prints milliseconds of compute per second of audio for each and their ratio (blindcheck / eGeMAPS; issue
21's target: <= 0.5 with >= 3x its features). Two sets: the short FSDD clips as they are, and 5-15 s "long"
clips made by concatenating FSDD clips with 100 ms pauses.

    python benchmarks/extract_speed.py [--data DIR_WITH_metadata.csv] [--clips N] [--long N] [--workers N]
                                       [--repeat N] [--rate HZ]

``--rate HZ`` resamples both sets to HZ first (soxr HQ, 16-bit files), so that both tools read the same files
at that rate. It matters because the two tools do not analyse at the same rate: blindcheck resamples every
input to 16 kHz and analyses that, whatever the file's rate, so that no feature depends on the recording's
rate through the analysis (only ``recording.*`` describes the rate); openSMILE analyses at the file's own rate.
On the FSDD's 8 kHz files eGeMAPS therefore processes half the samples blindcheck does; at 16 kHz both process
the same signal; at 44.1 kHz eGeMAPS processes 2.8 times as many.

Each tool runs ``--repeat`` times (default 3) on each set, interleaved with the other, and the minimum wall and
CPU time of each is reported: on a shared machine, other sessions' load inflates single runs by 20-40% (four
single runs of the same code gave ratios 0.53-0.78), and the minimum is the least disturbed run of each tool.

Needs the `bench` extra (opensmile). Worker start-up (imports, warm-up) is included in the timed run, as a
user would experience it. The 1-worker row is per core: blindcheck then runs in this process, which is held to
one BLAS thread (as the pool's workers hold themselves), since openSMILE's single worker uses one thread.
For that row the script also prints the ratio of process CPU time (both run entirely in this process then),
which other load on a shared machine does not inflate as it does the wall-clock ratio. The CPU ratio is the
per-core figure: Praat's pitch analysis splits its frames over up to one thread per core, so blindcheck's wall
time in the 1-worker row has help from the other cores (a 10 s sound's pitch: 7.7 ms wall and 14 ms CPU on 2
cores; 14.3 ms wall and 14.2 ms CPU pinned to one), while openSMILE runs on one thread.

``--ab TREE`` prints, instead, each extractor's CPU time against the same extractor module of another
source tree, interleaved per clip in one process (robust to other load). The other tree's extractors run on that
tree's ``frames`` module (the helpers they call per clip); both share the clip's STFT and activity mask, computed
once by this tree, and this tree's other modules (``periods``, ``audio``): the old modules must import only names
these still have.

``--stages`` prints, instead, the CPU time of each stage (decode + resample, the shared STFT, each acoustic
modality, the opt-in ``music`` one included; ``content`` first, as the workers run it: its speech detector and
music rule are charged to it, and prosodic and music then read its decision, so music costs next to nothing on
clips without music) in ms per audio second, with one BLAS thread, on both sets and on a
third of real music (the 6 s renders of tests/data/music, ``--music N`` of them), the minimum of ``--repeat``
passes per stage (the profile behind the optimisation), then the CPU of one ``extract_features`` run split into
the part in decoding and the extractors and the part outside them (planning, hashing, Parquet writes, assembly)
(default modalities: music left out, as the run leaves it). All CPU figures are
this process's, all threads: Praat's pitch analysis runs on up to one thread per core (20 frames each), so the
calling thread's CPU time would miss about half of it (measured: 0.41 of 0.72 ms on a 0.4 s clip, 9.9 of
18.5 ms on a 10 s one); other processes' load does not count.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

from blindcheck.extraction.pipeline import extract_features  # noqa: E402
from blindcheck.inputs.manifest import Manifest  # noqa: E402


def make_long(files: list[str], n: int, out: Path, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        target = rng.uniform(5, 15)
        parts, total = [], 0.0
        while total < target:
            x, sr = sf.read(files[rng.integers(len(files))], dtype="float32")
            parts += [x, np.zeros(int(0.1 * sr), np.float32)]
            total += len(x) / sr + 0.1
        p = out / f"long_{k:03d}.wav"
        sf.write(p, np.concatenate(parts), sr, subtype="PCM_16")
        paths.append(str(p))
    return paths


def at_rate(paths: list[str], rate: int, out: Path) -> list[str]:
    """Copies of ``paths`` resampled to ``rate`` by blindcheck's own resampling (soxr HQ), as 16-bit PCM."""
    from blindcheck.inputs.audio import resample

    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for k, p in enumerate(paths):
        x, sr = sf.read(p, dtype="float32")
        q = out / f"{k:04d}_{Path(p).name}"
        sf.write(q, np.clip(resample(x, sr, rate), -1.0, 1.0), rate, subtype="PCM_16")
        copies.append(str(q))
    return copies


def run_blindcheck(paths: list[str], workers: int) -> tuple[float, float, int]:
    """Wall seconds, this process's CPU seconds (meaningful for 1 worker: everything runs here), features."""
    from threadpoolctl import threadpool_limits

    table = pd.DataFrame({"id": [f"c{i}" for i in range(len(paths))], "path": paths,
                          "label": [i % 2 for i in range(len(paths))]})
    with tempfile.TemporaryDirectory() as cache, threadpool_limits(1 if workers == 1 else None):
        t, c = time.perf_counter(), time.process_time()
        res = extract_features(Manifest(table=table, source="bench"), cache, workers=workers)
        el, cpu = time.perf_counter() - t, time.process_time() - c
    assert res.stats["failed"] == 0, res.errors
    return el, cpu, len(res.feature_columns())


def run_egemaps(paths: list[str], workers: int) -> tuple[float, float, int]:
    import opensmile

    t, c = time.perf_counter(), time.process_time()
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals,
                            num_workers=workers, multiprocessing=workers > 1)
    df = smile.process_files(paths)
    return time.perf_counter() - t, time.process_time() - c, df.shape[1]


def stages(sets: dict[str, list[str]], repeat: int = 1) -> None:
    from threadpoolctl import threadpool_limits

    from blindcheck.features import acoustic_modalities, get_extractor
    from blindcheck.features.frames import stft_power
    from blindcheck.inputs.audio import decode, load_clip, read_bytes

    exts = [get_extractor(m) for m in acoustic_modalities()]
    with threadpool_limits(1):
        for e in exts:  # imports and one-time set-up (music: librosa's numba functions, on its own warm-up signal)
            if hasattr(e, "warm"):
                e.warm()
            e.extract(load_clip("warm", decode(read_bytes(next(iter(sets.values()))[0]))))
        print(f"{'set':<20} {'audio s':>8} " + " ".join(f"{k:>10}" for k in ["decode", "stft",
              *acoustic_modalities(), "total"]) + "   (CPU ms per audio second)")
        for name, paths in sets.items():
            best = dict.fromkeys(["decode", "stft", *acoustic_modalities()], math.inf)
            for _ in range(repeat):  # the minimum of each stage over the passes
                t = dict.fromkeys(best, 0.0)
                audio = 0.0
                for p in paths:
                    a = time.process_time()
                    clip = load_clip("x", decode(read_bytes(p)))
                    b = time.process_time()
                    stft_power(clip)
                    t["decode"] += b - a
                    t["stft"] += time.process_time() - b
                    audio += len(clip.y) / clip.sr
                    for e in exts:
                        a = time.process_time()
                        e.extract(clip)
                        t[e.name] += time.process_time() - a
                best = {k: min(v, t[k]) for k, v in best.items()}
            t = best
            print(f"{name:<20} {audio:>8.1f} " + " ".join(f"{1000 * v / audio:>10.2f}" for v in t.values())
                  + f" {1000 * sum(t.values()) / audio:>10.2f}")
        print("\nextract_features (1 worker, cold cache, default modalities), process CPU: total, inside decode + "
              "extractors, outside them")
        for name, paths in sets.items():
            audio = sum(sf.info(p).duration for p in paths)
            total, inside = overhead(paths)
            print(f"{name:<20} total {1000 * total / audio:6.2f} ms/s, inside {1000 * inside / audio:6.2f} ms/s, "
                  f"outside {1000 * (total - inside) / audio:6.2f} ms/s = {1000 * (total - inside) / len(paths):5.2f} "
                  f"ms per clip ({len(paths)} clips)")


def ab(sets: dict[str, list[str]], tree: str, repeat: int) -> None:
    """Each extractor of this tree against the same module of another source tree (loaded from its file, sharing
    this tree's decoding and STFT), on the same decoded clips, alternating per clip, process CPU; the minimum over
    ``repeat`` passes. Both run interleaved in one process, so other load on the machine hits both alike: the
    way to see a 10% change on a shared machine, where whole runs differ by 20-40%."""
    import importlib.util

    from threadpoolctl import threadpool_limits

    from blindcheck.features import acoustic_modalities, get_extractor
    from blindcheck.features.frames import clip_active_frames, stft_power
    from blindcheck.inputs.audio import decode, load_clip, read_bytes

    def module(name: str):
        spec = importlib.util.spec_from_file_location(f"other_{name}", Path(tree) / "blindcheck" / "features"
                                                      / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    # The other tree's extractors import the other tree's frames module (its helpers, e.g. the means and views
    # the extractors call per clip), so that a change there counts on its side; the clip's shared STFT and
    # activity mask are computed once, by this tree, for both.
    other_frames, key = module("frames"), "blindcheck.features.frames"

    def load(name: str):
        new = get_extractor(name)
        own, sys.modules[key] = sys.modules[key], other_frames
        try:
            mod = module(name)
        finally:
            sys.modules[key] = own
        return getattr(mod, type(new).__name__)(), new

    mods = [m for m in acoustic_modalities() if (Path(tree) / "blindcheck" / "features" / f"{m}.py").exists()]
    if len(mods) < len(acoustic_modalities()):
        print(f"(not in {tree}: {', '.join(m for m in acoustic_modalities() if m not in mods)})")
    pairs = {m: load(m) for m in mods}
    print(f"{'set':<20} {'modality':<10} {'other':>8} {'this':>8}  (CPU ms per audio second, min of "
          f"{repeat}) this/other")
    with threadpool_limits(1):
        for name, paths in sets.items():
            clips = [load_clip("x", decode(read_bytes(p))) for p in paths]
            for c in clips:
                stft_power(c), clip_active_frames(c)
            audio = sum(len(c.y) / c.sr for c in clips)
            for m, (other, this) in pairs.items():
                other.extract(clips[0]), this.extract(clips[0])
                best = {"other": math.inf, "this": math.inf}
                for r in range(repeat):
                    tot = dict.fromkeys(best, 0.0)
                    order = (("other", other), ("this", this)) if r % 2 == 0 else (("this", this), ("other", other))
                    for c in clips:
                        for tag, e in order:
                            t0 = time.process_time()
                            e.extract(c)
                            tot[tag] += time.process_time() - t0
                    best = {k: min(best[k], tot[k]) for k in best}
                print(f"{name:<20} {m:<10} {1000 * best['other'] / audio:>8.2f} {1000 * best['this'] / audio:>8.2f}"
                      f"  {best['this'] / best['other']:.3f}")


def overhead(paths: list[str]) -> tuple[float, float]:
    """Process CPU seconds of one ``extract_features`` run (1 worker, in this process) and the part spent in
    decoding and the extractors (their CPU, timed by wrapping them); the rest is planning, hashing, cache
    writes and assembly: the per-clip cost outside the extractors."""
    import blindcheck.extraction.pipeline as ex
    from blindcheck.features import acoustic_modalities, get_extractor

    spent = [0.0]

    def timed(fn):
        def wrapper(*a, **k):
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.process_time() - t0
        return wrapper

    classes = {type(get_extractor(m)) for m in acoustic_modalities()}
    saved = [(c, c.extract) for c in classes] + [(ex, ex.decode), (ex, ex.load_clip)]
    for obj, fn in saved:
        setattr(obj, "extract" if obj in classes else fn.__name__, timed(fn))
    try:
        run_blindcheck(paths[:2], 1)  # warm: the wrapped extractors are the ones the worker state holds
        spent[0] = 0.0
        _, cpu, _ = run_blindcheck(paths, 1)
    finally:
        for obj, fn in saved:
            setattr(obj, "extract" if obj in classes else fn.__name__, fn)
    return cpu, spent[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "tests" / "data" / "fsdd"))
    ap.add_argument("--clips", type=int, default=240, help="short clips to use")
    ap.add_argument("--long", type=int, default=24, help="long clips to build")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--stages", action="store_true", help="per-stage profile instead of the comparison")
    ap.add_argument("--music", type=int, default=64, help="rendered music clips (tests/data/music) in --stages")
    ap.add_argument("--ab", metavar="TREE", help="per-extractor A/B against the extractor modules of another "
                    "source tree (e.g. /work/main), interleaved per clip, instead of the comparison")
    ap.add_argument("--rate", type=int, default=0, help="resample both sets to this rate first (both tools then "
                    "read files at this rate); 0: the files' own rate (FSDD: 8 kHz)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per tool and set (interleaved); the minimum "
                    "wall and CPU time of each is reported, the usual estimate under other load")
    args = ap.parse_args()

    meta = pd.read_csv(Path(args.data) / "metadata.csv")
    files = [str(Path(args.data) / p) for p in meta["path"]][: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"short (FSDD clips)": files, "long (5-15 s)": make_long(files, args.long, Path(tmp))}
        if args.rate:
            sets = {f"{name[:-1]}, {args.rate // 1000} kHz)": at_rate(paths, args.rate, Path(tmp) / str(k))
                    for k, (name, paths) in enumerate(sets.items())}
        if args.stages:
            if args.music:
                music = pd.read_csv(ROOT / "tests" / "data" / "music" / "manifest.csv")
                music = music[music["channels"] == 1]["path"].iloc[: args.music]
                sets["music (6 s renders)"] = [str(ROOT / "tests" / "data" / "music" / p) for p in music]
            stages(sets, args.repeat)
            return
        if args.ab:
            ab(sets, args.ab, args.repeat)
            return
        # One untimed pass so that both tools' files are in the page cache and one-time costs are paid.
        run_blindcheck(files[:4], 1)
        run_egemaps(files[:4], 1)
        print(f"{'set':<20} {'workers':>7} {'audio s':>8} {'blindcheck ms/s':>16} {'eGeMAPS ms/s':>13} "
              f"{'ratio':>6} {'CPU ratio':>9} {'features':>13}")
        for name, paths in sets.items():
            audio = sum(sf.info(p).duration for p in paths)
            for w in sorted({1, args.workers}):
                runs_b, runs_e = [], []
                for _ in range(args.repeat):  # interleaved, so that a load change hits both tools alike
                    runs_b.append(run_blindcheck(paths, w))
                    runs_e.append(run_egemaps(paths, w))
                tb, cb, nb = min(r[0] for r in runs_b), min(r[1] for r in runs_b), runs_b[0][2]
                te, ce, ne = min(r[0] for r in runs_e), min(r[1] for r in runs_e), runs_e[0][2]
                cpu = f"{cb / ce:>9.2f}" if w == 1 else f"{'':>9}"
                print(f"{name:<20} {w:>7} {audio:>8.1f} {1000 * tb / audio:>16.2f} {1000 * te / audio:>13.2f} "
                      f"{tb / te:>6.2f} {cpu} {nb:>6} vs {ne:>3}")


if __name__ == "__main__":
    main()
