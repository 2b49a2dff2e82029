"""Calibration of the isolated-share bounds and of `confounded` at the tolerances (issue 27, items 3 and 8).

Three sections, each on scores whose truth is known by construction, every rate with its Monte-Carlo standard
error:

1. **Coverage of the share bounds** (no groups). One side's clips are N(0, 1) scores; on the other side a share
   pi is drawn from N(d, 1), with d set so that those clips alone reach AUC ``a`` against the rest, the others
   from N(0, 1). The lower bound must not exceed pi (the share a transform touched) more often than 1 - level; the
   upper bound must not fall below pi* (the share separable at the population's 1%-FPR point:
   (P(score > t*) - 0.01) / 0.99) more often than 1 - level. Beside the new bounds
   (:mod:`blindcheck.analysis.isolation`), the old ones: a Wilson bound of the count above the estimated threshold,
   treated as fixed.
2. **The same with groups**: clips in groups of 10 sharing a random effect (ICC 0.3 of the scores), the touched
   share drawn as whole groups; the bounds get each side's groups.
3. **`confounded` at the tolerances**: 240 clips a side; four correlated blind models at a Bayes AUC equal to
   the tolerated 0.60, a fifth that isolates exactly the tolerated 10% of the non-members; failures at the
   tolerated gap (5% of members, 15% of non-members fail); a speaker mix at the tolerated AUC (the speakers'
   member shares set so that knowing the speaker gives AUC 0.60); a metadata column at the tolerated AUC. Each
   criterion's own rate and the share of splits called `confounded`, with alpha split between the criteria
   (:func:`blindcheck.analysis.verdict.criterion_alphas`, as the verdict does) and with each criterion at the full
   alpha (before).

    python benchmarks/calibration_share.py [--reps 1000] [--tolerance-reps 400] [--only coverage,grouped,tolerance]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
from scipy.stats import norm

from blindcheck.analysis import isolation, stats
from blindcheck.analysis.metadata import metadata_evidence
from blindcheck.analysis.separability import ModelSpec, evaluate_scores
from blindcheck.analysis.speakers import speaker_overlap, speaker_separability
from blindcheck.analysis.verdict import Failures, bounds, criteria_met, criterion_alphas, decide
from blindcheck.settings import Settings

FPR = 0.01


def _pstar(pi: float, d: float) -> float:
    t = norm.isf(FPR)
    p1 = (1 - pi) * FPR + pi * norm.sf(t - d)
    return (p1 - FPR) / (1 - FPR)


def _old_bounds(k: int, n: int, level: float) -> tuple[float, float]:
    lo, hi = stats.wilson(k, n, level)
    return max(0.0, (lo - FPR) / (1 - FPR)), max(0.0, (hi - FPR) / (1 - FPR))


def _draw(rng, n, pi, d, group_size, icc):
    """Scores of the isolated side and of the other side, and the side's groups (None without groups)."""
    if not group_size:
        other = rng.normal(size=n)
        m = rng.binomial(n, pi)
        side = np.r_[rng.normal(size=n - m), rng.normal(loc=d, size=m)]
        return side, other, None, None
    g = n // group_size
    def clustered(touched_groups):
        u = np.repeat(rng.normal(scale=math.sqrt(icc), size=g), group_size)
        e = rng.normal(scale=math.sqrt(1 - icc), size=g * group_size)
        return u + e + np.repeat(touched_groups * d, group_size)
    touched = rng.random(g) < pi
    side = clustered(touched.astype(float))
    other = clustered(np.zeros(g))
    return side, other, np.repeat(np.arange(g), group_size), None


def coverage(reps: int, seed: int, group_size: int = 0, icc: float = 0.0, level: float = 0.95) -> None:
    rng = np.random.default_rng(seed)
    print(f"\n{'n/side':>6} {'pi':>4} {'AUC':>5} {'pi*':>6} | lower > pi: new   old    | upper < pi*: new   old    "
          f"| median new lower, upper   (level {level}, {reps} draws; MC SE at 5% = "
          f"{100 * math.sqrt(0.05 * 0.95 / reps):.1f}%)")
    sizes = (60, 240, 1000) if not group_size else (240, 1000)
    for n in sizes:
        for pi in (0.1, 0.3, 0.5):
            for a in (0.55, 0.65, 0.75, 1.0):
                d = math.sqrt(2) * norm.ppf(a) if a < 1 else 12.0
                ps = _pstar(pi, d)
                lo_new = lo_old = up_new = up_old = 0
                los, ups, truths = [], [], []
                for _ in range(reps):
                    side, other, groups, _g = _draw(rng, n, pi, d, group_size, icc)
                    j = isolation.allowed(len(other), FPR)
                    k = isolation.count_above(side, other, j)
                    lo = isolation.lower_grouped(side, other, FPR, level, groups)
                    up = isolation.upper(side, other, FPR, level, groups)
                    olo, oup = _old_bounds(k, len(side), level)
                    truth_up = ps  # marginally N(0, 1) and N(d, 1) with groups too
                    lo_new += lo > pi
                    lo_old += olo > pi
                    up_new += up < truth_up
                    up_old += oup < truth_up
                    los.append(lo)
                    ups.append(up)
                    truths.append(truth_up)
                r = reps
                print(f"{n:>6} {pi:>4} {a:>5} {truths[0]:>6.3f} | {100 * lo_new / r:>13.1f}% {100 * lo_old / r:>5.1f}% "
                      f"| {100 * up_new / r:>12.1f}% {100 * up_old / r:>5.1f}% | {np.median(los):.3f}, "
                      f"{np.median(ups):.3f}", flush=True)


