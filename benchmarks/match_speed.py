"""Wall time of ``blindcheck match`` on cached features: 10k members vs 10k non-members.

A synthetic feature table (200 features in three modalities, 5% NaN) in which 30% of the non-members carry a
strong shift in five recording features (a partial confound, like a codec on part of one side). The end-to-end
figure runs what ``blindcheck match`` runs after extraction: the blind check (cross-validated separability with
default settings and the verdict), the matching, and the fresh check of the matched subset. The matching
figure is the matching alone (pairs, support refinement, balance table), given the out-of-fold scores.

    python benchmarks/match_speed.py [--n 10000] [--features 200] [--method propensity]

Optimal matching is refused at this size (10k x 10k pairs exceed ``OPTIMAL_MAX_CELLS``), so the default order
goes on to propensity matching; ``--method trim`` times overlap trimming.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from blindcheck.analysis.matching import MatchOptions, balance_table, match_attempt, match_table
from blindcheck.analysis.separability import feature_columns, run_separability  # noqa: E402
from blindcheck.analysis.verdict import decide  # noqa: E402
from blindcheck.settings import Settings  # noqa: E402


def synthetic(n: int, p: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    X = rng.standard_normal((2 * n, p)).astype(np.float32)
    touched = (y == 0) & (rng.random(2 * n) < 0.3)
    X[touched, :5] += 3.0
    X[rng.random((2 * n, p)) < 0.05] = np.nan
    n_rec, n_pro = p // 10, p // 10
    names = ([f"recording.f{i:03d}" for i in range(n_rec)] + [f"spectral.f{i:03d}" for i in range(p - n_rec - n_pro)]
             + [f"prosodic.f{i:03d}" for i in range(n_pro)])
    table = pd.DataFrame(X, columns=names)
    table.insert(0, "id", [f"c{i}" for i in range(2 * n)])
    table.insert(1, "label", y)
    return table, touched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="clips per side")
    ap.add_argument("--features", type=int, default=200)
    ap.add_argument("--method", default=None, choices=["propensity", "optimal", "trim"])
    args = ap.parse_args()
    settings = Settings()
    table, touched = synthetic(args.n, args.features)
    y = table["label"].to_numpy()
    meta = table[["id", "label"]].copy()
    t0 = time.perf_counter()
    sep = run_separability(table, y, settings)
    v = decide(sep, settings)
    t_check = time.perf_counter() - t0
    scores = sep.best.scores
    # the matching alone
    cols = feature_columns(table)
    X = table[cols].to_numpy(float)
    t1 = time.perf_counter()
    att = match_attempt(table, meta, scores, settings, "trim" if args.method == "trim" else "propensity")
    bal = balance_table(X, cols, y, att.keep)
    t_match = time.perf_counter() - t1
    # end to end after extraction: check + match (with its fresh check)
    t2 = time.perf_counter()
    res = match_table(table, meta, scores, settings, MatchOptions(method=args.method), threads=None)
    t_rest = time.perf_counter() - t2
    part = res.parts[0]
    a = part.best
    print(f"{args.n} members vs {args.n} non-members, {args.features} features; before: {v.status}, best AUC "
          f"{v.best_auc:.3f} ({v.best_model})")
    print(f"  blind check (CV + verdict):          {t_check:7.1f} s")
    print(f"  matching alone ({att.method}):        {t_match:7.2f} s  kept {att.retained['members']} m / "
          f"{att.retained['nonmembers']} n; {int((att.keep & touched).sum())} of {int(touched.sum())} shifted kept; "
          f"max |SMD| after {np.nanmax(np.abs(bal['smd_after'].to_numpy(float))):.3f}")
    print(f"  match incl. fresh check(s):          {t_rest:7.1f} s  attempts: "
          + ", ".join(f"{x.method} ({'accepted' if x.success else 'rejected'})" for x in part.attempts)
          + f"; each re-check at alpha {part.recheck['alpha']:.4g} ({part.recheck['tries']} methods may be tried)")
    print(f"  end to end on cached features:       {t_check + t_rest:7.1f} s  -> {res.status}; fresh "
          f"{a.verdict.status if a and a.verdict else 'n/a'}, AUC "
          f"{a.fresh.best.auc if a and a.fresh else float('nan'):.3f}")


if __name__ == "__main__":
    main()
