"""False-alarm rate of the verdict with default settings, on random splits of one pool of real speech.

The bundled FSDD clips (480, six speakers) are extracted once; then N random member/non-member splits of
the same pool (both sides from the same speakers and recording set-ups: nothing to find) each get the full
blind check with default settings. Prints how often each verdict came out, the distribution of the best
model's AUC and how often the family-wise p-value fell under alpha (should be at most alpha).

    python benchmarks/calibration.py [--splits 40] [--data DIR_WITH_metadata.csv]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blindcheck.extract import extract_features  # noqa: E402
from blindcheck.manifest import Manifest  # noqa: E402
from blindcheck.separability import run_separability  # noqa: E402
from blindcheck.settings import Settings  # noqa: E402
from blindcheck.verdict import decide  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=40)
    ap.add_argument("--data", default=str(ROOT / "tests" / "data" / "fsdd"))
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--repeats", type=int, default=None, help="CV repeats (default: the built-in rule)")
    ap.add_argument("--refit", type=int, default=0, help="refit permutations for the best model's p-value")
    args = ap.parse_args()
    meta = pd.read_csv(Path(args.data) / "metadata.csv")
    table = pd.DataFrame({"id": meta["id"], "path": [str(Path(args.data) / p) for p in meta["path"]],
                          "label": np.arange(len(meta)) % 2, "text": meta["text"]})
    with tempfile.TemporaryDirectory() as cache:
        feats = extract_features(Manifest(table=table, source="pool"), cache).features
    texts = table.set_index("id").loc[feats["id"], "text"].to_numpy()
    settings = Settings(repeats=args.repeats)  # refits are run below, for one fixed model
    rng = np.random.default_rng(args.seed)
    verdicts, aucs, ps, fixed_score_p, fixed_refit_p = Counter(), [], [], [], []
    t = time.perf_counter()
    for _ in range(args.splits):
        y = np.zeros(len(feats), int)
        y[rng.permutation(len(feats))[: len(feats) // 2]] = 1
        sep = run_separability(feats, y, settings, texts=texts)
        v = decide(sep, settings)
        verdicts[v.status] += 1
        aucs.append(v.best_auc)
        ps.append(v.family_p)
        if args.refit:
            # One fixed model (no best-of-m selection): score-permutation vs refit-permutation p-value.
            from copy import copy

            from blindcheck.separability import _refit_pvalue, feature_columns

            fixed = sep.model("xgboost:all")
            fixed_score_p.append(fixed.p_value)
            cols = feature_columns(feats)
            plan_item = ("xgboost:all", "all", list(range(len(cols))))
            m = copy(fixed)
            _refit_pvalue(m, plan_item, feats[cols].to_numpy(np.float32), y, None, None, settings, sep.repeats)
            fixed_refit_p.append(m.p_value)
    el = time.perf_counter() - t
    n = args.splits
    print(f"{n} random splits of {len(feats)} clips, {sep.repeats} repeats x {sep.folds} folds, p-value: "
          f"{sep.best.p_method}; {el / n:.1f} s per check")
    for status in ("clean", "inconclusive", "confounded"):
        print(f"  {status:<13} {verdicts[status]:>4}  ({100 * verdicts[status] / n:.1f}%)")
    q = np.quantile(aucs, [0.05, 0.5, 0.95])
    print(f"  best-model AUC: median {q[1]:.3f}, 5-95% [{q[0]:.3f}, {q[2]:.3f}]")
    print(f"  family-wise p < {settings.alpha}: {sum(p < settings.alpha for p in ps)} of {n}")
    if args.refit:
        print(f"  xgboost:all alone, p <= 0.05: score permutation {sum(p <= 0.05 for p in fixed_score_p)} of {n}, "
              f"refit permutation ({args.refit} refits) {sum(p <= 0.05 for p in fixed_refit_p)} of {n} "
              f"(nominal {0.05 * n:.0f})")


if __name__ == "__main__":
    main()
