"""Praat's intensity contour (``Sound: To Intensity``, mean subtracted) in numpy.

Same frames and the same window as Praat's ``Sound_to_Intensity``: a Kaiser-type window (Bessel I0 of
(2 pi^2 + 0.5) sqrt(1 - x^2)) of 6.4 / minimum pitch seconds, 2 * floor(3.2 / minimum pitch * sr) + 1 samples,
centred on the sample nearest each frame time; frames laid out by ``Sampled_shortTermAnalysis`` (as many whole
windows as fit, centred on the sound); per frame, the window-weighted mean square of the samples minus their
(unweighted) mean, over the samples that exist, in dB re (2e-5)^2, -300 dB below 1e-30 of that.

When the frame step is a whole number of samples (10 ms at 16 kHz), the windowed sums are one matrix product over
blocks of one step (the window cut into step-long pieces, each piece dotted with every block, then summed along
the diagonals): ~4x cheaper than Praat's per-frame loop, and ~0.2 ms less per clip of call overhead. Values agree
with Praat's to ~1e-9 dB (``tests/test_features.py``; Praat accumulates in long double, numpy in double).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


class TooShort(ValueError):
    """The sound is shorter than one analysis window (Praat refuses such a sound too)."""


@lru_cache(maxsize=8)
def _window(sr: int, min_pitch: float) -> np.ndarray:
    half_dur = 3.2 / min_pitch
    half = int(math.floor(half_dur * sr))
    x = np.arange(-half, half + 1) / sr / half_dur
    return np.i0((2.0 * math.pi**2 + 0.5) * np.sqrt(np.maximum(0.0, 1.0 - x * x)))


def intensity(y: np.ndarray, sr: int, min_pitch: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(dB values, frame times in seconds) of Praat's ``To Intensity`` with ``subtract mean`` on."""
    x = np.asarray(y, np.float64)
    n = len(x)
    dur, win_dur = n / sr, 6.4 / min_pitch
    if win_dur > dur:
        raise TooShort(f"sound of {dur:.3f} s is shorter than the {win_dur:.3f} s intensity window")
    frames = int(math.floor((dur - win_dur) / step)) + 1
    times = 0.5 * dur - 0.5 * frames * step + 0.5 * step + np.arange(frames) * step
    w = _window(sr, min_pitch)
    half = (len(w) - 1) // 2
    centre = np.round(times * sr - 0.5).astype(np.int64)  # nearest sample; sample j sits at (j + 0.5) / sr
    left = centre - half
    hop = step * sr
    if abs(hop - round(hop)) < 1e-9 and np.all(np.diff(centre) == round(hop)):
        s2, s1 = _block_sums(x, w, int(left[0]), int(round(hop)), frames)
    else:  # general case: one gathered window per frame
        xp = np.pad(x, len(w))
        seg = xp[len(w) + left[:, None] + np.arange(len(w))]
        s2, s1 = (seg * seg) @ w, seg @ w
    # what exists of each window: sample range, weight sum, unweighted sum of the samples
    lo, hi = np.maximum(left, 0), np.minimum(left + 2 * half, n - 1)
    cw = np.concatenate([[0.0], np.cumsum(w)])
    sw = cw[hi - left + 1] - cw[lo - left]
    cx = np.concatenate([[0.0], np.cumsum(x)])
    mean = (cx[hi + 1] - cx[lo]) / (hi - lo + 1)
    power = np.maximum((s2 - 2.0 * mean * s1 + mean * mean * sw) / sw, 0.0) / 4e-10
    with np.errstate(divide="ignore"):
        return np.where(power < 1e-30, -300.0, 10.0 * np.log10(power)), times


def _block_sums(x: np.ndarray, w: np.ndarray, first: int, hop: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """sum_i x[left_f + i]^2 w[i] and sum_i x[left_f + i] w[i] for frames whose windows start at first + f * hop,
    samples outside the sound counting 0."""
    nb = -(-len(w) // hop)  # window pieces
    wp = np.zeros(nb * hop)
    wp[:len(w)] = w
    blocks = frames + nb - 1
    start, stop = first, first + blocks * hop
    seg = x[max(start, 0):min(stop, len(x))]
    seg = np.pad(seg, (max(0, -start), max(0, stop - len(x))))
    seg = seg.reshape(blocks, hop)
    wm = wp.reshape(nb, hop).T  # (hop, pieces)
    r2, r1 = (seg * seg) @ wm, seg @ wm  # (blocks, pieces): block k dotted with piece b
    s2, s1 = np.zeros(frames), np.zeros(frames)
    for b in range(nb):  # frame f uses block f + b with piece b
        s2 += r2[b:b + frames, b]
        s1 += r1[b:b + frames, b]
    return s2, s1
