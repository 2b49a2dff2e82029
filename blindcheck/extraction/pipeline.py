"""The ``extract`` verb: manifest -> cached per-clip feature table, on an executor (local processes or Dask).

Work is planned against the cache first, in arrays (a clip whose every requested modality is cached is not even
opened). The remaining clips are written, in the order the jobs take them, to one plan file in the cache
(``plans/``), and each job names a row range of it: neither the driver nor a Dask scheduler holds a Python object
per clip. A worker reads its rows of the plan, reads each file once, hashes those bytes, decodes them, resamples
once, runs every missing extractor on the decoded clip, and writes the job's index entries and features to the
cache as new parts itself, so a run killed at any moment resumes with every job it had finished.

A clip that cannot be read, decoded or analysed becomes a row of the errors table (id, path, stage,
message) and is left out of the feature table; the run goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from blindcheck.errors import BlindcheckError, option
from blindcheck.extraction.cache import INDEX_KEY, Store, policy_tag, read_plan
from blindcheck.extraction.stages import run_stage
from blindcheck.features import DEFAULT_ACOUSTIC, Modality, cache_tag, get_extractor
from blindcheck.inputs.audio import (
    ANALYSIS_SR,
    TRUNCATED_ALLOWED,
    WHOLE_FILES,
    AudioError,
    WindowPolicy,
    decode,
    decode_windows,
    load_clip,
    open_source,
    read_bytes,
    source_file,
)
from blindcheck.inputs.manifest import Manifest
from blindcheck.runtime.executors import EXECUTORS, DaskExecutor, Executor, LocalExecutor, usable_cores

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


# ------------------------------------------------------------------------------------------- the settings


@dataclass(frozen=True)
class ExtractionConfig:
    """Everything that decides how (not on what) features are extracted. The CLI turns its flags into one of
    these; a notebook builds one or passes the same names as keywords to :func:`extract_features`.

    modalities: which to extract (default: recording, spectral, prosodic); see :class:`blindcheck.features.Modality`.
    workers: worker processes (local) or, for a LocalCluster, Dask worker processes (default: the usable cores).
    executor: ``local`` (a process pool on this machine) or ``dask`` (``scheduler`` address, or a LocalCluster).
    chunk_size: clips per job; each finished job writes its own cache parts (default: adaptive, see
        :class:`Chunker`).
    sr: analysis sample rate.
    text: :class:`blindcheck.features.text.TextOptions` for the text modality (transcripts, ASR, embeddings).
    allow_truncated: analyse a file that holds less audio than its header declares (with a note) instead of
        recording it as a ``decode`` error; a run without it also rejects such clips found in the cache.
    long_file_s, max_windows, window_s: the long-file policy (:class:`blindcheck.inputs.audio.WindowPolicy`): a
        file or segment longer than ``long_file_s`` seconds (default 30) has its acoustic modalities computed on
        ``max_windows`` (default 3) windows of ``window_s`` seconds (default 5), evenly spaced from its first
        sample to its last; each feature is the mean over the windows, except those that describe the whole file
        (``recording``: duration and format facts; leading silence from the first window, trailing silence from
        the last). The voice and text stages read the same windows: the speaker embedding is the normed mean of
        the windows' (:func:`blindcheck.features.voice.from_windows`) and ASR transcribes each window as a short
        clip, the transcript joining them with " … " (:func:`blindcheck.features.asr.join_windows`). Only the
        windows are decoded, so a long file costs what ``max_windows * window_s`` seconds cost, in every stage.
        ``long_file_s=None``: every file analysed whole. The policy is part of the cache key (the acoustic
        modalities' directories; the voice and ASR entries of windowed clips,
        :func:`blindcheck.extraction.cache.windowed_key`); a windowed clip has a note that starts with
        ``windowed``, and its content gate (below) reads its windows' speech share.
    min_speech_share: the content gate: ASR (text) and the speaker encoder (voice) run only on clips whose
        ``content.speech_share`` (the share of the clip's frames inside Silero VAD's speech segments,
        :mod:`blindcheck.features.content`) is at least this (default 0.1). The others get no voice embedding (NaN)
        and an empty transcript, with a note each; ``stats["content"]`` counts them. A clip whose share is unknown
        (the detector not installed) is never skipped. 0: every clip. The content modality is computed, first,
        whenever voice or text is requested.
    """

    modalities: tuple[Modality, ...] | None = None
    workers: int | None = None
    executor: str = "local"
    scheduler: str | None = None
    chunk_size: int | None = None
    sr: int = ANALYSIS_SR
    text: Any = None
    allow_truncated: bool = False
    long_file_s: float | None = 30.0
    max_windows: int = 3
    window_s: float = 5.0
    min_speech_share: float = 0.1

    def __post_init__(self):
        if self.modalities is not None:
            try:
                mods = tuple(Modality(m) for m in self.modalities)
            except ValueError:
                raise BlindcheckError(f"unknown modality in {list(self.modalities)} (known: "
                                      f"{', '.join(Modality)})") from None
            object.__setattr__(self, "modalities", mods)
        if self.workers is not None and self.workers < 1:
            raise BlindcheckError(f"workers must be at least 1, not {self.workers}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise BlindcheckError(f"chunk_size must be at least 1, not {self.chunk_size}")
        if self.executor not in EXECUTORS:
            raise BlindcheckError(f"unknown executor '{self.executor}': choose one of {', '.join(EXECUTORS)}")
        if self.scheduler and self.executor != "dask":
            use_dask = option("executor='dask'", "--executor dask")
            raise BlindcheckError(f"{option('scheduler')} is the address of a Dask scheduler, for the dask executor: "
                                  f"add {use_dask}")
        if not 0.0 <= self.min_speech_share <= 1.0:
            raise BlindcheckError(f"{option('min_speech_share')} must be between 0 and 1, not {self.min_speech_share}")
        try:
            self.window_policy  # noqa: B018 (validates the long-file policy)
        except (ValueError, TypeError) as exc:
            raise BlindcheckError(f"long-file policy: {exc}") from None

    @property
    def requested(self) -> list[Modality]:
        """The modalities to compute, content first (prosodic and music read its decision in the same worker), and
        content added where voice or text is requested (their gate reads ``content.speech_share``)."""
        mods = list(self.modalities or DEFAULT_ACOUSTIC)
        if Modality.CONTENT not in mods and (Modality.VOICE in mods or Modality.TEXT in mods):
            mods.append(Modality.CONTENT)
        return sorted(mods, key=lambda m: m != Modality.CONTENT)  # stable: the others keep their order

    @property
    def window_policy(self) -> WindowPolicy:
        if self.long_file_s is None:
            return WHOLE_FILES
        return WindowPolicy(float(self.long_file_s), int(self.max_windows), float(self.window_s))


FIRST_CHUNK, MAX_CHUNK = 4, 256  # clips per job: the first jobs, and at most
JOB_SECONDS = 2.0  # adaptive jobs aim at this much work: what a kill or Ctrl-C can lose per worker


class Chunker:
    """Cuts the ``total`` planned clips into jobs, ``(lo, hi)`` row ranges of the plan, lazily, as the executor asks
    for them. With a fixed ``size`` every job has that many clips; otherwise the first jobs hold
    :data:`FIRST_CHUNK` (so that results reach the cache within a second) and later ones as many as the workers get
    through in :data:`JOB_SECONDS`, measured on the jobs finished so far (at most :data:`MAX_CHUNK`: few, large
    cache parts at scale)."""

    def __init__(self, total: int, size: int | None = None):
        self.total, self.size, self.pos = total, size, 0
        self.clips, self.seconds = 0, 0.0

    def observe(self, clips: int, seconds: float) -> None:
        self.clips, self.seconds = self.clips + clips, self.seconds + seconds

    def next_size(self) -> int:
        if self.size:
            return self.size
        if self.clips < 2 * FIRST_CHUNK or self.seconds <= 0:
            return FIRST_CHUNK
        return int(min(MAX_CHUNK, max(FIRST_CHUNK, JOB_SECONDS * self.clips / self.seconds)))

    def __iter__(self):
        while self.pos < self.total:
            k = self.next_size()
            yield self.pos, min(self.total, self.pos + k)
            self.pos += k


# ------------------------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {"extractors": {}, "names": {}, "ready": False}


def _extractor(name: str):
    if name not in _WORKER["extractors"]:
        _WORKER["extractors"][name] = get_extractor(name)
        _WORKER["names"][name] = tuple(_WORKER["extractors"][name].feature_names())
    return _WORKER["extractors"][name]


def _names(name: str) -> tuple[str, ...]:
    """The feature names of extractor ``name`` (asked once per worker)."""
    _extractor(name)
    return _WORKER["names"][name]


def _process_clip(task: dict, sr: int, allow_truncated: bool) -> dict:
    """Read, hash, decode and analyse one clip (on the windows of ``task["policy"]`` when it is long). Never raises:
    failures come back as error entries."""
    res: dict = {"row": task["row"], "hash": None, "feats": {}, "notes": {}, "errors": []}
    if task.get("hash") and not task["modalities"]:  # content already analysed (see _drop_cached)
        res["hash"] = task["hash"]
        return res
    try:
        source = open_source(task["path"])  # the segments of one recording: read and hashed once
        res["hash"] = source.key(task["start"], task["end"])
        pieces = decode_windows(source.data, task["start"], task["end"], allow_truncated,
                                task.get("policy", WHOLE_FILES))
        clips = [load_clip(task["id"], audio, sr) for audio in pieces]
        del pieces
    except AudioError as exc:
        res["errors"].append(("decode", str(exc)))
        return res
    except Exception as exc:  # an unexpected decoder failure is still one clip's problem
        res["errors"].append(("decode", f"{type(exc).__name__}: {exc}"))
        return res
    base_notes = list(dict.fromkeys(note for clip in clips for note in clip.notes))
    for name in task["modalities"]:
        ext = _extractor(name)
        values = []
        notes: dict[str, int] = {}
        try:
            for clip in clips:
                clip.notes = []
                values.append(ext.extract(clip))
                for note in clip.notes:
                    notes[note] = notes.get(note, 0) + 1
        except Exception as exc:
            res["errors"].append((name, f"{type(exc).__name__}: {exc}"))
            continue
        try:  # in the extractor's column order; a missing value or None is NaN
            res["feats"][name] = _over_windows(ext, name, values)
        except (TypeError, ValueError) as exc:
            res["errors"].append((name, f"a value that is not a number: {exc}"))
            continue
        if len(clips) > 1:
            notes = {f"{note} (in {k} of {len(clips)} windows)": k for note, k in notes.items()}
        # What decoding found (truncation, non-finite samples, the windows) goes with the recording modality, or
        # with the first one computed when recording is not.
        first = "recording" if "recording" in task["modalities"] else task["modalities"][0]
        res["notes"][name] = base_notes + list(notes) if name == first else list(notes)
    return res


def _over_windows(ext, name: str, values: list[dict]) -> np.ndarray:
    """One clip's feature vector from the values on each of its windows (one window: those values): the mean over
    windows (NaN-skipping; NaN where every window is NaN), then what the extractor's ``from_windows(values)``
    says instead for the features it names (recording: the silences at the file's edges)."""
    names = _names(name)
    rows = np.array([[v.get(k) for k in names] for v in values], dtype=np.float64)
    if len(values) == 1:
        return rows[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = ~np.isnan(rows)
        n = ok.sum(axis=0)
        out = np.where(n > 0, np.where(ok, rows, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
    fix = getattr(ext, "from_windows", None)
    if fix is not None:
        for k, v in fix(values).items():
            out[names.index(k)] = np.nan if v is None else float(v)
    return out


def _plan_tasks(job: dict) -> list[dict]:
    """The clips of one job, from its rows of the run's plan (see :func:`_plan_table`)."""
    mods = job["modalities"]
    policy = WindowPolicy(**job["windows"]) if job.get("windows") else WHOLE_FILES
    tasks = []
    for r in read_plan(job["plan"], job["lo"], job["hi"]):
        start, end = _nan(r["start"]), _nan(r["end"])
        tasks.append({"row": r["row"], "id": r["id"], "path": r["path"], "start": start, "end": end,
                      "modalities": [m for b, m in enumerate(mods) if r["need"] >> b & 1], "policy": policy,
                      "recheck": bool(r.get("recheck")),
                      "key": (r["path"], r["size"], r["mtime_ns"], _bound(start), _bound(end)) if r["size"] >= 0
                      else None})
    return tasks


def _extract_chunk(job: dict) -> dict:
    """One job, on whichever executor: analyse its clips (rows ``lo:hi`` of the run's plan file), write their
    features and index entries to the cache as new parts (so nothing funnels through the driver), and return only
    what the driver needs per clip: row, content hash, errors and the modalities computed (``clips``), and the
    job's ``seconds``."""
    tasks = _plan_tasks(job)
    t0 = time.perf_counter()
    store = Store(job["cache"])
    _drop_cached(tasks, store, job["tags"])
    _ensure_worker(sorted({m for t in tasks for m in t["modalities"]}))
    results = [_process_clip(t, job["sr"], job["allow_truncated"]) for t in tasks]
    # The index first: then every clip whose features reached the disk is also indexed, and a resumed run neither
    # reopens it nor recomputes a modality it has.
    index = [dict(zip(INDEX_KEY, t["key"], strict=True), content_hash=r["hash"])
             for t, r in zip(tasks, results, strict=True) if r["hash"] is not None and t["key"] is not None]
    if index:
        store.append_index(index)
    for m, tag in sorted(job["tags"].items()):
        done = [r for r in results if m in r["feats"]]
        if done:  # one float64 column per feature, straight into Arrow (no per-value Python, no pandas)
            block = np.stack([r["feats"][m] for r in done], axis=1)
            cols = {"content_hash": pa.array([r["hash"] for r in done], pa.string()),
                    "_notes": pa.array(["\n".join(r["notes"].get(m, [])) for r in done], pa.string())}
            cols.update((k, pa.array(block[j])) for j, k in enumerate(_names(m)))
            store.append_features(tag, pa.table(cols))
    return {"seconds": time.perf_counter() - t0,
            "clips": [{"row": r["row"], "hash": r["hash"], "errors": r["errors"], "computed": list(r["feats"])}
                      for r in results]}


def _drop_cached(tasks: list[dict], store: Store, tags: dict[str, str]) -> None:
    """The tasks whose file the index knows only under another size or modification time (``recheck``): hash each
    and drop the modalities the cache already holds for that content, in one lookup per modality for the whole
    job. A file touched or rewritten with the same bytes is then only read and hashed. One whose bytes changed is
    read again by :func:`_process_clip` (only the last source read is kept; the page cache serves the rest)."""
    todo = [t for t in tasks if t.get("recheck") and t["modalities"]]
    hashes = []
    for t in todo:
        try:
            hashes.append(open_source(t["path"]).key(t["start"], t["end"]))
        except Exception:  # unreadable: _process_clip records the error
            hashes.append(None)
    if not todo:
        return
    keys = np.array(hashes, dtype=object)
    present = {m: store.present_mask(tags[m], keys) for m in {m for t in todo for m in t["modalities"]}}
    for i, t in enumerate(todo):
        t["modalities"] = [m for m in t["modalities"] if not present[m][i]]
        t["hash"] = hashes[i]


def _ensure_worker(modalities: list[str]) -> None:
    """Once per worker process (a pool initializer where there is one; lazily on a Dask worker): one BLAS thread
    per worker (N workers x N BLAS threads oversubscribe the cores: measured 2x slower on 2 cores), then warm
    every extractor up."""
    if not _WORKER["ready"]:
        import multiprocessing

        if multiprocessing.parent_process() is not None:  # a worker process, never the driver (its classifier)
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1)
        _WORKER["ready"] = True
    _warm_worker([m for m in modalities if m not in _WORKER["extractors"]])


def _warm_worker(modalities: list[str]) -> None:
    """Import and exercise the whole path once — decoding a WAV, resampling 8 kHz to the analysis rate, every
    extractor on a voiced signal (or its own ``warm()`` where it has one: music's numba paths need seconds of
    audio) — so that the first real clip does not pay for imports and JIT compilation."""
    if not modalities:
        return
    import io

    import soundfile as sf

    sr = 8000
    t = np.arange(sr) / sr
    # a 120 Hz voiced-like signal with a pause, so pitch, jitter/shimmer and pause paths all run
    y = 0.2 * np.sign(np.sin(2 * np.pi * 120 * t)) * np.exp(-((t % (1 / 120)) * 400)) * (t < 0.7)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    with contextlib.suppress(Exception):  # a real clip will report any failure properly
        clip = load_clip("warmup", decode(buf.getvalue()), ANALYSIS_SR)
        for name in modalities:
            clip.notes = []
            with contextlib.suppress(Exception):
                ext = _extractor(name)
                if hasattr(ext, "warm"):
                    ext.warm()
                else:
                    ext.extract(clip)


# ------------------------------------------------------------------------------------------ main process


NO_BOUND = -1.0  # start/end of a whole-file clip in the index (NaN would never compare equal in a dict key)


def _bound(x: object) -> float:
    v = _nan(x)
    return NO_BOUND if math.isnan(v) else v


def _index_keys(paths: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pd.DataFrame:
    """The cache index key (:data:`INDEX_KEY`) of each clip: path, its source file's size and mtime (``-1`` where
    the file cannot be stat'ed: the clip is then read and fails with a proper error), segment bounds; and ``file``,
    a code per source file (jobs take a file's clips one after another). One ``stat`` per source file, however many
    segments it holds."""
    files, uniq = pd.factorize(np.array([source_file(p) for p in paths], dtype=object))
    size = np.full(len(uniq) + 1, -1, dtype=np.int64)  # the last slot: files pd.factorize could not code
    mtime = np.full(len(uniq) + 1, -1, dtype=np.int64)
    for j, f in enumerate(uniq):
        try:
            st = os.stat(f)  # a clip inside a Parquet shard: the shard's size and time
        except (OSError, ValueError):
            continue
        size[j], mtime[j] = st.st_size, st.st_mtime_ns
    return pd.DataFrame({"path": paths, "size": size[files], "mtime_ns": mtime[files],
                         "start": np.where(np.isnan(starts), NO_BOUND, starts),
                         "end": np.where(np.isnan(ends), NO_BOUND, ends), "file": files})


def _plan_table(todo: np.ndarray, ids: np.ndarray, keys: pd.DataFrame, starts: np.ndarray, ends: np.ndarray,
                need: np.ndarray) -> pa.Table:
    """The run's work list, in the order the jobs take it: per clip its manifest row, id, path, segment (NaN: the
    whole file), source file size and mtime from ``keys`` (``size`` -1: not stat'ed, not indexed) and the bit mask
    of modalities to compute."""
    sel = keys.iloc[todo]
    return pa.table({"row": pa.array(todo, pa.int64()), "id": pa.array([str(x) for x in ids[todo]], pa.string()),
                     "path": pa.array([str(x) for x in sel["path"]], pa.string()),
                     "start": pa.array(starts[todo], pa.float64()), "end": pa.array(ends[todo], pa.float64()),
                     "size": pa.array(sel["size"].to_numpy(), pa.int64()),
                     "mtime_ns": pa.array(sel["mtime_ns"].to_numpy(), pa.int64()),
                     "need": pa.array(need[todo], pa.uint8()),
                     "recheck": pa.array(sel["recheck"].to_numpy(), pa.bool_())})


def _plan_clips(store: Store, paths: np.ndarray, starts: np.ndarray, ends: np.ndarray, modalities: list,
                tags: dict) -> tuple:
    """Phase of :func:`extract_features`: what is left to compute. Returns the index keys of every row, the cached
    content hashes (NaN where unknown), a bit mask per row of the modalities still to compute, the rows to
    dispatch (one per distinct clip, the clips of one file together), the rows that repeat a dispatched clip, and
    how many rows were dispatched before merging the repeats."""
    n = len(paths)
    # Plan against the cache, in arrays (no Python object per clip: the driver's memory at 100k+ clips): only this
    # manifest's rows are read from the cache, whatever else it holds.
    keys = _index_keys(paths, starts, ends)
    hashes, seen = store.index_state(keys)
    # a path the index knows under another size or time (touched, copied over): its worker hashes it and computes
    # only the modalities that the cache lacks for that content
    keys["recheck"] = seen & pd.isna(hashes)
    keyed = keys["size"].to_numpy() >= 0
    need = np.zeros(n, dtype=np.uint8)  # bit b: modality b still to compute
    for b, m in enumerate(modalities):
        need |= (~store.present_mask(tags[m], hashes)).astype(np.uint8) << b
    # An unknown file is at least read and hashed (and decoded, to validate it), even with no modality to compute.
    todo = np.nonzero((need != 0) | pd.isna(hashes))[0]
    # A clip listed again (same file and segment) is analysed once, for all its rows.
    group = keys.iloc[todo].groupby(INDEX_KEY, sort=False, dropna=False).ngroup().to_numpy().copy()
    group[~keyed[todo]] = -1 - np.arange(int((~keyed[todo]).sum()))  # unreadable files: each row its own
    first = pd.Series(todo).groupby(group, sort=False).transform("first").to_numpy()
    copies: dict[int, list[int]] = {}
    for i, f in zip(todo[first != todo], first[first != todo], strict=True):
        copies.setdefault(int(f), []).append(int(i))
    dispatched = len(todo)
    todo = todo[first == todo]
    # The clips of one source file (a recording's Kaldi segments, a shard's rows) one after another, so that a
    # worker reads and hashes the recording (or a shard's row group) once for all of them.
    todo = todo[np.lexsort((todo, keys["file"].to_numpy()[todo]))]
    return keys, hashes, need, todo, copies, dispatched


def extract_features(manifest: Manifest, cache_dir: str | os.PathLike, config: ExtractionConfig | None = None, *,
                     progress: ProgressFn | None = None, executor: Executor | str | None = None,
                     **settings: Any) -> ExtractionResult:
    """Extract (or read from the cache) every requested modality for every clip of ``manifest``.

    ``config`` holds the settings (:class:`ExtractionConfig`); keywords of the same names override it
    (``extract_features(m, cache, workers=1, modalities=["recording"])``). ``executor``: an open
    :class:`blindcheck.runtime.executors.Executor` to run on (default: one made from the config, closed at the end);
    a name (``"local"``, ``"dask"``) sets ``config.executor`` instead.
    ``progress(done, total)`` is called as clips finish.
    """
    if isinstance(executor, str):
        settings["executor"], executor = executor, None
    unknown = set(settings) - {f.name for f in dataclasses.fields(ExtractionConfig)}
    if unknown:
        raise TypeError(f"extract_features() got unknown setting(s) {', '.join(sorted(unknown))}; the settings are "
                        f"ExtractionConfig's: {', '.join(f.name for f in dataclasses.fields(ExtractionConfig))}")
    config = dataclasses.replace(config or ExtractionConfig(), **settings) if settings else \
        (config or ExtractionConfig())
    own = executor is None
    t0 = time.perf_counter()
    requested = config.requested
    modalities = [m for m in requested if m.acoustic]  # voice and text: stages below
    extractors = {m: get_extractor(m) for m in modalities}
    policy = config.window_policy
    tags = {m: policy_tag(cache_tag(e), policy.key()) for m, e in extractors.items()}
    store = Store(cache_dir)
    store.root.mkdir(parents=True, exist_ok=True)
    table = manifest.table
    n = len(table)
    paths = table["path"].to_numpy(dtype=object)
    starts = table["start"].to_numpy(dtype=float) if "start" in table.columns else np.full(n, np.nan)
    ends = table["end"].to_numpy(dtype=float) if "end" in table.columns else np.full(n, np.nan)
    ids = table["id"].to_numpy(dtype=object)

    keys, hashes, need, todo, copies, dispatched = _plan_clips(store, paths, starts, ends, modalities, tags)

    errors: list[dict] = [r for r in manifest.missing.to_dict("records")]
    failed = np.zeros(n, dtype=bool)
    computed_rows = {m: np.zeros(n, dtype=bool) for m in modalities}

    def accept(summary: dict) -> int:
        """Record one clip's outcome (for every row that lists it); the number of rows it settles."""
        rows = [summary["row"], *copies.get(summary["row"], [])]
        for i in rows:
            if summary["hash"] is not None:
                hashes[i] = summary["hash"]
            for stage, msg in summary["errors"]:
                errors.append({"id": ids[i], "path": paths[i], "stage": stage, "message": msg})
                failed[i] = True
        for m in summary["computed"]:
            computed_rows[Modality(m)][summary["row"]] = True
        return len(rows)

    done = n - dispatched
    if progress:
        progress(done, n)
    ex = executor
    plan = None
    try:
        if len(todo):
            if ex is None:
                ex = open_executor(config, warm=[str(m) for b, m in enumerate(modalities)
                                                 if (need[todo] >> b & 1).any()])
            root = str(store.root.resolve())
            ex.check_shared_path(root)
            plan = store.write_plan(_plan_table(todo, ids, keys, starts, ends, need))
            keys = None
            base = {"cache": root, "plan": str(plan), "sr": config.sr, "allow_truncated": config.allow_truncated,
                    "windows": dataclasses.asdict(policy),
                    "modalities": [str(m) for m in modalities], "tags": {str(m): tags[m] for m in modalities}}
            chunks = Chunker(len(todo), config.chunk_size)
            jobs = ({**base, "lo": lo, "hi": hi} for lo, hi in chunks)
            alone = lambda job: ({**job, "lo": k, "hi": k + 1} for k in range(job["lo"], job["hi"]))  # noqa: E731

            def lost(job: dict) -> dict:  # a clip that killed its worker on its own: an error, the rest goes on
                return {"clips": [{"row": int(todo[job["lo"]]), "hash": None, "computed": [],
                                   "errors": [("worker", "the worker process died while analysing this clip")]}],
                        "lost": True}

            def finished(job: dict, result: dict) -> None:
                nonlocal done
                if not result.get("lost"):
                    chunks.observe(len(result["clips"]), result["seconds"])
                done += sum(accept(summary) for summary in result["clips"])
                if progress:
                    progress(done, n)

            run_stage(ex, _extract_chunk, jobs, alone, on_result=finished, on_lost=lost)
        store.compact(list(tags.values()))
        computed = {m: len(pd.unique(hashes[rows])) for m, rows in computed_rows.items()}
        keys = need = todo = None

        keep = ~failed & pd.notna(hashes)
        features, notes = _assemble(store, table, hashes, keep, modalities, extractors, tags)
        if not config.allow_truncated and len(notes):
            features, notes = _reject_truncated(features, notes, errors)
        spoken = len(features) and (Modality.VOICE in requested or Modality.TEXT in requested)
        if spoken and ex is None and own and config.executor == "dask":  # every acoustic feature was cached
            ex = open_executor(config, warm=[])
        stage_ex = ex if isinstance(ex, DaskExecutor) else None  # else their own spawned local processes
        n_workers = ex.workers if ex is not None else (config.workers or usable_cores())
        voice_stats = None
        content_stats = _content_stats(features, config.min_speech_share)
        if Modality.VOICE in requested and len(features):
            features, notes, voice_stats = _voice_stage(table, features, notes, errors, store, config, content_stats,
                                                        n_workers, stage_ex)
            modalities = [*modalities, Modality.VOICE]
        transcripts, text_stats = None, None
        if Modality.TEXT in requested and len(features):
            features, notes, transcripts, text_stats = _text_stage(table, features, notes, errors, store, config,
                                                                   content_stats, n_workers, stage_ex)
            modalities = [*modalities, Modality.TEXT]
    except BaseException:
        if own and ex is not None:
            ex.close(abort=True)
        raise
    finally:
        if plan is not None:
            plan.unlink(missing_ok=True)
    if own and ex is not None:
        ex.close()
    err_df = pd.DataFrame(errors, columns=ERROR_COLUMNS)
    stats = {
        "clips": n + len(manifest.missing),
        "in_table": len(features),
        "failed": int(err_df["id"].nunique()) if not err_df.empty else 0,
        "dispatched": dispatched,
        "computed": {str(m): c for m, c in computed.items()},
        "reused": {str(m): len(features) - computed[m] for m in computed},
        "with_notes": int(notes["id"].nunique()) if not notes.empty else 0,
        "windowed": int(notes.loc[notes["note"].str.startswith("windowed"), "id"].nunique()) if len(notes) else 0,
        "window_policy": policy.key(),
        "text": text_stats,
        "voice": voice_stats,
        "content": content_stats,
        "seconds": time.perf_counter() - t0,
        "workers": n_workers,
        "executor": ex.describe() if ex is not None else "none (every clip from the cache)",
        "audio_seconds": float(features["recording.duration_s"].sum()) if "recording.duration_s" in features else
        math.nan,
    }
    return ExtractionResult(features=features, errors=err_df, notes=notes, modalities=[str(m) for m in modalities],
                            stats=stats, transcripts=transcripts)


def open_executor(config: ExtractionConfig, warm: list[str] | None = None) -> Executor:
    """The executor ``config`` names, started, with the extractors in ``warm`` (default: the config's acoustic
    modalities) imported and exercised: here, for the local pool, so that forked workers inherit them (scipy's and
    Praat's imports and first calls take about a second); on every Dask worker, in parallel (late joiners do it on
    first use)."""
    warm = list(warm) if warm is not None else [str(m) for m in config.requested if m.acoustic]
    if config.executor == "local":
        _warm_worker(warm)
        return LocalExecutor(config.workers or usable_cores(), initializer=_ensure_worker, initargs=(warm,))
    ex = DaskExecutor(config.scheduler, config.workers)
    try:
        ex.client.run(_ensure_worker, warm)
    except BaseException:
        ex.close(abort=True)
        raise
    return ex


SPEECH_SHARE = f"{Modality.CONTENT}.speech_share"


def _reject_truncated(features: pd.DataFrame, notes: pd.DataFrame, errors: list[dict]) -> tuple:
    """A clip analysed earlier under allow-truncated sits in the cache with its features: without that setting it
    is rejected here too (a decode error appended to ``errors``). Returns (features, notes) without those clips."""
    cut = notes[notes["note"].str.startswith("truncated")].drop_duplicates("id")
    for cid, path, note in zip(cut["id"], cut["path"], cut["note"], strict=True):
        errors.append({"id": cid, "path": path, "stage": "decode", "message": note.replace(TRUNCATED_ALLOWED, "")})
    if len(cut):
        gone = set(cut["id"])
        features = features[~features["id"].isin(gone)].reset_index(drop=True)
        notes = notes[~notes["id"].isin(gone)].reset_index(drop=True)
    return features, notes


def _voice_stage(table: pd.DataFrame, features: pd.DataFrame, notes: pd.DataFrame, errors: list[dict], store: Store,
                 config: ExtractionConfig, content_stats: dict | None, workers: int, executor) -> tuple:
    """Phase of :func:`extract_features`: ``voice.*`` for the clips with speech (the content gate), their errors
    appended to ``errors``; returns (features, notes, stats)."""
    from blindcheck.extraction.voice import extract_voice

    speech = _has_speech(features, config.min_speech_share)
    rows = _clip_rows(table, features).assign(windowed=_windowed(features, notes))
    voice = extract_voice(rows[speech].reset_index(drop=True), store, workers=workers, executor=executor,
                          policy=config.window_policy, allow_truncated=config.allow_truncated)
    errors += voice.errors
    failed_ids = {e["id"] for e in voice.errors}
    features = features[~features["id"].isin(failed_ids)].merge(voice.features, on="id", how="left")
    notes = pd.concat([notes, pd.DataFrame(voice.notes, columns=NOTE_COLUMNS),
                       _skip_notes(features, rows, ~speech, "voice", config.min_speech_share)], ignore_index=True)
    if content_stats is not None:
        content_stats["voice_skipped"] = int((~speech).sum())
    return features, notes, voice.stats


def _text_stage(table: pd.DataFrame, features: pd.DataFrame, notes: pd.DataFrame, errors: list[dict], store: Store,
                config: ExtractionConfig, content_stats: dict | None, workers: int, executor) -> tuple:
    """Phase of :func:`extract_features`: transcripts (given or ASR, which the content gate skips on clips without
    speech), the other text sources and ``text.*``, errors appended to ``errors``; returns (features, notes,
    transcripts, stats)."""
    from blindcheck.extraction.text import extract_text
    from blindcheck.features.text import TextOptions

    text_options = config.text or TextOptions()
    windowed = _windowed(features, notes)
    rows = _text_rows(table, features, text_options.text_columns, windowed, config.allow_truncated)
    rows["has_speech"] = _has_speech(features, config.min_speech_share)
    rows["windowed"] = windowed
    text = extract_text(rows, store, text_options, workers=workers, executor=executor, policy=config.window_policy,
                        allow_truncated=config.allow_truncated)
    errors += text.errors
    features = features.merge(text.features, on="id", how="inner")
    skipped = (text.transcripts["source"] == "skipped").to_numpy() if text.transcripts is not None else \
        np.zeros(len(rows), dtype=bool)  # no transcript source (transcripts none): no ASR to skip
    notes = pd.concat([notes, _skip_notes(features, rows, skipped, "text", config.min_speech_share)],
                      ignore_index=True)
    if content_stats is not None:
        content_stats["asr_skipped"] = int(skipped.sum())
    return features, notes, text.transcripts, text.stats


def _windowed(features: pd.DataFrame, notes: pd.DataFrame) -> np.ndarray:
    """Per clip of ``features``: whether the acoustic stage analysed it on windows (its note starting ``windowed``,
    written by :func:`blindcheck.inputs.audio.decode_windows` under the run's policy), so that the voice and ASR
    stages read the same windows and key their cache entries with the policy."""
    if not len(notes):
        return np.zeros(len(features), dtype=bool)
    ids = set(notes.loc[notes["note"].astype(str).str.startswith("windowed"), "id"])
    return features["id"].isin(ids).to_numpy()


def _has_speech(features: pd.DataFrame, min_share: float) -> np.ndarray:
    """Per clip of ``features``: whether ASR and the speaker encoder run on it (the content gate; see
    :class:`ExtractionConfig`). A clip of unknown content (no share: the detector not installed) runs."""
    if SPEECH_SHARE not in features or min_share <= 0:
        return np.ones(len(features), dtype=bool)
    share = features[SPEECH_SHARE].to_numpy(dtype=float)
    return np.isnan(share) | (share >= min_share)


def _skip_notes(features: pd.DataFrame, rows: pd.DataFrame, skipped: np.ndarray, stage: str,
                min_share: float) -> pd.DataFrame:
    """One note per clip that a stage skipped for want of speech (for notes.csv)."""
    what = {"voice": "speaker encoder not run", "text": "ASR not run (empty transcript)"}[stage]
    rows = rows[skipped]
    share = features.set_index("id").reindex(rows["id"])[SPEECH_SHARE].to_numpy(dtype=float) \
        if SPEECH_SHARE in features else np.full(len(rows), np.nan)
    return pd.DataFrame({"id": rows["id"].to_numpy(), "path": rows["path"].to_numpy(), "modality": stage,
                         "note": [f"{stage}: {what}: no speech (content.speech_share {v:.2f} < {min_share:g})"
                                  for v in share]}, columns=NOTE_COLUMNS)


def _content_stats(features: pd.DataFrame, min_share: float) -> dict | None:
    """What the content gate decided: clips with speech, without, of unknown content; the threshold."""
    if SPEECH_SHARE not in features:
        return None
    share = features[SPEECH_SHARE].to_numpy(dtype=float)
    return {"min_speech_share": min_share, "speech_clips": int((share >= min_share).sum()),
            "no_speech_clips": int((share < min_share).sum()), "unknown": int(np.isnan(share).sum()),
            "asr_skipped": 0, "voice_skipped": 0}


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


def _text_rows(table: pd.DataFrame, features: pd.DataFrame, text_columns=None,
               windowed: np.ndarray | None = None, allow_truncated: bool = False) -> pd.DataFrame:
    """What the text stage needs per analysed clip: :func:`_clip_rows`, given transcript, label, duration and the
    text of each other text source (``source:<name>``; see :func:`blindcheck.inputs.manifest.text_sources`). A
    ``windowed`` clip's duration is not looked up when the features lack it (ASR reads its windows' lengths); any
    other's is what :func:`blindcheck.inputs.audio.decode` holds of it (every format, FFmpeg's too, and
    ``allow_truncated`` as the acoustic stage had it)."""
    from blindcheck.inputs.manifest import source_texts, text_sources

    rows = _clip_rows(table, features)
    meta = table.set_index("id").loc[features["id"]]
    sources = source_texts(meta, text_sources(table, text_columns))
    for name in sources.columns:
        rows[f"source:{name}"] = sources[name].to_numpy()
    if "recording.duration_s" in features:
        duration = features["recording.duration_s"].to_numpy(dtype=float)
    else:
        duration = []
        skip = windowed if windowed is not None else np.zeros(len(rows), dtype=bool)
        for path, s0, e0, w in zip(rows["path"], rows["start"], rows["end"], skip, strict=True):
            if w:  # not needed, and a shard's clip would be decoded whole to learn it
                duration.append(math.nan)
                continue
            if not (math.isnan(s0) or math.isnan(e0)):
                duration.append(e0 - s0)
                continue
            try:
                duration.append(decode(read_bytes(path), s0, e0, allow_truncated).duration_s)
            except Exception:
                duration.append(math.nan)
        duration = np.array(duration)
    return rows.assign(given_text=meta["text"].to_numpy() if "text" in meta else np.full(len(meta), ""),
                       label=meta["label"].to_numpy(dtype=int), duration_s=duration)


def _assemble(store: Store, table: pd.DataFrame, hashes: np.ndarray, keep: np.ndarray, modalities, extractors,
              tags) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The feature table (one float32 block, one row per kept clip) and the notes, read from the cache part by part:
    the driver holds the table and one modality's values at a time, never the parts."""
    rows = np.nonzero(keep)[0]
    kept = hashes[rows]  # str objects (a fixed-width copy would take 256 bytes a clip)
    names = {m: extractors[m].feature_names() for m in modalities}
    columns = [f"{m}.{c}" for m in modalities for c in names[m]]
    values = np.empty((len(rows), len(columns)), dtype=np.float32)
    note_rows = []
    ids, paths = table["id"].to_numpy()[rows], table["path"].to_numpy()[rows]
    col = 0
    for m in modalities:
        _, _, notes = store.read_matrix(tags[m], kept, names[m], out=values[:, col:col + len(names[m])])
        col += len(names[m])
        if notes:
            for j, h in enumerate(kept):
                for line in notes.get(h, "").splitlines():
                    note_rows.append({"id": ids[j], "path": paths[j], "modality": str(m), "note": line})
    out = pd.DataFrame(values, columns=columns, copy=False)
    out.insert(0, "content_hash", kept)
    out.insert(0, "label", table["label"].to_numpy()[rows])
    out.insert(0, "id", ids)
    return out, pd.DataFrame(note_rows, columns=NOTE_COLUMNS)


