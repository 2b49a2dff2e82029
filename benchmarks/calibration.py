"""Calibration and power of the verdict: how often each verdict comes out when the truth is known.

Six experiments; the first three print the share of `clean`, `inconclusive` and `confounded`:

1. **Random splits of real speech** (null): the bundled FSDD clips (480, six speakers) are extracted once, then
   N random member/non-member splits of the same pool (nothing to find) each get the full blind check with
   default settings. `confounded` must stay at or under alpha; `clean` is the equivalence claim's power.
2. **Whole speakers to sides** (grouped null): every way of putting 3 of the 6 speakers on each side, checked
   with `group_by="speaker"`. Never `clean` (membership follows from the speaker), `confounded` at most alpha.
3. **Known true AUC** (simulation): synthetic feature tables in three modalities of 10 features each, where one
   feature is shifted between the sides so that the Bayes AUC is exactly the target (0.50 ... 0.70), at three
   sample sizes; the full cross-validated check with default models. `clean` at a true AUC at or above 0.65 must
   stay at or under 5%.

4. **Metadata as evidence** (:mod:`blindcheck.analysis.metadata`, no audio): the bundled FSDD metadata (digit,
   take, accent, duration; gender, sample rate and subtype are constant there and skipped) plus a column drawn at
   random per clip (``session``, 8 levels) under N random splits: the share of splits with any column significant
   after Holm (at most alpha) and with any decisive column (the criterion ``metadata``); then the power at a
   categorical column of known member / non-member shares (70/30, 60/40, 55/45) and a numeric one shifted by a
   known AUC, at 480 clips. Every rate with its Monte-Carlo standard error.

5. **Score relabellings on null tables**: synthetic tables with no association (the section-3 tables at a true AUC
   of 0.5), at ``--null-sizes``: how often the family-wise p-values of the AUC and of the isolated share reach
   alpha (at most alpha, within its MC error), and the printed power against the share called clean, with the
   score relabellings widened (the default, :data:`blindcheck.analysis.permutation.SCORE_VARIANCE_FACTOR`) and
   plain (variance factor 1, as before 2026-12-07).

6. **`clean` at a learned AUC equal to the tolerance**: section-3 tables at the Bayes AUC for which the best
   model's expected cross-validated AUC is the tolerated 0.60 at that size (``--tau-cells n:bayes,...``; the
   defaults were found on 40-100 tables per cell: at 480 clips a Bayes AUC of 0.61 is learned as 0.598 by the best
   model, ``single:all``, on average; at 1000 clips 0.605 as about 0.60). Prints each model's mean AUC over the
   tables (so that the cell can be seen to sit at the tolerance), its variance over the tables against the mean
   squared DeLong SE, and the share called clean (at most 5% for the claim "what the classifiers learn rules
   separability out" to hold at alpha 0.05), with the share a verdict would call clean were every model's SE
   widened by sqrt(2) as the score relabellings are (the same tables, the verdict re-decided; the printed power is
   not re-derived). Cells with a Bayes AUC of 0.5 give that widening's cost in clean verdicts on null tables.

With ``--test-settings`` sections 1 and 2 run with the settings of the test suite's versions of them
(tests/verbs/test_check.py: ``test_false_alarms_on_random_splits`` runs 10 random splits with one CV repeat and 999
permutations, ``test_grouped_null_splits_by_whole_speakers`` the 10 distinct speaker assignments of 120 clips with one
repeat and 40 trees) at this script's full sizes: ``--splits`` random splits of all 480 clips with ``repeats=1,
permutations=999``, and all 20 speaker assignments of all 480 clips with ``repeats=1`` (default trees).

    python benchmarks/calibration.py [--splits 40] [--sim-reps 20] [--metadata-splits 400] [--skip-real]
                                     [--skip-sim] [--skip-metadata] [--test-settings]
                                     [--null-reps 150] [--null-sizes 200,480,1000] [--skip-null]
                                     [--tau-cells 480:0.61,1000:0.605] [--tau-reps 100] [--skip-tau]
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]

from blindcheck.analysis.separability import run_separability  # noqa: E402
from blindcheck.analysis.verdict import decide  # noqa: E402
from blindcheck.extraction.pipeline import extract_features  # noqa: E402
from blindcheck.inputs.manifest import Manifest  # noqa: E402
from blindcheck.settings import Settings  # noqa: E402

STATUSES = ("clean", "inconclusive", "confounded")


def _row(label: str, counts: Counter, n: int, extra: str = "") -> str:
    cells = "  ".join(f"{counts[s]:>3} ({100 * counts[s] / n:>3.0f}%)" for s in STATUSES)
    return f"  {label:<28} {cells}  {extra}"


def _header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'':<28} {'clean':>10}  {'inconclusive':>10}  {'confounded':>10}")


def real_speech(args) -> None:
    meta = pd.read_csv(Path(args.data) / "metadata.csv")
    table = pd.DataFrame({"id": meta["id"], "path": [str(Path(args.data) / p) for p in meta["path"]],
                          "label": np.arange(len(meta)) % 2, "text": meta["text"]})
    with tempfile.TemporaryDirectory() as cache:
        feats = extract_features(Manifest(table=table, source="pool"), cache).features
    info = meta.set_index("id").loc[feats["id"]]
    texts, speakers = info["text"].to_numpy(), info["speaker"].to_numpy()
    settings = Settings(repeats=1, permutations=999) if args.test_settings else Settings(repeats=args.repeats)
    rng = np.random.default_rng(args.seed)
    counts, aucs, uppers, power, power0, p_low, p0_low = Counter(), [], [], [], [], 0, 0
    t = time.perf_counter()
    for _ in range(args.splits):
        y = np.zeros(len(feats), int)
        y[rng.permutation(len(feats))[: len(feats) // 2]] = 1
        sep = run_separability(feats, y, settings, texts=texts)
        v = decide(sep, settings)
        counts[v.status] += 1
        aucs.append(v.best_auc)
        uppers.append(v.upper_bound)
        power.append(v.power)
        p_auc0, _, pw0 = _unwidened(sep, y, settings)
        power0.append(pw0)
        p_low += sep.family.p_auc <= settings.alpha
        p0_low += p_auc0 <= settings.alpha
    per = (time.perf_counter() - t) / args.splits
    which = "the test suite's settings (repeats=1, permutations=999)" if args.test_settings else "default settings"
    _header(f"1. random splits of {len(feats)} real clips (null), {which}, {per:.1f} s per check")
    q = np.quantile(aucs, [0.05, 0.5, 0.95])
    print(_row(f"{args.splits} splits", counts, args.splits,
               f"best AUC median {q[1]:.3f} [5-95%: {q[0]:.3f}, {q[2]:.3f}]; highest upper bound median "
               f"{np.median(uppers):.3f}; printed power mean {np.mean(power):.2f} (plain score relabellings: "
               f"{np.mean(power0):.2f}; the share clean: {_rate(counts['clean'], args.splits)})"))
    print(f"  family p(AUC) <= {settings.alpha}: {_rate(p_low, args.splits)} (plain score relabellings: "
          f"{_rate(p0_low, args.splits)})")

    grouped = Settings(repeats=1 if args.test_settings else args.repeats, group_by="speaker")
    counts = Counter()
    names = sorted(set(speakers))
    splits = list(itertools.combinations(names, len(names) // 2))
    for chosen in splits:
        y = np.isin(speakers, chosen).astype(int)
        v = decide(run_separability(feats, y, grouped, groups=speakers), grouped)
        counts[v.status] += 1
    _header(f"2. whole speakers to sides (grouped null): all {len(splits)} ways of {len(names) // 2} of "
            f"{len(names)} speakers, group_by=speaker{', repeats=1' if args.test_settings else ''}")
    print(_row(f"{len(splits)} splits", counts, len(splits)))


def synthetic_table(n: int, true_auc: float, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Three modalities of 10 standard-normal features; ``recording.f00`` shifted by d between the sides so that
    the Bayes AUC is Phi(d / sqrt 2) = ``true_auc``."""
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])
    X = rng.normal(size=(n, 30))
    X[:, 0] += math.sqrt(2) * norm.ppf(true_auc) * y
    cols = [f"{mod}.f{i:02d}" for mod in ("recording", "spectral", "prosodic") for i in range(10)]
    df = pd.DataFrame(X, columns=cols)
    df.insert(0, "id", [f"c{i}" for i in range(n)])
    return df, y


