"""The ``extract`` verb: manifest -> cached per-clip feature table, in parallel worker processes.

Work is planned against the cache first (a clip whose every requested modality is cached is not even
opened), then the remaining clips are sent in small batches to worker processes. Each worker reads a file
once, hashes those bytes, decodes them, resamples once and runs every missing extractor on the decoded clip.
Results are written to the cache as they arrive (at least every ``flush_s`` seconds), so a run killed at
any moment resumes with what it had finished.

A clip that cannot be read, decoded or analysed becomes a row of the errors table (id, path, stage,
message) and is left out of the feature table; the run goes on.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from blindcheck.audio import (
    ANALYSIS_SR,
    TRUNCATED_ALLOWED,
    AudioError,
    decode,
    load_clip,
    open_source,
    read_bytes,
    source_file,
    split_ref,
)
from blindcheck.cache import Store, write_parquet_atomic
from blindcheck.features import acoustic_modalities, cache_tag, get_extractor
from blindcheck.manifest import Manifest
from blindcheck.pools import worker_pool

ERROR_COLUMNS = ["id", "path", "stage", "message"]
NOTE_COLUMNS = ["id", "path", "modality", "note"]
ProgressFn = Callable[[int, int], None]


@dataclass
class ExtractionResult:
    """Feature table (one row per clip that succeeded) plus everything set aside, and run figures."""

    features: pd.DataFrame
    errors: pd.DataFrame
    notes: pd.DataFrame
    modalities: list[str]
    stats: dict = field(default_factory=dict)
    transcripts: pd.DataFrame | None = None

    def feature_columns(self, modality: str | None = None) -> list[str]:
        mods = [modality] if modality else self.modalities
        return [c for c in self.features.columns if c.split(".", 1)[0] in mods]


def _nan(x: object) -> float:
    return math.nan if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ------------------------------------------------------------------------------------------- worker side

_WORKER_EXTRACTORS: dict[str, object] = {}


def _extractor(name: str):
    if name not in _WORKER_EXTRACTORS:
        _WORKER_EXTRACTORS[name] = get_extractor(name)
    return _WORKER_EXTRACTORS[name]


def _process_clip(task: dict, sr: int) -> dict:
    """Read, hash, decode and analyse one clip. Never raises: failures come back as error entries."""
    res: dict = {"row": task["row"], "hash": None, "feats": {}, "notes": {}, "errors": []}
    try:
        source = open_source(task["path"])  # the segments of one recording: read and hashed once
        res["hash"] = source.key(task["start"], task["end"])
        audio = decode(source.data, task["start"], task["end"], allow_truncated=task.get("allow_truncated", False))
        clip = load_clip(task["id"], audio, sr)
    except AudioError as exc:
        res["errors"].append(("decode", str(exc)))
        return res
    except Exception as exc:  # an unexpected decoder failure is still one clip's problem
        res["errors"].append(("decode", f"{type(exc).__name__}: {exc}"))
        return res
    base_notes = list(clip.notes)
    for name in task["modalities"]:
        ext = _extractor(name)
        clip.notes = []
        try:
            values = ext.extract(clip)
        except Exception as exc:
            res["errors"].append((name, f"{type(exc).__name__}: {exc}"))
            continue
        res["feats"][name] = {k: _nan(values.get(k)) for k in ext.feature_names()}
        # What decoding found (truncation, non-finite samples) goes with the recording modality, or with the
        # first one computed when recording is not.
        first = "recording" if "recording" in task["modalities"] else task["modalities"][0]
        res["notes"][name] = base_notes + clip.notes if name == first else list(clip.notes)
    return res


def _process_batch(tasks: list[dict], sr: int) -> list[dict]:
    return [_process_clip(t, sr) for t in tasks]


def _init_worker(modalities: list[str]) -> None:
    """Pool initializer: one BLAS thread per worker (N workers x N BLAS threads oversubscribe the cores:
    measured 2x slower on 2 cores), then warm up."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    _warm_worker(modalities)


