"""``voice.*``: who is speaking — a 256-dimensional speaker embedding per clip (GE2E, from ``resemblyzer``).

The encoder is the GE2E speaker encoder (a 3-layer LSTM over 40-band mel frames, Wan et al. 2018) whose
weights ``resemblyzer`` ships inside its wheel (``pretrained.pt``, 17 MB, Apache-2.0), so it runs offline. Only
that weights file is read: the network (the same LSTM + linear + ReLU + L2 norm) is built here and loaded with
``torch.load(weights_only=True)``, and the mel frames come from the shared numpy STFT — resemblyzer's own audio
module imports ``webrtcvad``, a deprecated scipy path and librosa's numba code, none of which is needed.
The outputs equal resemblyzer's ``VoiceEncoder.embed_utterance`` on the same samples (tested).

Before embedding, the clip is reduced to its speech: the frames that are active (the shared activity rule of
:mod:`blindcheck.features.frames`) *and* voiced (a normalised autocorrelation peak of at least 0.45 at a pitch
lag of 60-400 Hz), with 50 ms of context around each, normalised to -30 dBFS (so the voice modality is
level-free; the level lives in ``recording.*``). A clip with less than :data:`MIN_VOICED_S` of voiced speech
— a very short clip, silence, noise — gets NaN features and a note saying why. Like resemblyzer, the speech is
cut into 1.6 s partials (1.3 per second, zero-padded when shorter) whose embeddings are averaged and L2-normed.

torch never enters the process that runs xgboost (its OpenMP runtime made every boosting round ~100x slower):
this module imports torch only inside :meth:`VoiceExtractor.extract_batch`, which :func:`extract_voice` runs
in worker processes started with *spawn*, or on the workers of a Dask cluster (each loads the encoder once and
writes its batches' embeddings to the shared cache).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from blindcheck.audio import ANALYSIS_SR, Clip
from blindcheck.errors import MissingDependencyError, worker_errors
from blindcheck.features.frames import activity, frame_levels_db, mel_filterbank, stft_mag

EMB_DIM = 256
N_MELS, N_FFT, HOP = 40, 400, 160  # resemblyzer's mel frames: 25 ms windows every 10 ms at 16 kHz, 40 bands
PARTIAL_FRAMES, PARTIAL_RATE, MIN_COVERAGE = 160, 1.3, 0.75  # resemblyzer's partial utterances
TARGET_DBFS = -30.0
MIN_VOICED_S = 0.10  # voiced speech a clip needs for an embedding
VOICING_MIN_CORR = 0.45
CONTEXT_S = 0.05
VOICE_EXTRA = "pip install 'blindcheck[voice]'"


def weights_path() -> Path:
    """resemblyzer's ``pretrained.pt``, located without importing resemblyzer (which would import torch)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the voice modality needs the GE2E weights from resemblyzer: {VOICE_EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise MissingDependencyError(f"resemblyzer is installed without its pretrained.pt: {VOICE_EXTRA}")
    return path


def voice_unavailable() -> str | None:
    """Why the voice modality cannot run here (a message naming the extra), or None."""
    if importlib.util.find_spec("torch") is None:
        return f"torch is not installed: {VOICE_EXTRA}"
    try:
        weights_path()
    except MissingDependencyError as exc:
        return str(exc)
    return None


@functools.cache
def _weights_tag() -> str:
    path = weights_path()
    return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()


# ------------------------------------------------------------------------------------------ signal side


def speech_frames(y: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """Mask of 10 ms frames holding voiced speech (active and periodic) and the voiced seconds."""
    levels, hop_s = frame_levels_db(y, sr)
    if len(levels) < 3:
        return np.zeros(len(levels), bool), 0.0
    active, _, _ = activity(levels)
    hop = int(round(hop_s * sr))
    win = int(round(0.040 * sr))
    idx = np.nonzero(active)[0]
    if not len(idx):
        return active, 0.0
    padded = np.pad(y.astype(np.float64), (win // 2, win))
    centres = idx * hop + int(round(0.0125 * sr))  # centre of each 25 ms level frame
    frames = padded[centres[:, None] + np.arange(win)[None, :]]
    frames = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(win)
    n = 2 * win
    spec = np.abs(np.fft.rfft(frames, n=n, axis=1)) ** 2
    ac = np.fft.irfft(spec, n=n, axis=1)[:, :win]
    wac = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(win), n=n)) ** 2, n=n)[:win]  # the window's own decay
    ac = ac / np.maximum(ac[:, :1], 1e-20) / np.maximum(wac / wac[0], 1e-3)
    lo, hi = int(sr / 400), min(int(sr / 60), win - 1)
    voiced_idx = idx[ac[:, lo:hi + 1].max(axis=1) >= VOICING_MIN_CORR]
    mask = np.zeros(len(levels), bool)
    mask[voiced_idx] = True
    return mask, len(voiced_idx) * hop_s