def simulation(args) -> None:
    settings = Settings(repeats=1, permutations=999)
    sizes = [int(s) for s in args.sizes.split(",")]
    aucs = [float(a) for a in args.aucs.split(",")]
    rng = np.random.default_rng(args.seed + 1)
    _header(f"3. known true AUC (synthetic tables, 30 features in 3 modalities, 6 models, repeats=1, "
            f"{args.sim_reps} tables per cell; tolerated AUC {settings.tolerated_auc})")
    for n in sizes:
        for a in aucs:
            counts, t = Counter(), time.perf_counter()
            est, power = [], []
            for _ in range(args.sim_reps):
                table, y = synthetic_table(n, a, rng)
                v = decide(run_separability(table, y, settings), settings)
                counts[v.status] += 1
                est.append(v.best_auc)
                power.append(v.power)
            print(_row(f"n = {n:>5}, true AUC {a:.2f}", counts, args.sim_reps,
                       f"best AUC median {np.median(est):.3f}; printed power mean {np.mean(power):.2f}; "
                       f"{(time.perf_counter() - t) / args.sim_reps:.1f} s per check"), flush=True)


def _unwidened(sep, y: np.ndarray, settings: Settings) -> tuple[float, float, float]:
    """The family-wise p of the AUC, of the isolated share, and the printed power, had the score relabellings not
    been widened (``variance_factor=1``; the same relabelling count and generator as the check's test)."""
    from blindcheck.analysis import permutation, stats

    scores = np.column_stack([m.scores for m in sep.models])
    fam = permutation.score_permutation_test(scores, y, None, settings.permutations,
                                             np.random.default_rng(settings.seed + 7), upper_beta=settings.alpha / 2,
                                             variance_factor=1.0)
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    power = stats.clean_power_from_relabellings(fam.null_auc_max, fam.null_isolation_upper, settings.tolerated_auc,
                                                settings.tolerated_share, n1, n0, settings.alpha,
                                                permutation.FPR_TARGET)
    return fam.p_auc, fam.p_isolation, power


