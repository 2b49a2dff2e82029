"""The voice stage: speaker-encoder embeddings of every clip in spawned workers (torch), cached; the per-clip
computation lives in :mod:`blindcheck.features.voice`. A long file (one the acoustic stage analysed on windows) is
decoded and embedded on the same windows only."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import threading

import numpy as np
import pandas as pd

from blindcheck.extraction.stages import StageResult, run_stage
from blindcheck.features.voice import SpeakerEncoder, VoiceExtractor
from blindcheck.inputs.audio import WHOLE_FILES, WindowPolicy

_WORKER: VoiceExtractor | None = None  # this worker process's encoder (loaded once)
_WORKER_LOCK = threading.Lock()


def _init_worker() -> None:
    """Once per worker process (a pool initializer, or lazily in a Dask worker's first job): one BLAS and one
    torch thread per worker (N workers x N threads oversubscribe the cores), and the encoder loaded."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is not None:
            return
        if multiprocessing.parent_process() is not None:  # a worker process, never the driver
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1)
        ext = VoiceExtractor(threads=1)
        ext._encoder = SpeakerEncoder(1)
        _WORKER = ext


def _embed_batch(tasks: list[dict]) -> list[dict]:
    """Read, decode and embed clips in a worker; a task with a ``policy`` (a long clip) is decoded and embedded on
    that policy's windows only (:func:`blindcheck.inputs.audio.decode_windows`) and its embedding is their mean
    (:func:`blindcheck.features.voice.from_windows`). Never raises for one clip's problem. Each result says how
    many ``seconds`` of audio went to the encoder's speech detection."""
    from blindcheck.features.voice import from_windows
    from blindcheck.inputs.audio import AudioError, content_hash, decode_windows, load_clip, read_bytes

    results, clips, where = [], [], []
    for t in tasks:
        res = {"row": t["row"], "hash": t["hash"], "key": t.get("key", t["hash"]), "feats": None, "notes": [],
               "error": None, "seconds": 0.0}
        try:
            data = read_bytes(t["path"])
            h = content_hash(data, t["start"], t["end"])
            if t["hash"] is not None and h != t["hash"]:
                raise AudioError("the file changed during the run (content hash differs)")
            res["hash"] = h
            if t.get("key") is None:
                res["key"] = h
            policy = WindowPolicy(**t["policy"]) if t.get("policy") else WHOLE_FILES
            pieces = decode_windows(data, t["start"], t["end"], bool(t.get("allow_truncated")), policy=policy)
            group = [load_clip(str(t["id"]), a) for a in pieces]
            for clip in group:
                clip.notes = []  # what decoding said is the acoustic stage's note
            res["seconds"] = sum(len(c.y) / c.sr for c in group)
            where.append((len(results), len(clips), len(group)))
            clips += group
        except Exception as exc:
            res["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, AudioError) else str(exc)
        results.append(res)
    ext = _WORKER or VoiceExtractor()
    values = ext.extract_batch(clips)
    for i, lo, n in where:
        if n == 1:
            results[i]["feats"], results[i]["notes"] = values[lo], list(clips[lo].notes)
        else:
            results[i]["feats"], results[i]["notes"] = from_windows(values[lo:lo + n],
                                                                     [c.notes for c in clips[lo:lo + n]])
    return results


def _voice_job(job: dict) -> list[dict]:
    """One batch, on whichever executor: embed its clips and write them to the cache as a new part (so no
    embedding passes through the driver); return per clip only row, hash and error."""
    from blindcheck.extraction.cache import Store

    _init_worker()
    results = _embed_batch(job["tasks"])
    new = [{"content_hash": r["key"], "_notes": "\n".join(r["notes"]), **r["feats"]} for r in results
           if not r["error"]]
    if new:
        Store(job["cache"]).append_features(job["tag"], pd.DataFrame(new))
    return [{"row": r["row"], "hash": r["key"], "error": r["error"], "seconds": r["seconds"]} for r in results]


def extract_voice(rows: pd.DataFrame, store, workers: int = 1, batch_size: int = 32, progress=None,
                  executor=None, policy: WindowPolicy = WHOLE_FILES, allow_truncated: bool = False) -> StageResult:
    """``voice.*`` for ``rows`` (columns: id, content_hash, path, start, end, and optionally ``windowed``: the clips
    the acoustic stage analysed on the windows of ``policy``), from the cache where it has them and else in batches
    on ``executor`` (e.g. a :class:`blindcheck.runtime.executors.DaskExecutor`, whose workers load the encoder once
    and must see the cache directory) or, by default, in ``workers`` spawned local processes. A windowed clip is
    decoded and embedded on those windows only, its embedding the mean of theirs
    (:func:`blindcheck.features.voice.from_windows`), so a long file costs what its windows cost.
    ``allow_truncated``: decode a file that holds less than its header declares as it is, as the acoustic stage
    did (its note is the acoustic stage's); without it such a file is an error here too.
    Each batch's embeddings are written to the cache by its worker. A batch whose worker died is tried again
    one clip at a time; a clip that kills its worker alone becomes an error. Returns a
    :class:`~blindcheck.extraction.stages.StageResult`: ``features`` (id, voice.*), ``notes``, ``errors``,
    ``stats``. Cached like every extractor: keyed by the audio's content hash (and, for a windowed clip, the
    policy: :func:`blindcheck.extraction.cache.windowed_key`) and :func:`cache_tag`."""
    from blindcheck.extraction.cache import windowed_key
    from blindcheck.features import cache_tag
    from blindcheck.runtime.executors import LocalExecutor

    ext = VoiceExtractor()
    tag = cache_tag(ext)
    names = ext.feature_names()
    windowed = (rows["windowed"].to_numpy(dtype=bool) if "windowed" in rows else np.zeros(len(rows), dtype=bool)) \
        & (policy.long_s is not None)
    content = rows["content_hash"].to_numpy()
    pkey = policy.key()
    hashes = np.array([windowed_key(h, pkey) if w else h for h, w in zip(content, windowed, strict=True)],
                      dtype=object)  # the cache keys
    present = store.present(tag, hashes)  # this run's clips only, whatever else the cache holds
    todo: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h not in present and h not in todo:
            todo[h] = i
    tasks = [{"row": i, "id": rows["id"].iloc[i], "hash": content[i], "key": h, "path": rows["path"].iloc[i],
              "start": float(rows["start"].iloc[i]), "end": float(rows["end"].iloc[i]),
              "policy": dataclasses.asdict(policy) if windowed[i] else None, "allow_truncated": allow_truncated}
             for h, i in todo.items()]
    errors: list[dict] = []
    failed: set[str] = set()
    seconds = 0.0
    n_workers = max(1, min(workers, math.ceil(len(tasks) / batch_size)))
    if tasks:
        if executor is None:
            executor = LocalExecutor(n_workers, initializer=_init_worker, start_method="spawn")
        else:
            n_workers = executor.workers
            executor.check_shared_path(str(store.root.resolve()))
        cache = str(store.root.resolve())
        jobs = ({"cache": cache, "tag": tag, "tasks": tasks[i:i + batch_size]}
                for i in range(0, len(tasks), batch_size))
        alone = lambda job: ({**job, "tasks": [t]} for t in job["tasks"])  # noqa: E731
        done = 0

        def lost(job: dict) -> list[dict]:  # a clip that killed its worker on its own
            t = job["tasks"][0]
            return [{"row": t["row"], "hash": t["key"], "seconds": 0.0,
                     "error": "the worker process died while embedding this clip"}]

        def finished(job: dict, result: list[dict]) -> None:
            nonlocal done, seconds
            for r in result:
                seconds += r.get("seconds", 0.0)
                if r["error"]:
                    failed.add(r["hash"])
                    errors.append({"id": r["row"], "stage": "voice", "message": r["error"]})
            done += len(result)
            if progress:
                progress(done, len(tasks))

        run_stage(executor, _voice_job, jobs, alone, on_result=finished, on_lost=lost, store=store, tags=[tag])
    cached = store.read_features(tag, hashes)
    ok = np.array([h not in failed for h in hashes], dtype=bool)
    block = cached.reindex(hashes)[names].astype(float) if not cached.empty else \
        pd.DataFrame(np.nan, index=range(len(rows)), columns=names)
    feats = block.reset_index(drop=True)
    feats.columns = [f"voice.{c}" for c in names]
    feats.insert(0, "id", rows["id"].to_numpy())
    notes = []
    if not cached.empty:
        for cid, path, note in zip(rows["id"], rows["path"], cached.reindex(hashes)["_notes"], strict=True):
            for line in str(note if isinstance(note, str) else "").splitlines():
                notes.append({"id": cid, "path": path, "modality": "voice", "note": line})
    for e in errors:
        e["id"], e["path"] = rows["id"].iloc[e["id"]], rows["path"].iloc[e["id"]]
    stats = {"embedded": len(tasks) - len(failed), "reused": int(len(set(hashes)) - len(tasks)),
             "failed": len(failed), "workers": n_workers if tasks else 0, "windowed": int(windowed.sum()),
             "audio_seconds": round(seconds, 3)}
    return StageResult(features=feats[ok].reset_index(drop=True), notes=notes, errors=errors, stats=stats)
