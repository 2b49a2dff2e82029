"""``prosodic.*``: voice and timing measured with Praat (via parselmouth).

- F0 from Praat's autocorrelation pitch (floor 75 Hz, ceiling 500 Hz, 10 ms steps): mean/median/std/p5/p95
  in Hz, std and p5–p95 range in semitones, voiced fraction.
- Intensity (Praat, 75 Hz minimum pitch): std and p5–p95 range in dB over the sounding frames (the same
  0.99-quantile - 25 dB threshold as the syllable nuclei), so that silence and padding do not count. Both are
  level-free: the absolute level is the recording chain's (``recording.*``), and a prosodic feature that
  carried it would let a gain difference between the sides read as prosody.
- Jitter (local, RAP) and shimmer (local, APQ3) from Praat's cross-correlation point process, with Praat's
  standard arguments (period 0.1–20 ms, max period factor 1.3, max amplitude factor 1.6).
- HNR (dB): the mean over voiced frames of 10·log10(r / (1 − r)), where r is the normalised autocorrelation
  peak that the pitch analysis already found (Boersma 1993; the quantity Praat's "Harmonicity (ac)"
  reports). Reusing the pitch analysis avoids a second, costly autocorrelation pass.
- Syllable nuclei after de Jong & Wempe (2009): intensity peaks at least 2 dB above the surrounding dips,
  above (0.99-quantile − 25 dB), at voiced frames. Speaking rate = nuclei / duration; articulation rate =
  nuclei / phonation time; pauses are silent stretches of at least 0.3 s between the first and last
  sounding frame.

A clip with no voiced frame gets NaN voice measures and a note saying so.
"""

from __future__ import annotations

import math

import numpy as np

from blindcheck.audio import Clip

PITCH_FLOOR, PITCH_CEILING, TIME_STEP = 75.0, 500.0, 0.01
SILENCE_DB, MIN_DIP_DB, MIN_PAUSE_S = -25.0, 2.0, 0.3


def _semitones(hz: np.ndarray, ref: float) -> np.ndarray:
    return 12.0 * np.log2(hz / ref)


class ProsodicExtractor:
    name = "prosodic"
    version = "3"

    def config(self) -> dict:
        return {"floor": PITCH_FLOOR, "ceiling": PITCH_CEILING, "step": TIME_STEP, "silence_db": SILENCE_DB,
                "min_dip_db": MIN_DIP_DB, "min_pause_s": MIN_PAUSE_S}

    def feature_names(self) -> list[str]:
        return [
            "f0_mean_hz", "f0_median_hz", "f0_std_hz", "f0_p5_hz", "f0_p95_hz", "f0_std_st", "f0_range_st",
            "voiced_fraction", "intensity_range_db", "intensity_std_db", "jitter_local", "jitter_rap",
            "shimmer_local", "shimmer_apq3", "hnr_db", "speaking_rate", "articulation_rate", "pause_count",
            "pause_ratio", "syllable_count",
        ]

    def extract(self, clip: Clip) -> dict[str, float]:
        import parselmouth
        from parselmouth.praat import call

        out = dict.fromkeys(self.feature_names(), math.nan)
        dur = len(clip.y) / clip.sr
        snd = parselmouth.Sound(clip.y.astype(np.float64), sampling_frequency=clip.sr)
        try:
            pitch = snd.to_pitch_ac(time_step=TIME_STEP, pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING)
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
            p5, p95 = np.percentile(v, [5, 95])
            st = _semitones(v, float(np.median(v)))
            out.update(
                f0_mean_hz=float(v.mean()), f0_median_hz=float(np.median(v)), f0_std_hz=float(v.std()),
                f0_p5_hz=float(p5), f0_p95_hz=float(p95), f0_std_st=float(st.std()),
                f0_range_st=float(12.0 * math.log2(p95 / p5)),
            )
            r = np.clip(strength[voiced], 1e-6, 1 - 1e-6)
            out["hnr_db"] = float(np.mean(10.0 * np.log10(r / (1.0 - r))))
            try:
                pp = call([snd, pitch], "To PointProcess (cc)")
                out["jitter_local"] = float(call(pp, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3))
                out["jitter_rap"] = float(call(pp, "Get jitter (rap)", 0, 0, 0.0001, 0.02, 1.3))
                out["shimmer_local"] = float(call([snd, pp], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6))
                out["shimmer_apq3"] = float(call([snd, pp], "Get shimmer (apq3)", 0, 0, 0.0001, 0.02, 1.3, 1.6))
            except parselmouth.PraatError as exc:
                clip.notes.append(f"prosodic: jitter/shimmer undefined ({str(exc).strip().splitlines()[0]})")
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
        sounding = level > max(float(np.quantile(level[finite], 0.99)) + SILENCE_DB, float(level[finite].min()))
        sounding = sounding if sounding.any() else finite
        p5, p95 = np.quantile(level[sounding], [0.05, 0.95])
        out["intensity_range_db"] = float(p95 - p5)
        out["intensity_std_db"] = float(level[sounding].std())
        out.update(self._rhythm(level, times, pitch, dur))
        return out

    @staticmethod
    def _rhythm(level: np.ndarray, times: np.ndarray, pitch, dur: float) -> dict[str, float]:
        level = np.where(np.isfinite(level), level, np.nanmin(level[np.isfinite(level)]))
        thr = max(float(np.quantile(level, 0.99)) + SILENCE_DB, float(level.min()))
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