def score_relabellings(args) -> None:
    """Section 5: are the score relabellings' p-values and power honest on tables with no association?"""
    from blindcheck.analysis import permutation

    settings = Settings(repeats=1, permutations=999)
    sizes = [int(s) for s in args.null_sizes.split(",")]
    rng = np.random.default_rng(args.seed + 5)
    a = settings.alpha
    print(f"\n5. score relabellings on null synthetic tables (30 noise features in 3 modalities, 6 models, repeats=1, "
          f"{settings.permutations} relabellings, {args.null_reps} tables per size; widened: AUC deviations x "
          f"sqrt({permutation.SCORE_VARIANCE_FACTOR:g}), the default; plain: variance factor 1)")
    for n in sizes:
        clean = pa = pi = pa0 = pi0 = 0
        power, power0, aucs = [], [], []
        t = time.perf_counter()
        for _ in range(args.null_reps):
            table, y = synthetic_table(n, 0.5, rng)
            sep = run_separability(table, y, settings)
            v = decide(sep, settings)
            clean += v.status == "clean"
            pa += sep.family.p_auc <= a
            pi += sep.family.p_isolation <= a
            power.append(v.power)
            aucs.append([m.auc for m in sep.models])
            p_auc0, p_iso0, pw0 = _unwidened(sep, y, settings)
            pa0 += p_auc0 <= a
            pi0 += p_iso0 <= a
            power0.append(pw0)
        r = args.null_reps
        # each model's AUC variance over the tables against a fixed-score relabelling's (Hanley-McNeil at 0.5)
        n1 = n0 = n // 2
        ratio = np.var(np.array(aucs), axis=0) / ((n1 + n0 + 1) / (12 * n1 * n0))
        print(f"  n = {n:>5}: AUC variance over tables / fixed-score relabelling variance, per model: "
              + ", ".join(f"{v:.2f}" for v in ratio))
        print(f"  n = {n:>5}: family p(AUC) <= {a}: widened {_rate(pa, r)}, plain {_rate(pa0, r)}; "
              f"p(isolation) <= {a}: {_rate(pi, r)} (plain {_rate(pi0, r)})")
        print(f"           called clean {_rate(clean, r)}; printed power mean widened {np.mean(power):.3f}, "
              f"plain {np.mean(power0):.3f}; {(time.perf_counter() - t) / r:.1f} s per table", flush=True)


