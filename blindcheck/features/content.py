"""``content.*``: how much of a clip is speech, music, other sound and silence.

Every clip's analysis-rate signal (16 kHz) is cut into the speech detector's frames (512 samples, 32 ms) and each
frame gets exactly one label, so that the four shares sum to 1:

1. **speech**: inside a speech segment of Silero VAD (v6, MIT licence), the voice-activity model that the
   ``silero-vad`` package ships inside its wheel (its ``silero_vad_16k_sequence.onnx``, run here with onnxruntime:
   nothing is downloaded, and the extraction workers never import torch, which ``silero_vad`` itself imports).
   That file is the batched export of Silero's streaming model: each 512-sample frame is prefixed with the last 64
   samples of the one before (zeros for the first), the LSTM state (``h``, ``c``) starts at zero and is carried
   between blocks of :data:`VAD_BLOCK` frames; its per-frame probabilities are those of the streaming
   ``silero_vad.onnx`` bit for bit (checked on the bundled speech). The probabilities become segments by Silero's
   own rule (``get_speech_timestamps_from_probs`` with its defaults; its maximum-length cut is off by default and
   is left out): a segment starts at a frame with probability >= :data:`VAD_THRESHOLD` (0.5), ends where the
   probability has stayed below :data:`VAD_NEG_THRESHOLD` (0.35) for :data:`MIN_SILENCE_MS` (100 ms), is kept when
   longer than :data:`MIN_SPEECH_MS` (250 ms), and is padded by :data:`SPEECH_PAD_MS` (30 ms) on each side (half
   the gap where two segments are closer). A frame is speech when its centre lies in a segment.
2. **silence**: the other frames whose level (mean square of the frame, dBFS) is more than :data:`SILENCE_DB`
   (40 dB) below the clip's loudest frame, or below :data:`SILENCE_FLOOR_DBFS` (-70 dBFS).
3. **music** / **other**: the remaining (sounding, non-speech) frames. Music is told from other sound by two
   properties of its notes, measured on a 1024-point Hann spectrum per frame (64 ms, centred on the frame):
   *tonality*, the share of the frame's power in spectral peaks (local maxima over +-2 bins, at least
   :data:`PEAK_DB` (10 dB) above the mean dB level of the 33 bins around them, above 60 Hz) that persist, within
   one bin, into the frames before and after it (sustained partials; noise has peaks that do not persist); and *pitch
   variety*, the number of distinct pitches (the strongest persistent peak of a frame, in equal-tempered
   semitones) each held for at least :data:`HOLD_FRAMES` consecutive frames (96 ms). The sounding non-speech frames
   are taken in blocks of :data:`BLOCK_S` (3 s; the clip, or a long file's window, when shorter, and a last
   remainder under half a block joins the block before): a block is music when at least :data:`TONAL_MIN` (half) of
   its sounding non-speech frames are tonal (tonality >= :data:`TONALITY`, 0.5) *and* it holds at least
   :data:`MIN_PITCHES` (4) distinct pitches; every sounding non-speech frame of a music block is music (the attacks
   between the notes too), every one of another block is other sound. The rule asks for notes: sustained partials
   that change pitch. Measured on the bundled renders, on recorded sound effects and on speech, see the tests
   (``tests/features/test_content.py``) and the README: a steady horn or whistle (one or two held pitches) is other
   sound; a steam whistle that glides through several pitches can pass as music.

Features: ``speech_share``, ``music_share``, ``other_share``, ``silence_share`` (fractions of the clip's frames;
of each window's frames, averaged, for a long file under the window policy) and ``speech_s`` (seconds of speech
in the analysed audio). Where the detector is not installed (``pip install 'blindcheck[content]'``), the speech,
music and other shares are NaN with a note and only ``silence_share`` is computed; the clip then counts as of
unknown content, and nothing is skipped for it.

:func:`content_shares` computes all of it once per clip (``clip.shared``), so the prosodic and music modalities
read the same decision in the same worker (the extraction runs content first). :func:`content_type` names a clip's
dominant content from its shares.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np

from blindcheck.errors import MissingDependencyError
from blindcheck.inputs.audio import ANALYSIS_SR, Clip

CONTENT_EXTRA = "pip install 'blindcheck[content]'"
VAD_FILE = "silero_vad_16k_sequence.onnx"
FRAME, CONTEXT, VAD_BLOCK = 512, 64, 1024  # samples per frame and of context at 16 kHz; frames per ONNX call
WARM_FRAMES = 10  # frames of digital silence before and after the clip (0.32 s): the detector's LSTM warm-up
VAD_THRESHOLD, VAD_NEG_THRESHOLD = 0.5, 0.35
MIN_SPEECH_MS, MIN_SILENCE_MS, SPEECH_PAD_MS = 250, 100, 30
SILENCE_DB, SILENCE_FLOOR_DBFS = 40.0, -70.0
N_FFT, PEAK_DB, MIN_PEAK_HZ = 1024, 10.0, 60.0
TONALITY, TONAL_MIN, MIN_PITCHES, HOLD_FRAMES, BLOCK_S = 0.5, 0.5, 4, 3, 3.0

SHARES = ("speech_share", "music_share", "other_share", "silence_share")
TYPES = ("speech", "music", "other", "silence")
_NAMES = (*SHARES, "speech_s")


def vad_model_path() -> Path | None:
    """The Silero VAD file inside the installed ``silero-vad`` package (found without importing the package, which
    imports torch), or None where it or onnxruntime is missing."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("onnxruntime") is None:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / VAD_FILE
    return path if path.is_file() else None


