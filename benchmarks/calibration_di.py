"""Calibration and power of dataset inference (``blindcheck di``): how often Welch's test rejects when the truth is
known, before and after the fix of issue 27 (items 1 and 11).

Synthetic score tables, 200 suspect and 200 reference clips (``--n``), ``--reps`` tables per row. Each rate is
printed with its Monte-Carlo standard error sqrt(r (1 - r) / reps).

- **attack, null**: 1, 10 and 30 pure-noise attacks. *before*: the old combination (a logistic fit on each half
  of a stratified partition scores the other half, held-out scores averaged over ``--partitions`` partitions,
  Welch on every clip; reproduced inline below, with 10 partitions and with 1); *after*:
  :func:`blindcheck.analysis.inference.dataset_inference` (one calibration half, Welch on the held-out half).
- **attack, grouped null**: one noise attack that carries a speaker effect (intra-class correlation ``--icc``),
  20 speakers per side, whole speakers to a side. *before*: Welch on clips (DI ignoring the groups); *after*: DI
  given the groups (issue 27 item 7).
- **blind, null**: ``--models`` blind scores of noise sharing a common component (correlation 0.5), with one and
  with 10 noise attacks. *before*: the best model by AUC on all clips, then Welch on the same clips, no penalty;
  *after*: every model on the attack's clips, Bonferroni.
- **n_min / n_min_p under H0** (one noise attack, full grid): the share of null tables in which ``n_min`` (95% of
  subsamples reject) and ``n_min_p`` (the papers' first n whose prefix p <= alpha) are reached at all.
- **power**: a small real shift (standardised mean difference ``--shift``) in one attack; in 1 of 10 attacks;
  in every one of 10 attacks at a third of it; in 1 of the blind models. The blind rows also show the alternative
  to Bonferroni that was not chosen (the best model picked on a calibration half, tested on the other half).
- **grouped** (a second table, issue 27 item 7): the same ``--n`` clips a side in groups of ``--group-size`` clips
  (whole groups to a side); every attack carries its own group effect with intra-class correlation ``--icc``.
  *before*: :func:`~blindcheck.analysis.inference.dataset_inference` without the groups (Welch on clips, the
  calibration half drawn by clips); *after*: with ``groups`` (cluster-robust Welch, calibration half of whole
  groups). Rows: the null with 1, 10 and 30 noise attacks (with 10 and 30 also the grouped test on a calibration
  half drawn by clips: what keeping groups whole in the partition buys); ``--models`` blind noise models;
  ``n_min`` and ``n_min_p`` reached under the null (one attack, the default grid, ``--grid-reps`` tables); power at
  a small real shift (``--shift`` and twice it in one attack; twice it in 1 of 10 attacks); and groups of unequal
  size (one of 100 clips among ``n / group-size - 1`` of 5 a side, or log-normal sizes of 1-60 clips), null and
  twice ``--shift``, with the grouped test not chosen (CR1 on clip means) beside the chosen one (Welch on group
  means). A rejection rate above alpha (before) is no power: compare power only where the null row holds alpha.

    python benchmarks/calibration_di.py [--reps 1000] [--seed 2027] [--n 200] [--only grouped]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats as sst
from sklearn.metrics import roc_auc_score

from blindcheck.analysis.inference import (
    apply_combination,
    dataset_inference,
    fit_combination,
    group_welch_one_sided,
    logistic_fit,
    split_halves,
    welch_one_sided,
)
from blindcheck.settings import Settings

ALPHA = 0.05
FAST = Settings(di_grid=2, di_resamples=20)  # the p on all tested clips does not depend on the curve settings


def old_combine(S: np.ndarray, y: np.ndarray, partitions: int, rng: np.random.Generator) -> np.ndarray:
    """The combination as it was before issue 27: cross-fitted on the two halves, averaged over partitions."""
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    total = np.zeros(len(y))
    for _ in range(partitions):
        p, q = rng.permutation(pos), rng.permutation(neg)
        half_a = np.r_[p[: len(p) // 2], q[: len(q) // 2]]
        half_b = np.r_[p[len(p) // 2:], q[len(q) // 2:]]
        for cal, test in ((half_a, half_b), (half_b, half_a)):
            mu, sd = S[cal].mean(axis=0), S[cal].std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            w = logistic_fit((S[cal] - mu) / sd, y[cal])
            total[test] += w[0] + ((S[test] - mu) / sd) @ w[1:]
    return total / partitions


def old_attack_p(S: np.ndarray, y: np.ndarray, partitions: int, rng: np.random.Generator) -> float:
    s = S[:, 0] if S.shape[1] == 1 else old_combine(S, y, partitions, rng)
    return welch_one_sided(s[y == 1], s[y == 0])[2]


def old_blind_p(B: np.ndarray, y: np.ndarray) -> float:
    """Before: the best blind model by AUC on all clips, tested on the same clips without a penalty."""
    best = int(np.argmax([roc_auc_score(y, B[:, j]) for j in range(B.shape[1])]))
    return welch_one_sided(B[y == 1, best], B[y == 0, best])[2]


def split_blind_p(B: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    """The alternative to Bonferroni (not used): the best blind model chosen by AUC on a calibration half, tested
    on the other half."""
    cal, test = split_halves(y, rng)
    best = int(np.argmax([roc_auc_score(y[cal], B[cal, j]) for j in range(B.shape[1])]))
    s, t = B[test, best], y[test]
    return welch_one_sided(s[t == 1], s[t == 0])[2]


def cr1_p(a: np.ndarray, b: np.ndarray, ga: np.ndarray, gb: np.ndarray) -> float:
    """The grouped test not chosen: the difference of clip means, each side's variance from its K group totals of
    residuals with the CR1 factor K / (K - 1), Welch-Satterthwaite df on K - 1 per side; one-sided p."""
    def side(x, g):
        _, inv = np.unique(g, return_inverse=True)
        k, tot = inv.max() + 1, np.bincount(inv, weights=x - x.mean())
        return x.mean(), k / (k - 1) * (tot ** 2).sum() / len(x) ** 2, k

    (ma, va, ka), (mb, vb, kb) = side(a, ga), side(b, gb)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (ka - 1) + vb ** 2 / (kb - 1))
    return float(sst.t.sf(t, df))


def attacks_table(rng: np.random.Generator, y: np.ndarray, k: int, shifts: np.ndarray | float = 0.0) -> np.ndarray:
    return rng.standard_normal((len(y), k)) + np.outer(y, np.broadcast_to(shifts, (k,)))


def blind_table(rng: np.random.Generator, y: np.ndarray, m: int, shift_first: float = 0.0) -> np.ndarray:
    common = rng.standard_normal((len(y), 1))
    B = math.sqrt(0.5) * common + math.sqrt(0.5) * rng.standard_normal((len(y), m))
    B[:, 0] += shift_first * y
    return B


def rate(hits: list[bool]) -> tuple[float, float]:
    r = float(np.mean(hits))
    return r, math.sqrt(r * (1 - r) / len(hits))


def fmt(x: tuple[float, float] | None) -> str:
    return "—" if x is None else f"{100 * x[0]:5.1f}% ± {100 * x[1]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="synthetic tables per row")
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--n", type=int, default=200, help="clips per side")
    ap.add_argument("--partitions", type=int, default=10, help="partitions of the old combination")
    ap.add_argument("--models", type=int, default=8, help="blind models")
    ap.add_argument("--shift", type=float, default=0.25, help="standardised mean shift of the power rows")
    ap.add_argument("--icc", type=float, default=0.2, help="group share of an attack's variance (grouped rows)")
    ap.add_argument("--speakers", type=int, default=20, help="speakers per side (grouped row)")
    ap.add_argument("--grid-reps", type=int, default=None, help="tables for the n_min rows (default: --reps)")
    ap.add_argument("--group-size", type=int, default=10, help="clips per group (grouped table)")
    ap.add_argument("--only", choices=["ungrouped", "grouped"], default=None, help="print one table only")
    args = ap.parse_args()
    if args.only != "grouped":
        ungrouped(args)
    if args.only != "ungrouped":
        grouped(args)


def ungrouped(args: argparse.Namespace) -> None:
    """The first table: independent clips (and the one grouped null row of issue 27 item 1)."""
    rng = np.random.default_rng(args.seed)
    n, R = args.n, args.reps
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    rows: list[tuple[str, tuple | None, tuple | None]] = []
    t0 = time.perf_counter()

    def run(label: str, draw, old, new, reps: int = R) -> None:
        before, after = [], []
        for r in range(reps):
            tab = draw()
            if old is not None:
                before.append(old(tab) <= ALPHA)
            if new is not None:
                after.append(new(tab, r) <= ALPHA)
        rows.append((label, rate(before) if before else None, rate(after) if after else None))

    def new_attack(S, r):
        return dataset_inference({f"a{j}": S[:, j] for j in range(S.shape[1])}, y, FAST.replace(seed=r)).attack.p

    for k in (1, 10, 30):
        run(f"null, {k} noise attack{'s' * (k > 1)}", lambda k=k: attacks_table(rng, y, k),
            lambda S: old_attack_p(S, y, args.partitions, rng), new_attack)
        if k > 1:
            run(f"null, {k} noise attacks, old with 1 partition", lambda k=k: attacks_table(rng, y, k),
                lambda S: old_attack_p(S, y, 1, rng), None)

    # grouped: whole speakers to a side, the attack carries the speaker's effect
    per = n // args.speakers
    spk = np.repeat(np.arange(2 * args.speakers), per)
    yg = (spk < args.speakers).astype(int)

    def grouped():
        eff = rng.standard_normal(2 * args.speakers)[spk]
        return math.sqrt(args.icc) * eff + math.sqrt(1 - args.icc) * rng.standard_normal(len(spk))

    before, after = [], []
    for r in range(R):
        s = grouped()
        before.append(welch_one_sided(s[yg == 1], s[yg == 0])[2] <= ALPHA)
        after.append(dataset_inference({"a": s}, yg, FAST.replace(seed=r), groups=spk).attack.p <= ALPHA)
    if before:
        rows.append((f"grouped null: {args.speakers} speakers a side, ICC {args.icc}", rate(before), rate(after)))

    m = args.models

    def blind_new(k):
        def f(tab, r):
            S, B = tab
            return dataset_inference({f"a{j}": S[:, j] for j in range(S.shape[1])}, y, FAST.replace(seed=r),
                                     blind_scores={f"b{j}": B[:, j] for j in range(m)}).blind.p
        return f

    for k in (1, 10):
        run(f"blind null, {m} noise models (r = 0.5), {k} attack{'s' * (k > 1)}",
            lambda k=k: (attacks_table(rng, y, k), blind_table(rng, y, m)), lambda tab: old_blind_p(tab[1], y),
            blind_new(k))
    run(f"blind null, {m} noise models, alternative: chosen on a calibration half",
        lambda: blind_table(rng, y, m), None, lambda B, r: split_blind_p(B, y, rng))
    null_rows = len(rows)

    # n_min and n_min_p reached under H0 (one noise attack, the default grid)
    G = args.grid_reps or R
    full = Settings(di_resamples=100)
    reach, reach_p = [], []
    for r in range(G):
        d = dataset_inference({"a": rng.standard_normal(2 * n)}, y, full.replace(seed=r)).attack
        reach.append(d.n_min is not None)
        reach_p.append(d.n_min_p is not None)
    rows.append((f"null, 1 noise attack: n_min reached ({G} tables, 100 subsamples)", None, rate(reach)))
    rows.append((f"null, 1 noise attack: n_min_p reached ({G} tables, {full.di_grid}-point grid)", None,
                 rate(reach_p)))

    d0 = args.shift
    run(f"power, 1 attack shifted {d0}", lambda: attacks_table(rng, y, 1, d0),
        lambda S: old_attack_p(S, y, args.partitions, rng), new_attack)
    run(f"power, 1 of 10 attacks shifted {d0}", lambda: attacks_table(rng, y, 10, np.r_[d0, np.zeros(9)]),
        lambda S: old_attack_p(S, y, args.partitions, rng), new_attack)
    run(f"power, all 10 attacks shifted {d0 / 3:.3g}", lambda: attacks_table(rng, y, 10, d0 / 3),
        lambda S: old_attack_p(S, y, args.partitions, rng), new_attack)
    run(f"power, blind: 1 of {m} models shifted {d0}, 1 attack",
        lambda: (attacks_table(rng, y, 1), blind_table(rng, y, m, d0)), lambda tab: old_blind_p(tab[1], y),
        blind_new(1))
    run(f"power, blind: 1 of {m} models shifted {d0}, alternative: chosen on a calibration half",
        lambda: blind_table(rng, y, m, d0), None, lambda B, r: split_blind_p(B, y, rng))

    print(f"dataset inference at alpha = {ALPHA}: {n} suspect and {n} reference clips, {R} tables per row "
          f"(seed {args.seed}; {time.perf_counter() - t0:.0f} s)")
    print_rows(rows, null_rows, R)



def grouped(args: argparse.Namespace) -> None:
    """The grouped table (issue 27 item 7): whole groups to a side, every attack with its own group effect; DI
    without the groups (before) and with them (after) on the same tables. Its own random stream, so it prints the
    same figures with ``--only grouped``."""
    rng = np.random.default_rng([args.seed, 27])
    n, R, size = args.n, args.reps, args.group_size
    K = n // size  # groups per side
    grp = np.repeat(np.arange(2 * K), size)
    yg = (grp < K).astype(int)
    rows: list[tuple[str, tuple | None, tuple | None]] = []
    t0 = time.perf_counter()

    def table(k: int, shifts: np.ndarray | float = 0.0) -> np.ndarray:
        eff = rng.standard_normal((2 * K, k))[grp]
        return (math.sqrt(args.icc) * eff + math.sqrt(1 - args.icc) * rng.standard_normal((len(grp), k))
                + np.outer(yg, np.broadcast_to(shifts, (k,))))

    def di(S, r, groups, settings=FAST, blind=None):
        return dataset_inference({f"a{j}": S[:, j] for j in range(S.shape[1])}, yg, settings.replace(seed=r),
                                 groups=groups, blind_scores=blind)

    def run(label: str, draw) -> None:
        before, after = [], []
        for r in range(R):
            S = draw()
            before.append(di(S, r, None).attack.p <= ALPHA)
            after.append(di(S, r, grp).attack.p <= ALPHA)
        rows.append((label, rate(before), rate(after)))

    def clip_halves_p(S, r):
        """The grouped test on the held-out half of a calibration half drawn by clips, not groups."""
        cal, test = split_halves(yg, np.random.default_rng(r))
        s, t, gt = apply_combination(fit_combination(S[cal], yg[cal]), S[test]), yg[test], grp[test]
        return group_welch_one_sided(s[t == 1], s[t == 0], gt[t == 1], gt[t == 0])[2]

    for k in (1, 10, 30):
        run(f"grouped null, {k} noise attack{'s' * (k > 1)}", lambda k=k: table(k))
        if k > 1:
            hits = [clip_halves_p(table(k), r) <= ALPHA for r in range(R)]
            rows.append((f"grouped null, {k} noise attacks, grouped test, calibration half by clips", None,
                         rate(hits)))
    m = args.models
    before, after = [], []
    for r in range(R):
        S, B = table(1), table(m)  # blind models with their own group effects, correlated through a common one
        B = math.sqrt(0.5) * B + math.sqrt(0.5) * table(1)
        blind = {f"b{j}": B[:, j] for j in range(m)}
        before.append(di(S, r, None, blind=blind).blind.p <= ALPHA)
        after.append(di(S, r, grp, blind=blind).blind.p <= ALPHA)
    rows.append((f"grouped blind null, {m} noise models (r = 0.5), 1 attack", rate(before), rate(after)))
    null_rows = len(rows)

    G = args.grid_reps or R
    full = Settings(di_resamples=100)
    reach: dict[str, list[list[bool]]] = {"n_min": [[], []], "n_min_p": [[], []]}
    for r in range(G):
        S = table(1)
        for side, g in enumerate((None, grp)):
            d = di(S, r, g, full).attack
            reach["n_min"][side].append(d.n_min is not None)
            reach["n_min_p"][side].append(d.n_min_p is not None)
    rows.append((f"grouped null, 1 noise attack: n_min reached ({G} tables, 100 subsamples)",
                 rate(reach["n_min"][0]), rate(reach["n_min"][1])))
    rows.append((f"grouped null, 1 noise attack: n_min_p reached ({G} tables, {full.di_grid}-point grid)",
                 rate(reach["n_min_p"][0]), rate(reach["n_min_p"][1])))

    # unequal group sizes: the chosen test (Welch on group means) against the alternative (CR1 on clip means)
    def uneven(kind: str, shift: float):
        sizes = (np.r_[100, np.full(K - 1, 5)] if kind == "one" else
                 np.clip(np.round(rng.lognormal(1.8, 0.9, K)), 1, 60).astype(int))
        sizes = np.r_[sizes, sizes if kind == "one" else np.clip(np.round(rng.lognormal(1.8, 0.9, K)), 1, 60)]
        g = np.repeat(np.arange(2 * K), sizes.astype(int))
        yu = (g < K).astype(int)
        s = math.sqrt(args.icc) * rng.standard_normal(2 * K)[g] + math.sqrt(1 - args.icc) * rng.standard_normal(len(g))
        return s + shift * yu, yu, g

    for kind, what in (("one", f"1 group of 100 + {K - 1} of 5 a side"), ("lognormal", "log-normal sizes 1-60")):
        for shift in (0.0, 2 * args.shift):
            before, after, alt = [], [], []
            for r in range(R):
                s, yu, g = uneven(kind, shift)
                before.append(dataset_inference({"a": s}, yu, FAST.replace(seed=r)).attack.p <= ALPHA)
                after.append(dataset_inference({"a": s}, yu, FAST.replace(seed=r), groups=g).attack.p <= ALPHA)
                alt.append(cr1_p(s[yu == 1], s[yu == 0], g[yu == 1], g[yu == 0]) <= ALPHA)
            head = f"grouped {'null' if shift == 0 else f'power, shift {shift}'}, {what}"
            rows.append((head, rate(before), rate(after)))
            rows.append((head + ", alternative: CR1 on clip means", None, rate(alt)))

    d0 = args.shift
    run(f"grouped power, 1 attack shifted {d0}", lambda: table(1, d0))
    run(f"grouped power, 1 attack shifted {2 * d0}", lambda: table(1, 2 * d0))
    run(f"grouped power, 1 of 10 attacks shifted {2 * d0}", lambda: table(10, np.r_[2 * d0, np.zeros(9)]))

    print(f"\ngrouped dataset inference at alpha = {ALPHA}: {n} suspect and {n} reference clips in {K} groups of "
          f"{size} a side (whole groups to a side), ICC {args.icc}, {R} tables per row (seed {args.seed}; "
          f"{time.perf_counter() - t0:.0f} s); before: DI without groups, after: DI with them")
    print_rows(rows, null_rows, R)


def print_rows(rows: list, null_rows: int, reps: int) -> None:
    """The before/after table (a rule under the null rows) and the band of alpha +- 2 MC SE at ``reps`` tables."""
    print(f"{'':<80} {'before':>14} {'after':>14}")
    for i, (label, b, a) in enumerate(rows):
        if i == null_rows:
            print("-" * 110)
        print(f"{label:<80} {fmt(b):>14} {fmt(a):>14}")
    lo, hi = ALPHA - 2 * math.sqrt(ALPHA * (1 - ALPHA) / reps), ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    print(f"alpha ± 2 MC SE at {reps} tables: [{100 * lo:.1f}%, {100 * hi:.1f}%]")


if __name__ == "__main__":
    main()
