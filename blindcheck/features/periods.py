"""Jitter and shimmer in numpy from period marks: Praat's definitions, without Praat's per-call cost.

``prosodic.*`` asked Praat for four measures on its cross-correlation point process, one ``Get jitter/shimmer``
call each: ~0.2 ms per call whatever the clip's length (parselmouth's call overhead; 2-3 ms of CPU per audio second
on the short FSDD clips). Here the marks come out of Praat in one call (``To Matrix``) and the four measures are
computed from them by Praat's own definitions (``PointProcess_getJitter_local/rap``,
``PointProcess_Sound_getShimmer_local/apq3``, with Praat's standard arguments: periods 0.1-20 ms, maximum period
factor 1.3, maximum amplitude factor 1.6), so the values are Praat's to rounding (``tests/features/test_features.py``
checks both against Praat and against a pulse train with known perturbation):

- jitter (local): mean absolute difference of consecutive periods / mean period;
- jitter (RAP): mean absolute difference between a period and the mean of it and its two neighbours / mean period;
- shimmer (local): mean absolute difference of consecutive cycle amplitudes / mean amplitude;
- shimmer (APQ3): the same with the three-point mean;

where a period counts when it lies within 0.1-20 ms and is within a factor 1.3 of its neighbour(s), and a cycle's
amplitude is the RMS of the signal under a Hann window reaching 0.2 periods either side of its mark.
"""

from __future__ import annotations

import math

import numpy as np

PMIN, PMAX, PERIOD_FACTOR, AMPLITUDE_FACTOR = 1e-4, 0.02, 1.3, 1.6


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max(a/b, b/a), elementwise (Praat's 'interval factor' / 'amplitude factor')."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(a / b, b / a)


def jitter_shimmer(y: np.ndarray, sr: int, t: np.ndarray) -> tuple[float, float, float, float]:
    """(jitter local, jitter RAP, shimmer local, shimmer APQ3) of the signal ``y`` (at ``sr``) with period marks
    at the sorted times ``t`` (seconds; sample j of ``y`` sits at (j + 0.5) / sr, as in a Praat Sound), as Praat
    computes them over the whole clip. NaN where Praat's is undefined (too few periods or cycles)."""
    nan = math.nan
    p = np.diff(np.asarray(t, np.float64))
    n = p.size
    if n < 2:
        return nan, nan, nan, nan
    inr = (p >= PMIN) & (p <= PMAX)
    fac = _ratio(p[:-1], p[1:])  # factor between period i and i + 1
    pair = inr[:-1] & inr[1:] & (fac <= PERIOD_FACTOR)
    # PointProcess_getMeanPeriod: a period in range that is not more than the factor off both its neighbours.
    far = fac > PERIOD_FACTOR
    isper = inr.copy()
    isper[1:-1] &= ~(far[:-1] & far[1:])
    mean = p[isper].mean() if isper.any() else nan
    jl = jr = nan
    k = n - int(n - 1 - pair.sum())  # Praat: periods minus the pairs that fail
    if k >= 2:
        jl = float(np.abs(p[:-1] - p[1:])[pair].sum() / (k - 1) / mean)
    if n >= 3:
        trip = pair[:-1] & pair[1:]
        k = n - int(n - 2 - trip.sum())
        if k >= 3:
            jr = float(np.abs(p[1:-1] - (p[:-2] + p[1:-1] + p[2:]) / 3.0)[trip].sum() / (k - 2) / mean)
    # PointProcess_Sound_to_AmplitudeTier_period: each inner mark with a valid pair of periods gets the RMS under
    # a Hann window from 0.2 periods before it to 0.2 periods after it.
    tm, wl, wr = t[1:-1][pair], 0.2 * p[:-1][pair], 0.2 * p[1:][pair]
    if tm.size < 2:
        return jl, jr, nan, nan
    x = np.asarray(y, np.float64)
    lo = np.maximum(np.ceil((tm - wl) * sr - 0.5).astype(np.int64), 0)
    hi = np.minimum(np.floor((tm + wr) * sr - 0.5).astype(np.int64), len(x) - 1)
    j = lo[:, None] + np.arange(max(1, int((hi - lo).max()) + 1))
    d = (j + 0.5) / sr - tm[:, None]
    w = np.where(j <= hi[:, None], 0.5 + 0.5 * np.cos(np.pi * d / np.where(d < 0, wl[:, None], wr[:, None])), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.sqrt(((x[np.minimum(j, len(x) - 1)] * w) ** 2).sum(axis=1) / (w**2).sum(axis=1))
    keep = (hi - lo >= 2) & (a > 0)  # at least 3 samples; NaN compares False
    tt, a = tm[keep], a[keep]
    if a.size < 2:
        return jl, jr, nan, nan
    # AmplitudeTier_getShimmer_local/apq3: consecutive tier points, spaced within [PMIN, PMAX], amplitudes within
    # the amplitude factor; divided by the mean amplitude of all points but the last.
    den = a[:-1].mean()
    q = np.diff(tt)
    qok = (q >= PMIN) & (q <= PMAX)
    aok = _ratio(a[:-1], a[1:]) <= AMPLITUDE_FACTOR
    ok = qok & aok
    sl = float(np.abs(a[:-1] - a[1:])[ok].mean() / den) if ok.any() and den > 0 else nan
    ok3 = qok[:-1] & qok[1:] & aok[:-1] & aok[1:]
    sa = float(np.abs(a[1:-1] - (a[:-2] + a[1:-1] + a[2:]) / 3.0)[ok3].mean() / den) if ok3.any() and den > 0 else nan
    return jl, jr, sl, sa
