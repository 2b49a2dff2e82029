"""Command-line interface: a thin shell over the Python API.

Exit codes: 0 success, 2 usage or input error (message on stderr, no traceback). ``gate`` adds 1
(confounded) and 3 (inconclusive).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blindcheck import __version__
from blindcheck.errors import BlindcheckError

EXIT_OK, EXIT_CONFOUNDED, EXIT_INPUT, EXIT_INCONCLUSIVE = 0, 1, 2, 3


def _add_manifest_args(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    from blindcheck.asr import ASRConfig

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
    p.add_argument("--modalities", default=None,
                   help="comma-separated subset of recording,spectral,prosodic,voice,text (default: all that can run)")
    t = p.add_argument_group("text modality")
    t.add_argument("--transcripts", choices=["given", "asr", "auto"], default="auto",
                   help="given: the manifest's text; asr: Whisper for every clip; auto (default): the manifest's "
                        "text where present, ASR elsewhere")
    t.add_argument("--asr-backend", choices=["faster-whisper", "openai-whisper"], default="faster-whisper")
    t.add_argument("--asr-model", default=None, help="local model folder (faster-whisper), cached model name, or "
                                                     "checkpoint .pt (openai-whisper); default: bundled tiny.en")
    t.add_argument("--asr-device", default="cpu", help="cpu or cuda")
    t.add_argument("--asr-beam", type=int, default=1, help="beam size (default 1)")
    t.add_argument("--asr-no-pack", action="store_true",
                   help="one Whisper call per clip, instead of packing short clips into shared 28 s windows")
    t.add_argument("--asr-gap", type=float, default=ASRConfig.gap_s,
                   help=f"seconds of silence between packed clips (default {ASRConfig.gap_s})")
    t.add_argument("--embedding-model", default=None,
                   help="local sentence-transformers model folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
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
    p = sub.add_parser("gate", help="the CI form of check: one JSON line; exit 0 clean, 1 confounded, "
                                    "3 inconclusive, 2 input error")
    _add_manifest_args(p, out_required=False)
    _add_check_args(p)
    return parser


def _add_check_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("blind classifier and verdict (defaults: [tool.blindcheck] in pyproject.toml, "
                             "then built-in)")
    g.add_argument("--group-by", default=None, help="manifest column whose groups never straddle folds (e.g. speaker); "
                                                    "'voice': the speakers inferred from the voice modality")
    g.add_argument("--voice-cluster-threshold", type=float, default=None,
                   help="cosine distance at which inferred speaker clusters stop merging (default 0.90)")
    g.add_argument("--folds", type=int, default=None, help="cross-validation folds (default 5)")
    g.add_argument("--repeats", type=int, default=None, help="CV repeats (default: more when the sample is small)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default 0), recorded in result.json")
    g.add_argument("--alpha", type=float, default=None, help="significance level (default 0.05)")
    g.add_argument("--tolerated-auc", type=float, default=None, help="blind AUC you accept (default 0.60)")
    g.add_argument("--tolerated-share", type=float, default=None,
                   help="share of one side a blind model may isolate at 1%% FPR (default 0.10)")
    g.add_argument("--power", type=float, default=None, help="power needed before a clean verdict (default 0.80)")
    g.add_argument("--permutations", type=int, default=None, help="label permutations for the p-value (default 2000)")
    g.add_argument("--refit-permutations", type=int, default=None,
                   help="the family-wise p-value from N full cross-validations of every model on relabelled clips "
                        "(exact, N times the cost; at least 1/alpha - 1; default 0: relabel against the out-of-fold "
                        "scores)")
    g.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for the AUC CI (default: DeLong)")
    g.add_argument("--config", default=None, help="pyproject.toml to read [tool.blindcheck] from "
                                                  "(default: the nearest one above the working directory)")
    g.add_argument("--no-config", action="store_true", help="ignore pyproject.toml settings")


def _settings(args):
    from blindcheck.settings import load_settings

    overrides = {k: getattr(args, k) for k in ("group_by", "folds", "repeats", "seed", "alpha", "tolerated_auc",
                                               "tolerated_share", "power", "permutations", "refit_permutations",
                                               "bootstrap", "voice_cluster_threshold")}
    return load_settings(overrides, Path(args.config) if args.config else None, use_pyproject=not args.no_config)


def _run_check(args, quiet: bool):
    from blindcheck.checker import check

    settings = _settings(args)
    manifest = _load(args)
    progress, close = (None, lambda: None) if quiet else _progress(args)
    cls_progress, cls_close = (None, lambda: None) if quiet else _classifier_progress(args)
    try:
        return check(manifest, args.out, cache_dir=args.cache_dir, modalities=_modalities(args, manifest),
                     workers=args.workers, settings=settings, progress=progress, text_options=_text_options(args),
                     classifier_progress=cls_progress)
    finally:
        close()
        cls_close()


def _classifier_progress(args):
    """A bar per classifier phase (cross-validation fits, refit permutations) with the time left."""
    if args.no_progress or not sys.stderr.isatty():
        return None, lambda: None
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
    from blindcheck.checker import format_summary

    result = _run_check(args, quiet=False)
    print(format_summary(result))
    print(f"\n  wrote {Path(args.out) / 'result.json'}, blind_scores.parquet, features.parquet")
    return EXIT_OK


def cmd_gate(args) -> int:
    from blindcheck.checker import gate_line

    result = _run_check(args, quiet=True)
    print(gate_line(result))
    return {"clean": EXIT_OK, "confounded": EXIT_CONFOUNDED, "inconclusive": EXIT_INCONCLUSIVE}[result.status]


def _load(args):
    from blindcheck.manifest import ManifestOptions, load_manifest

    opts = ManifestOptions(label_column=args.label_column, member_value=args.member_value,
                           path_column=args.path_column, id_column=args.id_column, skip_missing=args.skip_missing)
    return load_manifest(args.manifest, opts)


def _text_options(args):
    from blindcheck.text import ASRConfig, TextOptions

    return TextOptions(transcripts=args.transcripts,
                       asr=ASRConfig(backend=args.asr_backend, model=args.asr_model, device=args.asr_device,
                                     beam_size=args.asr_beam, pack=not args.asr_no_pack, gap_s=args.asr_gap),
                       embedding_model=args.embedding_model)


def _modalities(args, manifest) -> list[str]:
    """The requested modalities; by default every acoustic one, plus text when it can run here."""
    from blindcheck.features import acoustic_modalities
    from blindcheck.features.voice import voice_unavailable
    from blindcheck.text import text_unavailable

    known = [*acoustic_modalities(), "voice", "text"]
    if not args.modalities:
        mods = list(known)
        why_voice = voice_unavailable()
        if why_voice:
            print(f"blindcheck: voice modality skipped: {why_voice}", file=sys.stderr)
            mods.remove("voice")
        why = text_unavailable(manifest.table, _text_options(args))
        if why:
            print(f"blindcheck: text modality skipped: {why}", file=sys.stderr)
            mods.remove("text")
        return mods
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    unknown = [m for m in mods if m not in known]
    if unknown:
        raise BlindcheckError(f"unknown modality '{unknown[0]}' (known: {', '.join(known)})")
    if "voice" in mods and voice_unavailable():
        raise BlindcheckError(f"voice modality asked for but it cannot run: {voice_unavailable()}")
    if "text" in mods:
        why = text_unavailable(manifest.table, _text_options(args))
        if why:
            raise BlindcheckError(f"text modality asked for but it cannot run: {why}")
    return mods


def _progress(args):
    if args.no_progress or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="clip", desc="extracting", file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def cmd_extract(args) -> int:
    from blindcheck.extract import extract_features, write_outputs

    manifest = _load(args)
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    progress, close = _progress(args)
    try:
        result = extract_features(manifest, cache, modalities=_modalities(args, manifest), workers=args.workers,
                                  progress=progress, text_options=_text_options(args))
    finally:
        close()
    paths = write_outputs(result, manifest, out)
    print(format_extract_summary(result, manifest, paths))
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
                         f"windows, {a['clips_redone']} redone, {a['windows_failed']} windows not trusted")
    if s.get("voice"):
        v = s["voice"]
        lines.append(f"  voice       {v['embedded']} embedded ({v['reused']} reused), {v['failed']} failed")
    audio = s["audio_seconds"]
    speed = f"; {1000 * s['seconds'] / audio:.0f} ms per second of audio" if audio and audio > 0 else ""
    lines.append(f"  time        {s['seconds']:.1f} s for {audio:.1f} s of audio{speed}, {s['workers']} workers")
    lines.append(f"  wrote       {paths['features']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"extract": cmd_extract, "check": cmd_check, "gate": cmd_gate}
    try:
        return handlers[args.verb](args)
    except BlindcheckError as exc:
        print(f"blindcheck {args.verb}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"blindcheck {args.verb}: interrupted; finished clips are in the cache", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