SPECS = [ModelSpec("xgboost", "all"), ModelSpec("xgboost", "recording"), ModelSpec("xgboost", "spectral"),
         ModelSpec("logreg", "all"), ModelSpec("xgboost", "prosodic")]


def tolerance(reps: int, seed: int, n: int = 240) -> None:
    """Section 3: every criterion at its tolerance at once."""
    rng = np.random.default_rng(seed)
    settings = Settings(permutations=199)
    tau, tau_s, alpha = settings.tolerated_auc, settings.tolerated_share, settings.alpha
    d = math.sqrt(2) * norm.ppf(tau)
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    fired = {c: 0 for c in ("auc", "subset", "failures", "speakers", "metadata")}
    fired_old = dict(fired)
    confounded = confounded_old = 0
    t0 = time.time()
    n_spk = 24
    s_mix = _speaker_share_for_auc(tau)
    for rep in range(reps):
        common = rng.normal(size=2 * n)
        scored = []
        for spec in SPECS[:4]:
            noise = math.sqrt(0.7) * common + math.sqrt(0.3) * rng.normal(size=2 * n)
            scored.append((spec, 10, d * y + noise))
        iso = rng.normal(size=2 * n)
        touched = np.zeros(2 * n, bool)
        touched[n + rng.choice(n, int(round(tau_s * n)), replace=False)] = True  # 10% of the non-members
        iso[touched] -= 12.0
        scored.append((SPECS[4], 10, iso))
        sep = evaluate_scores(scored, y, settings)
        f = Failures(int(rng.binomial(n, 0.05)), n, int(rng.binomial(n, 0.15)), n)
        # speakers: a member comes from the 'high' half of the speakers with probability s_mix
        spk = _speakers_given(y, s_mix, n_spk, rng)
        sp = {"source": "given", "overlap": speaker_overlap(spk, y),
              "separability": speaker_separability(spk, y, alpha, seed=rep)}
        col = rng.normal(size=2 * n) + d * y
        md = metadata_evidence(pd.DataFrame({"session_level": col}), y, alpha, tau, permutations=199,
                               cv_relabellings=19, bootstrap=100, seed=rep)
        v = decide(sep, settings, f, speakers=sp, metadata=md)
        confounded += v.status == "confounded"
        for c in v.criteria:
            fired[c] += 1
        # before: every criterion at the full alpha
        full = {c: alpha for c in criterion_alphas(alpha, f, sp, md)}
        b = bounds(sep, settings, f, full)
        old = set(criteria_met(sep, b, f))
        spv = sp["separability"]
        if spv and spv["p"] <= alpha and spv["lower_bound"] > tau:
            old.add("speakers")
        if md is not None and md.decisive:
            old.add("metadata")
        for c in old:
            fired_old[c] += 1
        confounded_old += bool(old)
        if (rep + 1) % 50 == 0:
            print(f"  {rep + 1} splits, {time.time() - t0:.0f} s", flush=True)
    se = 100 * math.sqrt(alpha * (1 - alpha) / reps)
    print(f"\n`confounded` with every criterion at its tolerance ({reps} splits of {n} clips a side; MC SE at "
          f"alpha = {se:.1f}%):")
    print(f"  {'criterion':<10} {'alpha split':>12} {'full alpha (before)':>20}")
    for c in fired:
        print(f"  {c:<10} {100 * fired[c] / reps:>11.1f}% {100 * fired_old[c] / reps:>19.1f}%")
    print(f"  {'any':<10} {100 * confounded / reps:>11.1f}% {100 * confounded_old / reps:>19.1f}%")


def _speaker_share_for_auc(target: float) -> float:
    """The probability s that a member's speaker is from the 'high' half (a non-member's: 1 - s) at which knowing
    the speaker gives a Bayes AUC of ``target`` (two score values; ties count one half)."""
    lo, hi = 0.5, 1.0
    for _ in range(60):
        s = (lo + hi) / 2
        # members: fraction s from "high" speakers (score s); non-members: fraction 1 - s from high speakers
        p_hi_m, p_hi_n = s, 1 - s
        auc = p_hi_m * (1 - p_hi_n) + 0.5 * (p_hi_m * p_hi_n + (1 - p_hi_m) * (1 - p_hi_n))
        lo, hi = (s, hi) if auc < target else (lo, s)
    return (lo + hi) / 2


def _speakers_given(y: np.ndarray, s: float, n_spk: int, rng) -> np.ndarray:
    """A speaker per clip: a member is from the 'high' half of the speakers with probability s, a non-member with
    1 - s; within a half the speaker is uniform."""
    high = np.where(y == 1, rng.random(len(y)) < s, rng.random(len(y)) < 1 - s)
    half = n_spk // 2
    return np.where(high, 2 * rng.integers(0, half, len(y)), 2 * rng.integers(0, half, len(y)) + 1).astype(str)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--tolerance-reps", type=int, default=400)
    ap.add_argument("--only", default="coverage,grouped,tolerance")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    only = set(a.only.split(","))
    if "coverage" in only:
        print("1. Coverage of the isolated-share bounds, no groups")
        coverage(a.reps, a.seed)
    if "grouped" in only:
        print("\n2. Coverage with groups of 10 clips (ICC 0.3), whole groups touched")
        coverage(max(a.reps // 2, 1), a.seed + 1, group_size=10, icc=0.3)
    if "tolerance" in only:
        print("\n3. `confounded` at the tolerances")
        tolerance(a.tolerance_reps, a.seed + 2)


if __name__ == "__main__":
    main()
