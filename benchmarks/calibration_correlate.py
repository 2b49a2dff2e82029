"""How often `correlate` gives each attack status when the truth is known (synthetic tables).

Each table: n clips, half members; a feature matrix whose first column is a confound the best blind model
carries (a level: members shifted by ``d1`` SD), whose second is a confound it does not carry (shifted by ``d2``
SD; the single-feature blind model picks the first), and ``--irrelevant`` pure-noise features; the blind score
is the out-of-fold score of the single best feature (chosen inside each training fold, as `check`'s
``single:all`` model). Attacks of known relation to the audio are scored against it with
``blindcheck.analysis.attacks.correlate_attacks``, the function `correlate` runs.

Sections (each rate with its Monte-Carlo standard error sqrt(p(1 - p) / reps)):

- pure confound: the attack is the second confound plus noise (it follows the audio, knows nothing of
  membership): ``beyond-blind`` must come out at most at alpha, with 0, 200 and 500 irrelevant features;
- level-confounded split (blind AUC ~0.95, verdict confounded): an attack that tracks the level, pure noise,
  and a genuine membership signal independent of the audio (AUC 0.70): the first should be
  ``confounded-attack``, noise ``confounded-attack`` or ``beyond-blind`` at most at alpha each, the genuine one
  ``beyond-blind`` (its rate is the power);
- genuine signal (AUC 0.70) on the table of the pure-confound section: the power beside the size;
- grouped size: K groups (speakers) with different member shares and an attack score with a group effect
  unrelated to membership: the share of ``p_auc`` < alpha at K = 4 and 6 (the intervals are t on K - 1 df).

Run it against another source tree (``PYTHONPATH=/other/tree python benchmarks/calibration_correlate.py``) for
the figures before a change: it only calls ``correlate_attacks``, whose signature did not change.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.stats import norm, rankdata

from blindcheck.analysis.attacks import correlate_attacks
from blindcheck.settings import Settings


def single_feature_oof(X: np.ndarray, y: np.ndarray, rng: np.random.Generator, folds: int = 5) -> np.ndarray:
    """Out-of-fold score of the single feature with the largest |AUC - 0.5| in each training fold: the value's
    mid-rank among the training clips (as `check`'s single-feature model)."""
    from sklearn.model_selection import StratifiedKFold

    b = np.empty(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=int(rng.integers(2**31))).split(X, y):
        r = rankdata(X[tr], axis=0)
        n1 = int(y[tr].sum())
        auc = (r[y[tr] == 1].sum(0) - n1 * (n1 + 1) / 2) / (n1 * (len(tr) - n1))
        j = int(np.argmax(np.abs(auc - 0.5)))
        sign = 1.0 if auc[j] >= 0.5 else -1.0
        train = np.sort(sign * X[tr, j])
        v = sign * X[te, j]
        b[te] = (np.searchsorted(train, v, "left") + np.searchsorted(train, v, "right")) / (2.0 * len(train))
    return b


def table(n: int, irrelevant: int, d1: float, d2: float, rng: np.random.Generator):
    y = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(int)
    X = np.column_stack([d1 * y + rng.standard_normal(n), d2 * y + rng.standard_normal(n),
                         rng.standard_normal((n, irrelevant))])
    return y, X, single_feature_oof(X, y, rng)


def shift_for_auc(auc: float) -> float:
    """Mean shift (in SD) of a unit-variance normal score between the classes that gives this AUC."""
    return math.sqrt(2) * float(norm.ppf(auc))


class Rates:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, int]] = []

    def add(self, section: str, what: str, hits: int, reps: int) -> None:
        self.rows.append((section, what, hits, reps))
        p = hits / reps
        print(f"{section:<44} {what:<34} {p:6.3f}  ± {math.sqrt(p * (1 - p) / reps):.3f}   ({hits}/{reps})",
              flush=True)


