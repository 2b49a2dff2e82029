"""The exact refit permutation test at 600 clips: 99 relabellings, the old sequential path against the new one,
in one run. Prints both times, their ratio, and the cost per relabelling, per model and per clip.

The table is synthetic, of the shape of a full check with every modality (9 blind models): 600 clips x 921
features (recording 40, spectral 180, prosodic 52: the 272 acoustic features; voice 256, an L2-normed embedding;
text 393: 9 lexical features and a 384-d sentence embedding) and a transcript per clip for ``tfidf:text``; 5% of
the prosodic values are NaN and a weak real difference sits in three recording features and a few words.

Three paths, in one run:

- **before**: the code of ``--before`` (a git revision of this repository, default ``main``; exported to a temporary
  folder and run in a subprocess): its refit closure (one full cross-validation of every model per relabelling, in
  order, the fits on every core) timed on ``--before-relabellings`` relabellings and extrapolated linearly to 99
  (each relabelling is the same work: same folds' sizes, same models), plus its observed cross-validation;
- **identical**: this tree with ``refit_repeats=0`` (the statistic unchanged: every CV repeat), the relabellings
  spread over one process per core at one thread per fit; ``--identical-relabellings`` of them timed (as many
  per worker), extrapolated to 99 the same way, plus the observed cross-validation;
- **after**: this tree's defaults (``refit_repeats=1``: the statistic of one CV repeat, observed and relabelled
  alike), ``run_separability`` with ``refit_permutations=99`` end to end (observed cross-validation, SHAP, the
  99 relabellings, the statistics).

    python benchmarks/refit_speed.py [--clips 600] [--relabellings 99] [--before main] [--before-relabellings 3]
                                     [--identical-relabellings 6] [--profile]

``--profile`` first times one cross-validation of each model alone (per fit, one thread and every core).
Target: 99 relabellings of 600 clips in at most 10 minutes on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"recording": 40, "spectral": 180, "prosodic": 52, "voice": 256, "text": 393}
_VOCAB = ("zero one two three four five six seven eight nine the a of and to in is it that was for on are with as "
         "his they be at one have this from or had by hot word but what some we can out other were all there when "
         "up use your how said an each she which do their time if will way about many then them write would like "
         "so these her long make thing see him two has look more day could go come did number sound no most "
         "people my over know water than call first who may down side been now find")
WORDS = _VOCAB.split()


def synthetic(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A feature table of ``SHAPE`` (with ``id``), balanced labels and transcripts; see the module docstring."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])
    parts = {}
    for mod, p in SHAPE.items():
        latent = rng.standard_normal((n, 8))  # correlated columns, as real features are
        X = latent @ rng.standard_normal((8, p)) * 0.5 + rng.standard_normal((n, p))
        if mod in ("voice", "text"):
            emb = X[:, -min(p, 384 if mod == "text" else 256):]
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        if mod == "recording":
            X[:, :3] += 0.15 * y[:, None]
            X[:, 3] = 16000.0  # a constant column (the sample rate of a clean split)
        if mod == "prosodic":
            X[rng.random((n, p)) < 0.05] = np.nan
        parts.update({f"{mod}.f{i:03d}": X[:, i].astype(np.float32) for i in range(p)})
    table = pd.DataFrame(parts)
    table.insert(0, "id", [f"c{i:04d}" for i in range(n)])
    weights = np.ones(len(WORDS))
    texts = []
    for label in y:
        w = weights.copy()
        w[:5] *= 1.3 if label else 1.0  # a few words slightly more frequent among members
        k = int(rng.integers(4, 13))
        texts.append(" ".join(rng.choice(WORDS, k, p=w / w.sum())))
    return table, y, np.array(texts)


def _profile(table: pd.DataFrame, y: np.ndarray, texts: np.ndarray) -> None:
    """One cross-validation of each model alone: seconds per fit, one thread and every core."""
    from threadpoolctl import threadpool_limits

    from blindcheck.analysis import separability as sp
    from blindcheck.features.modalities import Modality
    from blindcheck.settings import Settings

    settings = Settings()
    cols = sp.feature_columns(table)
    X = table[cols].to_numpy(dtype=np.float32)
    plan = sp._plan(cols, True)
    repeats = int(min(5, max(1, np.ceil(2000 / len(y)))))
    print(f"profile: {len(plan)} models, {repeats} repeats x {settings.folds} folds per relabelling")
    for threads in sorted({1, sp.available_threads()}):
        total = 0.0
        for spec, idx in plan:
            cv = sp._CV([(spec, idx)], X, y, {Modality.TEXT: texts}, None, settings, repeats, threads)
            with threadpool_limits(threads):
                t = time.perf_counter()
                cv.run(y, np.random.default_rng(0))
                el = time.perf_counter() - t
            total += el
            print(f"  {threads} thread(s) {spec.name:<20} {len(idx):>4} features  {el:6.2f} s per relabelling  "
                  f"{1000 * el / (repeats * settings.folds):7.1f} ms per fit", flush=True)
        print(f"  {threads} thread(s) all models: {total:.2f} s per relabelling", flush=True)


_BEFORE = r"""
import json, sys, time
import numpy as np, pandas as pd
from threadpoolctl import threadpool_limits
from blindcheck.analysis import permutation, separability as sp
from blindcheck.features.modalities import Modality
from blindcheck.settings import Settings