def content_unavailable() -> str | None:
    """Why the speech detector cannot run here (a message naming the extra), or None."""
    if importlib.util.find_spec("onnxruntime") is None:
        return f"onnxruntime is not installed: {CONTENT_EXTRA}"
    if vad_model_path() is None:
        return f"the Silero VAD model (package silero-vad) is not installed: {CONTENT_EXTRA}"
    return None


@functools.lru_cache(maxsize=1)
def _model_digest() -> str | None:
    path = vad_model_path()
    return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest() if path else None


@functools.lru_cache(maxsize=1)
def _session():
    path = vad_model_path()
    if path is None:
        raise MissingDependencyError(f"content modality: {content_unavailable()}")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1  # one thread per extraction worker, as BLAS
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def speech_probabilities(y: np.ndarray) -> np.ndarray:
    """Silero VAD's speech probability of each 512-sample frame of ``y`` (16 kHz mono; the last frame zero-padded):
    the streaming model's values, from the batched export in blocks of :data:`VAD_BLOCK` frames."""
    y = np.asarray(y, dtype=np.float32)
    n = (len(y) + FRAME - 1) // FRAME
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    frames = np.zeros((n, FRAME), dtype=np.float32)
    frames.reshape(-1)[:len(y)] = y
    context = np.zeros((n, CONTEXT), dtype=np.float32)
    context[1:] = frames[:-1, -CONTEXT:]
    x = np.concatenate([context, frames], axis=1)
    sess = _session()
    h = np.zeros((1, 1, 128), dtype=np.float32)
    c = np.zeros((1, 1, 128), dtype=np.float32)
    out = []
    for i in range(0, n, VAD_BLOCK):
        p, h, c = sess.run(["speech_probs", "hn", "cn"], {"input": x[i:i + VAD_BLOCK], "h": h, "c": c})
        out.append(p.reshape(-1))
    return np.concatenate(out)