def _warm_worker(modalities: list[str]) -> None:
    """Import and exercise each extractor once, so the first real clip does not pay for it."""
    sr = ANALYSIS_SR
    t = np.arange(sr // 2) / sr
    y = (0.1 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    from blindcheck.audio import Clip, DecodedAudio

    audio = DecodedAudio(y, sr, 1, "WAV", "PCM_16", 16.0, False, "soundfile")
    for name in modalities:
        with contextlib.suppress(Exception):  # a real clip will report the failure properly
            _extractor(name).extract(Clip("warmup", audio, y, sr))


# ------------------------------------------------------------------------------------------ main process


NO_BOUND = -1.0  # start/end of a whole-file clip in the index (NaN would never compare equal in a dict key)


def _bound(x: object) -> float:
    v = _nan(x)
    return NO_BOUND if math.isnan(v) else v


def _stat_key(path: str, start: float, end: float) -> tuple | None:
    try:
        st = os.stat(source_file(path))  # a clip inside a Parquet shard: the shard's size and time
    except OSError:
        return None
    return (path, int(st.st_size), int(st.st_mtime_ns), _bound(start), _bound(end))


def extract_features(
    manifest: Manifest,
    cache_dir: str | os.PathLike,
    modalities: list[str] | None = None,
    workers: int | None = None,
    batch_size: int = 8,
    flush_s: float = 2.0,
    sr: int = ANALYSIS_SR,
    progress: ProgressFn | None = None,
    text_options=None,
    allow_truncated: bool = False,
) -> ExtractionResult:
    """Extract (or read from the cache) every requested modality for every clip of ``manifest``.

    Parameters
    ----------
    modalities: subset of ``recording``, ``spectral``, ``prosodic``, ``text`` (default: the three acoustic ones).
    text_options: :class:`blindcheck.text.TextOptions` for the text modality (transcripts, ASR, embeddings).
    workers: worker processes (default: all cores); 1 runs in this process.
    batch_size: clips per task sent to a worker.
    flush_s: longest time finished results wait in memory before being written to the cache.
    allow_truncated: analyse a file that holds less audio than its header declares (with a note) instead of
        recording it as a ``decode`` error; a run without it also rejects such clips found in the cache.
    """
    t0 = time.perf_counter()
    requested = list(modalities or acoustic_modalities())
    modalities = [m for m in requested if m not in ("text", "voice")]  # voice and text: spawned stages below
    extractors = {m: get_extractor(m) for m in modalities}
    tags = {m: cache_tag(e) for m, e in extractors.items()}
    store = Store(cache_dir)
    table = manifest.table
    n = len(table)
    has_seg = "start" in table.columns
    starts = table["start"].to_numpy(dtype=float) if has_seg else np.full(n, np.nan)
    ends = table["end"].to_numpy(dtype=float) if has_seg else np.full(n, np.nan)

    # Only this manifest's rows are read from the cache, whatever else it holds.
    index = store.read_index(table["path"].unique())
    hashes: list[str | None] = [None] * n
    keys: list[tuple | None] = [None] * n
    for i, path in enumerate(table["path"]):
        keys[i] = _stat_key(path, starts[i], ends[i])
        hashes[i] = index.get(keys[i]) if keys[i] is not None else None
    known = {h for h in hashes if h is not None}
    cached = {m: store.read_features(tags[m], known) for m in modalities}
    cached_sets = {m: set(cached[m].index) if not cached[m].empty else set() for m in modalities}

    tasks = []
    for i, cid in enumerate(table["id"]):
        path, h = table["path"].iloc[i], hashes[i]
        missing = [m for m in modalities if h is None or h not in cached_sets[m]]
        if missing or h is None:  # an unknown file is at least read and hashed (and decoded, to validate it)
            tasks.append({"row": i, "id": cid, "path": path, "start": starts[i], "end": ends[i], "modalities": missing,
                          "allow_truncated": allow_truncated})
    # The clips of one source file (a recording's Kaldi segments, a shard's rows) one after another, so that a
    # worker reads and hashes the recording (or a shard's row group) once for all of them.
    tasks.sort(key=lambda t: (source_file(t["path"]), t["row"]))

    new_rows: dict[str, list[dict]] = {m: [] for m in modalities}
    fresh: dict[str, list[pd.DataFrame]] = {m: [] for m in modalities}  # flushed rows, joined once at the end
    new_index: list[dict] = []
    errors: list[dict] = [r for r in manifest.missing.to_dict("records")]
    failed_rows: set[int] = set()
    computed = {m: 0 for m in modalities}
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        # Index first: then every clip whose features reached the disk is also indexed, and a resumed run
        # does not even reopen it.
        if new_index:
            store.append_index(new_index)
            new_index.clear()
        for m in modalities:
            if new_rows[m]:
                df = pd.DataFrame(new_rows[m])
                store.append_features(tags[m], df)  # one new part; nothing already written is touched
                fresh[m].append(df.set_index("content_hash"))
                new_rows[m] = []
        last_flush = time.monotonic()

    def accept(res: dict) -> None:
        i = res["row"]
        cid, path = table["id"].iloc[i], table["path"].iloc[i]
        if res["hash"] is not None:
            hashes[i] = res["hash"]
            if keys[i] is not None:
                new_index.append(dict(zip(["path", "size", "mtime_ns", "start", "end"], keys[i], strict=True),
                                      content_hash=res["hash"]))
        for stage, msg in res["errors"]:
            errors.append({"id": cid, "path": path, "stage": stage, "message": msg})
            failed_rows.add(i)
        for m, values in res["feats"].items():
            if res["hash"] in cached_sets[m]:
                continue
            cached_sets[m].add(res["hash"])
            new_rows[m].append({"content_hash": res["hash"], "_notes": "\n".join(res["notes"].get(m, [])),
                                **values})
            computed[m] += 1

    done = n - len(tasks)
    if progress:
        progress(done, n)
    n_workers = max(1, workers or os.cpu_count() or 1)
    batches = [tasks[i:i + batch_size] for i in range(0, len(tasks), batch_size)]
    if tasks:
        # Pay imports and one-time set-up here, once: forked workers inherit it.
        _warm_worker(sorted({m for t in tasks for m in t["modalities"]}))
    try:
        if n_workers == 1 or len(batches) <= 2:
            for b in batches:
                for res in _process_batch(b, sr):
                    accept(res)
                done += len(b)
                if time.monotonic() - last_flush >= flush_s:
                    flush()
                if progress:
                    progress(done, n)
        else:
            done = _run_pool(batches, sr, n_workers, modalities, accept, flush, lambda: last_flush, flush_s,
                             progress, done, n)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: what has finished is kept, so a resumed run starts after it
        flush()
        raise
    flush()
    store.compact(list(tags.values()))
    for m in modalities:
        if fresh[m]:
            cached[m] = pd.concat(([cached[m]] if not cached[m].empty else []) + fresh[m])

    notes = _collect_notes(table, hashes, failed_rows, modalities, cached)
    if not allow_truncated and len(notes):
        # A clip analysed earlier under allow-truncated sits in the cache with its features: reject it here too.
        cut = notes[notes["note"].str.startswith("truncated")].drop_duplicates("id")
        for cid, path, note in zip(cut["id"], cut["path"], cut["note"], strict=True):
            errors.append({"id": cid, "path": path, "stage": "decode", "message": note.replace(TRUNCATED_ALLOWED, "")})
        failed_rows |= set(np.nonzero(table["id"].isin(set(cut["id"])).to_numpy())[0].tolist())
        notes = notes[~notes["id"].isin(set(cut["id"]))].reset_index(drop=True)
    features = _assemble(table, hashes, failed_rows, modalities, extractors, cached)
    voice_stats = None
    if "voice" in requested and len(features):
        from blindcheck.features.voice import extract_voice

        voice = extract_voice(_clip_rows(table, features), store, workers=n_workers)
        errors += voice["errors"]
        features = features.merge(voice["features"], on="id", how="inner")
        notes = pd.concat([notes, pd.DataFrame(voice["notes"], columns=NOTE_COLUMNS)], ignore_index=True)
        voice_stats = voice["stats"]
        modalities = [*modalities, "voice"]
    transcripts, text_stats = None, None
    if "text" in requested and len(features):
        from blindcheck.text import TextOptions, extract_text

        rows = _text_rows(table, features)
        text = extract_text(rows, store, text_options or TextOptions(), workers=n_workers)
        errors += text["errors"]
        features = features.merge(text["features"], on="id", how="inner")
        transcripts, text_stats = text["transcripts"], text["stats"]
        modalities = [*modalities, "text"]
    err_df = pd.DataFrame(errors, columns=ERROR_COLUMNS)
    stats = {
        "clips": n + len(manifest.missing),
        "in_table": len(features),
        "failed": int(err_df["id"].nunique()) if not err_df.empty else 0,
        "dispatched": len(tasks),
        "computed": computed,
        "reused": {m: len(features) - computed[m] for m in computed},
        "with_notes": int(notes["id"].nunique()) if not notes.empty else 0,
        "text": text_stats,
        "voice": voice_stats,
        "seconds": time.perf_counter() - t0,
        "workers": n_workers,
        "audio_seconds": float(features["recording.duration_s"].sum()) if "recording.duration_s" in features else
        math.nan,
    }
    return ExtractionResult(features=features, errors=err_df, notes=notes, modalities=modalities, stats=stats,
                            transcripts=transcripts)


def _clip_rows(table: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Per analysed clip, what a spawned stage (voice, text) needs to read it again: id, content hash, path,
    segment (NaN where the manifest has none)."""
    meta = table.set_index("id").loc[features["id"]]
    return pd.DataFrame({
        "id": features["id"].to_numpy(), "content_hash": features["content_hash"].to_numpy(),
        "path": meta["path"].to_numpy(),
        "start": meta["start"].to_numpy(dtype=float) if "start" in meta else np.full(len(meta), np.nan),
        "end": meta["end"].to_numpy(dtype=float) if "end" in meta else np.full(len(meta), np.nan),
    })


def _text_rows(table: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """What the text stage needs per analysed clip: :func:`_clip_rows`, given transcript, label and duration."""
    rows = _clip_rows(table, features)
    meta = table.set_index("id").loc[features["id"]]
    if "recording.duration_s" in features:
        duration = features["recording.duration_s"].to_numpy(dtype=float)
    else:
        import soundfile as sf

        duration = []
        for path, s0, e0 in zip(rows["path"], rows["start"], rows["end"], strict=True):
            if not (math.isnan(s0) or math.isnan(e0)):
                duration.append(e0 - s0)
                continue
            try:
                duration.append(float(sf.info(path).duration) if split_ref(path) is None else
                                decode(read_bytes(path)).duration_s)
            except Exception:
                duration.append(math.nan)
        duration = np.array(duration)
    return rows.assign(given_text=meta["text"].to_numpy() if "text" in meta else np.full(len(meta), ""),
                       label=meta["label"].to_numpy(dtype=int), duration_s=duration)


def _run_pool(batches, sr, n_workers, modalities, accept, flush, last_flush, flush_s, progress, done, n) -> int:
    """Run batches in a process pool. If a worker dies (a crash inside a native library), the batches it
    may have held are retried one clip at a time in a fresh pool; a clip that kills a worker on its own is
    recorded as an error."""
    pending = list(batches)
    retry_single = False
    while pending:
        with worker_pool(n_workers, _init_worker, (modalities,)) as pool:
            futures: dict[Future, list[dict]] = {}
            queue = list(pending)
            pending = []
            broken = False
            while queue or futures:
                # In the retry round one clip is in flight at a time, so a crash is blamed on its true cause.
                limit = 1 if retry_single else 2 * n_workers
                while queue and len(futures) < limit and not broken:
                    b = queue.pop(0)
                    futures[pool.submit(_process_batch, b, sr)] = b
                finished, _ = wait(list(futures), timeout=max(0.05, flush_s), return_when=FIRST_COMPLETED)
                for fut in finished:
                    b = futures.pop(fut)
                    try:
                        results = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        if retry_single and len(b) == 1:
                            accept({"row": b[0]["row"], "hash": None, "feats": {}, "notes": {},
                                    "errors": [("worker", "the worker process died while analysing this clip")]})
                            done += 1
                        else:
                            pending.extend([[t] for t in b])
                        continue
                    for res in results:
                        accept(res)
                    done += len(b)
                    if progress:
                        progress(done, n)
                if broken:
                    pending.extend([[t] for b in queue for t in b])
                    queue = []
                if time.monotonic() - last_flush() >= flush_s:
                    flush()
        retry_single = True
    return done


def _assemble(table, hashes, failed_rows, modalities, extractors, cached) -> pd.DataFrame:
    keep = [i for i in range(len(table)) if i not in failed_rows and hashes[i] is not None]
    out = pd.DataFrame({
        "id": table["id"].iloc[keep].to_numpy(),
        "label": table["label"].iloc[keep].to_numpy(),
        "content_hash": [hashes[i] for i in keep],
    })
    blocks = [out]
    for m in modalities:
        names = extractors[m].feature_names()
        block = cached[m].reindex(out["content_hash"])[names] if not cached[m].empty else \
            pd.DataFrame(np.nan, index=range(len(out)), columns=names)
        block = block.reset_index(drop=True).astype(float)
        block.columns = [f"{m}.{c}" for c in names]
        blocks.append(block)
    return pd.concat(blocks, axis=1)


def _collect_notes(table, hashes, failed_rows, modalities, cached) -> pd.DataFrame:
    rows = []
    for i in range(len(table)):
        if i in failed_rows or hashes[i] is None:
            continue
        for m in modalities:
            if cached[m].empty or hashes[i] not in cached[m].index:
                continue
            text = cached[m].at[hashes[i], "_notes"]
            if isinstance(text, pd.Series):
                text = text.iloc[-1]
            for line in str(text or "").splitlines():
                rows.append({"id": table["id"].iloc[i], "path": table["path"].iloc[i], "modality": m, "note": line})
    return pd.DataFrame(rows, columns=NOTE_COLUMNS)


def write_outputs(result: ExtractionResult, manifest: Manifest, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``features.parquet``, ``errors.csv``, ``notes.csv`` and ``manifest.parquet`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "features": out / "features.parquet",
        "errors": out / "errors.csv",
        "notes": out / "notes.csv",
        "manifest": out / "manifest.parquet",
    }
    write_parquet_atomic(result.features, paths["features"])
    if result.transcripts is not None:
        paths["transcripts"] = out / "transcripts.parquet"
        write_parquet_atomic(result.transcripts, paths["transcripts"])
    write_parquet_atomic(manifest.table, paths["manifest"])
    result.errors.to_csv(paths["errors"], index=False)
    result.notes.to_csv(paths["notes"], index=False)
    return paths
