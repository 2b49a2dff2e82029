"""Glottal period marks and the jitter/shimmer measures on them, in numpy, from the pitch track already computed.

``prosodic.*`` used Praat's ``To PointProcess (cc)`` and four ``Get jitter/shimmer`` calls: 1.5-4 ms of CPU per
audio second, 20-40% of the prosodic cost (a fixed ~0.2 ms per Praat call weighs most on short clips).

**Marks** (:func:`period_marks`) follow Praat's cross-correlation algorithm (``Sound_Pitch_to_PointProcess_cc``):
per voiced stretch of the pitch track, the first mark is the absolute extremum within half a period of the
stretch's middle; from there, marks are chained outwards, each found as the best waveform match of the one-period
window at the previous mark, at a lag of 0.8-1.25 local periods (the highest local maximum of the normalised
cross-correlation, refined by a parabola), and kept when that correlation exceeds 0.3 and the window's peak 1% of
the clip's (0.7 and 2.3% past the stretch's edge). Praat walks that chain one mark at a time; here every step of a
chain is computed at once (one batched FFT cross-correlation), at anchors laid out by integrating the pitch track
(pass 1), then again at the marks that pass 1 chained (pass 2). The marks therefore differ from Praat's by where
the windows sit in pass 1's drift, not by the rule; :mod:`benchmarks.feature_drift` measures the difference.

**Measures** (:func:`jitter`, :func:`shimmer`) are Praat's definitions (``PointProcess_getJitter_local/rap``,
``PointProcess_Sound_getShimmer_local/apq3``) on those marks, with Praat's standard arguments (periods 0.1-20 ms,
maximum period factor 1.3, maximum amplitude factor 1.6): on Praat's own marks they reproduce Praat's values to
rounding (``tests/test_features.py``).

- jitter (local): mean absolute difference of consecutive periods / mean period;
- jitter (RAP): mean absolute difference of a period and the mean of it and its two neighbours / mean period;
- shimmer (local): mean absolute difference of consecutive cycle amplitudes / mean amplitude;
- shimmer (APQ3): the three-point version of shimmer (local);

where a cycle's amplitude is the RMS of the signal under a Hann window reaching 0.2 periods either side of its mark.
"""

from __future__ import annotations

import math

import numpy as np

PMIN, PMAX, PERIOD_FACTOR, AMPLITUDE_FACTOR = 1e-4, 0.02, 1.3, 1.6


# ------------------------------------------------------------------------------------------------ measures