table = pd.read_parquet(sys.argv[1])
y = np.load(sys.argv[2])
texts = np.load(sys.argv[3], allow_pickle=False)
k = int(sys.argv[4])
settings = Settings()
# what run_separability builds before its refit closure (that revision's code), then that closure k times
cols = sp.feature_columns(table)
X = table[cols].to_numpy(dtype=np.float32)
plan = sp._plan(cols, True)
repeats = int(min(5, max(1, np.ceil(2000 / len(y)))))
threads = sp.available_threads()
rows = permutation.relabel(y.astype(bool), None, k, np.random.default_rng(settings.seed + 7))
with threadpool_limits(threads):
    cv = sp._CV(plan, X, y, {Modality.TEXT: texts}, None, settings, repeats, threads)
    t = time.perf_counter()
    cv.run(y, np.random.default_rng(settings.seed))
    observed = time.perf_counter() - t
    refit_rng = np.random.default_rng(settings.seed + 13)
    times = []
    for yp in rows:
        t = time.perf_counter()
        o, _ = cv.run(yp.astype(int), refit_rng)
        np.column_stack([o[spec.name].mean(axis=0) for spec, _ in plan])
        times.append(time.perf_counter() - t)
print(json.dumps({"observed": observed, "relabellings": times, "models": len(plan), "threads": threads}))
"""


def _before(rev: str, table: pd.DataFrame, y: np.ndarray, texts: np.ndarray, k: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "blindcheck"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        table.to_parquet(Path(tmp) / "t.parquet")
        np.save(Path(tmp) / "y.npy", y)
        np.save(Path(tmp) / "texts.npy", texts.astype(str))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        out = subprocess.run([sys.executable, "-c", _BEFORE, str(Path(tmp) / "t.parquet"), str(Path(tmp) / "y.npy"),
                              str(Path(tmp) / "texts.npy"), str(k)], env=env, check=True, capture_output=True,
                             text=True, cwd=tmp)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _identical(table: pd.DataFrame, y: np.ndarray, texts: np.ndarray, k: int) -> tuple[float, list[float]]:
    """This tree's parallel path with every repeat (the unchanged statistic): seconds of the observed CV and of
    ``k`` relabellings (wall time of the batch spread over the workers, per relabelling)."""
    from threadpoolctl import threadpool_limits

    from blindcheck.analysis import permutation
    from blindcheck.analysis import separability as sp
    from blindcheck.features.modalities import Modality
    from blindcheck.settings import Settings

    settings = Settings(refit_repeats=0)
    cols = sp.feature_columns(table)
    X = table[cols].to_numpy(dtype=np.float32)
    plan = sp._plan(cols, True)
    repeats = int(min(5, max(1, np.ceil(2000 / len(y)))))
    with threadpool_limits(1):  # as run_separability runs the observed CV when the refit test is on
        cv = sp._CV(plan, X, y, {Modality.TEXT: texts}, None, settings, repeats, 1)
        t = time.perf_counter()
        cv.run(y, np.random.default_rng(settings.seed))
        observed = time.perf_counter() - t
    rows = permutation.relabel(y.astype(bool), None, k, np.random.default_rng(settings.seed + 7)).astype(int)
    refit = sp._Refit(cv, sp.available_threads(), repeats, observed=None)
    t = time.perf_counter()
    stamps = []
    for _ in refit.map(rows):
        stamps.append(time.perf_counter() - t)
    return observed, stamps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=600)
    ap.add_argument("--relabellings", type=int, default=99)
    ap.add_argument("--before", default="main", help="git revision of the old code (default: main)")
    ap.add_argument("--before-relabellings", type=int, default=3, help="old-path relabellings timed (0: skip)")
    ap.add_argument("--identical-relabellings", type=int, default=6,
                    help="relabellings timed on the new path with the unchanged statistic (0: skip)")
    ap.add_argument("--profile", action="store_true", help="first time each model's cross-validation alone")
    args = ap.parse_args()
    from blindcheck.analysis.separability import available_threads, run_separability
    from blindcheck.settings import Settings

    table, y, texts = synthetic(args.clips)
    n, r = len(y), args.relabellings
    print(f"{n} clips, {table.shape[1] - 1} features ({', '.join(f'{k} {v}' for k, v in SHAPE.items())}), "
          f"{available_threads()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    if args.profile:
        _profile(table, y, texts)
    before = None
    if args.before_relabellings > 0:
        b = _before(args.before, table, y, texts, args.before_relabellings)
        per = float(np.mean(b["relabellings"]))
        before = b["observed"] + r * per
        print(f"before ({args.before}, sequential, {b['threads']} threads per fit): observed CV "
              f"{b['observed']:.1f} s; {len(b['relabellings'])} relabellings "
              f"{', '.join(f'{t:.1f}' for t in b['relabellings'])} s -> {r} relabellings ~ {before:.0f} s "
              f"({before / 60:.1f} min, extrapolated)", flush=True)
    if args.identical_relabellings > 0:
        observed, stamps = _identical(table, y, texts, args.identical_relabellings)
        per = stamps[-1] / len(stamps)
        same = observed + r * per
        print(f"identical statistic (every repeat; {available_threads()} workers, 1 thread per fit): observed CV "
              f"{observed:.1f} s; {len(stamps)} relabellings in {stamps[-1]:.1f} s -> {r} relabellings ~ {same:.0f} s "
              f"({same / 60:.1f} min, extrapolated)" + (f", {before / same:.1f}x faster than before" if before else ""),
              flush=True)
    settings = Settings(refit_permutations=r)
    last: dict[str, float] = {}

    def progress(phase: str, done: int, total: int, left: float | None) -> None:
        last[phase] = time.perf_counter()  # the classifier phase's last call: the observed CV is done

    t = time.perf_counter()
    sep = run_separability(table, y, settings, texts=texts, progress=progress)
    after = time.perf_counter() - t
    refit_s = t + after - last.get("classifier", t)
    m = len(sep.models)
    print(f"after (defaults: refit_repeats={settings.refit_repeats}): {r} relabellings, {m} models: {after:.0f} s end "
          f"to end ({after / 60:.1f} min; the relabellings {refit_s:.0f} s), p_auc {sep.family.p_auc:.3f}, "
          f"p_isolation {sep.family.p_isolation:.3f}; {sep.family.method}", flush=True)
    per_relab = refit_s / r
    print(f"cost: {per_relab:.2f} s per relabelling, {1000 * per_relab / m:.0f} ms per model per relabelling, "
          f"{1e6 * per_relab / (m * n):.0f} us per clip per model per relabelling ({sep.repeats} repeats x "
          f"{sep.folds} folds in the check, {settings.refit_repeats} per relabelling)")
    if before is not None:
        print(f"ratio: {before / after:.1f}x faster ({before:.0f} s -> {after:.0f} s)")


if __name__ == "__main__":
    main()
