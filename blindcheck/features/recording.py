"""``recording.*``: what the recording chain left in the file (not what was said, nor who said it).

Format facts come from the file itself; levels, bandwidth and clipping are measured on the samples at the
native rate (resampling would hide the very artefacts looked for); silence, SNR and loudness on the
analysis-rate signal, so that they are comparable across native rates.

Version 3 adds the shape of the noise floor (the inactive STFT frames' mean spectrum): ``noise_band_XX_db``, its
level in 8 linear bands of sr/16 (1 kHz at 16 kHz) relative to their mean power (floored at -80 dB, so that an
empty band's numerical noise is a constant), and ``noise_slope_db_khz``, the
least-squares slope of its dB spectrum (same floor) from 100 Hz to Nyquist: hiss, hum, a preamp's or a codec's noise
shaping. Loudness is the same BS.1770-4 computation as pyloudnorm's ``Meter.integrated_loudness`` with the
K-weighting filters built once per rate and the blocks summed vectorised (same values to rounding).

Version 4 changes no feature, only the cost (``benchmarks/feature_drift.py``): the two K-weighting biquads run
as one second-order-section filter (one pass instead of two; ``loudness_lufs`` within 1e-12 relative of version
3), the Welch spectrum's window is built once per length, and percentiles and the running median come from one
partition each (numpy's values bit for bit, without its wrappers' per-call cost on short clips). Still version 4,
cheaper again, every value bit for bit: running sums, squares and Welch's products in place, Welch's FFTs in
blocks of segments (no multi-MB temporaries), its and the noise spectrum's constants once per length and rate,
numpy's mean as its sum over the count without the wrappers.

Version 5 adds the channel image, computed from the native-rate samples of every channel while the decoder holds
them (:func:`blindcheck.inputs.audio.channel_sums`; the other features still see the mono mix):
``channel_correlation`` (Pearson correlation between channels, the mean over channel pairs), ``side_mid_db``
(energy of the side signal L-R over that of the mid signal L+R, first two channels, in dB, within +-120),
``channel_level_diff_db`` (the absolute difference of the first two channels' RMS levels, dB) and
``identical_channels`` (1 when every channel equals the first at every sample: "fake stereo", a mono recording
stored as two channels). A mono file gets the values of a signal identical in all its channels: correlation 1,
side/mid at the floor (-120 dB), level difference 0, identical 1; so mono and fake stereo differ only in
``channels``. The correlation is NaN (with a note) when a channel does not vary (digital silence).

Long files analysed on windows (:class:`blindcheck.inputs.audio.WindowPolicy`): ``duration_s`` and the format
facts describe the whole file; ``leading_silence_s`` comes from the first window (which starts at the file's
start), ``trailing_silence_s`` from the last (which ends at its end); every other feature is the mean over
windows of its value on each window (see :meth:`RecordingExtractor.from_windows`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from blindcheck.features.frames import (
    activity,
    clip_active_frames,
    fmean,
    frame_levels_db,
    hann,
    pad0,
    percentiles,
    stft_power,
    windows,
)
from blindcheck.inputs.audio import Clip

_FORMATS = ("wav", "flac", "mp3", "ogg")
_DB_FLOOR = -120.0
_FLAT = 1e-15  # a channel whose variance is below this (-150 dB) does not vary: no correlation
N_NOISE_BANDS = 8


@lru_cache(maxsize=8)
def k_weighting(sr: int) -> tuple[np.ndarray, float]:
    """pyloudnorm's K-weighting stages at ``sr`` as second-order sections (b0 b1 b2 a0 a1 a2 per stage) and the
    product of their passband gains, computed once."""
    import pyloudnorm

    stages = list(pyloudnorm.Meter(sr)._filters.values())
    sos = np.array([np.concatenate([np.asarray(f.b, float), np.asarray(f.a, float)]) for f in stages])
    assert sos.shape[1] == 6, "K-weighting stages are biquads"
    return sos / sos[:, 3:4], float(np.prod([f.passband_gain for f in stages]))


def integrated_loudness(y: np.ndarray, sr: int, block_size: float) -> float:
    """ITU-R BS.1770-4 integrated loudness of a mono signal, as ``pyloudnorm.Meter(sr, block_size=block_size)
    .integrated_loudness(y)`` (gates at -70 LUFS and -10 LU; -inf when every block is gated out)."""
    from scipy.signal import sosfilt

    sos, gain = k_weighting(sr)
    # Both stages in one pass (pyloudnorm runs lfilter twice): 3x cheaper, the same filter up to rounding (the
    # filtered signal within 4e-14 relative, the loudness within 1e-12).
    x = sosfilt(sos, y)  # in float64 (the sections' type), on sosfilt's own copy of y
    if gain != 1.0:
        x *= gain
    step = 1.0 - 0.75
    n_blocks = int(np.round((len(x) / sr - block_size) / (block_size * step)) + 1)
    j = np.arange(n_blocks)
    lo = (block_size * (j * step) * sr).astype(int)
    hi = (block_size * (j * step + 1) * sr).astype(int)
    csum = np.empty(len(x) + 1)  # [0, cumsum(x**2)], written in place
    csum[0] = 0.0
    np.cumsum(np.multiply(x, x, out=x), out=csum[1:])
    z = (csum[np.minimum(hi, len(x))] - csum[np.minimum(lo, len(x))]) / (block_size * sr)
    with np.errstate(divide="ignore", invalid="ignore"):
        lk = -0.691 + 10.0 * np.log10(z)
        gated = lk >= -70.0
        if not gated.any():
            return -math.inf
        rel = -0.691 + 10.0 * np.log10(fmean(z[gated])) - 10.0
        keep = (lk > rel) & (lk > -70.0)
        return float(-0.691 + 10.0 * np.log10(fmean(z[keep]))) if keep.any() else -math.inf


def _db(power: float) -> float:
    return float(10.0 * math.log10(max(power, 10 ** (_DB_FLOOR / 10))))


def welch_psd(x: np.ndarray, sr: int, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density (Hann, 50% overlap, per-segment mean removed), vectorised.

    Same estimator as ``scipy.signal.welch(x, sr, "hann", nperseg, nperseg // 2)`` up to the density scale,
    without its per-segment Python loop.
    """
    w, freqs, scale = _welch_constants(nperseg, sr)
    segs = windows(np.ascontiguousarray(x), nperseg, nperseg - nperseg // 2)
    p = np.empty((len(segs), nperseg // 2 + 1))  # |X| of each segment
    # In blocks of segments (each one's values are its own): multi-MB temporaries are fresh allocations every clip
    # whose page faults cost more than the FFTs (see frames.stft_mag); each block converted to float64 as before.
    for i in range(0, len(segs), _WELCH_BLOCK):
        seg = segs[i:i + _WELCH_BLOCK].astype(np.float64)
        seg -= fmean(seg, axis=1, keepdims=True)
        seg *= w  # in place: the same products as seg * w
        np.absolute(np.fft.rfft(seg, axis=1), out=p[i:i + _WELCH_BLOCK])
    p = fmean(np.multiply(p, p, out=p), axis=0) / scale  # |X|**2 in place
    p[1:-1 if nperseg % 2 == 0 else None] *= 2.0
    return freqs, p


_WELCH_BLOCK = 128  # segments per FFT call in welch_psd


@lru_cache(maxsize=16)
def _welch_constants(nperseg: int, sr: int) -> tuple[np.ndarray, np.ndarray, float]:
    """welch_psd's window, its frequencies (read-only) and its density scale, computed once per length and rate."""
    w = hann(nperseg)
    freqs = np.fft.rfftfreq(nperseg, 1.0 / sr)
    freqs.flags.writeable = False
    return w, freqs, sr * (w**2).sum()


def effective_bandwidth(x: np.ndarray, sr: int) -> float:
    """Highest frequency (Hz) whose long-term level stands above the noise floor.

    Long-term average spectrum by Welch (~32 ms Hann windows), median-smoothed over frequency. The floor is
    the 5th percentile of that spectrum; a bin counts as carrying energy when it is at least 12 dB above the
    floor and no more than 70 dB below the spectrum's peak; a spectrum within 20 dB of flat everywhere is
    full-band (Nyquist). A file upsampled from 8 kHz keeps ~4 kHz; an MP3
    keeps its encoder's low-pass. NaN for digital silence.
    """
    if len(x) < 16 or not np.any(x):
        return math.nan
    nper = min(len(x), 1 << max(4, int(round(math.log2(sr * 0.032)))))
    f, p = welch_psd(x, sr, nper)
    level = 10.0 * np.log10(p + 1e-30)
    k = min(9, len(level) - (1 - len(level) % 2))
    if k >= 3:  # scipy.signal.medfilt(level, k): running median, zero-padded ends
        # np.median of each odd-length window: its middle order statistic (the same value, without the wrapper)
        level = np.partition(windows(pad0(level, k // 2), k), k // 2, axis=1)[:, k // 2]
    floor, peak = percentiles(level, (5,))[0], float(level.max())
    if peak - floor < 20.0:  # no band stands out from the rest: energy reaches Nyquist
        return float(f[-1])
    thr = max(floor + 12.0, peak - 70.0)
    above = np.nonzero(level[1:] >= thr)[0]
    return float(f[1 + above[-1]]) if above.size else 0.0


def clipping_fraction(x: np.ndarray) -> float:
    """Share of samples in plateaus (≥3 consecutive samples within 0.01% of the absolute peak).

    Plateaus rather than a fixed full-scale threshold: clipping that was later attenuated is caught too, and
    an unclipped waveform that merely touches its peak at isolated samples is not counted.
    """
    a = np.abs(x.astype(np.float64))
    peak = a.max() if a.size else 0.0
    if peak <= 0:
        return 0.0
    near = np.concatenate([[False], a >= peak * (1 - 1e-4), [False]]).astype(np.int8)
    edges = np.diff(near)
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    runs = ends - starts
    return float(runs[runs >= 3].sum() / a.size)


@lru_cache(maxsize=16)
def _noise_constants(n_bins: int, sr: int) -> tuple:
    """The noise spectrum's per-rate constants: bin frequencies, band edges (DC left out), the bins from 100 Hz
    and their centred frequencies (kHz) and sum of squares (the least-squares slope's weights)."""
    freqs = np.fft.rfftfreq(2 * (n_bins - 1), 1.0 / sr)
    edges = np.linspace(1, n_bins, N_NOISE_BANDS + 1).round().astype(int)
    sel = freqs >= 100.0
    fk = freqs[sel] / 1000.0
    for a in (freqs, edges, sel):
        a.flags.writeable = False
    return freqs, edges, sel, fk - fk.mean(), ((fk - fk.mean()) ** 2).sum()


def channel_features(sums: dict, channels: int, notes: list[str]) -> dict[str, float]:
    """The channel image from :func:`blindcheck.inputs.audio.channel_sums` (see the module's docstring for the
    definitions and the values of a mono file)."""
    if channels < 2:
        return {"channel_correlation": 1.0, "side_mid_db": _DB_FLOOR, "channel_level_diff_db": 0.0,
                "identical_channels": 1.0}
    if not sums or sums.get("channels", 0) < 2 or not sums.get("frames"):
        notes.append("recording: no channel data decoded, channel features undefined")
        return {"channel_correlation": math.nan, "side_mid_db": math.nan, "channel_level_diff_db": math.nan,
                "identical_channels": math.nan}
    n = sums["frames"]
    gram, mean = np.asarray(sums["gram"]) / n, np.asarray(sums["sums"]) / n
    cov = gram - np.outer(mean, mean)
    var = np.diag(cov)
    i, j = np.triu_indices(len(var), 1)
    if (var <= _FLAT).any():
        notes.append("recording: a channel does not vary (silent), inter-channel correlation undefined")
        corr = math.nan
    else:
        corr = float(np.mean(cov[i, j] / np.sqrt(var[i] * var[j])))
    side, mid = sums["side"], sums["mid"]
    ratio = 0.0 if side == 0 else (math.inf if mid == 0 else side / mid)
    return {"channel_correlation": corr, "side_mid_db": min(-_DB_FLOOR, _db(ratio)),
            "channel_level_diff_db": abs(_db(gram[0, 0]) - _db(gram[1, 1])),
            "identical_channels": float(bool(sums["identical"]))}


def _feature_names() -> list[str]:
    return [
        "sample_rate", "channels", "channel_correlation", "side_mid_db", "channel_level_diff_db",
        "identical_channels", "bit_depth", "lossy", "float_format",
        *[f"format_{f}" for f in (*_FORMATS, "other")],
        "duration_s", "effective_bandwidth_hz", "bandwidth_ratio", "dc_offset", "peak_dbfs",
        "crest_factor_db", "clipping_fraction", "rms_dbfs", "loudness_lufs", "leading_silence_s",
        "trailing_silence_s", "silence_ratio", "noise_floor_dbfs", "snr_db", "noise_flatness",
        "noise_centroid_hz", *[f"noise_band_{b:02d}_db" for b in range(N_NOISE_BANDS)], "noise_slope_db_khz",
    ]


_NAMES = tuple(_feature_names())  # built once: extract_features asks for them per clip


class RecordingExtractor:
    name = "recording"
    version = "5"

    def config(self) -> dict:
        return {"frame_s": 0.025, "hop_s": 0.010, "loudness": "BS.1770-4/pyloudnorm"}

    def feature_names(self) -> list[str]:
        return list(_NAMES)

    def extract(self, clip: Clip) -> dict[str, float]:
        a = clip.audio
        x = a.samples
        out: dict[str, float] = {
            "sample_rate": float(a.sr),
            "channels": float(a.channels),
            "bit_depth": a.bit_depth,
            "lossy": float(a.lossy),
            "float_format": float(a.subtype in ("FLOAT", "DOUBLE") or a.subtype.startswith("pcm_f")),
        }
        out.update(channel_features(a.channel_sums, a.channels, clip.notes))
        fmt = a.format.lower()
        for f in _FORMATS:
            out[f"format_{f}"] = float(fmt == f)
        out["format_other"] = float(fmt not in _FORMATS)
        out["duration_s"] = a.span_s if a.span_s is not None else a.duration_s  # a window's: the whole file's

        bw = effective_bandwidth(x, a.sr)
        if math.isnan(bw):
            clip.notes.append("recording: digital silence, effective bandwidth undefined")
        out["effective_bandwidth_hz"] = bw
        out["bandwidth_ratio"] = bw / (a.sr / 2) if a.sr else math.nan
        x64 = x.astype(np.float64)
        # np.mean(x64**2) and np.mean(x64) by numpy's arithmetic (the sum over the count), without the wrappers
        out["dc_offset"] = float(np.add.reduce(x64) / x64.size)
        peak = float(np.abs(x64).max())
        ms = float(np.add.reduce(np.multiply(x64, x64, out=x64)) / x64.size)
        out["peak_dbfs"] = 20.0 * math.log10(max(peak, 1e-6))
        out["rms_dbfs"] = _db(ms)
        out["crest_factor_db"] = out["peak_dbfs"] - out["rms_dbfs"] if ms > 0 else math.nan
        out["clipping_fraction"] = clipping_fraction(x)
        out["loudness_lufs"] = self._loudness(clip)

        levels, hop_s = frame_levels_db(clip.y, clip.sr)
        active, _thr, floor = activity(levels)
        if not np.any(levels > _DB_FLOOR + 1):
            active = np.zeros_like(active)
        idx = np.nonzero(active)[0]
        dur = len(clip.y) / clip.sr
        if idx.size == 0:
            out["leading_silence_s"] = out["trailing_silence_s"] = dur
            out["silence_ratio"] = 1.0
            out["snr_db"] = math.nan
            clip.notes.append("recording: no active frames (silence), SNR undefined")
        else:
            frame_s = 0.025
            out["leading_silence_s"] = float(idx[0] * hop_s)
            out["trailing_silence_s"] = float(max(0.0, dur - (idx[-1] * hop_s + frame_s)))
            out["silence_ratio"] = 1.0 - np.count_nonzero(active) / active.size  # 1 - active.mean(), exactly
            p = 10 ** (levels / 10)
            noise = fmean(p[~active]) if (~active).any() else 10 ** (floor / 10)
            sig = fmean(p[active])
            out["snr_db"] = min(max(10 * math.log10(max(sig - noise, 1e-12) / max(noise, 1e-12)), -20.0), 100.0)
        out["noise_floor_dbfs"] = float(floor)
        out.update(self._noise_spectrum(clip))
        return out

    @staticmethod
    def from_windows(values: list[dict[str, float]]) -> dict[str, float]:
        """A windowed file's features that are not the mean over its windows: its leading silence is the first
        window's (it starts at the file's start), its trailing silence the last window's (it ends at the end)."""
        return {"leading_silence_s": values[0]["leading_silence_s"],
                "trailing_silence_s": values[-1]["trailing_silence_s"]}

    @staticmethod
    def _noise_spectrum(clip: Clip) -> dict[str, float]:
        """Spectral shape of the noise floor: flatness and centroid of the inactive STFT frames.

        Added white noise, hum, a different preamp or room leaves its trace here even when the speech frames
        are unchanged. NaN (with a note) when fewer than 3 frames are inactive or they are digital silence.
        """
        power = stft_power(clip)
        quiet = power[:, ~clip_active_frames(clip, min_active=0)]
        quiet = quiet[:, quiet.sum(axis=0) > 1e-14]  # digital zeros have no spectral shape
        if quiet.shape[1] < 3:
            clip.notes.append("recording: fewer than 3 non-silent pause frames, noise spectrum undefined")
            return {"noise_flatness": math.nan, "noise_centroid_hz": math.nan, "noise_slope_db_khz": math.nan,
                    **{f"noise_band_{b:02d}_db": math.nan for b in range(N_NOISE_BANDS)}}
        spec = fmean(quiet, axis=1)
        freqs, edges, sel, fk_c, fk_ss = _noise_constants(len(spec), clip.sr)
        spec_mean = fmean(spec)
        flat = float(np.exp(fmean(np.log(np.maximum(spec, 1e-20)))) / max(spec_mean, 1e-20))
        out = {"noise_flatness": flat, "noise_centroid_hz": float((freqs * spec).sum() / spec.sum())}
        level = 10.0 * np.log10(np.maximum(spec / max(spec_mean, 1e-30), 1e-8))  # floored 80 dB under the mean
        bands = np.add.reduceat(spec, edges[:-1]) / np.diff(edges)
        bands = 10.0 * np.log10(np.maximum(bands / max(fmean(bands), 1e-30), 1e-8))  # re their mean, >= -80 dB
        for b, v in enumerate(bands):
            out[f"noise_band_{b:02d}_db"] = float(v)
        out["noise_slope_db_khz"] = float(level[sel] @ fk_c / fk_ss)
        return out

    @staticmethod
    def _loudness(clip: Clip) -> float:
        """ITU-R BS.1770-4 integrated loudness (LUFS). Clips under 400 ms use one block spanning the clip."""
        dur = len(clip.y) / clip.sr
        if dur < 0.05:
            clip.notes.append("recording: clip shorter than 50 ms, loudness undefined")
            return math.nan
        # As before with pyloudnorm, which needs strictly more samples than one block.
        lufs = integrated_loudness(clip.y, clip.sr, block_size=min(0.400, (len(clip.y) - 1) / clip.sr))
        if not math.isfinite(lufs):
            clip.notes.append("recording: every block below the -70 LUFS gate, loudness undefined")
            return math.nan
        return lufs
