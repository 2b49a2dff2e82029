"""``music.*``: harmony, tonality, rhythm, texture and dynamics of a clip, with librosa's definitions.

librosa (the ``music`` extra) is the reference implementation of these descriptors; this module calls it and
does not re-derive any of them. It is imported lazily, inside the extractor, so the other modalities never load
it (nor compile its numba functions: ~20 s on first use per process, paid once per worker by
:meth:`MusicExtractor.warm`, which the extraction workers call at start-up).

Every descriptor works on the analysis-rate mono signal (``clip.y``, 16 kHz) from one STFT: ``n_fft`` 2048
(128 ms), hop 512 (32 ms), Hann, centred — librosa's defaults. Every feature is level-free (the level belongs to
``recording.*``): scaling a clip by a gain leaves them unchanged up to rounding and librosa's 80 dB ``top_db``
floor.

Chroma (``librosa.feature.chroma_stft`` on the STFT power, tuning estimated by librosa, each frame normalised
to its maximum, librosa's default):

- ``chroma_mean_00`` ... ``chroma_mean_11``: mean chroma per pitch class over the frames (00 = C, 01 = C#, ...):
  the excerpt's pitch-class profile (which key and scale it uses).
- ``chroma_std``: the pitch classes' standard deviations over time, averaged: how much the harmony moves.
- ``chroma_entropy``: the frames' Shannon entropy (bits, of the chroma vector normalised to sum 1), averaged:
  low for a single line, high for dense chords or noise (at most log2 12 = 3.58).
- ``chroma_profile_entropy``: the entropy of the mean chroma (bits): how many pitch classes the excerpt uses.

Tonal centroid (``librosa.feature.tonnetz`` on that chroma; Harte et al. 2006): ``tonnetz_{d}_mean`` and
``tonnetz_{d}_std`` over the frames for its six dimensions d = 0..5 (fifths x/y, minor thirds x/y, major thirds
x/y, librosa's order).

Key clarity (Krumhansl-Schmuckler): the Pearson correlation of the mean chroma with each of the 24 rotations of
the Krumhansl-Kessler (1982) major and minor key profiles. ``key_clarity``: the highest correlation (near 1 for
plainly tonal music, near 0 for noise or speech); ``key_margin``: that minus the second highest (how
unambiguous the key is); ``key_major``: 1 when the best key is major, 0 when minor.

Rhythm, from librosa's onset strength (``librosa.onset.onset_strength``: the spectral flux of the 128-band log
(dB) mel spectrogram, positive differences averaged over the bands; the same curve as ``onset_strength(y=...)``):

- ``tempo_bpm``: ``librosa.beat.beat_track`` 's global tempo estimate, on the onset strength that ``beat_track``
  computes itself from a signal (the bands' median instead of their mean).
- ``beat_strength``: the mean of that onset strength at the tracked beat frames over its mean at all other
  frames (> 1 when the beats stand out).
- ``beat_interval_cv``: the coefficient of variation of the inter-beat intervals (0 for a steady pulse).
- ``onset_rate_hz``: ``librosa.onset.onset_detect`` onsets per second.
- ``flux_mean``, ``flux_std``, ``flux_p90``: statistics of the onset strength (spectral flux) curve.
- ``chroma_novelty_mean``, ``chroma_novelty_std``: the same flux computed on the chroma (``onset_strength`` with
  ``S=chroma``): harmonic-change novelty, how much new pitch content each frame brings.

Texture: ``hp_ratio_db``, the harmonic-to-percussive energy ratio, 10 log10(sum H^2 / sum P^2) of
``librosa.decompose.hpss`` on the STFT magnitude (median filters of 31 frames/bins, soft masks).

Dynamics: ``lra_lu``, the loudness range of EBU R128 (EBU Tech 3342): short-term loudness (BS.1770 K-weighting,
the same filters as ``recording.loudness_lufs``, from :mod:`blindcheck.features.recording`) over 3 s windows every
0.1 s (Tech 3342 asks for an overlap of at least 2 s), absolute gate -70 LUFS, relative gate 20 LU below the
absolute-gated windows' power mean, then the 95th minus the 10th percentile (linear interpolation) of the gated
windows' loudness.

Undefined values are NaN with a note in ``clip.notes``: every feature for a clip shorter than 0.5 s or digitally
silent; chroma, tonnetz and key for a clip without a tonal frame; tempo and beats for a clip under 2 s or where
no beat is tracked; ``lra_lu`` for a clip under 3 s or with fewer than two gated windows.

The modality runs only when named. Since version 2, in an extraction (the registry's extractor,
``MusicExtractor(content_gate=True)``; a ``MusicExtractor()`` made directly describes any clip it is given), a
clip (or a long file's window) with less music than :data:`MIN_MUSIC_SHARE` (``content.music_share`` below 0.1:
the content modality's decision, :mod:`blindcheck.features.content`, computed once per clip in the worker, content
first) gets NaN music features and a note: the key, tempo and chroma of speech or of a door slam are not music's,
and a split between speech and music clips is the content modality's to report. Where the speech detector is not
installed (music share unknown) every clip is analysed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math

import numpy as np

from blindcheck.errors import MissingDependencyError
from blindcheck.inputs.audio import Clip

MUSIC_EXTRA = "install the music extra: pip install 'blindcheck[music]'"
N_FFT, HOP = 2048, 512
MIN_S, MIN_BEAT_S, LRA_WINDOW_S, LRA_STEP_S = 0.5, 2.0, 3.0, 0.1
N_TONNETZ = 6
MIN_MUSIC_SHARE = 0.1  # content.music_share below this: no music, every music feature NaN

# Krumhansl & Kessler (1982) probe-tone key profiles, tonic first (C major / C minor).
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

_CHROMA = (*[f"chroma_mean_{k:02d}" for k in range(12)], "chroma_std", "chroma_entropy", "chroma_profile_entropy")
_TONNETZ = tuple(f"tonnetz_{d}_{s}" for d in range(N_TONNETZ) for s in ("mean", "std"))
_KEY = ("key_clarity", "key_margin", "key_major")
_BEAT = ("tempo_bpm", "beat_strength", "beat_interval_cv")
_FLUX = ("onset_rate_hz", "flux_mean", "flux_std", "flux_p90", "chroma_novelty_mean", "chroma_novelty_std")
_NAMES = (*_CHROMA, *_TONNETZ, *_KEY, *_BEAT, *_FLUX, "hp_ratio_db", "lra_lu")


def music_unavailable() -> str | None:
    """Why the music modality cannot run here (a message naming the extra), or None."""
    if importlib.util.find_spec("librosa") is None:
        return f"librosa is not installed: {MUSIC_EXTRA}"
    return None


def _librosa():
    why = music_unavailable()
    if why:
        raise MissingDependencyError(f"music modality: {why}")
    import librosa

    return librosa


def key_profile_correlations(chroma_mean: np.ndarray) -> np.ndarray:
    """Pearson correlations of a 12-bin mean chroma with the 24 Krumhansl-Kessler key profiles: rows 0-11 the
    major keys with tonic C..B, rows 12-23 the minor keys. NaN where the chroma is constant."""
    c = np.asarray(chroma_mean, dtype=np.float64)
    profiles = np.stack([np.roll(p, k) for p in (KK_MAJOR, KK_MINOR) for k in range(12)])
    pc = profiles - profiles.mean(axis=1, keepdims=True)
    cc = c - c.mean()
    denom = np.sqrt((pc**2).sum(axis=1) * (cc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pc @ cc) / denom


def short_term_loudness(y: np.ndarray, sr: int, window_s: float = LRA_WINDOW_S,
                        step_s: float = LRA_STEP_S) -> np.ndarray:
    """BS.1770 short-term loudness (LUFS, ungated) of a mono signal over ``window_s`` windows every ``step_s``,
    K-weighted with the filters of ``recording.loudness_lufs``. Empty when the signal is shorter than a window."""
    from scipy.signal import sosfilt

    from blindcheck.features.recording import k_weighting

    sos, gain = k_weighting(sr)
    x = sosfilt(sos, np.asarray(y, dtype=np.float64)) * gain
    win, step = int(round(window_s * sr)), int(round(step_s * sr))
    if len(x) < win:
        return np.empty(0)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    lo = np.arange(0, len(x) - win + 1, step)
    z = (csum[lo + win] - csum[lo]) / win
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(z)


def loudness_range(st: np.ndarray) -> float:
    """EBU Tech 3342 loudness range (LU) of short-term loudness values: absolute gate -70 LUFS, relative gate
    20 LU below the power mean of the absolute-gated values, 95th minus 10th percentile of the rest. NaN when
    fewer than two values survive the gates."""
    st = np.asarray(st, dtype=np.float64)
    st = st[np.isfinite(st) & (st > -70.0)]
    if len(st) < 2:
        return math.nan
    rel = 10.0 * np.log10(np.mean(10.0 ** (st / 10.0))) - 20.0
    st = st[st > rel]
    if len(st) < 2:
        return math.nan
    lo, hi = np.percentile(st, [10.0, 95.0])
    return float(hi - lo)


def _entropy_bits(p: np.ndarray, axis: int = 0) -> np.ndarray:
    p = p / p.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=axis)


class MusicExtractor:
    name = "music"
    version = "2"

    def __init__(self, content_gate: bool = False) -> None:
        self.content_gate = content_gate  # the extraction's instance (get_extractor) applies the no-music rule
        why = music_unavailable()  # at once, in the driver: not one error per clip from the workers
        if why:
            raise MissingDependencyError(f"music modality: {why}")

    def config(self) -> dict:
        try:  # librosa's definitions are the features': its version is part of the cache key
            lib = importlib.metadata.version("librosa")
        except importlib.metadata.PackageNotFoundError:
            lib = None
        from blindcheck.features.content import ContentExtractor

        content = ContentExtractor()
        return {"n_fft": N_FFT, "hop": HOP, "librosa": lib, "key_profiles": "Krumhansl-Kessler",
                "lra": f"EBU Tech 3342, {LRA_WINDOW_S} s windows every {LRA_STEP_S} s",
                **({"min_music_share": MIN_MUSIC_SHARE, "content": {"version": content.version, **content.config()}}
                   if self.content_gate else {})}

    def feature_names(self) -> list[str]:
        return list(_NAMES)

    def warm(self) -> None:
        """Import librosa and run every path once (numba compiles its functions on first use in a process)."""
        from blindcheck.inputs.audio import ANALYSIS_SR, DecodedAudio

        sr = ANALYSIS_SR
        t = np.arange(int(4.0 * sr)) / sr
        # notes of a C major arpeggio, one every 0.25 s, each decaying: chroma, beats, onsets and LRA all run
        f0 = np.array([261.63, 329.63, 392.0, 523.25])[(t // 0.25).astype(int) % 4]
        y = (0.2 * np.sin(2 * np.pi * f0 * t) * np.exp(-8 * (t % 0.25))).astype(np.float32)
        audio = DecodedAudio(samples=y, sr=sr, channels=1, format="WAV", subtype="PCM_16", bit_depth=16.0,
                             lossy=False, decoder="soundfile")
        self._extract(Clip("warmup", audio, y, sr))  # every path, whatever the content rule says of the arpeggio

    def extract(self, clip: Clip) -> dict[str, float]:
        if not self.content_gate:
            return self._extract(clip)
        from blindcheck.features.content import content_shares

        share = content_shares(clip)["music_share"]
        if share < MIN_MUSIC_SHARE:  # NaN (no detector): unknown, analysed
            clip.notes.append(f"music: no music detected (content.music_share {share:.2f} < {MIN_MUSIC_SHARE:g}); "
                              "music features NaN")
            return dict.fromkeys(_NAMES, math.nan)
        return self._extract(clip)

    def _extract(self, clip: Clip) -> dict[str, float]:
        librosa = _librosa()
        out = dict.fromkeys(_NAMES, math.nan)
        y, sr = np.asarray(clip.y, dtype=np.float32), clip.sr
        dur = len(y) / sr
        if dur < MIN_S:
            clip.notes.append(f"music: clip shorter than {MIN_S} s, music features undefined")
            return out
        if not np.any(np.abs(y) > 1e-7):
            clip.notes.append("music: digital silence, music features undefined")
            return out

        mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
        power = mag**2
        self._tonal(librosa, clip, power, sr, out)

        mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr))
        oenv = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=HOP)
        onsets = librosa.onset.onset_detect(onset_envelope=oenv, sr=sr, hop_length=HOP)
        out["onset_rate_hz"] = len(onsets) / dur
        out["flux_mean"], out["flux_std"] = float(oenv.mean()), float(oenv.std())
        out["flux_p90"] = float(np.percentile(oenv, 90))
        self._beats(librosa, clip, librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=HOP, aggregate=np.median),
                    sr, dur, out)

        harm, perc = librosa.decompose.hpss(mag)
        eh, ep = float((harm.astype(np.float64) ** 2).sum()), float((perc.astype(np.float64) ** 2).sum())
        out["hp_ratio_db"] = 10.0 * math.log10(max(eh, 1e-20) / max(ep, 1e-20))

        if dur < LRA_WINDOW_S:
            clip.notes.append(f"music: clip shorter than {LRA_WINDOW_S} s, loudness range undefined")
        else:
            out["lra_lu"] = loudness_range(short_term_loudness(clip.y, sr))
            if math.isnan(out["lra_lu"]):
                clip.notes.append("music: fewer than two short-term loudness windows above the gates, "
                                  "loudness range undefined")
        return out

    @staticmethod
    def _tonal(librosa, clip: Clip, power: np.ndarray, sr: int, out: dict) -> None:
        chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=N_FFT, hop_length=HOP)
        tonal = chroma.max(axis=0) > 0  # librosa leaves frames without energy at zero
        if tonal.sum() < 2:
            clip.notes.append("music: fewer than two frames with pitch content, chroma, tonnetz and key undefined")
            return
        chroma = chroma[:, tonal]
        mean = chroma.mean(axis=1)
        for k in range(12):
            out[f"chroma_mean_{k:02d}"] = float(mean[k])
        out["chroma_std"] = float(chroma.std(axis=1).mean())
        out["chroma_entropy"] = float(_entropy_bits(chroma, axis=0).mean())
        out["chroma_profile_entropy"] = float(_entropy_bits(mean))
        novelty = librosa.onset.onset_strength(S=chroma, sr=sr, hop_length=HOP)
        out["chroma_novelty_mean"], out["chroma_novelty_std"] = float(novelty.mean()), float(novelty.std())
        tz = librosa.feature.tonnetz(chroma=chroma, sr=sr)
        for d in range(N_TONNETZ):
            out[f"tonnetz_{d}_mean"], out[f"tonnetz_{d}_std"] = float(tz[d].mean()), float(tz[d].std())
        r = key_profile_correlations(mean)
        if np.isfinite(r).all():
            order = np.argsort(r)[::-1]
            out["key_clarity"] = float(r[order[0]])
            out["key_margin"] = float(r[order[0]] - r[order[1]])
            out["key_major"] = float(order[0] < 12)
        else:
            clip.notes.append("music: flat chroma profile, key clarity undefined")

    @staticmethod
    def _beats(librosa, clip: Clip, oenv: np.ndarray, sr: int, dur: float, out: dict) -> None:
        if dur < MIN_BEAT_S:
            clip.notes.append(f"music: clip shorter than {MIN_BEAT_S} s, tempo and beats undefined")
            return
        tempo, beats = librosa.beat.beat_track(onset_envelope=oenv, sr=sr, hop_length=HOP)
        tempo = float(np.atleast_1d(tempo)[0])
        if len(beats) < 2 or tempo <= 0:
            clip.notes.append("music: fewer than two beats tracked, tempo and beats undefined")
            return
        out["tempo_bpm"] = tempo
        at = np.zeros(len(oenv), dtype=bool)
        at[beats[beats < len(oenv)]] = True
        rest = float(oenv[~at].mean()) if (~at).any() else math.nan
        out["beat_strength"] = float(oenv[at].mean()) / rest if rest > 0 else math.nan
        ibi = np.diff(beats).astype(np.float64)
        out["beat_interval_cv"] = float(ibi.std() / ibi.mean())