def speech_signal(y: np.ndarray, sr: int, mask: np.ndarray, hop_s: float = 0.010) -> np.ndarray:
    """The samples of the voiced frames with ``CONTEXT_S`` around each, joined, at -30 dBFS."""
    hop = int(round(hop_s * sr))
    ctx = int(round(CONTEXT_S / hop_s))
    keep = np.convolve(mask.astype(float), np.ones(2 * ctx + 1), mode="same") > 0
    samples = np.repeat(keep, hop)[: len(y)]
    samples = np.pad(samples, (0, max(0, len(y) - len(samples))), constant_values=bool(keep[-1]))
    s = y[samples].astype(np.float64)
    rms = math.sqrt(float(np.mean(s ** 2))) if len(s) else 0.0
    return (s * (10 ** (TARGET_DBFS / 20) / rms) if rms > 0 else s).astype(np.float32)


def mel_frames(wav: np.ndarray, sr: int = ANALYSIS_SR) -> np.ndarray:
    """Power mel spectrogram, shape (frames, 40): librosa's ``melspectrogram(n_fft=400, hop_length=160,
    n_mels=40)`` as resemblyzer computes it, through the shared numpy STFT."""
    power = stft_mag(wav, N_FFT, HOP, N_FFT).astype(np.float64) ** 2
    basis = mel_filterbank(sr, N_FFT, N_MELS)  # librosa.filters.mel's, bit for bit
    return (basis @ power).astype(np.float32).T


