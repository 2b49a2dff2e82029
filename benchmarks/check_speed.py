"""Wall time of the blind check on cached features, as the table grows.

Synthetic feature tables (rows x 500 features in three modalities: 40 recording, 420 spectral, 40 prosodic,
5% NaN, a weak real difference in three features) go through the same code as ``blindcheck check`` after
extraction: cross-validated separability with default settings (every model, permutation p-values,
attributions) and the verdict. Prints seconds per size and the growth factor per 10x rows.

    python benchmarks/check_speed.py [--sizes 1000,10000,100000] [--features 500]

Target: <= 60 s at 100k rows x 500 features on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from blindcheck.analysis.separability import run_separability  # noqa: E402
from blindcheck.analysis.verdict import decide  # noqa: E402
from blindcheck.settings import Settings  # noqa: E402


def synthetic(n: int, p: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])
    X = rng.standard_normal((n, p)).astype(np.float32)
    X[:, :3] += 0.15 * y[:, None]  # a weak confound in three recording features
    X[rng.random((n, p)) < 0.05] = np.nan
    n_rec, n_pro = p * 2 // 25, p * 2 // 25
    names = ([f"recording.f{i:03d}" for i in range(n_rec)] + [f"spectral.f{i:03d}" for i in range(p - n_rec - n_pro)]
             + [f"prosodic.f{i:03d}" for i in range(n_pro)])
    table = pd.DataFrame(X, columns=names)
    table.insert(0, "id", [f"c{i}" for i in range(n)])
    return table, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--features", type=int, default=500)
    args = ap.parse_args()
    settings = Settings()
    print(f"{'rows':>8} {'features':>8} {'repeats':>7} {'seconds':>8} {'growth':>7}  verdict (best model, AUC)")
    prev = None
    for n in [int(s) for s in args.sizes.split(",")]:
        table, y = synthetic(n, args.features)
        t = time.perf_counter()
        sep = run_separability(table, y, settings)
        v = decide(sep, settings)
        el = time.perf_counter() - t
        growth = f"{el / prev:.1f}x" if prev else ""
        print(f"{n:>8} {args.features:>8} {sep.repeats:>7} {el:>8.1f} {growth:>7}  {v.status} "
              f"({v.best_model}, {v.best_auc:.3f})", flush=True)
        prev = el


if __name__ == "__main__":
    main()
