"""``prosodic.*``: voice and timing measured with Praat (via parselmouth).

- F0 from Praat's autocorrelation pitch (floor 75 Hz, ceiling 500 Hz, 10 ms steps): mean/median/std/p5/p95
  in Hz, std and p5–p95 range in semitones, voiced fraction.
- Intensity (Praat, 75 Hz minimum pitch): std and p5–p95 range in dB over the sounding frames (the same
  0.99-quantile - 25 dB threshold as the syllable nuclei), so that silence and padding do not count. Both are
  level-free: the absolute level is the recording chain's (``recording.*``), and a prosodic feature that
  carried it would let a gain difference between the sides read as prosody.
- Jitter (local, RAP) and shimmer (local, APQ3) on Praat's cross-correlation point process, with Praat's
  standard arguments (period 0.1–20 ms, max period factor 1.3, max amplitude factor 1.6). Since version 5 the
  marks come out of Praat in one call and the four measures are computed by Praat's definitions in numpy
  (:mod:`blindcheck.features.periods`): Praat's values to 1e-13, one Praat call instead of five (each ~0.2 ms of
  fixed cost, most of the measure on a short clip).
- HNR (dB): the mean over voiced frames of 10·log10(r / (1 − r)), where r is the normalised autocorrelation
  peak that the pitch analysis already found (Boersma 1993; the quantity Praat's "Harmonicity (ac)"
  reports). Reusing the pitch analysis avoids a second, costly autocorrelation pass.
- Syllable nuclei after de Jong & Wempe (2009): intensity peaks at least 2 dB above the surrounding dips,
  above (0.99-quantile − 25 dB), at voiced frames. Speaking rate = nuclei / duration; articulation rate =
  nuclei / phonation time; pauses are silent stretches of at least 0.3 s between the first and last
  sounding frame.
- Voice quality from the pitch track (version 4), formant-free: on every third voiced pitch frame, a 64 ms
  Hann window of the signal gives the harmonic amplitudes H1, H2, H4 (the strongest bin within f0/4 of
  k*f0, refined by a parabola through its neighbours): ``h1_h2_db`` (mean, std) and ``h2_h4_db`` (mean),
  the glottal source's spectral tilt and what a microphone's low-frequency response or a codec's high-pass
  does to it; and the cepstral peak prominence ``cpp_db`` (mean, std; Hillenbrand 1994): the real cepstrum
  of the frame's dB spectrum (numpy's irfft scale), its peak between 2 and 13.3 ms (the 75-500 Hz pitch
  range) above the straight line fitted to the cepstrum between 1 and 32 ms. ``hnr_std_db``: the spread of
  the per-frame HNR. ``f0_iqr_st``: p25-p75 range in semitones; ``f0_velocity_st_s``: mean absolute F0
  change between consecutive voiced frames, in semitones per second; ``voiced_segment_rate`` (voiced
  stretches per second) and ``voiced_segment_mean_s``. All level-free.

The version-3 features keep their values exactly (``benchmarks/feature_drift.py``); version 5 changes no value
(max relative difference 2.4e-13 on the bundled clips), only the cost. Cheaper pitch settings were
measured and rejected: 8 candidates per frame instead of Praat's 15 saves 26% of the pitch time but moved
f0_std_hz by up to 34% (an octave error) and syllable_count by 1 on the bundled clips.

A clip with no voiced frame gets NaN voice measures and a note saying so. Since version 6, a clip (or a long file's
window) in which the speech detector of :mod:`blindcheck.features.content` finds no speech segment
(``content.speech_s`` 0) gets NaN :data:`SPEECH_ONLY` features (speaking and articulation rate, syllables, pauses:
they count syllables and pauses of speech, and on music or other sound they count notes and gaps) with a note; the
pitch, intensity and voice-quality measures stay (they describe any voiced sound). Where the detector is not
installed nothing changes. The decision is the content modality's own, computed once per clip in the worker
(content runs first).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from blindcheck.features import periods
from blindcheck.features.frames import fmean, mean_std, pad0, percentiles, windows
from blindcheck.inputs.audio import Clip

PITCH_FLOOR, PITCH_CEILING, TIME_STEP, CANDIDATES = 75.0, 500.0, 0.01, 15
VQ_WIN_S, VQ_EVERY = 0.064, 3  # voice-quality analysis window; every 3rd voiced pitch frame (30 ms)
SILENCE_DB, MIN_DIP_DB, MIN_PAUSE_S = -25.0, 2.0, 0.3
SPEECH_ONLY = ("speaking_rate", "articulation_rate", "syllable_count", "pause_count", "pause_ratio")


def _semitones(hz: np.ndarray, ref: float) -> np.ndarray:
    return 12.0 * np.log2(hz / ref)


def voice_quality(y: np.ndarray, sr: int, times: np.ndarray, f0: np.ndarray) -> dict[str, float]:
    """H1-H2, H2-H4 and cepstral peak prominence over the voiced frames at ``times`` with pitch ``f0``.

    Every ``VQ_EVERY``-th voiced frame is analysed (64 ms windows every 30 ms still overlap by half)."""
    times, f0 = times[::VQ_EVERY], f0[::VQ_EVERY]
    n, window, fit, qc, qmean, lo, hi = _vq_constants(sr)
    # frame centre t -> padded start t*sr (np.clip(np.round(...)) without their wrappers)
    starts = np.minimum(np.maximum(np.rint(times * sr).astype(int), 0), len(y))
    # zeros beyond the ends where a frame reaches past one (times ascend); else no copy of the whole clip
    past = starts.size and (starts[0] < n // 2 or starts[-1] + n - n // 2 > len(y))
    frames = windows(pad0(y, n // 2) if past else y, n)[starts if past else starts - n // 2]  # rows: copies
    mag = np.abs(np.fft.rfft(frames * window, axis=1))
    # Floor 100 dB under each frame's peak (not an absolute one), so that the measures do not see the level:
    # 20 log10(mag + 1e-5 max + 1e-300), in place.
    floor = mag.max(axis=1, keepdims=True)
    floor *= 1e-5
    mag += floor
    mag += 1e-300
    db = np.log10(mag, out=mag)
    db *= 20.0

    # H1, H2, H4: the strongest bin within f0/4 of k*f0, refined by a parabola through it and its neighbours.
    df = sr / n
    reach = np.ceil(0.25 * f0 / df).astype(int)
    offs = np.arange(-int(reach.max()), int(reach.max()) + 1)
    rows = np.arange(len(f0))[:, None, None]
    idx = np.clip(np.round(np.outer(f0, [1, 2, 4]) / df).astype(int)[:, :, None] + offs, 1, db.shape[1] - 2)
    vals = np.where(np.abs(offs) <= reach[:, None, None], db[rows, idx], -np.inf)
    m = idx[rows[:, :, 0], np.arange(3)[None, :], vals.argmax(axis=2)][:, :, None]  # take_along_axis
    a, b, c = db[rows, m - 1][..., 0], db[rows, m][..., 0], db[rows, m + 1][..., 0]
    den = a - 2 * b + c
    h = b - 0.25 * (a - c) * np.where(den < 0, 0.5 * (a - c) / np.where(den < 0, den, -1.0), 0.0)
    d12, d24 = h[:, 0] - h[:, 1], h[:, 1] - h[:, 2]

    ceps = np.fft.irfft(db, n, axis=1)
    line = ceps[:, fit]
    slope = line @ qc  # least-squares line over 1-32 ms, per frame
    icpt = fmean(line, axis=1) - slope * qmean
    peak = lo + ceps[:, lo:hi + 1].argmax(axis=1)
    cpp = ceps[rows[:, 0, 0], peak] - (icpt + slope * peak / sr)
    (m12, s12), (mcpp, scpp) = mean_std(d12), mean_std(cpp)
    return {"h1_h2_db_mean": m12, "h1_h2_db_std": s12, "h2_h4_db_mean": float(fmean(d24)), "cpp_db_mean": mcpp,
            "cpp_db_std": scpp}


@lru_cache(maxsize=4)
def _vq_constants(sr: int) -> tuple:
    n = int(round(VQ_WIN_S * sr))
    q = np.arange(n) / sr
    run = np.flatnonzero((q >= 0.001) & (q <= 0.5 * n / sr))
    fit = slice(int(run[0]), int(run[-1]) + 1)  # one run of quefrencies: a view, not a copy
    qc = q[fit] - q[fit].mean()
    return (n, np.hanning(n), fit, qc / (qc**2).sum(), float(q[fit].mean()), int(np.ceil(sr / PITCH_CEILING)),
            int(np.floor(sr / PITCH_FLOOR)))


def _feature_names() -> list[str]:
    return [
        "f0_mean_hz", "f0_median_hz", "f0_std_hz", "f0_p5_hz", "f0_p95_hz", "f0_std_st", "f0_range_st",
        "voiced_fraction", "intensity_range_db", "intensity_std_db", "jitter_local", "jitter_rap",
        "shimmer_local", "shimmer_apq3", "hnr_db", "speaking_rate", "articulation_rate", "pause_count",
        "pause_ratio", "syllable_count",
        "hnr_std_db", "f0_iqr_st", "f0_velocity_st_s", "voiced_segment_rate", "voiced_segment_mean_s",
        "h1_h2_db_mean", "h1_h2_db_std", "h2_h4_db_mean", "cpp_db_mean", "cpp_db_std",
    ]


_NAMES = tuple(_feature_names())  # built once: extract_features asks for them per clip


class ProsodicExtractor:
    name = "prosodic"
    version = "6"

    def config(self) -> dict:
        from blindcheck.features.content import ContentExtractor

        content = ContentExtractor()
        return {"floor": PITCH_FLOOR, "ceiling": PITCH_CEILING, "step": TIME_STEP, "silence_db": SILENCE_DB,
                "min_dip_db": MIN_DIP_DB, "min_pause_s": MIN_PAUSE_S, "candidates": CANDIDATES, "vq_win_s": VQ_WIN_S,
                "vq_every": VQ_EVERY, "speech_only": list(SPEECH_ONLY),
                "content": {"version": content.version, **content.config()}}

    def extract(self, clip: Clip) -> dict[str, float]:
        from blindcheck.features.content import content_shares

        out = self._extract(clip)
        speech_s = content_shares(clip)["speech_s"]
        if speech_s == 0:  # NaN (no detector): unknown, left as it is
            out.update(dict.fromkeys(SPEECH_ONLY, math.nan))
            clip.notes.append("prosodic: no speech detected (content.speech_share 0); speaking and articulation "
                              "rate, syllables and pauses NaN")
        return out

    def feature_names(self) -> list[str]:
        return list(_NAMES)

    def _extract(self, clip: Clip) -> dict[str, float]:
        import parselmouth
        from parselmouth.praat import call

        out = dict.fromkeys(self.feature_names(), math.nan)
        dur = len(clip.y) / clip.sr
        y64 = clip.y.astype(np.float64)
        snd = parselmouth.Sound(y64, sampling_frequency=clip.sr)
        try:
            pitch = snd.to_pitch_ac(time_step=TIME_STEP, pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING,
                                    max_number_of_candidates=CANDIDATES)
        except parselmouth.PraatError as exc:
            clip.notes.append(f"prosodic: pitch analysis impossible ({str(exc).strip().splitlines()[0]}); "
                              "all prosodic features NaN")
            return out
        sel = pitch.selected_array
        f0, strength = sel["frequency"], sel["strength"]
        voiced = f0 > 0
        out["voiced_fraction"] = float(voiced.mean()) if f0.size else math.nan
        if voiced.any():
            v = f0[voiced]
            p5, p25, p75, p95, med = percentiles(v, (5, 25, 75, 95), median=True)
            st = _semitones(v, med)
            out.update(
                f0_mean_hz=float(v.mean()), f0_median_hz=med, f0_std_hz=float(v.std()),
                f0_p5_hz=p5, f0_p95_hz=p95, f0_std_st=float(st.std()),
                f0_range_st=float(12.0 * math.log2(p95 / p5)),
            )
            r = np.clip(strength[voiced], 1e-6, 1 - 1e-6)
            hnr = 10.0 * np.log10(r / (1.0 - r))
            out["hnr_db"], out["hnr_std_db"] = float(np.mean(hnr)), float(np.std(hnr))
            out["f0_iqr_st"] = float(12.0 * math.log2(p75 / p25))
            both = voiced[1:] & voiced[:-1]
            if both.any():
                step_st = np.abs(np.diff(_semitones(np.where(voiced, f0, 1.0), 1.0)))[both]
                out["f0_velocity_st_s"] = float(step_st.mean() / TIME_STEP)
            else:
                clip.notes.append("prosodic: no two consecutive voiced frames, F0 velocity undefined")
            edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
            runs = (np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0]) * TIME_STEP
            out["voiced_segment_rate"] = float(len(runs) / dur)
            out["voiced_segment_mean_s"] = float(runs.mean())
            out.update(voice_quality(clip.y, clip.sr, pitch.xs()[voiced], v))
            try:
                pp = call([snd, pitch], "To PointProcess (cc)")
            except parselmouth.PraatError as exc:
                clip.notes.append(f"prosodic: jitter/shimmer undefined ({str(exc).strip().splitlines()[0]})")
            else:
                try:
                    marks = call(pp, "To Matrix").values[0]
                except parselmouth.PraatError:  # no mark at all: every measure is undefined, as in Praat
                    marks = np.empty(0)
                (out["jitter_local"], out["jitter_rap"], out["shimmer_local"],
                 out["shimmer_apq3"]) = periods.jitter_shimmer(y64, clip.sr, marks)
            if any(math.isnan(out[k]) for k in ("jitter_local", "shimmer_local")):
                clip.notes.append("prosodic: too few consecutive periods for jitter/shimmer")
        else:
            clip.notes.append("prosodic: no voiced frames; F0, HNR, jitter and shimmer are NaN")

        try:
            intensity = snd.to_intensity(minimum_pitch=PITCH_FLOOR, time_step=TIME_STEP)
        except parselmouth.PraatError:
            clip.notes.append("prosodic: clip too short for intensity; intensity and rate features NaN")
            return out
        level = intensity.values[0]
        times = intensity.xs()
        finite = np.isfinite(level) & (level > -100)  # Praat reports digital silence as about -300 dB
        if not finite.any():
            clip.notes.append("prosodic: intensity undefined (digital silence)")
            return out
        sounding = level > max(percentiles(level[finite], (99,))[0] + SILENCE_DB, float(level[finite].min()))
        sounding = sounding if sounding.any() else finite
        p5, p95 = percentiles(level[sounding], (5, 95))
        out["intensity_range_db"] = float(p95 - p5)
        out["intensity_std_db"] = float(level[sounding].std())
        out.update(self._rhythm(level, times, pitch, dur))
        return out

    @staticmethod
    def _rhythm(level: np.ndarray, times: np.ndarray, pitch, dur: float) -> dict[str, float]:
        level = np.where(np.isfinite(level), level, np.nanmin(level[np.isfinite(level)]))
        thr = max(percentiles(level, (99,))[0] + SILENCE_DB, float(level.min()))
        sounding = level > thr
        # Candidate nuclei: local maxima above the threshold.
        inner = (level[1:-1] > level[:-2]) & (level[1:-1] >= level[2:]) & sounding[1:-1]
        peaks = np.nonzero(inner)[0] + 1
        nuclei = []
        for i, p in enumerate(peaks):
            nxt = peaks[i + 1] if i + 1 < len(peaks) else len(level) - 1
            if level[p] - level[p:nxt + 1].min() >= MIN_DIP_DB:
                f0 = pitch.get_value_at_time(times[p])
                if f0 is not None and not math.isnan(f0) and f0 > 0:
                    nuclei.append(p)
        step = float(times[1] - times[0]) if len(times) > 1 else TIME_STEP
        idx = np.nonzero(sounding)[0]
        pause_count, pause_time = 0, 0.0
        if idx.size:
            inside = ~sounding[idx[0]: idx[-1] + 1]
            edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
            for s, e in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True):
                if (e - s) * step >= MIN_PAUSE_S:
                    pause_count += 1
                    pause_time += (e - s) * step
            span = (idx[-1] - idx[0] + 1) * step
        else:
            span = 0.0
        phonation = float(sounding.sum() * step)
        n = len(nuclei)
        return {
            "syllable_count": float(n),
            "speaking_rate": n / dur if dur > 0 else math.nan,
            "articulation_rate": n / phonation if phonation > 0 else math.nan,
            "pause_count": float(pause_count),
            "pause_ratio": pause_time / span if span > 0 else math.nan,
        }
