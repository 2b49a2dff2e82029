"""The text stage: transcripts (given or ASR) and the text sources that are not transcripts (captions, prompts,
descriptions, tags, lyrics), lexical statistics and sentence embeddings of each for every clip, cached; the
per-clip computation lives in :mod:`blindcheck.features.text` and :mod:`blindcheck.features.asr`."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from blindcheck.errors import BlindcheckError, option
from blindcheck.extraction.cache import windowed_key
from blindcheck.extraction.stages import StageResult, run_stage
from blindcheck.features.asr import WINDOW_SEP, transcribe
from blindcheck.features.text import (
    LEXICAL,
    TRANSCRIPT_COLUMNS,
    Embedder,
    TextOptions,
    asr_unavailable,
    default_embedding_model,
    lexical,
    model_tag,
    model_vocabulary,
)
from blindcheck.inputs.audio import WHOLE_FILES, WindowPolicy

_EMBEDDERS: dict[tuple, Embedder] = {}


_EMBED_LOCK = threading.Lock()


EMBED_JOB = 256  # transcripts per embedding job


def _embed_job(job: dict) -> int:
    """One batch of transcripts, on whichever executor: the model is loaded once per process and settings (lazily
    on a Dask worker), and the worker writes the embeddings to the cache itself as a new part (keyed by a hash of
    the transcript), so that no vector passes through the driver. Returns how many it wrote."""
    from blindcheck.extraction.cache import Store
    from blindcheck.features.asr import threads_here

    threads, _ = threads_here(job["threads"]) if job["threads"] is not None else (None, 1)
    key = (job["model"], job["device"], threads)
    with _EMBED_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS.clear()
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
            _EMBEDDERS[key] = Embedder(job["model"], job["device"])
    vecs = _EMBEDDERS[key].encode(job["texts"])
    df = pd.DataFrame(vecs, columns=[f"emb_{j:03d}" for j in range(vecs.shape[1])])
    df.insert(0, "content_hash", job["keys"])  # the cache's key column; here a hash of the transcript
    Store(job["cache"]).append_features(job["tag"], df)
    return len(df)


def _text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _coverage(has: np.ndarray, labels: np.ndarray | None, what: str = "a transcript") -> str:
    text = f"{int(has.sum())} of {len(has)} clips have {what}"
    if labels is not None:
        m, n = labels == 1, labels == 0
        text += f" (members {int(has[m].sum())}/{int(m.sum())}, non-members {int(has[n].sum())}/{int(n.sum())})"
    return text


PATH_ALPHA = 0.01  # a difference in decoding paths between the sides this unlikely under chance stops the run


def _check_decoding_paths(modes: np.ndarray, labels: np.ndarray, ok: np.ndarray) -> None:
    """Packed transcription falls back to one call per clip for the clips a packed window left doubtful. Those
    clips are decoded differently (no neighbours, no level matching), so where they fall mostly on one side the
    text differs by side through its decoding path: stop, and say how to decode every clip the same way."""
    from scipy.stats import fisher_exact

    single = (modes == "single") & ok
    m, n = (labels == 1) & ok, (labels == 0) & ok
    a, b = int(single[m].sum()), int(single[n].sum())
    if a + b == 0 or not m.any() or not n.any():
        return
    p = fisher_exact([[a, int(m.sum()) - a], [b, int(n.sum()) - b]])[1]
    if p <= PATH_ALPHA:
        raise BlindcheckError(
            f"ASR decoded {a} of {int(m.sum())} members and {b} of {int(n.sum())} non-members one clip at a time "
            f"(packed windows left them doubtful; Fisher p = {p:.2g}): text from two decoding paths would differ "
            "by side through the path; transcribe every clip alone "
            f"({option('ASRConfig(pack=False)', '--asr-no-pack')})")


def extract_text(rows: pd.DataFrame, store, options: TextOptions, workers: int = 1, executor=None,
                 policy: WindowPolicy = WHOLE_FILES, allow_truncated: bool = False) -> StageResult:
    """Transcripts, the other text sources and ``text.*`` features for ``rows`` (columns: id, path, content_hash,
    start, end, given_text, label, duration_s, and ``source:<name>`` per text source that is not a transcript;
    optionally ``has_speech``, the content gate, and ``windowed``: the clips the acoustic stage analysed on the
    windows of ``policy``).
    Returns a :class:`~blindcheck.extraction.stages.StageResult` with ``features`` (id, transcript, ``text.*`` of
    the transcript; per source ``text:<name>``, its
    text, and ``text.<name>.*``), ``transcripts`` (None without a transcript source), ``errors`` (list of dicts)
    and ``stats``.

    The transcript (given or ASR) and each other source are separate texts with separate features: a source's text
    is never replaced by or joined with ASR output. A clip without a source's text has NaN ``text.<name>.*``
    features (a note gives the coverage per side); a source empty for every clip is skipped with a note.

    A windowed clip is transcribed on those windows only, its transcript theirs joined in order by
    :data:`blindcheck.features.asr.WINDOW_SEP` (see :func:`blindcheck.features.asr.transcribe`), cached under a key
    that holds the policy (:func:`blindcheck.extraction.cache.windowed_key`). Its ``text.*`` features describe
    that transcript: counts (``n_chars``, ``n_words``) are over the windows' speech (``count x window_s`` seconds,
    the same for every windowed clip of a run), not the whole file's, and the separators are left out of every
    lexical statistic; the text features hold no rate (words per second) to mislead. A given transcript is the
    manifest's, of the whole file.

    ASR windows and embedding batches run on ``executor`` (e.g. a :class:`blindcheck.runtime.executors.DaskExecutor`,
    whose workers load each model once and must see the cache directory) or, by default, in spawned local
    processes: ``workers`` for ASR, one for the embeddings. ``allow_truncated``: ASR decodes a file that holds
    less than its header declares as it is, as the acoustic stage did (else such a file is an ``asr`` error)."""
    if options.transcripts not in ("given", "asr", "auto", "none"):
        raise BlindcheckError(f"{option('transcripts')} must be given, asr, auto or none, not "
                              f"'{options.transcripts}'")
    sources = [c.split(":", 1)[1] for c in rows.columns if c.startswith("source:")]
    labels = rows["label"].to_numpy() if "label" in rows else None
    notes: list[str] = []
    use_transcript = options.transcripts != "none"
    if options.transcripts == "auto" and sources:
        has = (rows["given_text"].fillna("").astype(str).str.strip() != "").to_numpy()
        why = None if has.all() else asr_unavailable(options)
        if why:
            use_transcript = False
            notes.append(f"no transcript source ({why}); the text modality reads {', '.join(sources)} alone")
    if use_transcript:
        transcripts, errors, stats = _transcripts(rows, store, options, workers, executor, policy, allow_truncated)
        notes = stats["notes"] = notes + stats["notes"]  # one list: the sources' notes below join it
    else:
        transcripts, errors = None, []
        stats = {"given": 0, "transcribed": 0, "transcripts_reused": 0, "embedded": 0, "embeddings_reused": 0,
                 "failed": 0, "notes": notes}
    failed = {e["id"] for e in errors}
    keep = ~rows["id"].isin(failed).to_numpy()

    texts = {}  # what is embedded: name -> (texts, which rows have one); the transcript is named ""
    if transcripts is not None:
        texts[""] = (transcripts["text"].astype(str).to_numpy(), keep)
    stats["sources"] = {}
    for name in sources:
        t = rows[f"source:{name}"].fillna("").astype(str).str.strip().to_numpy()
        has = t != ""
        stats["sources"][name] = {"clips": int(has.sum()), "missing": int((~has).sum())}
        if not has.any():
            notes.append(f"text source '{name}' is empty for every clip: skipped")
            continue
        if not has.all():
            notes.append(f"text source '{name}': {_coverage(has, labels, 'a ' + name)}; the others have NaN "
                         f"text.{name}.* features")
        texts[name] = (t, has & keep)
    if transcripts is None and len(texts) == 0:
        raise BlindcheckError("the text modality has no text: no transcript and every text source is empty")

    model_path = options.embedding_model or default_embedding_model()
    if not Path(model_path).exists():
        raise BlindcheckError(f"embedding model folder not found: {model_path} (blindcheck never downloads models)")
    etag = f"emb-{model_tag(model_path, store.root)}"
    vocab = model_vocabulary(model_path)
    keys = {name: np.array([_text_key(x) for x in t]) for name, (t, _) in texts.items()}
    wanted = {k: x for name, (t, ok) in texts.items() for k, x, o in zip(keys[name], t, ok, strict=True) if o}
    ecache = store.read_features(etag, np.array(sorted(wanted)))
    missing = sorted(k for k in wanted if ecache.empty or k not in ecache.index)
    stats["embeddings_reused"] = len(wanted) - len(missing)
    if missing:
        stats["embedded"] = _embed_missing(missing, wanted, model_path, options.embedding_device, store, etag,
                                           executor)
        store.compact([etag])
        ecache = store.read_features(etag, np.array(sorted(wanted)))
    emb_cols = [c for c in ecache.columns if c.startswith("emb_")]
    parts = [pd.DataFrame({"id": rows["id"].to_numpy()})]
    if transcripts is None:  # no transcript: an empty one, so that nothing downstream reads the manifest's instead
        parts.append(pd.DataFrame({"transcript": np.full(len(rows), "", dtype=object)}))
    for name, (t, ok) in texts.items():
        prefix = "text." if name == "" else f"text.{name}."
        joined = (transcripts["windowed"].to_numpy(dtype=bool) if name == "" else np.zeros(len(t), dtype=bool))
        lex = pd.DataFrame([lexical(x.replace(WINDOW_SEP, " ") if j else x, vocab) for x, j in zip(t, joined,
                                                                                                  strict=True)],
                           columns=LEXICAL)
        emb = ecache.reindex(keys[name])[emb_cols].reset_index(drop=True)
        feats = pd.concat([lex, emb], axis=1).astype(float)
        feats.loc[~ok] = math.nan  # no text here (for a source): nothing measured
        feats.columns = [f"{prefix}{c}" for c in feats.columns]
        feats.insert(0, "transcript" if name == "" else f"text:{name}", t)
        parts.append(feats)
    out = pd.concat(parts, axis=1)
    return StageResult(features=out[keep].reset_index(drop=True), transcripts=transcripts, errors=errors,
                       stats=stats)


def _transcripts(rows: pd.DataFrame, store, options: TextOptions, workers: int = 1, executor=None,
                 policy: WindowPolicy = WHOLE_FILES, allow_truncated: bool = False):
    """The transcript source: given or ASR (see :func:`extract_text`). Returns (transcripts, errors, stats), the
    transcripts with a column ``windowed`` (ASR on windows)."""

    given = rows["given_text"].fillna("").astype(str)
    has = (given.str.strip() != "").to_numpy()
    labels = rows["label"].to_numpy() if "label" in rows else None
    notes: list[str] = []
    if options.transcripts == "given" and not has.all():
        if not has.any():
            raise BlindcheckError("transcripts = given, but the manifest has no text column (or it is empty)")
        raise BlindcheckError(
            f"transcripts = given, but {_coverage(has, labels)}: text from two sources (given for some clips, "
            "none or ASR for others) would separate the sides by its source; fill the missing transcripts, "
            "transcribe every clip (transcripts = asr) or leave the text modality out")
    use_asr = options.transcripts == "asr" or (options.transcripts == "auto" and not has.all())
    if options.transcripts == "auto" and has.any() and not has.all():
        notes.append(f"given transcripts cover only {_coverage(has, labels)}; every clip was transcribed by ASR "
                     "so that all text comes from one source")
    need_asr = pd.Series(use_asr, index=rows.index)
    # The content gate (ExtractionConfig.min_speech_share): no ASR on a clip without speech; its transcript is empty.
    no_speech = ~rows["has_speech"].to_numpy(dtype=bool) if use_asr and "has_speech" in rows else \
        np.zeros(len(rows), dtype=bool)
    need_asr &= ~no_speech
    if no_speech.any():
        given = given.where(~no_speech, "")
        notes.append(f"ASR skipped on {int(no_speech.sum())} clips: no speech")
    windowed = (rows["windowed"].to_numpy(dtype=bool) if "windowed" in rows and policy.long_s is not None else
                np.zeros(len(rows), dtype=bool)) & need_asr.to_numpy()
    # what Whisper gets of each clip: a windowed clip's windows, each of window_s
    durations = np.where(windowed, policy.window_s if policy.long_s is not None else math.nan,
                         rows["duration_s"].to_numpy(dtype=float))
    if use_asr and options.asr.pack:
        long = ~(np.isfinite(durations) & (durations > 0) & (durations <= options.asr.max_packed_clip_s))
        long &= need_asr.to_numpy()
        if long.any():  # one decoding path for every clip: a clip's error rate must not depend on its duration
            options = dataclasses.replace(options, asr=dataclasses.replace(options.asr, pack=False))
            notes.append(f"{int(long.sum())} clips are longer than {options.asr.max_packed_clip_s:g} s (or of "
                         "unknown duration) and cannot be packed: every clip was transcribed alone")
    errors: list[dict] = []
    transcripts = pd.DataFrame({"id": rows["id"], "content_hash": rows["content_hash"],
                                "source": np.where(need_asr, "asr", np.where(no_speech, "skipped", "given")),
                                "text": given})
    for c in TRANSCRIPT_COLUMNS[1:]:
        transcripts[c] = "" if c in ("language", "mode") else math.nan
    transcripts["windowed"] = windowed
    stats = {"given": int((~need_asr & ~no_speech).sum()), "asr_skipped": int(no_speech.sum()), "transcribed": 0,
             "transcripts_reused": 0, "embedded": 0, "embeddings_reused": 0, "failed": 0, "notes": notes}
    if need_asr.any():
        tag = options.asr.tag(store.root)
        asr_rows = np.nonzero(need_asr.to_numpy())[0]
        pkey = policy.key()
        hashes = np.array([windowed_key(h, pkey) if w else h for h, w in  # the cache keys
                           zip(rows["content_hash"].to_numpy(), windowed, strict=True)], dtype=object)
        cached = store.read_features(tag, hashes[asr_rows])
        todo = [i for i in asr_rows if cached.empty or hashes[i] not in cached.index]
        same: dict[str, list[int]] = {}  # one transcription per distinct audio
        for i in todo:
            same.setdefault(hashes[i], []).append(i)
        stats["transcripts_reused"] = len(asr_rows) - len(todo)
        heads = [group[0] for group in same.values()]
        tasks = [{"row": int(i), "key": hashes[i], "path": rows["path"].iloc[i], "start": rows["start"].iloc[i],
                  "end": rows["end"].iloc[i], "duration_s": durations[i],
                  "policy": dataclasses.asdict(policy) if windowed[i] else None, "allow_truncated": allow_truncated}
                 for i in heads]
        asr_stats: dict = {}
        new: list[dict] = []

        def window_done(results: list[dict]) -> None:
            """Each window's transcripts reach the cache as soon as it is done: a kill loses only those in flight."""
            fresh = []
            for r in results:
                i = r["row"]
                if r["error"]:
                    errors.extend({"id": rows["id"].iloc[j], "path": rows["path"].iloc[j], "stage": "asr",
                                   "message": r["error"]} for j in same[hashes[i]])
                    continue
                fresh.append({"content_hash": hashes[i], **{c: r[c] for c in TRANSCRIPT_COLUMNS}})
            if fresh:
                store.append_features(tag, pd.DataFrame(fresh))
                new.extend(fresh)

        if executor is not None and tasks:
            executor.check_shared_path(str(store.root.resolve()))
        transcribe(tasks, options.asr, workers=workers, stats=asr_stats, on_results=window_done, executor=executor)
        if new:
            store.compact([tag])
            cached = store.read_features(tag, hashes[asr_rows])
        stats["transcribed"] = len(new)
        stats["asr"] = {k: asr_stats.get(k, 0) for k in ("windows", "packed_windows", "windows_failed",
                                                        "clips_redone", "rounds", "worker_crashes",
                                                        "windowed_clips", "audio_seconds")}
        stats["asr"]["audio_seconds"] = round(float(stats["asr"]["audio_seconds"]), 3)
        stats["asr"]["packed_clips"] = sum(r["mode"] == "packed" for r in new)
        if not cached.empty:  # one aligned update: every cached value lands on each row of its audio
            found = cached.reindex(hashes[asr_rows])[[c for c in TRANSCRIPT_COLUMNS if c in cached]]
            transcripts.update(found.set_axis(transcripts.index[asr_rows]))
    failed = {e["id"] for e in errors}
    stats["failed"] = len(failed)
    if use_asr and options.asr.pack and labels is not None:
        _check_decoding_paths(transcripts["mode"].to_numpy(), labels,
                              ~transcripts["id"].isin(failed).to_numpy())
    return transcripts, errors, stats


