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
A long file analysed on windows (:class:`blindcheck.inputs.audio.WindowPolicy`) is embedded window by window, each
as a clip of its own, and gets the normed mean of the embeddings of its windows with enough voiced speech
(:func:`from_windows`).

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
from pathlib import Path

import numpy as np

from blindcheck.errors import MissingDependencyError
from blindcheck.features.frames import activity, frame_levels_db, mel_filterbank, stft_mag
from blindcheck.inputs.audio import ANALYSIS_SR, Clip

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


class SpeakerEncoder:
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
        self._encoder: SpeakerEncoder | None = None

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
            self._encoder = SpeakerEncoder(self.threads)
        mels = np.concatenate(parts)
        emb = np.concatenate([self._encoder(mels[i:i + max_partials]) for i in range(0, len(mels), max_partials)])
        owner_arr = np.array(owner)
        for k in np.unique(owner_arr):
            v = emb[owner_arr == k].mean(axis=0)
            v = v / max(float(np.linalg.norm(v)), 1e-12)
            out[int(k)] = dict(zip(names, v.astype(float).tolist(), strict=True))
        return out


def from_windows(values: list[dict[str, float]], notes: list[list[str]]) -> tuple[dict[str, float], list[str]]:
    """One long clip's embedding from those of its windows (:class:`blindcheck.inputs.audio.WindowPolicy`), each
    embedded as a clip of its own (``values``, with each window's ``notes``): the mean of the embeddings of the
    windows that hold enough voiced speech (:data:`MIN_VOICED_S`), L2-normed again; NaN where none does.

    Why this mean: a window's embedding is already the normed mean of its 1.6 s partials, as for any clip, and
    the normed mean of utterance embeddings is GE2E's own speaker centroid; giving each window one vote (rather
    than pooling every partial, which weights the windows by their voiced seconds) keeps the estimate spread over
    the file, which is what the evenly spaced windows are for; and joining the windows' speech into one signal
    would make partials across a cut between two distant moments. Returns (features, notes)."""
    names = list(values[0]) if values else []
    ok = [v for v in values if all(math.isfinite(x) for x in v.values())]
    out_notes = []
    if not ok:
        out = dict.fromkeys(names, math.nan)
        out_notes.append(f"voice: none of the {len(values)} windows holds {MIN_VOICED_S:.2f} s of voiced speech, "
                         "voice features are NaN")
    else:
        v = np.mean([[d[k] for k in names] for d in ok], axis=0)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        out = dict(zip(names, v.astype(float).tolist(), strict=True))
        if len(ok) < len(values):
            out_notes.append(f"voice: {len(values) - len(ok)} of {len(values)} windows hold less than "
                             f"{MIN_VOICED_S:.2f} s of voiced speech: the embedding is the mean of the other "
                             f"{len(ok)}")
    seen: dict[str, int] = {}
    for window_notes in notes:  # what the windows said beyond that (counted, as the acoustic stage counts them)
        for n in window_notes:
            if "voice features are NaN" not in n:
                seen[n] = seen.get(n, 0) + 1
    out_notes += [f"{n} (in {k} of {len(values)} windows)" for n, k in seen.items()]
    return out, out_notes