def run(args: argparse.Namespace) -> Rates:
    rng = np.random.default_rng(args.seed)
    settings = Settings(correlation_bootstrap=100, seed=args.seed)
    n, reps, alpha = args.n, args.reps, settings.alpha
    out = Rates()
    beta = shift_for_auc(0.70)

    def statuses(attacks, y, X, b, split, groups=None):
        res = correlate_attacks(attacks, y, b, X, settings, ids=np.arange(len(y)), split_status=split,
                                groups=groups)
        return {a.name: a for a in res.attacks}

    for p in args.irrelevant if "confound" in args.sections else []:
        t0 = time.time()
        beyond = confounded = genuine = 0
        for _ in range(reps):
            y, X, b = table(n, p, args.d1, args.d2, rng)
            got = statuses({"confound": X[:, 1] + rng.standard_normal(n),
                            "genuine": beta * y + rng.standard_normal(n)}, y, X, b, "clean")
            beyond += got["confound"].status == "beyond-blind"
            confounded += got["confound"].status == "confounded-attack"
            genuine += got["genuine"].status == "beyond-blind"
        sec = f"pure confound, {p} irrelevant features"
        out.add(sec, "confound: beyond-blind (<= alpha)", beyond, reps)
        out.add(sec, "confound: confounded-attack", confounded, reps)
        out.add(sec, "genuine AUC 0.70: beyond-blind", genuine, reps)
        print(f"  ({time.time() - t0:.0f} s)", flush=True)

    if "level" in args.sections:
        t0 = time.time()
        keys = ("track-ca", "noise-ca", "noise-bb", "genuine-bb", "genuine-ca")
        counts = dict.fromkeys(keys, 0)
        blind_aucs = []
        for _ in range(reps):
            y, X, b = table(n, args.level_irrelevant, shift_for_auc(0.95), 0.0, rng)
            blind_aucs.append(np.mean(b[y == 1][:, None] > b[y == 0][None, :]))
            got = statuses({"track": X[:, 0] + rng.standard_normal(n), "noise": rng.standard_normal(n),
                            "genuine": beta * y + rng.standard_normal(n)}, y, X, b, "confounded")
            counts["track-ca"] += got["track"].status == "confounded-attack"
            counts["noise-ca"] += got["noise"].status == "confounded-attack"
            counts["noise-bb"] += got["noise"].status == "beyond-blind"
            counts["genuine-bb"] += got["genuine"].status == "beyond-blind"
            counts["genuine-ca"] += got["genuine"].status == "confounded-attack"
        sec = f"level split (blind AUC {np.mean(blind_aucs):.2f}), {args.level_irrelevant} irr."
        out.add(sec, "level-tracking: confounded-attack", counts["track-ca"], reps)
        out.add(sec, "noise: confounded-attack (<= alpha)", counts["noise-ca"], reps)
        out.add(sec, "noise: beyond-blind (<= alpha)", counts["noise-bb"], reps)
        out.add(sec, "genuine AUC 0.70: beyond-blind", counts["genuine-bb"], reps)
        out.add(sec, "genuine AUC 0.70: confounded-attack", counts["genuine-ca"], reps)
        print(f"  ({time.time() - t0:.0f} s)", flush=True)

    for k in args.groups if "grouped" in args.sections else []:
        t0 = time.time()
        hits = res_hits = 0
        per = max(2 * k, args.grouped_n // k)
        for _ in range(reps):
            g = np.repeat(np.arange(k), per)
            share = rng.uniform(0.25, 0.75, k)[g]
            y = (rng.random(len(g)) < share).astype(int)
            while min(y.sum(), (1 - y).sum()) < 4:
                y = (rng.random(len(g)) < share).astype(int)
            effect = rng.standard_normal(k)[g]
            X = np.column_stack([effect + rng.standard_normal(len(g)), rng.standard_normal((len(g), 10))])
            b = single_feature_oof(X, y, rng)
            got = statuses({"noise": effect + rng.standard_normal(len(g))}, y, X, b, "clean", g.astype(str))
            hits += got["noise"].metrics["p_auc"] < alpha
            res_hits += got["noise"].metrics["residual_p"] < alpha
        sec = f"grouped null, K = {k} groups of {per}"
        out.add(sec, "p_auc < alpha (size)", hits, reps)
        out.add(sec, "residual_p < alpha (size)", res_hits, reps)
        print(f"  ({time.time() - t0:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=200, help="tables per cell (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=400, help="clips per table, half members (default 400)")
    ap.add_argument("--irrelevant", type=lambda s: [int(x) for x in s.split(",")], default=[0, 200, 500],
                    help="irrelevant feature counts of the pure-confound section (default 0,200,500)")
    ap.add_argument("--level-irrelevant", type=int, default=200, help="irrelevant features of the level split")
    ap.add_argument("--d1", type=float, default=1.5, help="shift of the confound the blind model carries (SD)")
    ap.add_argument("--d2", type=float, default=0.8, help="shift of the confound it does not carry (SD)")
    ap.add_argument("--groups", type=lambda s: [int(x) for x in s.split(",")], default=[4, 6],
                    help="group counts of the grouped-size section (default 4,6)")
    ap.add_argument("--grouped-n", type=int, default=240, help="clips per grouped table (default 240)")
    ap.add_argument("--sections", type=lambda s: s.split(","), default=["confound", "level", "grouped"],
                    help="sections to run (default confound,level,grouped)")
    args = ap.parse_args(argv)
    t0 = time.time()
    print(f"reps = {args.reps}, n = {args.n}, seed = {args.seed}, alpha = 0.05; rate ± MC SE")
    run(args)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
