"""Frame-level building blocks shared by the modalities: one STFT per clip, frame levels, the activity rule."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from blindcheck.inputs.audio import Clip

N_FFT, WIN, HOP = 512, 400, 160  # 32 ms FFT, 25 ms Hann window, 10 ms hop at 16 kHz


def stft_magnitude(clip: Clip) -> np.ndarray:
    """|STFT| of the analysis signal, computed once per clip and shared."""
    if "stft_mag" not in clip.shared:
        clip.shared["stft_mag"] = stft_mag(clip.y, N_FFT, HOP, WIN)
    return clip.shared["stft_mag"]


def stft_power(clip: Clip) -> np.ndarray:
    """|STFT|² in float64, computed once per clip and shared by the modalities."""
    if "stft_power" not in clip.shared:
        power = stft_magnitude(clip).astype(np.float64)  # F-order, as the magnitude
        clip.shared["stft_power"] = np.multiply(power, power, out=power)  # squared in place
    return clip.shared["stft_power"]


def stft_mag(y: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    """|STFT|, shape (1 + n_fft // 2, 1 + len(y) // hop): the same frames as ``librosa.stft`` with
    ``center=True, pad_mode="constant"`` and a periodic Hann window, in plain numpy (librosa's own STFT goes
    through numba, which costs ~20-30 s of compilation in every fresh environment)."""
    window = _stft_window(n_fft, win)
    padded = pad0(y, n_fft // 2, max(n_fft // 2, n_fft - len(y) - n_fft // 2))
    frames = windows(padded, n_fft, hop)
    out = np.empty((1 + n_fft // 2, len(frames)), np.float32, order="F")  # |rfft|.T as float32, F-order
    # In blocks of frames (each frame's FFT is its own, so the values are those of one call): a temporary of a
    # few MB is a fresh allocation every clip, and its page faults cost ~3x the FFT (measured: 12 vs 3.3 ms for
    # 10 s at 16 kHz); blocks of _STFT_BLOCK frames stay in the cache.
    for i in range(0, len(frames), _STFT_BLOCK):
        spec = np.fft.rfft(frames[i:i + _STFT_BLOCK] * window, axis=1)
        np.absolute(spec, out=out.T[i:i + _STFT_BLOCK], casting="same_kind")  # the float64 |X|, cast to float32
    return out


_STFT_BLOCK = 128  # frames per FFT call in stft_mag


def pad0(x: np.ndarray, before: int, after: int | None = None) -> np.ndarray:
    """``np.pad(x.astype(float64), (before, after))`` with zeros, without np.pad's ~40 us of Python."""
    after = before if after is None else after
    out = np.zeros(before + len(x) + after)
    out[before:before + len(x)] = x
    return out


def windows(x: np.ndarray, n: int, hop: int = 1) -> np.ndarray:
    """``sliding_window_view(x, n)[::hop]`` of a 1-D array (a read-only strided view), without its ~30 us."""
    count = (len(x) - n) // hop + 1
    if count > 0 and x.flags.c_contiguous:  # the same view built directly on x's buffer: ~2 us instead of ~9
        view = np.ndarray((count, n), x.dtype, x, 0, (hop * x.strides[0], x.strides[0]))
        view.flags.writeable = False
        return view
    return np.lib.stride_tricks.as_strided(x, (max(count, 0), n), (hop * x.strides[0], x.strides[0]),
                                           writeable=False)


@lru_cache(maxsize=8)
def _stft_window(n_fft: int, win: int) -> np.ndarray:
    from scipy.signal import get_window

    window = np.zeros(n_fft)
    lpad = (n_fft - win) // 2
    window[lpad:lpad + win] = get_window("hann", win, fftbins=True)
    window.flags.writeable = False
    return window


@lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    """``scipy.signal.get_window("hann", n)`` (periodic), computed once per length (read-only)."""
    from scipy.signal import get_window

    w = get_window("hann", n)
    w.flags.writeable = False
    return w


def percentiles(a: np.ndarray, qs, median: bool = False) -> list[float]:
    """``np.percentile(a, q)`` for each q of ``qs`` (percent; linear interpolation), then ``np.median(a)`` if
    ``median``, of a 1-D array, from one partition: the same order statistics and the same arithmetic as numpy
    (bit for bit), without numpy's ~40 us of wrappers per call, which weigh on short clips. NaN if ``a`` holds
    NaN (as numpy); ``a`` must not be empty."""
    n = a.size
    spots, mid, kth = _percentile_plan(n, tuple(qs), median)
    part = np.partition(a, kth)
    if math.isnan(part[n - 1]):
        return [math.nan] * (len(spots) + len(mid))
    out = []
    for lo, hi, g in spots:
        x, y = float(part[lo]), float(part[hi])
        d = y - x
        out.append(y - d * (1 - g) if g >= 0.5 else x + d * g)  # numpy's _lerp
    for i, j in mid:
        out.append(float(part[i]) if i == j else (float(part[i]) + float(part[j])) / 2)
    return out


def row_percentiles(a: np.ndarray, qs) -> np.ndarray:
    """``np.percentile(a, qs, axis=1)`` of a 2-D float array (shape (len(qs), rows)), bit for bit, from one
    partition."""
    n = a.shape[1]
    spots, _, kth = _percentile_plan(n, tuple(qs), False)
    part = np.partition(a, kth, axis=1)
    out = np.empty((len(spots), a.shape[0]))
    for k, (lo, hi, g) in enumerate(spots):
        x, y = part[:, lo], part[:, hi]
        d = y - x
        out[k] = y - d * (1 - g) if g >= 0.5 else x + d * g
    out[:, np.isnan(part[:, n - 1])] = math.nan
    return out


@lru_cache(maxsize=4096)
def _percentile_plan(n: int, qs: tuple, median: bool) -> tuple[list, list, list]:
    """The spots of ``qs`` (and of the median) among n values and the order statistics to partition, once per n."""
    spots = [percentile_spot(n, q) for q in qs]
    mid = [(n // 2 - 1, n // 2)] if median and n % 2 == 0 else [(n // 2, n // 2)] if median else []
    return spots, mid, sorted({i for s in spots for i in s[:2]} | {i for m in mid for i in m} | {n - 1})


def percentile_spot(n: int, q: float) -> tuple[int, int, float]:
    """(lower index, upper index, weight of the upper) of numpy's linear percentile ``q`` (percent) of n values."""
    vi = (n - 1) * (q / 100)  # numpy's 'linear' method
    lo = min(max(math.floor(vi), 0), n - 1)
    hi = min(lo + 1, n - 1) if vi < n - 1 else lo
    return lo, hi, (vi - math.floor(vi) if 0 <= vi < n - 1 else 0.0)


# Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, logarithmic above.
_MEL_SP, _MEL_LOG_HZ = 200.0 / 3, 1000.0  # Hz per mel in the linear part; where the log part begins
_MEL_LOG_MEL, _MEL_LOGSTEP = _MEL_LOG_HZ / _MEL_SP, np.log(6.4) / 27.0


def _hz_to_mel(f: float) -> float:
    return f / _MEL_SP if f < _MEL_LOG_HZ else _MEL_LOG_MEL + math.log(f / _MEL_LOG_HZ) / _MEL_LOGSTEP


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)`` (Slaney mel, "slaney"
    area normalisation, float32) by librosa's own arithmetic, bit for bit (``tests/features/test_features.py``), without
    importing librosa: its import pulls in numba and cost 0.7 s of every worker's start-up."""
    fmax = float(sr) / 2 if fmax is None else fmax
    mels = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    mel_f = _MEL_SP * mels  # back to Hz
    log_t = mels >= _MEL_LOG_MEL
    mel_f[log_t] = _MEL_LOG_HZ * np.exp(_MEL_LOGSTEP * (mels[log_t] - _MEL_LOG_MEL))
    ramps = np.subtract.outer(mel_f, np.fft.rfftfreq(n=n_fft, d=1.0 / sr))
    fdiff = np.diff(mel_f)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def activity(levels_db: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Active-frame mask and the threshold/floor (dB) used.

    A frame is active when it is within 40 dB of the loudest frame *and* clearly above the noise floor
    (the 10th-percentile frame level plus a quarter of the floor-to-peak range, at least 6 dB), so that a
    steady noise floor is not counted as speech and quiet speech in a clean recording is.
    """
    peak, floor = float(levels_db.max()), percentiles(levels_db, (10,))[0]
    thr = max(peak - 40.0, floor + max(6.0, 0.25 * (peak - floor)))
    return levels_db >= thr, thr, floor


def active_frames(power: np.ndarray, min_active: int = 3) -> np.ndarray:
    """Boolean mask of STFT frames carrying speech energy (see :func:`activity`); all frames when fewer than
    ``min_active`` are active (0: the mask as it is)."""
    return _at_least(_frame_activity(power.mean(axis=0)), min_active)


def clip_frame_power(clip: Clip) -> np.ndarray:
    """Mean STFT power of each frame (``stft_power(clip).mean(axis=0)``), computed once per clip and shared."""
    if "stft_frame_power" not in clip.shared:
        clip.shared["stft_frame_power"] = fmean(stft_power(clip), axis=0)
    return clip.shared["stft_frame_power"]


def clip_active_frames(clip: Clip, min_active: int = 3) -> np.ndarray:
    """:func:`active_frames` of the clip's shared STFT power, the activity rule applied once per clip."""
    if "stft_active" not in clip.shared:
        clip.shared["stft_active"] = _frame_activity(clip_frame_power(clip))
    return _at_least(clip.shared["stft_active"], min_active)


def _frame_activity(frame_power: np.ndarray) -> np.ndarray:
    """:func:`activity` of the frames' levels (dB of each frame's mean STFT power, floored at -120 dB)."""
    return activity(10.0 * np.log10(np.maximum(frame_power, 1e-12)))[0]


def _at_least(mask: np.ndarray, min_active: int) -> np.ndarray:
    """``mask``, or every frame when fewer than ``min_active`` are active."""
    return mask if mask.sum() >= min_active else np.ones_like(mask)


def frame_levels_db(y, sr: int, frame_s: float = 0.025, hop_s: float = 0.010):
    """Per-frame mean-square level in dBFS (floor -120 dB) and the hop in seconds. Shared by modalities."""
    frame, hop = max(1, int(round(frame_s * sr))), max(1, int(round(hop_s * sr)))
    if len(y) < frame:
        ms = np.array([float(np.mean(y.astype(np.float64) ** 2))]) if len(y) else np.array([0.0])
    else:
        n = 1 + (len(y) - frame) // hop
        y2 = y.astype(np.float64)
        csum = np.empty(len(y) + 1)  # [0, cumsum(y**2)], written in place
        csum[0] = 0.0
        np.cumsum(np.multiply(y2, y2, out=y2), out=csum[1:])
        starts = np.arange(n) * hop
        ms = (csum[starts + frame] - csum[starts]) / frame
    return 10.0 * np.log10(np.maximum(ms, 1e-12)), hop / sr


def fmean(a: np.ndarray, axis: int | None = None, keepdims: bool = False):
    """``np.mean(a, axis, keepdims=keepdims)`` of a float64 array, bit for bit (numpy's arithmetic: the sum over
    the count), without numpy's ~15 us of wrappers per call, which weigh on short clips. ``a`` must not be
    empty."""
    return np.add.reduce(a, axis=axis, keepdims=keepdims) / (a.size if axis is None else a.shape[axis])


def mean_std(a: np.ndarray, axis: int | None = None) -> tuple:
    """``(np.mean(a, axis), np.std(a, axis))`` of a float64 array, bit for bit (numpy's own arithmetic: the sum,
    divided by the count, is the mean; the mean of the squared deviations is the variance), from one sum and
    without numpy's ~20 us of wrappers per call, which weigh on short clips."""
    n = a.size if axis is None else a.shape[axis]
    m = np.add.reduce(a, axis=axis, keepdims=True)
    np.true_divide(m, n, out=m)
    d = a - m
    np.multiply(d, d, out=d)
    v = np.add.reduce(d, axis=axis)
    if axis is None:
        return float(m.reshape(())), math.sqrt(v / n)
    np.true_divide(v, n, out=v)
    return m.squeeze(axis), np.sqrt(v, out=v)