def _factor_ok(a: np.ndarray, b: np.ndarray, limit: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(a / b, b / a) <= limit


def _in_range(p: np.ndarray) -> np.ndarray:
    return (p >= PMIN) & (p <= PMAX)


def mean_period(t: np.ndarray) -> float:
    """Praat's ``PointProcess_getMeanPeriod``: intervals within [PMIN, PMAX] that are not more than
    PERIOD_FACTOR off both neighbours (where it has them)."""
    p = np.diff(t)
    if p.size == 0:
        return math.nan
    ok = _in_range(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        prev = np.concatenate([[np.nan], p[:-1]])
        nxt = np.concatenate([p[1:], [np.nan]])
        fp = np.where(prev > 0, np.maximum(p / prev, prev / p), np.nan)
        fn = np.where(nxt > 0, np.maximum(p / nxt, nxt / p), np.nan)
    ok &= ~((fp > PERIOD_FACTOR) & (fn > PERIOD_FACTOR))
    return float(p[ok].mean()) if ok.any() else math.nan


def jitter(t: np.ndarray) -> tuple[float, float]:
    """(local, RAP) jitter of the mark times ``t`` (sorted, seconds), as Praat defines them; NaN when too few
    periods."""
    p = np.diff(t)
    mean = mean_period(t)
    local = rap = math.nan
    if p.size >= 2:
        p1, p2 = p[:-1], p[1:]
        ok = _in_range(p1) & _in_range(p2) & _factor_ok(p1, p2, PERIOD_FACTOR)
        n = p.size - int((~ok).sum())
        if n >= 2:
            local = float(np.abs(p1 - p2)[ok].sum() / (n - 1) / mean)
    if p.size >= 3:
        p1, p2, p3 = p[:-2], p[1:-1], p[2:]
        ok = (_in_range(p1) & _in_range(p2) & _in_range(p3) & _factor_ok(p1, p2, PERIOD_FACTOR)
              & _factor_ok(p2, p3, PERIOD_FACTOR))
        n = p.size - int((~ok).sum())
        if n >= 3:
            rap = float(np.abs(p2 - (p1 + p2 + p3) / 3.0)[ok].sum() / (n - 2) / mean)
    return local, rap


def cycle_amplitudes(y: np.ndarray, sr: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Praat's ``PointProcess_Sound_to_AmplitudeTier_period``: for each inner mark whose two periods are valid
    (within [PMIN, PMAX], within PERIOD_FACTOR of each other), the RMS of the signal under a Hann window from 0.2
    periods before to 0.2 periods after it. Returns (times, amplitudes) of the marks that have one."""
    if t.size < 3:
        return np.empty(0), np.empty(0)
    p1, p2 = t[1:-1] - t[:-2], t[2:] - t[1:-1]
    ok = _in_range(p1) & _in_range(p2) & _factor_ok(p1, p2, PERIOD_FACTOR)
    tm, wl, wr = t[1:-1][ok], 0.2 * p1[ok], 0.2 * p2[ok]
    if tm.size == 0:
        return np.empty(0), np.empty(0)
    lo = np.ceil((tm - wl) * sr - 0.5).astype(np.int64)  # sample j sits at (j + 0.5) / sr, as in Praat
    hi = np.floor((tm + wr) * sr - 0.5).astype(np.int64)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, len(y) - 1)
    width = int(max(1, (hi - lo).max() + 1))
    j = lo[:, None] + np.arange(width)
    inside = j <= hi[:, None]
    ts = (j + 0.5) / sr
    d = ts - tm[:, None]
    phase = np.where(d < 0, d / wl[:, None], d / wr[:, None])
    w = np.where(inside, 0.5 + 0.5 * np.cos(np.pi * phase), 0.0)
    x = y[np.minimum(j, len(y) - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = np.sqrt(((x * w) ** 2).sum(axis=1) / (w**2).sum(axis=1))
    keep = (hi - lo + 1 >= 3) & np.isfinite(amp) & (amp > 0)
    return tm[keep], amp[keep]


def shimmer(y: np.ndarray, sr: int, t: np.ndarray) -> tuple[float, float]:
    """(local, APQ3) shimmer of the signal ``y`` at the mark times ``t``, as Praat defines them; NaN when too few
    cycles."""
    tt, a = cycle_amplitudes(np.asarray(y, np.float64), sr, t)
    if a.size < 2:
        return math.nan, math.nan
    den = a[:-1].mean()
    local = apq3 = math.nan
    p = np.diff(tt)
    ok = _in_range(p) & _factor_ok(a[:-1], a[1:], AMPLITUDE_FACTOR)
    if ok.any() and den > 0:
        local = float(np.abs(a[:-1] - a[1:])[ok].mean() / den)
    if a.size >= 3:
        a1, a2, a3 = a[:-2], a[1:-1], a[2:]
        ok = (_in_range(p[:-1]) & _in_range(p[1:]) & _factor_ok(a1, a2, AMPLITUDE_FACTOR)
              & _factor_ok(a2, a3, AMPLITUDE_FACTOR))
        if ok.any() and den > 0:
            apq3 = float(np.abs(a2 - (a1 + a2 + a3) / 3.0)[ok].mean() / den)
    return local, apq3


# --------------------------------------------------------------------------------------------------- marks


def _stretches(f0: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame index of each run of voiced frames."""
    edges = np.diff(np.concatenate([[0], (f0 > 0).astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))


def _extremum(x: np.ndarray, sr: int, tmin: float, tmax: float) -> float:
    """Praat's ``Sound_findExtremum`` (maxima and minima): time of the largest |x| in [tmin, tmax], refined by a
    parabola through it and its neighbours."""
    lo = max(int(math.floor(tmin * sr - 0.5)), 0)
    hi = min(int(math.ceil(tmax * sr - 0.5)), len(x) - 1)
    seg = x[lo:hi + 1]
    if seg.size == 0:
        return 0.5 * (tmin + tmax)
    if seg.size < 3:
        return (lo + int(np.argmax(np.abs(seg))) + 0.5) / sr
    imin, imax = int(np.argmin(seg)), int(np.argmax(seg))
    if seg[imin] == seg[imax]:
        return (lo + 0.5 * (seg.size - 1) + 0.5) / sr
    i = imin if abs(seg[imin]) > abs(seg[imax]) else imax
    if i == 0 or i == seg.size - 1:
        return (lo + i + 0.5) / sr
    a, b, c = seg[i - 1], seg[i], seg[i + 1]
    return (lo + i + 0.5 * (c - a) / (2 * b - a - c) + 0.5) / sr


def _best_lags(xp: np.ndarray, cs: np.ndarray, pad: int, sr: int, t1: np.ndarray, period: np.ndarray,
               direction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Praat's ``Sound_findMaximumCorrelation`` for many windows at once: for the one-period window centred at
    each ``t1``, the best-matching window at a lag of 0.8-1.25 periods in ``direction`` (+1 later, -1 earlier).
    Returns the new mark times, the correlation there and the peak |x| of the matched window."""
    half = 0.5 * period
    ileft1 = np.round((t1 - half) * sr - 0.5).astype(np.int64)
    n = np.round((t1 + half) * sr - 0.5).astype(np.int64) - ileft1 + 1
    near, far = t1 + direction * 0.8 * period, t1 + direction * 1.25 * period
    tmin2, tmax2 = np.minimum(near, far), np.maximum(near, far)
    lo2 = np.floor((tmin2 - half) * sr - 0.5).astype(np.int64)
    lags = np.ceil((tmax2 - half) * sr - 0.5).astype(np.int64) - lo2 + 1
    nmax, jmax = int(n.max()), int(lags.max())
    m = nmax + jmax - 1
    nfft = 1 << max(4, (m - 1).bit_length())
    k = np.arange(max(nmax, m))
    seg1 = np.where(k[:nmax] < n[:, None], xp[pad + ileft1[:, None] + k[:nmax]], 0.0)
    seg2 = xp[pad + lo2[:, None] + k[:m]]
    prod = np.fft.irfft(np.fft.rfft(seg2, nfft) * np.conj(np.fft.rfft(seg1, nfft)), nfft)[:, :jmax]
    start = pad + lo2[:, None] + np.arange(jmax)
    norm2 = cs[start + n[:, None]] - cs[start]
    norm1 = (seg1**2).sum(axis=1)
    den = norm1[:, None] * np.maximum(norm2, 0.0)
    r = np.where((prod != 0) & (den > 0), prod / np.sqrt(np.where(den > 0, den, 1.0)), 0.0)
    r = np.where(np.arange(jmax) < lags[:, None], r, -np.inf)
    # Praat scans the lags keeping r1, r2, r3 (initially 0): a candidate is a local maximum r2 >= r1, r2 >= r3 of
    # the sequence 0, r[0], ..., r[J-1]; the last lag is never a candidate.
    rr = np.concatenate([np.zeros((len(r), 1)), r, np.full((len(r), 1), -np.inf)], axis=1)
    left = np.concatenate([np.zeros((len(r), 1)), rr[:, :-1]], axis=1)
    cand = (rr >= left) & (rr >= np.concatenate([rr[:, 1:], np.full((len(r), 1), -np.inf)], axis=1))
    cand[:, 1:][np.arange(jmax + 1)[None, :] >= lags[:, None]] = False  # r[J-1] (column J) and beyond
    score = np.where(cand, rr, -np.inf)
    best = np.argmax(score, axis=1)  # first of equal maxima, as Praat's strict '>'
    rows = np.arange(len(r))
    r2 = rr[rows, best]
    r1, r3 = left[rows, best], rr[rows, np.minimum(best + 1, jmax + 1)]
    r3 = np.where(np.isfinite(r3), r3, 0.0)
    d2r = 2 * r2 - r1 - r3
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(d2r != 0, 0.5 * (r3 - r1) / d2r, 0.0)
        corr = np.where(d2r != 0, r2 + 0.5 * (0.5 * (r3 - r1)) ** 2 / d2r, r2)
    ir = lo2 + best - 1 + shift  # column b of rr is lag lo2 + b - 1
    # the peak |x| of the best window (the placeholder candidate, column 0, has none: Praat reports 0)
    jj = np.clip(lo2 + best - 1, -pad, None)
    win = np.abs(xp[pad + jj[:, None] + k[:nmax]])
    peak = np.where(best > 0, np.where(k[:nmax] < n[:, None], win, 0.0).max(axis=1), 0.0)
    return t1 + (ir - ileft1) / sr, corr, peak


def period_marks(y: np.ndarray, sr: int, times: np.ndarray, f0: np.ndarray, dt: float,
                 passes: int = 2) -> np.ndarray:
    """Glottal period marks (seconds, sorted) of ``y`` in the voiced stretches of the pitch track (frame
    centres ``times``, ``f0`` in Hz, 0 unvoiced, frame step ``dt``). See the module docstring."""
    x = np.asarray(y, np.float64)
    dur = len(x) / sr
    voiced = f0 > 0
    if not voiced.any() or len(x) < 3:
        return np.empty(0)
    fv = f0[voiced]
    pad = int(2.6 * sr / float(fv.min())) + 4
    xp = np.pad(x, pad)
    cs = np.concatenate([[0.0], np.cumsum(xp**2)])
    gpeak = float(np.abs(x).max())
    # Per voiced stretch: its edges, first mark, and pass-1 anchors each side (one per period, by integrating the
    # pitch track, which is linear between frames and constant up to half a frame beyond the stretch).
    groups = []  # (stretch, sign, m0, frame slice, anchors)
    for s, (a, b) in enumerate(_stretches(f0)):
        tleft, tright = max(times[a] - 0.5 * dt, 0.0), min(times[b] + 0.5 * dt, dur)
        if tleft >= dur - 0.5 * dt:
            break
        ft, ff = times[a:b + 1], f0[a:b + 1]
        tmid = 0.5 * (tleft + tright)
        fmid = float(np.interp(tmid, ft, ff))
        m0 = _extremum(x, sr, tmid - 0.5 / fmid, tmid + 0.5 / fmid)
        margin = 2.0 / float(ff.min())
        grid = np.concatenate([[tleft - margin], ft, [tright + margin]])
        fg = np.concatenate([[ff[0]], ff, [ff[-1]]])
        phase = np.concatenate([[0.0], np.cumsum(0.5 * (fg[1:] + fg[:-1]) * np.diff(grid))])
        phase -= np.interp(m0, grid, phase)
        for sign in (-1.0, 1.0):
            n = int(np.floor(sign * phase[0 if sign < 0 else -1]))
            anchors = np.interp(sign * np.arange(max(n, 1)), phase, grid)
            anchors[0] = m0
            groups.append((s, sign, m0, tleft, tright, a, b, anchors))
    if not groups:
        return np.empty(0)
    sizes = np.array([len(g[7]) for g in groups])
    gid = np.repeat(np.arange(len(groups)), sizes)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    first = np.zeros(gid.size, bool)
    first[start] = True
    sign = np.repeat([g[1] for g in groups], sizes)
    m0 = np.repeat([g[2] for g in groups], sizes)
    anchor = np.concatenate([g[7] for g in groups])
    # f0 at any time, per group: linear between the stretch's frames, constant beyond them.
    lo_f = np.repeat([g[5] for g in groups], sizes)
    hi_f = np.repeat([g[6] for g in groups], sizes)

    def f0_at(t: np.ndarray) -> np.ndarray:
        pos = np.clip((t - times[0]) / dt, lo_f, hi_f)
        i = np.minimum(np.floor(pos).astype(np.int64), hi_f)
        j = np.minimum(i + 1, hi_f)
        w = pos - i
        return f0[i] * (1 - w) + f0[j] * w

    for _ in range(passes):
        period = 1.0 / f0_at(anchor)
        new, corr, peak = _best_lags(xp, cs, pad, sr, anchor, period, sign)
        lag = np.where(np.isfinite(new), new - anchor, sign * period)
        csum = np.cumsum(lag)
        chain = m0 + csum - np.repeat(csum[start] - lag[start], sizes)  # mark k+1 = mark k + lag at mark k
        nxt = np.empty_like(chain)
        nxt[1:] = chain[:-1]
        anchor_used, anchor = anchor, np.where(first, m0, nxt)
    tl = np.repeat([g[3] for g in groups], sizes)
    tr = np.repeat([g[4] for g in groups], sizes)
    beyond = np.where(sign < 0, chain < tl, chain > tr)
    idx = np.arange(gid.size)
    stop = np.minimum.reduceat(np.where(beyond, idx, idx.max() + 1), start)
    last = np.minimum(stop, start + sizes - 1)
    upto = idx <= np.repeat(last, sizes)
    keep = upto & (corr > 0.3) & ((peak == 0) | (peak > 0.01 * gpeak))
    edge = upto & beyond
    keep[edge] = (corr[edge] > 0.7) & (peak[edge] > 0.023333 * gpeak)
    # A left mark is not added within 0.8 periods of the last mark added to the right of an earlier stretch.
    right_last = np.full(len(groups), -1e300)
    for k, g in enumerate(groups):
        if g[1] > 0:
            kept = chain[start[k]:start[k] + sizes[k]][keep[start[k]:start[k] + sizes[k]]]
            right_last[k] = kept[-1] if kept.size else -1e300
    added = np.maximum.accumulate(np.concatenate([[-1e300], right_last[:-1]]))
    left = sign < 0
    keep[left] &= chain[left] - added[gid[left]] > 0.8 * (1.0 / f0_at(anchor_used))[left]
    t = np.unique(np.concatenate([chain[keep], [g[2] for g in groups]]))
    return t[(t >= 0) & (t <= dur)]