def speech_segments(probs: np.ndarray, n_samples: int, sr: int = ANALYSIS_SR,
                    min_speech_ms: float = MIN_SPEECH_MS) -> list[tuple[int, int]]:
    """Speech segments (start, end) in samples from per-frame probabilities, by Silero's
    ``get_speech_timestamps_from_probs`` with its default arguments (``max_speech_duration_s`` infinite, so its
    maximum-length cut never applies and is left out)."""
    min_speech = sr * min_speech_ms / 1000
    pad = sr * SPEECH_PAD_MS / 1000
    min_silence = sr * MIN_SILENCE_MS / 1000
    triggered, temp_end, start = False, 0, 0
    segments: list[list[int]] = []
    for i, p in enumerate(probs):
        cur = FRAME * i
        if p >= VAD_THRESHOLD and temp_end:
            temp_end = 0
        if p >= VAD_THRESHOLD and not triggered:
            triggered, start = True, cur
            continue
        if p < VAD_NEG_THRESHOLD and triggered:
            if not temp_end:
                temp_end = cur
            if cur - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                segments.append([start, temp_end])
            triggered, temp_end = False, 0
    if triggered and n_samples - start > min_speech:
        segments.append([start, n_samples])
    for i, seg in enumerate(segments):
        if i == 0:
            seg[0] = int(max(0, seg[0] - pad))
        if i != len(segments) - 1:
            gap = segments[i + 1][0] - seg[1]
            if gap < 2 * pad:
                seg[1] += int(gap // 2)
                segments[i + 1][0] = int(max(0, segments[i + 1][0] - gap // 2))
            else:
                seg[1] = int(min(n_samples, seg[1] + pad))
                segments[i + 1][0] = int(max(0, segments[i + 1][0] - pad))
        else:
            seg[1] = int(min(n_samples, seg[1] + pad))
    return [(a, b) for a, b in segments]


def _spectra(y: np.ndarray, n: int) -> np.ndarray:
    """|1024-point Hann spectrum|^2 of each detector frame, centred on it (float64, shape (n, 513))."""
    hop = FRAME
    padded = np.zeros(n * hop + N_FFT)
    lead = N_FFT // 2 - hop // 2
    padded[lead:lead + len(y)] = y
    from numpy.lib.stride_tricks import sliding_window_view

    frames = sliding_window_view(padded, N_FFT)[::hop][:n]
    spec = np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1))
    return np.multiply(spec, spec, out=spec)


def _tonal(power: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: tonality (share of power in persistent peaks) and the pitch of its strongest persistent peak
    (semitones, MIDI numbering; -1 where it has none)."""
    from scipy.ndimage import maximum_filter1d, uniform_filter1d

    n = power.shape[0]
    db = 10.0 * np.log10(power + 1e-12)
    peak = (db >= maximum_filter1d(db, 5, axis=1)) & (db > uniform_filter1d(db, 33, axis=1, mode="nearest") + PEAK_DB)
    peak[:, :int(math.ceil(MIN_PEAK_HZ * N_FFT / sr))] = False
    near = maximum_filter1d(peak.view(np.uint8), 3, axis=1).view(bool)  # a peak within one bin
    held = peak.copy()
    held[1:] &= near[:-1]
    held[:-1] &= near[1:]
    held[0] = held[-1] = False
    bins = maximum_filter1d(held.view(np.uint8), 3, axis=1).view(bool)  # the peak and its two neighbours
    total = power.sum(axis=1)
    tonality = np.where(total > 0, (power * bins).sum(axis=1) / np.maximum(total, 1e-300), 0.0)
    strongest = np.where(held, power, 0.0)
    k = strongest.argmax(axis=1)
    has = strongest[np.arange(n), k] > 0
    kk = np.clip(k, 1, power.shape[1] - 2)
    rows = np.arange(n)
    lo, mid, hi = (np.log(power[rows, kk + d] + 1e-300) for d in (-1, 0, 1))
    den = lo - 2 * mid + hi
    shift = np.where(den < 0, 0.5 * (lo - hi) / np.where(den < 0, den, -1.0), 0.0)  # parabolic peak
    hz = (kk + shift) * sr / N_FFT
    pitch = np.where(has, np.round(12.0 * np.log2(np.maximum(hz, 1.0) / 440.0) + 69.0), -1).astype(int)
    return tonality, pitch


def _pitches_held(pitch: np.ndarray) -> int:
    """Distinct pitches (>= 0) each held for at least :data:`HOLD_FRAMES` consecutive frames."""
    if len(pitch) < HOLD_FRAMES:
        return 0
    edges = np.flatnonzero(np.diff(pitch)) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [len(pitch)]]))
    values = pitch[starts]
    return len({int(v) for v, n in zip(values, lengths, strict=True) if v >= 0 and n >= HOLD_FRAMES})


def _blocks(n: int, per_block: int) -> list[tuple[int, int]]:
    if n <= per_block:
        return [(0, n)]
    cuts = list(range(0, n, per_block))
    if n - cuts[-1] < per_block / 2:
        cuts.pop()
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], n], strict=True)]


def content_shares(clip: Clip) -> dict[str, float]:
    """The content features of ``clip`` (see the module docstring), computed once per clip (``clip.shared``);
    the notes go to ``clip.notes`` only on the first call."""
    if "content" in clip.shared:
        return clip.shared["content"]
    if clip.sr != ANALYSIS_SR:
        raise ValueError(f"the speech detector needs {ANALYSIS_SR} Hz audio, not {clip.sr}")
    y = np.asarray(clip.y, dtype=np.float64)
    n = (len(y) + FRAME - 1) // FRAME
    out = dict.fromkeys(_NAMES, math.nan)
    if n == 0:
        clip.notes.append("content: empty clip, content shares undefined")
        clip.shared["content"] = out
        return out
    padded = np.zeros(n * FRAME)
    padded[:len(y)] = y
    ms = np.mean(padded.reshape(n, FRAME) ** 2, axis=1)
    if len(y) % FRAME:  # the last frame's level over its real samples
        ms[-1] = float(np.mean(y[(n - 1) * FRAME:] ** 2))
    level = 10.0 * np.log10(np.maximum(ms, 1e-12))
    silent = (level < level.max() - SILENCE_DB) | (level < SILENCE_FLOOR_DBFS)
    why = content_unavailable()
    if why:
        out["silence_share"] = float(silent.mean())
        clip.notes.append(f"content: speech detector unavailable ({why}); speech, music and other shares NaN")
        clip.shared["content"] = out
        return out
    speech = np.zeros(n, dtype=bool)
    centres = np.arange(n) * FRAME + FRAME // 2
    lead = np.zeros(WARM_FRAMES * FRAME, dtype=np.float32)
    probs = speech_probabilities(np.concatenate([lead, np.asarray(clip.y, dtype=np.float32), lead]))
    total = len(y) + 2 * len(lead)
    min_speech = min(MIN_SPEECH_MS, 500.0 * len(y) / clip.sr)
    segments = [(max(a - len(lead), 0), min(b - len(lead), len(y)))
                for a, b in speech_segments(probs, total, clip.sr, min_speech_ms=min_speech)]
    segments = [(a, b) for a, b in segments if b > a]
    for a, b in segments:
        speech[(centres >= a) & (centres < b)] = True
    silent &= ~speech
    sounding = ~speech & ~silent
    music = np.zeros(n, dtype=bool)
    if sounding.any():
        tonality, pitch = _tonal(_spectra(y, n), clip.sr)
        for a, b in _blocks(n, int(round(BLOCK_S * clip.sr / FRAME))):
            snd = sounding[a:b]
            if not snd.any():
                continue
            tonal = snd & (tonality[a:b] >= TONALITY)
            if tonal.sum() >= TONAL_MIN * snd.sum() and _pitches_held(np.where(tonal, pitch[a:b], -1)) >= MIN_PITCHES:
                music[a:b] = snd
    out.update(speech_share=float(speech.mean()), music_share=float(music.mean()),
               other_share=float((sounding & ~music).mean()), silence_share=float(silent.mean()),
               speech_s=float(sum(b - a for a, b in segments) / clip.sr))
    clip.shared["content"] = out
    return out


def content_type(shares) -> str:
    """A clip's dominant content: ``"speech"``, ``"music"``, ``"other"`` or ``"silence"`` from its shares (a mapping
    with the keys of :data:`SHARES`, with or without the ``content.`` prefix), or ``"unknown"`` where a share is
    missing or NaN (the detector was not installed).

    Sound comes before silence: the type is the largest of the speech, music and other shares, or ``"silence"``
    when all three are 0. Ties go to the first in the order speech, music, other (a clip with as much speech as
    music is a speech clip: what it says may be transcribed)."""
    def get(key: str) -> float:
        v = shares.get(key, shares.get(f"content.{key}"))
        return math.nan if v is None else float(v)

    values = [get(k) for k in SHARES[:3]]
    if any(math.isnan(v) for v in values):
        return "unknown"
    best = max(range(3), key=lambda i: (values[i], -i))
    return TYPES[best] if values[best] > 0 else "silence"


class ContentExtractor:
    name = "content"
    version = "1"

    def config(self) -> dict:
        return {"vad": VAD_FILE, "vad_digest": _model_digest(), "threshold": VAD_THRESHOLD,
                "neg_threshold": VAD_NEG_THRESHOLD, "min_speech_ms": MIN_SPEECH_MS, "min_silence_ms": MIN_SILENCE_MS,
                "pad_ms": SPEECH_PAD_MS, "silence_db": SILENCE_DB, "silence_floor_dbfs": SILENCE_FLOOR_DBFS,
                "n_fft": N_FFT, "peak_db": PEAK_DB, "tonality": TONALITY, "tonal_min": TONAL_MIN,
                "min_pitches": MIN_PITCHES, "hold": HOLD_FRAMES, "block_s": BLOCK_S}

    def feature_names(self) -> list[str]:
        return list(_NAMES)

    def warm(self) -> None:
        """Load the detector (onnxruntime's session) and run every path once."""
        from blindcheck.inputs.audio import DecodedAudio

        t = np.arange(ANALYSIS_SR) / ANALYSIS_SR
        y = (0.1 * np.sin(2 * np.pi * 440 * t * (1 + (t > 0.5)))).astype(np.float32)
        audio = DecodedAudio(samples=y, sr=ANALYSIS_SR, channels=1, format="WAV", subtype="PCM_16", bit_depth=16.0,
                             lossy=False, decoder="soundfile")
        self.extract(Clip("warmup", audio, y, ANALYSIS_SR))

    def extract(self, clip: Clip) -> dict[str, float]:
        return dict(content_shares(clip))
