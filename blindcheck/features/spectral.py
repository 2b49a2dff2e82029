"""``spectral.*``: short-time spectral shape at the analysis rate, from one STFT (plain numpy).

Frames: 25 ms Hann windows every 10 ms, FFT size 512 at 16 kHz. Every frame-level descriptor is summarised by
its mean and standard deviation over the clip's *active* frames (frames with speech energy, by the same rule
as ``recording.silence_ratio``; all frames when fewer than three are active), so that silence, padding and
pauses show up in ``recording.*`` and not as the spectral shape of nothing.

Spectral features are level-free — the level lives in ``recording.*`` — so that a gain difference between the
sides shows up in one modality only: MFCC c0's mean (the log energy) is left out, its standard deviation (the
dynamics) kept. The long-term average spectrum (``ltas_mel_XX``) is the mean mel-band power of the active
frames in dB relative to the clip's average band level: a level-free picture of the microphone and room
response.

Version 4 computes every family from the shared |STFT| / power / mel in numpy instead of librosa's wrappers
(each of which re-derived frequencies, normalisations or a numba kernel), with the same definitions as
librosa 0.11 (slaney mel, orthonormal DCT-II, Savitzky-Golay deltas, librosa's spectral contrast including its
80 dB ``top_db`` clamp of the peak/valley levels). Values of the version-3 features agree with version 3 to
floating-point rounding (``benchmarks/feature_drift.py``): centroid, bandwidth and flatness are now computed in
float64 from the shared power instead of float32 magnitudes (relative change < 1e-5). Added in version 4
(all over active frames, all level-free):

- ``ltas_lin_XX``: LTAS in 32 linear bands of sr/64 (250 Hz at 16 kHz), dB relative to the bands' mean power,
  floored at -80 dB (so that the numerical noise of an empty band, e.g. above 4 kHz in an 8 kHz file, is a
  constant and does not move the other bands): the high-frequency resolution the mel LTAS lacks
  (band-limiting, codec low-pass, anti-alias roll-off).
- ``alpha_ratio_db`` (energy 50-1000 Hz over 1-5 kHz), ``hammarberg_db`` (strongest bin 0-2 kHz over
  strongest bin 2-5 kHz), ``slope_0_500_db_khz`` and ``slope_500_1500_db_khz`` (least-squares slope of the
  dB power spectrum in that band, DC bin left out, dB per kHz): spectral tilt as in eGeMAPS; mean and std.
- ``{centroid_hz,bandwidth_hz,rolloff_hz,flatness}_p{10,50,90}``: percentiles of the frame series.
- ``mod_{lo}_{hi}hz``: share of the amplitude envelope's modulation power (frame RMS at 100 Hz, all frames,
  mean removed) in octave bands 1-2 ... 32-50 Hz; 0 when the envelope is flat. ``mod_1_2hz`` is NaN for clips
  under 1 s (it needs one full cycle).

Version 5 changes no value (largest relative difference 1e-15, ``benchmarks/feature_drift.py``), only the cost:
spectral contrast takes the minimum/maximum of a sub-band where librosa's 2% quantile is one bin (a sort
otherwise), band rows are slices (views, not copies), percentiles come from one partition, the feature names are
built once and the values go into the result by blocks. Still version 5, cheaper again (``benchmarks/
feature_drift.py``: every feature bit for bit but flatness's, within 5e-15 relative): zero crossings counted by
bisecting the sign changes, flatness's mean log from one log per 16 bins (of their product), the contrast
sub-bands' minima and maxima by one ``reduceat``, mean and std from one sum (``frames.mean_std``), the frame
mean power shared with the activity rule, and fewer temporaries and numpy calls per clip.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from blindcheck.features.frames import (
    HOP,
    N_FFT,
    WIN,
    clip_active_frames,
    clip_frame_power,
    fmean,
    mean_std,
    mel_filterbank,
    row_percentiles,
    stft_magnitude,
    stft_power,
)
from blindcheck.inputs.audio import Clip

N_MELS, N_MFCC, N_CONTRAST = 40, 21, 6
N_LIN = 32
_FRAME_FEATURES = ("centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "zcr", "flux")
_TILT_FEATURES = ("alpha_ratio_db", "hammarberg_db", "slope_0_500_db_khz", "slope_500_1500_db_khz")
_PCT_FEATURES = ("centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness")
_PCTS = (10, 50, 90)
_MOD_EDGES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 50.0)
_AMIN = 1e-10


@lru_cache(maxsize=8)
def _mel_basis(sr: int) -> np.ndarray:
    # librosa.filters.mel's slaney bank, bit for bit, without importing librosa (and numba with it)
    return mel_filterbank(sr, N_FFT, N_MELS, fmin=20.0, fmax=sr / 2).astype(np.float64)


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """Orthonormal DCT-II rows 0..N_MFCC-1 over N_MELS bands (scipy.fft.dct(type=2, norm='ortho'))."""
    n = np.arange(N_MELS)
    m = np.cos(np.pi / N_MELS * (n[None, :] + 0.5) * np.arange(N_MFCC)[:, None]) * math.sqrt(2.0 / N_MELS)
    m[0] /= math.sqrt(2.0)
    return m


@lru_cache(maxsize=8)
def _bands(sr: int) -> dict:
    """Per-rate constants: bin frequencies, contrast sub-bands (librosa's rule), tilt and LTAS band masks."""
    freq = np.fft.rfftfreq(N_FFT, 1.0 / sr)
    octa = np.zeros(N_CONTRAST + 2)
    octa[1:] = 100.0 * (2.0 ** np.arange(0, N_CONTRAST + 1))
    contrast = []
    for k, (lo, hi) in enumerate(zip(octa[:-1], octa[1:], strict=True)):
        band = (freq >= lo) & (freq <= hi)
        idx = np.flatnonzero(band)
        if k > 0:
            band[idx[0] - 1] = True
        if k == N_CONTRAST:
            band[idx[-1] + 1:] = True
        rows = np.flatnonzero(band)
        if k < N_CONTRAST:
            rows = rows[:-1]
        contrast.append((_run(rows), int(max(np.rint(0.02 * band.sum()), 1))))
    lin_edges = np.linspace(0, len(freq) - 1, N_LIN + 1).round().astype(int)  # bins 1..N/2, DC left out
    slopes = {}
    for name, lo, hi in (("slope_0_500_db_khz", 0.0, 500.0), ("slope_500_1500_db_khz", 500.0, 1500.0)):
        rows = np.flatnonzero((freq > 0) & (freq >= lo) & (freq <= hi))  # DC left out (a 1-dof bin, biased low)
        fk = freq[rows] / 1000.0
        w = (fk - fk.mean()) / ((fk - fk.mean()) ** 2).sum()  # least-squares slope = w @ level
        slopes[name] = (_run(rows), w)
    starts = [rows.start for rows, _ in contrast]
    adjacent = all(a.stop == b.start for (a, _), (b, _) in zip(contrast[:-1], contrast[1:], strict=True))
    return {
        "freq": freq, "contrast": contrast, "lin": (lin_edges[:-1] + 1, np.diff(lin_edges)),
        "contrast_starts": np.array(starts) if adjacent and contrast[-1][0].stop == len(freq) else None,
        "alpha_lo": _run((freq >= 50) & (freq < 1000)), "alpha_hi": _run((freq >= 1000) & (freq < 5000)),
        "hb_lo": _run(freq < 2000), "hb_hi": _run((freq >= 2000) & (freq < 5000)), "slopes": slopes,
    }


def _run(sel: np.ndarray) -> slice:
    """A mask or index list of one contiguous run of bins as a slice (rows then index a view, not a copy)."""
    idx = np.flatnonzero(sel) if sel.dtype == bool else np.asarray(sel)
    assert idx.size and np.all(np.diff(idx) == 1)
    return slice(int(idx[0]), int(idx[-1]) + 1)


def _db(x: np.ndarray) -> np.ndarray:
    """10 log10(max(x, _AMIN)), in one new array (the log and the scaling in place)."""
    out = np.maximum(x, _AMIN)
    if not isinstance(out, np.ndarray):
        return 10.0 * np.log10(out)
    np.log10(out, out=out)
    out *= 10.0
    return out


def _mean_log(p: np.ndarray) -> np.ndarray:
    """``np.log(p).mean(axis=0)`` of a matrix of values >= 1e-10, to rounding (1e-14 relative of the geometric
    mean), from one log per _LOG_RUN rows: the log of a product of _LOG_RUN values is the sum of their logs, and a
    log costs ~10x a product. Products of 16 such values stay inside float64's normal range unless a value
    exceeds ~1e19 (then the log of each value, as before)."""
    with np.errstate(over="ignore", under="ignore"):  # checked below
        prods = np.multiply.reduceat(p, _LOG_STARTS[:(p.shape[0] + _LOG_RUN - 1) // _LOG_RUN], axis=0)
    if not (np.isfinite(prods).all() and prods.min() >= np.finfo(np.float64).tiny):
        return np.log(p).mean(axis=0)
    return np.log(prods, out=prods).sum(axis=0) / p.shape[0]


_LOG_RUN = 16  # rows per product in _mean_log
_LOG_STARTS = np.arange(0, 1 << 16, _LOG_RUN)


def _delta(x: np.ndarray, width: int) -> np.ndarray:
    """librosa.feature.delta(x, width=width, mode="interp"): a Savitzky-Golay first derivative (order 1) along
    the frames. With a straight-line fit, the 'interp' edges take the slope of the first/last full window."""
    h = width // 2
    view = np.lib.stride_tricks.as_strided(x, (x.shape[0], x.shape[1] - width + 1, width),
                                           (x.strides[0], x.strides[1], x.strides[1]), writeable=False)
    core = view @ _delta_weights(width)  # sliding_window_view(x, width, axis=1), without its overhead
    return core[:, np.minimum(np.maximum(np.arange(x.shape[1]) - h, 0), core.shape[1] - 1)]  # np.clip


@lru_cache(maxsize=8)
def _delta_weights(width: int) -> np.ndarray:
    k = np.arange(-(width // 2), width // 2 + 1, dtype=np.float64)
    w = k / (k**2).sum()
    w.flags.writeable = False
    return w


def _contrast(mag: np.ndarray, sr: int) -> np.ndarray:
    """librosa.feature.spectral_contrast(S=mag, sr, n_fft, n_bands=6, fmin=100, quantile=0.02)."""
    c = _bands(sr)
    if c["contrast_starts"] is not None:  # the sub-bands tile the bins: each one's min and max in one call
        valley = np.minimum.reduceat(mag, c["contrast_starts"], axis=0).astype(np.float64)
        peak = np.maximum.reduceat(mag, c["contrast_starts"], axis=0).astype(np.float64)
    else:
        peak = np.empty((N_CONTRAST + 1, mag.shape[1]))
        valley = np.empty_like(peak)
    for k, (rows, q) in enumerate(c["contrast"]):
        sub = mag[rows]  # a contiguous run of bins: a view
        if q == 1:
            if c["contrast_starts"] is None:
                valley[k], peak[k] = sub.min(axis=0), sub.max(axis=0)
        else:
            srt = np.sort(sub, axis=0)
            valley[k], peak[k] = srt[:q].mean(axis=0), srt[-q:].mean(axis=0)
    pdb, vdb = _db(peak), _db(valley)  # librosa's power_to_db(top_db=80) on the peak and valley matrices
    return np.maximum(pdb, pdb.max() - 80.0) - np.maximum(vdb, vdb.max() - 80.0)


def _zcr(y: np.ndarray, n_frames: int) -> np.ndarray:
    """librosa.feature.zero_crossing_rate(y, frame_length=WIN, hop_length=HOP, center=True): the sign changes
    (|y| <= 1e-10 counts as 0) between the WIN samples of each frame of the edge-padded signal, counted by
    bisecting the positions of the changes (the padding, repeated end samples, holds none) instead of a running
    sum over every sample."""
    s = np.signbit(y)
    s &= ~(np.abs(y) <= 1e-10)  # np.signbit(np.where(np.abs(y) <= 1e-10, 0.0, y))
    change = np.flatnonzero(s[1:] != s[:-1])  # a change between samples j and j + 1 of y
    starts = np.arange(n_frames) * HOP - WIN // 2  # frame f spans padded samples f*HOP .. f*HOP + WIN - 1
    return (np.searchsorted(change, starts + (WIN - 1)) - np.searchsorted(change, starts)) / WIN


def _modulation(frame_power: np.ndarray, sr: int) -> np.ndarray:
    """Share of the frame-RMS envelope's modulation power in each band of ``_MOD_EDGES`` (from each frame's mean
    STFT power)."""
    env = np.sqrt(frame_power)
    env = env - fmean(env)
    n = max(len(env), 256)
    spec = np.abs(np.fft.rfft(env, n)) ** 2
    bands = np.array([spec[band].sum() for band in _mod_bands(n, sr)])
    total = bands.sum()
    out = bands / total if total > 1e-20 else np.zeros_like(bands)
    if len(frame_power) * HOP / sr < 1.0 / _MOD_EDGES[0]:
        out[0] = math.nan
    return out


@lru_cache(maxsize=256)
def _mod_bands(n: int, sr: int) -> tuple[slice, ...]:
    """The modulation spectrum's bins (of an n-point FFT of the frame envelope) in each band of ``_MOD_EDGES``, as
    slices (the frequencies ascend, so each band is one run; an empty band is an empty slice)."""
    fm = np.fft.rfftfreq(n, HOP / sr)
    out = []
    for lo, hi in zip(_MOD_EDGES[:-1], _MOD_EDGES[1:], strict=True):
        idx = np.flatnonzero((fm >= lo) & (fm < hi))
        out.append(_run(idx) if idx.size else slice(0, 0))
    return tuple(out)


def _feature_names() -> list[str]:
    names = []
    for i in range(N_MFCC):
        names += [f"mfcc_{i:02d}_mean"] if i else []
        names += [f"mfcc_{i:02d}_std", f"mfcc_{i:02d}_delta_mean", f"mfcc_{i:02d}_delta_std"]
    for f in _FRAME_FEATURES:
        names += [f"{f}_mean", f"{f}_std"]
    for b in range(N_CONTRAST + 1):
        names += [f"contrast_{b}_mean", f"contrast_{b}_std"]
    names += [f"ltas_mel_{b:02d}" for b in range(N_MELS)]
    names += [f"ltas_lin_{b:02d}" for b in range(N_LIN)]
    for f in _TILT_FEATURES:
        names += [f"{f}_mean", f"{f}_std"]
    names += [f"{f}_p{p}" for f in _PCT_FEATURES for p in _PCTS]
    names += [f"mod_{lo:g}_{hi:g}hz" for lo, hi in zip(_MOD_EDGES[:-1], _MOD_EDGES[1:], strict=True)]
    return names


_NAMES = tuple(_feature_names())  # built once: extract_features asks for them per clip
_OUT = {  # the names of each block of values, in the order extract() computes them
    "mfcc_mean": [f"mfcc_{i:02d}_mean" for i in range(1, N_MFCC)],
    "mfcc_std": [f"mfcc_{i:02d}_std" for i in range(N_MFCC)],
    "mfcc_delta_mean": [f"mfcc_{i:02d}_delta_mean" for i in range(N_MFCC)],
    "mfcc_delta_std": [f"mfcc_{i:02d}_delta_std" for i in range(N_MFCC)],
    "series_mean": [f"{k}_mean" for k in _FRAME_FEATURES + _TILT_FEATURES],
    "series_std": [f"{k}_std" for k in _FRAME_FEATURES + _TILT_FEATURES],
    "pct": [f"{k}_p{p}" for k in _PCT_FEATURES for p in _PCTS],
    "contrast_mean": [f"contrast_{b}_mean" for b in range(N_CONTRAST + 1)],
    "contrast_std": [f"contrast_{b}_std" for b in range(N_CONTRAST + 1)],
    "ltas_mel": [f"ltas_mel_{b:02d}" for b in range(N_MELS)],
    "ltas_lin": [f"ltas_lin_{b:02d}" for b in range(N_LIN)],
    "mod": [f"mod_{lo:g}_{hi:g}hz" for lo, hi in zip(_MOD_EDGES[:-1], _MOD_EDGES[1:], strict=True)],
}
# The two orders name the same features: one added to a list and not the other would be NaN (or dropped) silently.
assert sorted(n for block in _OUT.values() for n in block) == sorted(_NAMES), "spectral: _OUT and _NAMES differ"


class SpectralExtractor:
    name = "spectral"
    version = "5"

    def config(self) -> dict:
        return {"n_fft": N_FFT, "win": WIN, "hop": HOP, "n_mels": N_MELS, "n_mfcc": N_MFCC, "contrast": N_CONTRAST,
                "n_lin": N_LIN, "pcts": list(_PCTS), "mod_edges": list(_MOD_EDGES)}

    def feature_names(self) -> list[str]:
        return list(_NAMES)

    def extract(self, clip: Clip) -> dict[str, float]:
        sr = clip.sr
        c = _bands(sr)
        freq = c["freq"]
        mag = stft_magnitude(clip)
        power = stft_power(clip)
        mel = _mel_basis(sr) @ power
        logmel = _db(mel)
        mfcc = _dct_matrix() @ logmel
        n_frames = mfcc.shape[1]
        out: dict[str, float] = {}
        width = min(9, n_frames if n_frames % 2 else n_frames - 1)
        delta = _delta(mfcc, width) if width >= 3 else None
        if delta is None:
            clip.notes.append(f"spectral: only {n_frames} frames, MFCC deltas undefined")
        act = clip_active_frames(clip)
        m, s = mean_std(mfcc[:, act], axis=1)  # (a C-order matrix's column selection is F-order: sums as before)
        if delta is not None:
            dm, ds = mean_std(delta[:, act], axis=1)
        else:
            dm = ds = np.full(N_MFCC, math.nan)
        out.update(zip(_OUT["mfcc_mean"], m[1:].tolist(), strict=True))
        out.update(zip(_OUT["mfcc_std"], s.tolist(), strict=True))
        out.update(zip(_OUT["mfcc_delta_mean"], dm.tolist(), strict=True))
        out.update(zip(_OUT["mfcc_delta_std"], ds.tolist(), strict=True))

        # Frame series over the active frames only (every one has one value per STFT frame).
        # power and mag are F-order (one frame contiguous), as their column selections: with every frame active
        # the arrays themselves (views, the same layout and sums), else copies of the active frames.
        sel = slice(None) if act.all() else act
        p_act, mag_act = power[:, sel], mag[:, sel]
        mnorm = mag_act.astype(np.float64)
        msum = mnorm.sum(axis=0)
        msum = np.where(msum < np.finfo(np.float32).tiny, 1.0, msum)  # librosa's normalize(): silent frame -> 0
        mnorm /= msum
        centroid = freq @ mnorm
        bandwidth = np.sqrt(np.maximum((freq**2) @ mnorm - centroid**2, 0.0))  # = sqrt(sum p (f - centroid)^2)
        cum = np.cumsum(mag_act, axis=0)  # float32, as librosa's rolloff
        rolloff = freq[np.argmax(cum >= 0.85 * cum[-1], axis=0)]
        pt = np.maximum(p_act, _AMIN, out=mnorm)  # into mnorm's buffer (done with; the same F-order layout)
        flatness = np.exp(_mean_log(pt)) / fmean(pt, axis=0)
        flux = np.zeros(n_frames)  # frame 0: 0; then the mean rise of the log-mel bands (np.diff, in place)
        rise = logmel[:, 1:] - logmel[:, :-1]
        flux[1:] = fmean(np.maximum(0.0, rise, out=rise), axis=0)
        flux = flux[sel]
        zcr = _zcr(clip.y, n_frames)[sel]
        tilt = [_db(p_act[c["alpha_lo"]].sum(axis=0)) - _db(p_act[c["alpha_hi"]].sum(axis=0)),
                _db(p_act[c["hb_lo"]].max(axis=0)) - _db(p_act[c["hb_hi"]].max(axis=0))]
        tilt += [w @ _db(p_act[rows]) for rows, w in c["slopes"].values()]
        series = np.empty((6 + len(tilt), len(centroid)))  # np.vstack of the rows, without its wrappers
        for i, row in enumerate((centroid, bandwidth, rolloff, flatness, zcr, flux, *tilt)):
            series[i] = row
        means, stds = mean_std(series, axis=1)
        out.update(zip(_OUT["series_mean"], means.tolist(), strict=True))
        out.update(zip(_OUT["series_std"], stds.tolist(), strict=True))
        pct = row_percentiles(series[:4], _PCTS)  # (pcts, features), as np.percentile(..., axis=1)
        out.update(zip(_OUT["pct"], pct.T.ravel().tolist(), strict=True))  # feature-major: centroid_hz_p10, ..._p90

        cm, cs = mean_std(_contrast(mag, sr)[:, act], axis=1)
        out.update(zip(_OUT["contrast_mean"], cm.tolist(), strict=True))
        out.update(zip(_OUT["contrast_std"], cs.tolist(), strict=True))
        ltas = _db(fmean(mel[:, act], axis=1))
        ltas -= fmean(ltas)
        out.update(zip(_OUT["ltas_mel"], ltas.tolist(), strict=True))
        lt = fmean(p_act, axis=1)
        lin = np.add.reduceat(lt, c["lin"][0]) / c["lin"][1]
        lin = 10.0 * np.log10(np.maximum(lin / max(fmean(lin), 1e-30), 1e-8))  # re the mean band power, >= -80 dB
        out.update(zip(_OUT["ltas_lin"], lin.tolist(), strict=True))
        mod = _modulation(clip_frame_power(clip), sr)
        if math.isnan(mod[0]):
            clip.notes.append("spectral: clip shorter than 1 s, 1-2 Hz envelope modulation undefined")
        out.update(zip(_OUT["mod"], mod.tolist(), strict=True))
        return out