def learned_at_tolerance(args) -> None:
    """Section 6: is `clean` rare where the best model's expected learned AUC equals the tolerance?"""
    import dataclasses

    from blindcheck.analysis.permutation import SCORE_VARIANCE_FACTOR

    settings = Settings(repeats=1, permutations=999)
    tau, z = settings.tolerated_auc, norm.ppf(1 - settings.alpha / 2)
    w = math.sqrt(SCORE_VARIANCE_FACTOR)

    def widened(m):  # the model with its SE (and the two-sided interval DeLong's gives) widened by w
        se = m.se * w
        return dataclasses.replace(m, se=se, ci_low=max(0.0, m.auc - z * se), ci_high=min(1.0, m.auc + z * se))

    rng = np.random.default_rng(args.seed + 6)
    print(f"\n6. clean at a learned AUC equal to the tolerance ({tau}; synthetic tables as in section 3, 6 models, "
          f"repeats=1, {args.tau_reps} tables per cell; widened: every model's SE x sqrt({SCORE_VARIANCE_FACTOR:g}), "
          f"verdict re-decided)")
    for cell in args.tau_cells.split(","):
        size, auc = cell.split(":")
        n, bayes = int(size), float(auc)
        counts, wide, aucs, ses = Counter(), Counter(), [], []
        t = time.perf_counter()
        for _ in range(args.tau_reps):
            table, y = synthetic_table(n, bayes, rng)
            sep = run_separability(table, y, settings)
            counts[decide(sep, settings).status] += 1
            wide[decide(dataclasses.replace(sep, models=[widened(m) for m in sep.models]), settings).status] += 1
            aucs.append([m.auc for m in sep.models])
            ses.append([m.se for m in sep.models])
        a, s = np.array(aucs), np.array(ses)
        names = [m.name for m in sep.models]
        r = args.tau_reps
        print(f"  n = {n:>5}, Bayes AUC {bayes:.3f}: mean learned AUC per model "
              + ", ".join(f"{k} {v:.3f}" for k, v in zip(names, a.mean(axis=0), strict=True)))
        print("           AUC variance over tables / mean DeLong SE^2: "
              + ", ".join(f"{v:.2f}" for v in a.var(axis=0, ddof=1) / (s ** 2).mean(axis=0)))
        print(f"           called clean {_rate(counts['clean'], r)}, confounded {_rate(counts['confounded'], r)}; "
              f"SEs widened: clean {_rate(wide['clean'], r)}, confounded {_rate(wide['confounded'], r)}; "
              f"{(time.perf_counter() - t) / r:.1f} s per table", flush=True)


def _rate(k: int, n: int) -> str:
    p = k / n
    return f"{k:>4}/{n} = {100 * p:5.1f}% (MC SE {100 * math.sqrt(p * (1 - p) / n):.1f}%)"