def _embed_missing(missing: list[str], first: dict[str, str], model_path: str, device: str, store, etag: str,
                   executor=None) -> int:
    """Embed the transcripts of ``missing`` (keys) in batches of :data:`EMBED_JOB` on ``executor``, or by default
    in one spawned local process (torch never enters this one); each batch is written to the cache by its
    worker. A batch whose worker died is tried once more on its own."""
    from blindcheck.features.asr import cpu_threads
    from blindcheck.runtime.executors import LocalExecutor

    if executor is None:
        executor, threads = LocalExecutor(1, start_method="spawn"), None
    else:
        executor.check_shared_path(str(store.root.resolve()))
        threads = cpu_threads(executor, 1)
    cache = str(store.root.resolve())

    def jobs(batches):
        for b in batches:
            yield {"cache": cache, "tag": etag, "model": model_path, "device": device, "threads": threads,
                   "keys": b, "texts": [first[k] for k in b]}

    batches = [missing[i:i + EMBED_JOB] for i in range(0, len(missing), EMBED_JOB)]
    done = 0

    def lost(job: dict) -> int:
        raise BlindcheckError(f"the embedding worker process died twice on a batch of {len(job['keys'])} transcripts")

    def finished(job: dict, result: int) -> None:
        nonlocal done
        done += result

    # a batch whose worker died is tried once more on its own; the caller compacts the cache after
    run_stage(executor, _embed_job, jobs(batches), lambda job: [job], on_result=finished, on_lost=lost)
    return done
