"""Calibration of the verdict on real rendered music: random splits (null) and a codec on 30% of one side.

A set larger than the committed one is rendered into a temporary folder with the functions of
tests/data/music/build.py (the same rule: ``--pieces`` Bach chorales and as many of Ryan's fiddle tunes from
music21's corpus, FluidSynth with FluidR3 and TimGM6mb alternating by piece, 6 s mono excerpts at 16 kHz), and a
copy of every excerpt is passed through a low-bitrate MP3 codec (libsndfile's MP3 writer at its lowest quality,
constant bit rate, decoded and written back as 16-bit WAV, as tests/verbs/test_match.py's ``codec`` fixture does).
Features are extracted once, with blindcheck's pipeline, for both copies of every clip; each split below then
costs only the blind classifiers, the content-type evidence and the verdict (``run_separability``,
``manifest_evidence`` and ``decide``, what ``blindcheck check`` runs on its table), under default settings.

1. **Random splits** (null): half of the pool's clips drawn at random as members (the pool holds both repertoires
   and both soundfonts, a quarter each; a random split mixes them on both sides). Counts of clean, inconclusive
   and confounded; the confounded rate against alpha with its binomial bound (the count at or under the 99.9%
   quantile of Binomial(splits, alpha) is consistent with a false-alarm rate of alpha).
2. **A codec on 30% of the non-members**: a random half split, then 30% of the non-members replaced by their MP3
   copies. The share flagged (confounded), by which criterion (``verdict.criteria``: "subset", "auc"), the
   isolated side, the estimated isolated share against the truth (0.30), and how many of the isolated clips are
   MP3 copies.

Modalities: content (evidence, not a classifier input), recording, spectral and music: the defaults with music
named, as ``blindcheck check --modalities content,recording,spectral,music`` runs (music runs only when named; the
prosodic modality is speech-oriented and left out).

Measured here (2-core machine shared with other work, 2026-12-07): the defaults ran in 7 min 11 s. ``--pieces 100
--splits 40``: random splits of 200 clips 0/40 confounded, 9/40 clean (22%; the equivalence claim needs more clips);
the codec 40/40 confounded, all by the isolated subset, share median 0.31 [5-95%: 0.29, 0.35] against 0.30.
``--pieces 240 --splits 40 --skip-codec``: random splits of 480 clips 0/40 confounded, 32/40 clean (80%); the
family-wise AUC permutation p-value alone reached alpha in 6/40 (15%) with plain score relabellings; with the
widened ones (blindcheck.analysis.permutation.SCORE_VARIANCE_FACTOR, 2026-12-07, 21.9 s per split) 2/40 (5.0%),
isolation p 1/40, 31/40 clean (78%) against a printed power of 0.67, 0/40 confounded.

    python benchmarks/calibration_music.py [--pieces 100] [--splits 8] [--seed 2026] [--repeats R] [--workers 2]
                                          [--workdir DIR] [--skip-random] [--skip-codec]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.stats import binom

ROOT = Path(__file__).resolve().parents[1]

from blindcheck.analysis.metadata import manifest_evidence  # noqa: E402
from blindcheck.analysis.separability import run_separability  # noqa: E402
from blindcheck.analysis.verdict import decide  # noqa: E402
from blindcheck.extraction.pipeline import extract_features  # noqa: E402
from blindcheck.inputs.manifest import Manifest  # noqa: E402
from blindcheck.settings import Settings  # noqa: E402

MODALITIES = ["content", "recording", "spectral", "music"]
STATUSES = ("clean", "inconclusive", "confounded")
CODEC_SHARE = 0.3


def _builder():
    """tests/data/music/build.py as a module (its ``build`` renders a set into any folder)."""
    spec = importlib.util.spec_from_file_location("music_build", ROOT / "tests" / "data" / "music" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mp3(x: np.ndarray, sr: int, scratch: Path) -> np.ndarray:
    """``x`` through libsndfile's MP3 encoder at its lowest quality, constant bit rate, and back."""
    sf.write(scratch, x, sr, format="MP3", compression_level=0.99, bitrate_mode="CONSTANT")
    return sf.read(scratch, dtype="float32")[0]


def _rate(k: int, n: int) -> str:
    p = k / n
    return f"{k:>3}/{n} = {100 * p:5.1f}% (MC SE {100 * math.sqrt(p * (1 - p) / n):.1f}%)"