def metadata(args) -> None:
    from blindcheck.analysis.metadata import metadata_evidence

    settings = Settings()
    meta = pd.read_csv(Path(args.data) / "metadata.csv")
    rng = np.random.default_rng(args.seed + 2)
    n = len(meta)
    base = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(int)
    print(f"\n4. metadata as evidence ({n} clips, default settings: {settings.metadata_permutations} relabellings, "
          f"alpha {settings.alpha}, tolerated AUC {settings.tolerated_auc})")
    sig = dec = 0
    t = time.perf_counter()
    for r in range(args.metadata_splits):
        table = meta.assign(session=rng.integers(0, 8, n).astype(str))
        rep = metadata_evidence(table, rng.permutation(base), settings.alpha, settings.tolerated_auc,
                                permutations=settings.metadata_permutations, seed=r)
        sig += bool(rep.significant)
        dec += bool(rep.decisive)
    per = (time.perf_counter() - t) / args.metadata_splits
    print(f"  random splits, any column significant (Holm)   {_rate(sig, args.metadata_splits)}")
    print(f"  random splits, any column decisive             {_rate(dec, args.metadata_splits)}   "
          f"({per:.2f} s per split)")
    reps = max(args.metadata_splits // 4, 20)
    for hi, lo in ((0.7, 0.3), (0.6, 0.4), (0.55, 0.45)):
        d = 0
        for r in range(reps):
            y = rng.permutation(base)
            table = pd.DataFrame({"gender": np.where(rng.random(n) < np.where(y == 1, hi, lo), "f", "m")})
            d += bool(metadata_evidence(table, y, settings.alpha, settings.tolerated_auc, seed=r).decisive)
        print(f"  categorical {hi:.0%}/{lo:.0%} (Bayes AUC {0.5 + (hi - lo) / 2:.3f}), decisive   {_rate(d, reps)}")
    for auc in (0.6, 0.7, 0.75):
        d = 0
        shift = math.sqrt(2) * norm.ppf(auc)
        for r in range(reps):
            y = rng.permutation(base)
            table = pd.DataFrame({"age": rng.standard_normal(n) + shift * y})
            d += bool(metadata_evidence(table, y, settings.alpha, settings.tolerated_auc, seed=r).decisive)
        print(f"  numeric, true AUC {auc:.2f}, decisive                  {_rate(d, reps)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=40, help="random null splits of the real clips")
    ap.add_argument("--data", default=str(ROOT / "tests" / "data" / "fsdd"))
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--repeats", type=int, default=None, help="CV repeats on real speech (default: built-in rule)")
    ap.add_argument("--sim-reps", type=int, default=20, help="synthetic tables per (size, true AUC)")
    ap.add_argument("--sizes", default="200,480,1000", help="sizes of section 3's tables")
    ap.add_argument("--aucs", default="0.5,0.55,0.6,0.65,0.7")
    ap.add_argument("--null-reps", type=int, default=150, help="null synthetic tables per size in section 5")
    ap.add_argument("--null-sizes", default="200,480,1000", help="sizes of section 5's null tables")
    ap.add_argument("--skip-null", action="store_true", help="skip section 5 (score relabellings on null tables)")
    ap.add_argument("--tau-cells", default="480:0.61,1000:0.605",
                    help="section 6's cells, n:Bayes AUC (the Bayes AUC the best model learns as the tolerance)")
    ap.add_argument("--tau-reps", type=int, default=100, help="tables per cell in section 6")
    ap.add_argument("--skip-tau", action="store_true", help="skip section 6 (clean at a learned AUC of tau)")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--metadata-splits", type=int, default=400, help="random splits for the metadata section")
    ap.add_argument("--skip-metadata", action="store_true")
    ap.add_argument("--test-settings", action="store_true",
                    help="sections 1-2 with the settings of the test suite's versions (repeats=1; section 1 also "
                         "permutations=999), at this script's sizes")
    args = ap.parse_args()
    if args.test_settings and args.repeats is not None:
        ap.error("--test-settings fixes repeats=1; leave --repeats out")
    if not args.skip_real:
        real_speech(args)
    if not args.skip_sim:
        simulation(args)
    if not args.skip_metadata:
        metadata(args)
    if not args.skip_null:
        score_relabellings(args)
    if not args.skip_tau:
        learned_at_tolerance(args)


if __name__ == "__main__":
    main()