def partial_slices(n_samples: int, sr: int = ANALYSIS_SR) -> list[slice]:
    """resemblyzer's partial utterances: 160-frame mel slices, 1.3 per second, the last kept when it covers
    at least 75% (always at least one)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((sr / PARTIAL_RATE) / HOP))
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


def partial_mels(wav: np.ndarray) -> np.ndarray:
    """The partials of one utterance, shape (n_partials, 160, 40)."""
    slices = partial_slices(len(wav))
    need = slices[-1].stop * HOP
    if need >= len(wav):
        wav = np.pad(wav, (0, need - len(wav)))
    mel = mel_frames(wav)
    return np.stack([mel[s] for s in slices])


# ------------------------------------------------------------------------------------------ the encoder


class _Encoder:
    """GE2E: LSTM(40 -> 256, 3 layers) -> last hidden state -> linear -> ReLU -> L2 norm."""

    def __init__(self, threads: int = 1):
        try:
            import torch
        except ImportError as exc:
            raise MissingDependencyError(f"the voice modality needs torch: {VOICE_EXTRA}") from exc
        from torch import nn

        torch.set_num_threads(threads)
        self.torch = torch
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, EMB_DIM)
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.eval()
        self.linear.eval()

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """(batch, 160, 40) -> (batch, 256), L2-normed."""
        torch = self.torch
        with torch.no_grad():
            _, (hidden, _) = self.lstm(torch.from_numpy(np.ascontiguousarray(mels, dtype=np.float32)))
            raw = torch.relu(self.linear(hidden[-1]))
            out = raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-12)
        return out.numpy()


class VoiceExtractor:
    name = "voice"
    version = "1"

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._encoder: _Encoder | None = None

    def config(self) -> dict:
        return {"weights": _weights_tag(), "min_voiced_s": MIN_VOICED_S, "voicing": VOICING_MIN_CORR,
                "context_s": CONTEXT_S, "dbfs": TARGET_DBFS, "partials": [PARTIAL_FRAMES, PARTIAL_RATE, MIN_COVERAGE]}

    def feature_names(self) -> list[str]:
        return [f"emb_{j:03d}" for j in range(EMB_DIM)]

    def extract(self, clip: Clip) -> dict[str, float]:
        return self.extract_batch([clip])[0]

    def extract_batch(self, clips: list[Clip], max_partials: int = 256) -> list[dict[str, float]]:
        """Embeddings of several clips, their partials forwarded together (in batches of ``max_partials``)."""
        names = self.feature_names()
        out: list[dict[str, float]] = [dict.fromkeys(names, math.nan) for _ in clips]
        parts, owner = [], []
        for k, clip in enumerate(clips):
            if clip.sr != ANALYSIS_SR:
                raise ValueError(f"the voice encoder needs {ANALYSIS_SR} Hz audio, not {clip.sr}")
            mask, voiced_s = speech_frames(clip.y, clip.sr)
            if voiced_s < MIN_VOICED_S:
                why = "no voiced speech found (silence or noise)" if voiced_s == 0 else \
                    f"only {voiced_s:.2f} s of voiced speech"
                clip.notes.append(f"voice: {why}; the speaker encoder needs at least {MIN_VOICED_S:.2f} s, "
                                  "voice features are NaN")
                continue
            p = partial_mels(speech_signal(clip.y, clip.sr, mask))
            parts.append(p)
            owner += [k] * len(p)
        if not parts:
            return out
        if self._encoder is None:
            self._encoder = _Encoder(self.threads)
        mels = np.concatenate(parts)
        emb = np.concatenate([self._encoder(mels[i:i + max_partials]) for i in range(0, len(mels), max_partials)])
        owner_arr = np.array(owner)
        for k in np.unique(owner_arr):
            v = emb[owner_arr == k].mean(axis=0)
            v = v / max(float(np.linalg.norm(v)), 1e-12)
            out[int(k)] = dict(zip(names, v.astype(float).tolist(), strict=True))
        return out


# ------------------------------------------------------------------------------------------ worker side

_WORKER: VoiceExtractor | None = None
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
        ext._encoder = _Encoder(1)
        _WORKER = ext


def _embed_batch(tasks: list[dict]) -> list[dict]:
    """Read, decode and embed clips in a worker. Never raises for one clip's problem."""
    from blindcheck.audio import AudioError, content_hash, decode, load_clip, read_bytes

    results, clips, where = [], [], []
    for t in tasks:
        res = {"row": t["row"], "hash": t["hash"], "feats": None, "notes": [], "error": None}
        try:
            data = read_bytes(t["path"])
            h = content_hash(data, t["start"], t["end"])
            if t["hash"] is not None and h != t["hash"]:
                raise AudioError("the file changed during the run (content hash differs)")
            res["hash"] = h
            clip = load_clip(str(t["id"]), decode(data, t["start"], t["end"]))
            clip.notes = []
            clips.append(clip)
            where.append(len(results))
        except Exception as exc:
            res["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, AudioError) else str(exc)
        results.append(res)
    ext = _WORKER or VoiceExtractor()
    for clip, i, values in zip(clips, where, ext.extract_batch(clips), strict=True):
        results[i]["feats"], results[i]["notes"] = values, list(clip.notes)
    return results


def _voice_job(job: dict) -> list[dict]:
    """One batch, on whichever executor: embed its clips and write them to the cache as a new part (so no
    embedding passes through the driver); return per clip only row, hash and error."""
    from blindcheck.cache import Store

    _init_worker()
    results = _embed_batch(job["tasks"])
    new = [{"content_hash": r["hash"], "_notes": "\n".join(r["notes"]), **r["feats"]} for r in results
           if not r["error"]]
    if new:
        Store(job["cache"]).append_features(job["tag"], pd.DataFrame(new))
    return [{"row": r["row"], "hash": r["hash"], "error": r["error"]} for r in results]


def extract_voice(rows: pd.DataFrame, store, workers: int = 1, batch_size: int = 32, progress=None,
                  executor=None) -> dict:
    """``voice.*`` for ``rows`` (columns: id, content_hash, path, start, end), from the cache where it has them
    and else in batches on ``executor`` (e.g. a :class:`blindcheck.executors.DaskExecutor`, whose workers load
    the encoder once and must see the cache directory) or, by default, in ``workers`` spawned local processes.
    Each batch's embeddings are written to the cache by its worker. A batch whose worker died is tried again
    one clip at a time; a clip that kills its worker alone becomes an error. Returns ``features`` (id,
    voice.*), ``notes`` (id, note), ``errors`` and ``stats``. Cached like every extractor: keyed by the audio's
    content hash and :func:`cache_tag`."""
    from blindcheck.executors import LOST, LocalExecutor
    from blindcheck.features import cache_tag

    ext = VoiceExtractor()
    tag = cache_tag(ext)
    names = ext.feature_names()
    hashes = rows["content_hash"].to_numpy()
    present = store.present(tag, hashes)  # this run's clips only, whatever else the cache holds
    todo: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h not in present and h not in todo:
            todo[h] = i
    tasks = [{"row": i, "id": rows["id"].iloc[i], "hash": h, "path": rows["path"].iloc[i],
              "start": float(rows["start"].iloc[i]), "end": float(rows["end"].iloc[i])} for h, i in todo.items()]
    errors: list[dict] = []
    failed: set[str] = set()
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
        with worker_errors():
            for job, result in executor.run_retrying(_voice_job, jobs, alone):
                if result is LOST:
                    t = job["tasks"][0]
                    result = [{"row": t["row"], "hash": t["hash"],
                               "error": "the worker process died while embedding this clip"}]
                for r in result:
                    if r["error"]:
                        failed.add(r["hash"])
                        errors.append({"id": r["row"], "stage": "voice", "message": r["error"]})
                done += len(result)
                if progress:
                    progress(done, len(tasks))
        store.compact([tag])
    cached = store.read_features(tag, hashes)
    ok = np.array([h not in failed for h in hashes])
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
    return {"features": feats[ok].reset_index(drop=True), "notes": notes, "errors": errors,
            "stats": {"embedded": len(tasks) - len(failed), "reused": int(len(set(hashes)) - len(tasks)),
                      "failed": len(failed), "workers": n_workers if tasks else 0}}