def _counts(counts: Counter, n: int) -> str:
    return "  ".join(f"{s} {counts[s]} ({100 * counts[s] / n:.0f}%)" for s in STATUSES)


def prepare(folder: Path, pieces: int, workers: int, codec: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Render the set, make the MP3 copies (unless ``codec`` is False), extract both. Returns (rows: one per piece,
    with the ids of its clip and of its copy; features: the table of every clip and copy, by id). A folder that
    already holds a set of this size (``--workdir``) is reused: nothing is rendered again, and the features come
    from its cache."""
    t = time.perf_counter()
    done = folder / "set" / "manifest.csv"
    if done.exists() and len(pd.read_csv(done)) == 2 * pieces:
        rows = pd.read_csv(done)
    else:
        shutil.rmtree(folder / "mp3", ignore_errors=True)
        rows = pd.DataFrame(_builder().build(folder / "set", pieces, 6.0, 0, 3.0, 12))
    t_render = time.perf_counter() - t
    (folder / "mp3").mkdir(exist_ok=True)
    paths, codec_paths = [], []
    for r in rows.itertuples():
        p = folder / "mp3" / f"{r.id}.wav"
        if codec and not p.exists():  # rewritten, even to the same bytes, a file is hashed and analysed again
            x, sr = sf.read(folder / "set" / r.path, dtype="float32")
            sf.write(p, mp3(x, sr, folder / "scratch.mp3"), sr, subtype="PCM_16")
        paths.append(str(folder / "set" / r.path))
        codec_paths.append(str(p))
    rows["codec_id"] = rows["id"] + "_mp3"
    table = pd.DataFrame({"id": [*rows["id"], *rows["codec_id"]], "path": paths + codec_paths})
    table = table.iloc[: len(table) if codec else len(rows)]
    table = table.assign(label=np.arange(len(table)) % 2)
    t = time.perf_counter()
    ext = extract_features(Manifest(table=table, source="pool"), folder / "cache", workers=workers,
                           modalities=MODALITIES)
    t_extract = time.perf_counter() - t
    if not ext.errors.empty:
        raise RuntimeError(f"extraction failed on {len(ext.errors)} clips:\n{ext.errors.head()}")
    print(f"rendered {len(rows)} pieces ({rows.groupby(['repertoire', 'soundfont']).size().to_dict()}) in "
          f"{t_render:.0f} s; extracted {len(table)} clips ({'originals and MP3 copies' if codec else 'originals'}; "
          f"{', '.join(MODALITIES)}) in "
          f"{t_extract:.0f} s with {workers} workers (computed {ext.stats['computed']}, from the cache "
          f"{ext.stats['reused']})", flush=True)
    return rows, ext.features.set_index("id")


def verdict(feats: pd.DataFrame, y: np.ndarray, settings: Settings):
    """What ``check`` decides on this table (the blind classifiers, the content-type evidence, the verdict), and
    the separability it rests on."""
    meta = pd.DataFrame({"id": feats.index, "path": "", "label": y})
    table = feats.reset_index()
    metadata = manifest_evidence(meta, table, y, settings)
    sep = run_separability(table, y, settings)
    return decide(sep, settings, metadata=metadata), sep


def half(n: int, rng: np.random.Generator) -> np.ndarray:
    y = np.zeros(n, int)
    y[rng.permutation(n)[: n // 2]] = 1
    return y


def random_splits(rows: pd.DataFrame, feats: pd.DataFrame, args, rng: np.random.Generator) -> None:
    settings = Settings(repeats=args.repeats)
    pool = feats.loc[rows["id"]]
    n = len(pool)
    counts, aucs, power, p_auc, p_iso, t = Counter(), [], [], 0, 0, time.perf_counter()
    for _ in range(args.splits):
        v, _ = verdict(pool, half(n, rng), settings)
        counts[v.status] += 1
        aucs.append(v.best_auc)
        power.append(v.power)
        p_auc += v.family_p <= settings.alpha
        p_iso += v.subset["family_p"] <= settings.alpha
    per = (time.perf_counter() - t) / args.splits
    allowed = int(binom.ppf(0.999, args.splits, settings.alpha))
    q = np.quantile(aucs, [0.05, 0.5, 0.95])
    print(f"\n1. random splits of {n} clips (both repertoires and soundfonts, a quarter each), default settings, "
          f"{per:.1f} s per split")
    print(f"  {args.splits} splits: {_counts(counts, args.splits)}")
    print(f"  confounded {_rate(counts['confounded'], args.splits)} vs alpha {settings.alpha}: at most {allowed} "
          f"expected (99.9% quantile of Binomial({args.splits}, {settings.alpha})) -> "
          f"{'consistent' if counts['confounded'] <= allowed else 'EXCEEDED'}")
    print(f"  clean {_rate(counts['clean'], args.splits)} (the verdicts' printed power, mean: {np.mean(power):.2f}); "
          f"best AUC median {q[1]:.3f} [5-95%: {q[0]:.3f}, {q[2]:.3f}]")
    print(f"  the permutation tests alone, before the bounds: family-wise AUC p <= alpha {_rate(p_auc, args.splits)}; "
          f"isolation p <= alpha {_rate(p_iso, args.splits)}")


def codec_splits(rows: pd.DataFrame, feats: pd.DataFrame, args, rng: np.random.Generator) -> None:
    settings = Settings(repeats=args.repeats)
    n = len(rows)
    flagged = by_subset = by_auc = right_side = 0
    shares, precision, aucs, t = [], [], [], time.perf_counter()
    counts = Counter()
    for _ in range(args.splits):
        y = half(n, rng)
        non = np.nonzero(y == 0)[0]
        touched = np.zeros(n, bool)
        touched[rng.choice(non, int(round(CODEC_SHARE * len(non))), replace=False)] = True
        ids = np.where(touched, rows["codec_id"], rows["id"])
        v, sep = verdict(feats.loc[ids], y, settings)
        counts[v.status] += 1
        aucs.append(v.best_auc)
        flagged += v.status == "confounded"
        by_subset += "subset" in v.criteria
        by_auc += "auc" in v.criteria
        s = v.subset
        right_side += s["side"] == "nonmembers"
        shares.append(s["share"] if s["side"] == "nonmembers" else 0.0)
        if s["side"] == "nonmembers" and s["n_isolated"]:
            # which of the isolated clips are MP3 copies (the subset's ids are the table's)
            precision.append(np.mean([str(i).endswith("_mp3") for i in sep.subset.ids]))
    per = (time.perf_counter() - t) / args.splits
    k = args.splits
    q = np.quantile(shares, [0.05, 0.5, 0.95])
    print(f"\n2. a low-bitrate MP3 codec on {CODEC_SHARE:.0%} of the non-members ({n} clips), default settings, "
          f"{per:.1f} s per split")
    print(f"  {k} splits: {_counts(counts, k)}; best AUC median {np.median(aucs):.3f}")
    print(f"  flagged (confounded)             {_rate(flagged, k)}")
    print(f"  criterion 'subset'               {_rate(by_subset, k)}")
    print(f"  criterion 'auc'                  {_rate(by_auc, k)}")
    print(f"  isolated side is the non-members {_rate(right_side, k)}")
    print(f"  estimated isolated share of the non-members: median {q[1]:.2f} [5-95%: {q[0]:.2f}, {q[2]:.2f}], "
          f"mean {np.mean(shares):.2f} (truth {CODEC_SHARE:.2f})")
    if precision:
        print(f"  share of the isolated clips that are MP3 copies: median {np.median(precision):.2f}, "
              f"min {np.min(precision):.2f} ({len(precision)} splits)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=100, help="pieces per repertoire (the pool: twice this)")
    ap.add_argument("--splits", type=int, default=8, help="splits per experiment (each ~14 s at 200 clips here)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--repeats", type=int, default=None,
                    help="cross-validation repeats (default: the built-in rule, ceil(2000 / n) between 1 and 5)")
    ap.add_argument("--workers", type=int, default=2, help="extraction worker processes")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the set and its feature cache here, reused next time (default: a temporary one)")
    ap.add_argument("--skip-random", action="store_true")
    ap.add_argument("--skip-codec", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows, feats = prepare(args.workdir, args.pieces, args.workers, codec=not args.skip_codec)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows, feats = prepare(Path(tmp), args.pieces, args.workers, codec=not args.skip_codec)
    if not args.skip_random:
        random_splits(rows, feats, args, rng)
    if not args.skip_codec:
        codec_splits(rows, feats, args, rng)


if __name__ == "__main__":
    main()
