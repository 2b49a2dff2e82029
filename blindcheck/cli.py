"""Command-line interface: a thin shell over the Python API.

Exit codes: 0 success, 2 usage or input error (message on stderr, no traceback), 4 internal error (a bug:
traceback in OUT/blindcheck-error.log, or on stderr without a usable OUT), 130 interrupted by SIGINT (Ctrl-C),
143 by SIGTERM. ``gate`` adds 1 (confounded split, or any attack ``confounded-attack``) and 3 (inconclusive).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import traceback
from pathlib import Path

from blindcheck import __version__
from blindcheck.errors import BlindcheckError

EXIT_OK, EXIT_CONFOUNDED, EXIT_INPUT, EXIT_INCONCLUSIVE, EXIT_INTERNAL = 0, 1, 2, 3, 4
ERROR_LOG = "blindcheck-error.log"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_manifest_args(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    from blindcheck.features.asr import COMPUTE_TYPES, ASRConfig
    from blindcheck.features.modalities import Modality

    p.add_argument("manifest", help="CSV/TSV/JSONL/Parquet manifest, Kaldi data dir or audiofolder dir")
    p.add_argument("--out", required=out_required, default=None, help="output directory")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: OUT/cache); share it across runs")
    p.add_argument("--label-column", default=None, help="column holding membership (default: detected)")
    p.add_argument("--member-value", default=None,
                   help="label value meaning 'member'; every other value is a non-member")
    p.add_argument("--path-column", default=None, help="column holding audio paths (default: detected)")
    p.add_argument("--id-column", default=None, help="column holding clip ids (default: detected, else file stem)")
    p.add_argument("--skip-missing", action="store_true",
                   help="record missing audio files in errors.csv and go on, instead of stopping")
    p.add_argument("--allow-truncated", action="store_true",
                   help="analyse files that hold less audio than their header declares (default: a decode error)")
    w = p.add_argument_group("long files (a file or segment longer than --long-file-s is analysed on evenly spaced "
                             "windows; the policy is part of the cache key)")
    w.add_argument("--long-file-s", type=_seconds_or_none, default=30.0,
                   help="files longer than this many seconds are windowed (default 30; 'none': every file whole)")
    w.add_argument("--max-windows", type=int, default=3, help="windows per long file (default 3)")
    w.add_argument("--window-s", type=float, default=5.0, help="seconds per window (default 5)")
    p.add_argument("--modalities", default=None,
                   help=f"comma-separated subset of {','.join(Modality)} (default: all that can run, music only when "
                        "named)")
    t = p.add_argument_group("text modality")
    t.add_argument("--transcripts", choices=["given", "asr", "auto", "none"], default="auto",
                   help="given: the manifest's text; asr: Whisper for every clip; auto (default): the manifest's "
                        "text where present, ASR elsewhere; none: no transcript, only the text sources")
    t.add_argument("--text-column", action="append", default=None, metavar="COL", dest="text_columns",
                   help="a manifest column of text that is not a transcript (caption, prompt, tags, lyrics), its "
                        "own text source with features text.<col>.*; repeatable (default: columns named caption, "
                        "captions, prompt, description, tags, lyrics, aspect_list, keywords, ... are recognised)")
    t.add_argument("--asr-backend", choices=["faster-whisper", "openai-whisper"], default="faster-whisper",
                   help="faster-whisper (default; CTranslate2, bundled tiny.en) or openai-whisper (needs its "
                        "checkpoint file as --asr-model)")
    t.add_argument("--asr-model", default=None, help="local model folder (faster-whisper), cached model name, or "
                                                     "checkpoint .pt (openai-whisper); default: bundled tiny.en")
    t.add_argument("--asr-device", default="cpu", help="cpu or cuda")
    t.add_argument("--asr-beam", type=int, default=1, help="beam size (default 1)")
    t.add_argument("--asr-compute-type", choices=COMPUTE_TYPES, default=None,
                   help="CTranslate2 compute type (default: int8 on the CPU, float16 on a GPU)")
    t.add_argument("--asr-no-pack", action="store_true",
                   help="one Whisper call per clip, instead of packing short clips into shared 28 s windows")
    t.add_argument("--asr-gap", type=float, default=ASRConfig.gap_s,
                   help=f"seconds of silence between packed clips (default {ASRConfig.gap_s})")
    t.add_argument("--embedding-model", default=None,
                   help="local sentence-transformers model folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="worker processes, at least 1 (default: every core this process may use); with --executor "
                        "dask and no --scheduler, the LocalCluster's worker processes")
    e = p.add_argument_group("where extraction runs")
    e.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local: a process pool on this machine (default); dask: Dask distributed (pip install "
                        "'blindcheck[dask]'), on --scheduler or else a LocalCluster here")
    e.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="address of a running Dask scheduler (with --executor dask); every worker needs blindcheck "
                        "installed and the cache directory at the same path")
    e.add_argument("--chunk-size", type=_positive_int, default=None,
                   help="clips per job (each job writes its own cache parts; default: adaptive, jobs of about 2 s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blindcheck",
        description="Can members be told from non-members without the model? Model-free checks of MIA splits.",
    )
    parser.add_argument("--version", action="version", version=f"blindcheck {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("extract", help="extract (cached) model-free features for every clip of a manifest")
    _add_manifest_args(p)
    p = sub.add_parser("check", help="can members be told from non-members without the model? (verdict + reasons)")
    _add_manifest_args(p)
    _add_check_args(p)
    p.add_argument("--match", action="store_true",
                   help="also propose a matched subset (as blindcheck match, default options): matched.csv, "
                        "match.json and a 'match' section in result.json")
    p.add_argument("--no-report", action="store_true", help="skip report.html/.md/.tex and figures/")
    p = sub.add_parser("gate", help="the CI form of check: one JSON line; exit 0 clean, 1 confounded, "
                                    "3 inconclusive, 2 input error")
    _add_manifest_args(p, out_required=False)
    _add_check_args(p)
    p.add_argument("--format", choices=["json", "github"], default="json", dest="gate_format",
                   help="json: one JSON line; github: GitHub annotations too (the Markdown summary goes to "
                        "$GITHUB_STEP_SUMMARY whenever that variable is set)")
    p.add_argument("--no-report", action="store_true",
                   help="with --out: write report.md only (no report.html, report.tex or figures/)")
    p = sub.add_parser("match", help="propose a distribution-matched member/non-member subset that a fresh blind "
                                     "check calls clean, and export it as a manifest")
    _add_manifest_args(p)
    _add_check_args(p)
    _add_match_args(p)
    p.add_argument("--no-report", action="store_true", help="skip report.html/.md/.tex and figures/")
    p = sub.add_parser("report", help="render OUT_DIR's results as report.html, report.md, report.tex and figures/")
    p.add_argument("out_dir", help="a directory written by check (holds result.json)")
    p.add_argument("--formats", default="html,md,tex", help="comma-separated subset of html,md,tex")
    p.add_argument("--no-figures", action="store_true", help="no figures (and none embedded in the HTML)")
    # attacks vs blind (correlate, di): also on check and gate, which add the attacks section when scores exist
    for verb in ("check", "gate"):
        _add_attack_args(sub.choices[verb])
    p = sub.add_parser("correlate", help="MIA attack scores against the blind baseline on the same clips")
    _add_manifest_args(p)
    _add_check_args(p)
    _add_attack_args(p)
    p.add_argument("--no-report", action="store_true", help="skip report.html/.md/.tex and figures/")
    p = sub.add_parser("di", help="dataset inference (Welch one-sided) on attack and blind scores, minimal n")
    _add_manifest_args(p)
    _add_check_args(p)
    _add_attack_args(p)
    g = p.add_argument_group("dataset inference (defaults: [tool.blindcheck] di-* keys, then built-in)")
    g.add_argument("--di-power", type=float, default=None,
                   help="share of resamples that must reject for a size n to count as enough (default 0.95)")
    g.add_argument("--di-resamples", type=_positive_int, default=None,
                   help="resamples per size n on the rejection curve (default 400)")
    g.add_argument("--di-grid", type=_positive_int, default=None,
                   help="sizes n tried on the rejection curve, log-spaced (default 40)")
    return parser


def _add_match_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("matching (defaults: [tool.blindcheck] match-* keys, then built-in)")
    g.add_argument("--method", choices=["propensity", "optimal", "trim"], default=None,
                   help="matching method (default: optimal where the sides are small enough, then propensity, "
                        "then trim, until one re-checks clean)")
    g.add_argument("--exact", action="append", default=[], metavar="COL",
                   help="match exactly within this manifest column (repeatable), e.g. speaker")
    g.add_argument("--caliper", type=float, default=None, help="caliper in SDs of the logit blind score (default 0.2)")
    g.add_argument("--ratio", type=int, default=None, help="partners per clip of the smaller side, 1:k (default 1)")
    g.add_argument("--target-auc", type=float, default=None,
                   help="the fresh check must be clean with a best AUC no higher than this (default 0.55)")
    g.add_argument("--min-retained", type=float, default=None,
                   help="share of the smaller side a subset must keep (default 0.25)")
    g.add_argument("--design", choices=["subset", "disentangle"], default="subset",
                   help="subset (default), or disentangle: same text by other speakers, same speaker saying "
                        "other texts (needs speaker and text columns)")


def _add_attack_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attack scores (mia_* columns of the manifest, or a scores file)")
    g.add_argument("--scores", default=None, help="CSV/TSV/Parquet with an 'id' column and one column per attack")
    g.add_argument("--lower-is-member", default="",
                   help="comma-separated attacks whose lower scores mean member (losses, perplexities)")


def _attack_kwargs(args, manifest) -> dict:
    """The scores file read and its ids checked against the manifest before any work (errors exit 2 at once)."""
    from blindcheck.inputs.scores import check_scores_ids, read_scores

    scores = getattr(args, "scores", None)
    if scores is not None:
        scores = read_scores(scores)
        msg = check_scores_ids(manifest.table["id"], scores).message()
        if msg:
            print(f"blindcheck {args.verb}: warning: {msg}", file=sys.stderr)
    return {"scores": scores,
            "lower_is_member": tuple(a.strip() for a in getattr(args, "lower_is_member", "").split(",") if a.strip())}


def format_attacks(corr) -> str:
    """The attacks table of ``correlate`` / ``check``."""
    lines = ["", f"  attacks vs blind ({corr.blind_model}, split {corr.split_status})",
             f"  {'attack':<22} {'n':>5} {'AUC':>5} {'CI':>13} {'TPR@1%':>7} {'blind':>5} {'p(a>b)':>7} {'rho':>5} "
             f"{'resid.':>6} {'strat.':>6}  status"]
    for a in corr.attacks:
        m = a.metrics
        st = f"{m['stratified_auc']:.2f}" if m["stratified_auc"] == m["stratified_auc"] else "—"
        ci = f"[{m['ci_low']:.2f}, {m['ci_high']:.2f}]"
        lines.append(f"  {a.name[:22]:<22} {m['n']:>5} {m['auc']:>5.2f} {ci:>13} "
                     f"{100 * m['tpr_at_1pct_fpr']:>6.0f}% {m['blind_auc']:>5.2f} {m['delong_p']:>7.3f} "
                     f"{m['spearman']:>5.2f} {m['residual_auc']:>6.2f} {st:>6}  {a.status}")
        lines += [f"    - {r}" for r in a.reasons]
    return "\n".join(lines)


def cmd_correlate(args) -> int:
    from blindcheck.verbs import correlate

    settings, manifest = _settings(args), _load(args)
    corr = correlate(manifest, out=args.out, cache_dir=args.cache_dir, settings=settings,
                     extraction=_extraction(args), modalities=args.modalities,
                     **_attack_kwargs(args, manifest))
    print(f"blindcheck correlate — {corr.check.manifest.source}: blind verdict {corr.split_status.upper()}")
    print(format_attacks(corr))
    print(f"\n  wrote {Path(args.out) / 'result.json'} (attacks), attacks.parquet, blind_scores.parquet")
    _render_report(args)
    return EXIT_OK


def cmd_di(args) -> int:
    from blindcheck.verbs import dataset_inference_manifest

    settings, manifest = _settings(args), _load(args)
    di = dataset_inference_manifest(manifest, out=args.out, cache_dir=args.cache_dir,
                                    settings=settings, extraction=_extraction(args),
                                    modalities=args.modalities, **_attack_kwargs(args, manifest))
    test = "Welch one-sided t-test" + (f" on '{di.group_by}' group means" if di.group_by is not None else "")
    print(f"blindcheck di — {di.check.manifest.source}: {test} at alpha = {di.alpha}, n per side "
          f"for {100 * di.power:.0f}% rejection over {di.resamples} subsamples")
    for d in (di.attack, di.blind):
        if d is not None:
            n_p = d.n_min_p if d.n_min_p is not None else "not reached"
            print(f"  {d.name[:40]:<40} p = {d.p:.3g} on {d.tested_on}  minimal n = "
                  f"{d.n_min if d.n_min is not None else 'not reached'}  (first n with p <= alpha, not a test: {n_p})")
    print("\n".join(f"  - {r}" for r in di.reasons))
    print(f"\n  wrote {Path(args.out) / 'result.json'} (di)")
    return EXIT_OK


def _add_check_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("blind classifier and verdict (defaults: [tool.blindcheck] in pyproject.toml, "
                             "then built-in)")
    g.add_argument("--group-by", default=None, help="manifest column whose groups never straddle folds (e.g. speaker); "
                                                    "'voice': the speakers inferred from the voice modality")
    g.add_argument("--voice-cluster-threshold", type=float, default=None,
                   help="cosine distance at which inferred speaker clusters stop merging (default 0.90)")
    g.add_argument("--folds", type=int, default=None,
                   help="cross-validation folds (default 5; fewer where a side has fewer clips or groups, "
                        "which the summary states)")
    g.add_argument("--repeats", type=_positive_int, default=None,
                   help="CV repeats, at least 1 (default: more when the sample is small)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default 0), recorded in result.json")
    g.add_argument("--alpha", type=float, default=None, help="significance level (default 0.05)")
    g.add_argument("--tolerated-auc", type=float, default=None, help="blind AUC you accept (default 0.60)")
    g.add_argument("--tolerated-share", type=float, default=None,
                   help="share of one side a blind model may isolate at 1%% FPR (default 0.10)")
    g.add_argument("--power", type=float, default=None,
                   help="power of the sample-size advice: the clips an inconclusive split would need (default "
                        "0.80; a clean verdict rests on the confidence bounds, not on it)")
    g.add_argument("--permutations", type=int, default=None, help="label permutations for the p-value (default 2000)")
    g.add_argument("--refit-permutations", type=int, default=None,
                   help="the family-wise p-value from N full cross-validations of every model on relabelled clips "
                        "(exact, N times the cost; at least 1/alpha - 1; default 0: relabel against the out-of-fold "
                        "scores)")
    g.add_argument("--refit-repeats", type=int, default=None,
                   help="CV repeats behind the refit test's statistic, observed and relabelled alike: the check's "
                        "first N (default 1: one repeat per relabelling; 0: every repeat, the verdict's own scores, "
                        "at that many times the cost); used only with --refit-permutations")
    g.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for the AUC CI (default: DeLong)")
    g.add_argument("--ignore-column", action="append", default=None, metavar="COL",
                   help="a manifest column not to test as metadata evidence (repeatable; e.g. the column the split "
                        "was drawn on)")
    g.add_argument("--metadata-permutations", type=int, default=None,
                   help="relabellings for the metadata columns' p-values (default 1999)")
    g.add_argument("--config", default=None, help="pyproject.toml to read [tool.blindcheck] from "
                                                  "(default: the nearest one above the working directory)")
    g.add_argument("--no-config", action="store_true", help="ignore pyproject.toml settings")


# Settings field -> the argparse dest of its flag (on check, gate, match, correlate and di; the match_* and di_*
# ones on their verbs only). The report's "equivalent command" echoes the check ones
# (blindcheck.reporting.sections._CLI_SETTINGS; tests/reporting keeps the two in step).
SETTINGS_FLAGS = {**{k: k for k in ("group_by", "folds", "repeats", "seed", "alpha", "tolerated_auc",
                                    "tolerated_share", "power", "permutations", "refit_permutations",
                                    "refit_repeats", "bootstrap", "voice_cluster_threshold",
                                    "metadata_permutations", "di_power", "di_resamples", "di_grid")},
                  "metadata_ignore": "ignore_column", "match_caliper": "caliper", "match_ratio": "ratio",
                  "match_target_auc": "target_auc", "match_min_retained": "min_retained"}


def _settings(args):
    from blindcheck.settings import load_settings

    overrides = {key: getattr(args, dest, None) for key, dest in SETTINGS_FLAGS.items()}
    if overrides["metadata_ignore"] is not None:
        overrides["metadata_ignore"] = tuple(overrides["metadata_ignore"])
    return load_settings(overrides, Path(args.config) if args.config else None, use_pyproject=not args.no_config)


def _run_check(args, notes_to_stderr: bool):
    settings = _settings(args)  # settings first: a refused setting costs no manifest reading
    return _run_check_on(args, _load(args), notes_to_stderr, settings)


def _run_check_on(args, manifest, notes_to_stderr: bool, settings):
    """check() with the CLI's progress; the run's notes go to stderr with ``notes_to_stderr`` (verbs whose stdout
    does not print the check's summary, which carries them)."""
    from blindcheck.verbs import check

    # progress goes to stderr (bars on a terminal, plain lines in a log), so even gate's stdout stays one JSON line
    progress, close = _progress(args)
    cls_progress, cls_close = _classifier_progress(args)
    try:
        result = check(manifest, args.out, cache_dir=args.cache_dir, settings=settings, progress=progress,
                       extraction=_extraction(args), modalities=args.modalities, classifier_progress=cls_progress,
                       **_attack_kwargs(args, manifest),
                       command=["blindcheck", *getattr(args, "argv", [])])
    finally:
        close()
        cls_close()
    if notes_to_stderr:  # else the summary on stdout carries the notes: said once
        for note in result.notes:
            print(f"blindcheck {args.verb}: note: {note}", file=sys.stderr)
    return result


class _PlainProgress:
    """Progress as plain lines on stderr, for logs (CI) where a bar cannot redraw: the first update, then at most
    one line every ``every_s`` seconds, and the last."""

    def __init__(self, unit: str, every_s: float = 10.0):
        import time

        self.unit, self.every_s, self.clock = unit, every_s, time.monotonic
        self.last: dict[str, float] = {}

    def line(self, phase: str, done: int, total: int, seconds_left: float | None = None) -> None:
        now = self.clock()
        if done < total and phase in self.last and now - self.last[phase] < self.every_s:
            return
        if done >= total and self.last.get(phase) == -1.0:
            return
        self.last[phase] = -1.0 if done >= total else now
        left = f", ~{seconds_left:.0f} s left" if seconds_left is not None and done < total else ""
        print(f"blindcheck: {phase} {done}/{total} {self.unit}s ({100 * done / max(total, 1):.0f}%){left}",
              file=sys.stderr, flush=True)


def _classifier_progress(args):
    """A bar per classifier phase (cross-validation fits, refit permutations) with the time left; plain lines
    when stderr is not a terminal."""
    if args.no_progress:
        return None, lambda: None
    if not sys.stderr.isatty():
        return _PlainProgress("fit").line, lambda: None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(phase: str, done: int, total: int, seconds_left: float | None) -> None:
        bar = bars.get(phase)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[phase] = tqdm(total=total, unit="fit", desc=phase, file=sys.stderr, leave=False)
        bar.total, bar.n = total, done
        if seconds_left is not None:
            bar.set_postfix_str(f"~{seconds_left:.0f} s left", refresh=False)
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def cmd_check(args) -> int:
    from blindcheck.reporting.terminal import format_summary

    result = _run_check(args, notes_to_stderr=False)
    summary = _with_notes(format_summary(result, args.out), result.notes)
    from blindcheck.verbs import write_summary
    write_summary(args.out, summary)
    if result.attacks is not None:
        summary += "\n" + format_attacks(result.attacks)
    print(summary)
    print(f"\n  wrote {Path(args.out) / 'result.json'}, blind_scores.parquet, features.parquet, summary.txt")
    if args.match:
        from blindcheck.reporting.terminal import format_match_summary
        from blindcheck.verbs import match_after_check

        res, _ = match_after_check(result, out=args.out, manifest_options=_manifest_options(args))
        print("\n" + format_match_summary(res))
    _render_report(args)
    return EXIT_OK


def _render_report(args) -> None:
    """The report at the end of a verb that wrote a result directory (``--no-report`` skips it)."""
    if args.no_report:
        return
    from blindcheck.reporting import report

    paths = report(args.out, progress=_report_progress(args))
    print(f"  report {paths.html} (+ report.md, report.tex, {len(paths.figures)} figure files) "
          f"in {paths.seconds:.1f} s")


def _report_progress(args):
    """The report's phases as plain lines on stderr (None with --no-progress)."""
    return None if args.no_progress else (lambda line: print(f"blindcheck: {line}", file=sys.stderr, flush=True))


def cmd_report(args) -> int:
    from blindcheck.reporting import FORMATS, report

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise BlindcheckError(f"unknown report format '{bad[0]}' (known: {', '.join(FORMATS)})")
    paths = report(args.out_dir, formats=formats, figures=not args.no_figures)
    for p in (paths.html, paths.md, paths.tex):
        if p is not None:
            print(f"wrote {p}")
    if paths.figures:
        print(f"wrote {len(paths.figures)} figure files under {Path(args.out_dir) / 'figures'}")
    return EXIT_OK


def _with_notes(summary: str, notes: list[str]) -> str:
    return summary + "".join(f"\n  note: {n}" for n in notes)




def cmd_match(args) -> int:
    """Exit 0 when every subset asked for re-checks clean, 1 when none (or not all) does, 2 on input errors."""
    from blindcheck.analysis.matching import MatchOptions
    from blindcheck.reporting.terminal import format_match_summary
    from blindcheck.verbs import check_match_options, match_after_check

    options = MatchOptions(method=args.method, exact=tuple(args.exact), design=args.design)
    settings = _settings(args)
    manifest = _load(args)
    check_match_options(manifest.table, options)  # refused before the extraction
    result = _run_check_on(args, manifest, True, settings)
    res, paths = match_after_check(result, options, args.out, _manifest_options(args))
    print(format_match_summary(res))
    print(f"\n  wrote {', '.join(str(p) for p in paths.values())}, result.json (match)")
    _render_report(args)
    return EXIT_OK if res.success else EXIT_CONFOUNDED


def cmd_gate(args) -> int:
    from blindcheck.reporting.terminal import format_summary, gate_line

    result = _run_check(args, notes_to_stderr=True)
    from blindcheck.verbs import write_summary
    write_summary(args.out, _with_notes(format_summary(result, args.out), result.notes))
    print(gate_line(result))
    from blindcheck.reporting.ci import annotations, write_step_summary

    saved = result.to_dict()
    if args.gate_format == "github":
        print("\n".join(annotations(saved)))
    write_step_summary(saved, args.out)
    if args.out:  # the folder a workflow uploads: report.md always, the rest unless --no-report
        from blindcheck.reporting import report

        report(args.out, formats=("md",) if args.no_report else ("html", "md", "tex"), figures=not args.no_report,
               progress=_report_progress(args))
    if result.attacks is not None and result.attacks.confounded:
        return EXIT_CONFOUNDED
    return {"clean": EXIT_OK, "confounded": EXIT_CONFOUNDED, "inconclusive": EXIT_INCONCLUSIVE}[result.status]


def _manifest_options(args):
    from blindcheck.inputs.manifest import ManifestOptions

    return ManifestOptions(label_column=args.label_column, member_value=args.member_value,
                           path_column=args.path_column, id_column=args.id_column, skip_missing=args.skip_missing)


def _load(args):
    from blindcheck.inputs.manifest import load_manifest

    return load_manifest(args.manifest, _manifest_options(args))


def _text_options(args):
    from blindcheck.features.text import ASRConfig, TextOptions

    return TextOptions(transcripts=args.transcripts, text_columns=args.text_columns,
                       asr=ASRConfig(backend=args.asr_backend, model=args.asr_model, device=args.asr_device,
                                     compute_type=args.asr_compute_type, beam_size=args.asr_beam,
                                     pack=not args.asr_no_pack, gap_s=args.asr_gap),
                       embedding_model=args.embedding_model)


def _extraction(args, modalities=None):
    """The flags of extraction as one :class:`blindcheck.extraction.pipeline.ExtractionConfig` (the CLI alone
    knows flags)."""
    from blindcheck.extraction.pipeline import ExtractionConfig

    return ExtractionConfig(modalities=tuple(modalities) if modalities else None, workers=args.workers,
                            executor=args.executor, scheduler=args.scheduler, chunk_size=args.chunk_size,
                            text=_text_options(args), allow_truncated=args.allow_truncated,
                            long_file_s=args.long_file_s, max_windows=args.max_windows, window_s=args.window_s)


def _seconds_or_none(value: str) -> float | None:
    if value.strip().lower() in ("none", "off", "whole"):
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {value!r}") from None


def _modalities(args, manifest) -> list[str]:
    """The modalities to analyse: :func:`blindcheck.extraction.modalities.choose_modalities`, the API's own rule."""
    from blindcheck.extraction.modalities import choose_modalities

    choice = choose_modalities(manifest.table, args.modalities, _text_options(args))
    if choice.note:
        print(f"blindcheck {args.verb}: note: {choice.note}", file=sys.stderr)
    return choice.modalities


def _progress(args):
    if args.no_progress:
        return None, lambda: None
    if not sys.stderr.isatty():
        plain = _PlainProgress("clip")
        return (lambda done, total: plain.line("extracting", done, total)), lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="clip", desc="extracting", file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def cmd_extract(args) -> int:
    from blindcheck.extraction.pipeline import extract_features
    from blindcheck.verbs import write_outputs

    manifest = _load(args)
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    progress, close = _progress(args)
    try:
        result = extract_features(manifest, cache, _extraction(args, _modalities(args, manifest)),
                                  progress=progress)
    finally:
        close()
    paths = write_outputs(result, manifest, out)
    summary = format_extract_summary(result, manifest, paths)
    from blindcheck.verbs import write_summary
    write_summary(args.out, summary)
    print(summary)
    return EXIT_OK


def format_extract_summary(result, manifest, paths) -> str:
    s = result.stats
    lines = [f"blindcheck extract — {manifest.source}"]
    lines.append(f"  clips       {s['clips']:>6}  ({manifest.n_members} members, {manifest.n_nonmembers} non-members"
                 + (f", {len(manifest.missing)} missing files" if len(manifest.missing) else "") + ")")
    per_mod = ", ".join(f"{m} {len(result.feature_columns(m))}" for m in result.modalities)
    lines.append(f"  in table    {s['in_table']:>6}  with {len(result.feature_columns())} features ({per_mod})")
    if s["failed"]:
        by_stage = result.errors.groupby("stage")["id"].nunique().to_dict()
        stages = ", ".join(f"{k} {v}" for k, v in sorted(by_stage.items()))
        lines.append(f"  failed      {s['failed']:>6}  ({stages}) -> {paths['errors']}")
        for r in result.errors.head(3).itertuples():
            lines.append(f"    {r.path}: {r.stage}: {r.message}")
        if len(result.errors) > 3:
            lines.append(f"    ... {len(result.errors) - 3} more in {paths['errors'].name}")
    else:
        lines.append(f"  failed      {0:>6}")
    if s["with_notes"]:
        lines.append(f"  with notes  {s['with_notes']:>6}  (NaN features with a reason) -> {paths['notes']}")
    comp = ", ".join(f"{m} {s['computed'][m]}/{s['reused'][m]}" for m in s["computed"])
    lines.append(f"  computed/reused from cache: {comp}")
    if s.get("text"):
        t = s["text"]
        lines.append(f"  text        {t['given']} given transcripts, {t['transcribed']} transcribed "
                     f"({t['transcripts_reused']} reused), {t['embedded']} embedded ({t['embeddings_reused']} reused), "
                     f"{t['failed']} failed")
        if t.get("asr") and t["transcribed"]:
            a = t["asr"]
            lines.append(f"  asr         {a['packed_clips']}/{t['transcribed']} clips packed in {a['packed_windows']} "
                         f"windows, {a['clips_redone']} redone, {a['windows_failed']} windows not trusted"
                         + (f", {a['windowed_clips']} long files on their windows" if a.get("windowed_clips") else ""))
        lines += [f"  note        {n}" for n in t.get("notes", [])]
    if s.get("voice"):
        v = s["voice"]
        lines.append(f"  voice       {v['embedded']} embedded ({v['reused']} reused), {v['failed']} failed"
                     + (f", {v['windowed']} long files on their windows" if v.get("windowed") else ""))
    audio = s["audio_seconds"]
    if audio == audio and audio > 0:  # known only when the recording modality ran
        lines.append(f"  time        {s['seconds']:.1f} s for {audio:.1f} s of audio; "
                     f"{1000 * s['seconds'] / audio:.0f} ms per second of audio, {s.get('executor', '')}")
    else:
        lines.append(f"  time        {s['seconds']:.1f} s, {s.get('executor', '')}")
    lines.append(f"  wrote       {paths['features']}")
    return "\n".join(lines)


def _check_out(args) -> None:
    """The output (and cache) directory must be a writable directory, checked before any work is done."""
    for flag, value in (("--out", getattr(args, "out", None)), ("--cache-dir", getattr(args, "cache_dir", None))):
        if value is None:
            continue
        d = Path(value).absolute()
        if d.exists() and not d.is_dir():
            raise BlindcheckError(f"{flag} {value} is a file, not a directory")
        if d.is_dir():  # write a file: catches read-only file systems too
            try:
                with tempfile.NamedTemporaryFile(dir=d, prefix=".blindcheck-write-test-"):
                    pass
            except OSError as exc:
                raise BlindcheckError(f"{flag} {value}: cannot write there ({exc.strerror or exc})") from None
            continue
        parent = next(p for p in d.parents if p.exists())  # created later, with its missing parents
        if not parent.is_dir():
            raise BlindcheckError(f"{flag} {value}: cannot be created, {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BlindcheckError(f"{flag} {value}: cannot be created, {parent} is not writable")


def _internal_error(args, exc: BaseException) -> int:
    """An unexpected exception: a bug. Exit 4 (never 0, 1 or 3, which gate gives meanings), traceback kept."""
    tb = traceback.format_exc()
    where = "stderr"
    if getattr(args, "out", None):
        try:
            log = Path(args.out) / ERROR_LOG
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"blindcheck {__version__} {args.verb}: {' '.join(sys.argv)}\n{tb}", encoding="utf-8")
            where = str(log)
        except OSError:
            pass
    if where == "stderr":
        print(tb, file=sys.stderr, end="")
    print(f"blindcheck {args.verb}: internal error ({type(exc).__name__}: {exc}); this is a bug in blindcheck, "
          f"please report it with the traceback in {where}", file=sys.stderr)
    return EXIT_INTERNAL


def _interrupted(args, exc: KeyboardInterrupt) -> int:
    import signal

    signum = getattr(exc, "signum", signal.SIGINT)
    if not args.verb:
        resume = "nothing was done yet; run the same command again"
    elif getattr(args, "out", None) or getattr(args, "cache_dir", None):
        cache = Path(args.cache_dir) if args.cache_dir else Path(args.out) / "cache"
        resume = f"finished clips are kept in the cache {cache}; run the same command again to resume"
    else:
        resume = "nothing was kept (no --out or --cache-dir); pass --cache-dir to keep finished clips across runs"
    verb = f"blindcheck {args.verb}" if args.verb else "blindcheck"
    print(f"{verb}: interrupted ({signal.Signals(signum).name}); {resume}", file=sys.stderr)
    return 128 + int(signum)


def main(argv: list[str] | None = None) -> int:
    import argparse as _argparse
    import threading

    from blindcheck.runtime.pools import acknowledge, interrupt_signals

    # Signals first: a Ctrl-C while the parser imports its defaults (numpy, ...) is an interruption too.
    signals = interrupt_signals() if threading.current_thread() is threading.main_thread() else \
        contextlib.nullcontext()
    args = _argparse.Namespace(verb="", out=None, cache_dir=None)
    with signals:
        try:
            args = build_parser().parse_args(argv)
            args.argv = list(sys.argv[1:] if argv is None else argv)
            handlers = {"extract": cmd_extract, "check": cmd_check, "gate": cmd_gate, "match": cmd_match,
                        "report": cmd_report, "correlate": cmd_correlate, "di": cmd_di}
            _check_out(args)
            return handlers[args.verb](args)
        except BlindcheckError as exc:
            print(f"blindcheck {args.verb}: error: {exc.for_cli()}", file=sys.stderr)
            return EXIT_INPUT
        except KeyboardInterrupt as exc:
            acknowledge()
            return _interrupted(args, exc)
        except Exception as exc:
            return _internal_error(args, exc)


if __name__ == "__main__":
    sys.exit(main())
