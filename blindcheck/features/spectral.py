"""``spectral.*``: short-time spectral shape at the analysis rate (librosa), from one STFT.

Frames: 25 ms Hann windows every 10 ms, FFT size 512 at 16 kHz. Every frame-level descriptor is summarised by
its mean and standard deviation over the clip's *active* frames (frames with speech energy, by the same rule
as ``recording.silence_ratio``; all frames when fewer than three are active), so that silence, padding and
pauses show up in ``recording.*`` and not as the spectral shape of nothing.

Spectral features are level-free — the level lives in ``recording.*`` — so that a gain difference between the
sides shows up in one modality only: MFCC c0's mean (the log energy) is left out, its standard deviation (the
dynamics) kept. The long-term average spectrum (``ltas_mel_XX``) is the mean mel-band power of the active
frames in dB relative to the clip's average band level: a level-free picture of the microphone and room
response.
"""

from __future__ import annotations

import math

import numpy as np

from blindcheck.audio import Clip
from blindcheck.features.frames import HOP, N_FFT, WIN, active_frames, stft_magnitude, stft_power

N_MELS, N_MFCC, N_CONTRAST = 40, 21, 6
_FRAME_FEATURES = ("centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "zcr", "flux")


class SpectralExtractor:
    name = "spectral"
    version = "3"

    def config(self) -> dict:
        return {"n_fft": N_FFT, "win": WIN, "hop": HOP, "n_mels": N_MELS, "n_mfcc": N_MFCC, "contrast": N_CONTRAST}

    def feature_names(self) -> list[str]:
        names = []
        for i in range(N_MFCC):
            names += [f"mfcc_{i:02d}_mean"] if i else []
            names += [f"mfcc_{i:02d}_std", f"mfcc_{i:02d}_delta_mean", f"mfcc_{i:02d}_delta_std"]
        for f in _FRAME_FEATURES:
            names += [f"{f}_mean", f"{f}_std"]
        for b in range(N_CONTRAST + 1):
            names += [f"contrast_{b}_mean", f"contrast_{b}_std"]
        names += [f"ltas_mel_{b:02d}" for b in range(N_MELS)]
        return names

    def extract(self, clip: Clip) -> dict[str, float]:
        import librosa

        sr = clip.sr
        mag = stft_magnitude(clip)
        power = stft_power(clip)
        mel = librosa.feature.melspectrogram(S=power, sr=sr, n_fft=N_FFT, n_mels=N_MELS, fmin=20.0, fmax=sr / 2)
        logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=N_MFCC)
        n_frames = mfcc.shape[1]
        out: dict[str, float] = {}
        width = min(9, n_frames if n_frames % 2 else n_frames - 1)
        delta = librosa.feature.delta(mfcc, width=width, mode="interp") if width >= 3 else None
        if delta is None:
            clip.notes.append(f"spectral: only {n_frames} frames, MFCC deltas undefined")
        act = active_frames(power)
        mfcc = mfcc[:, act]
        delta = delta[:, act] if delta is not None else None
        for i in range(N_MFCC):
            if i:
                out[f"mfcc_{i:02d}_mean"] = float(mfcc[i].mean())
            out[f"mfcc_{i:02d}_std"] = float(mfcc[i].std())
            out[f"mfcc_{i:02d}_delta_mean"] = float(delta[i].mean()) if delta is not None else math.nan
            out[f"mfcc_{i:02d}_delta_std"] = float(delta[i].std()) if delta is not None else math.nan

        frames = {
            "centroid_hz": librosa.feature.spectral_centroid(S=mag, sr=sr, n_fft=N_FFT)[0],
            "bandwidth_hz": librosa.feature.spectral_bandwidth(S=mag, sr=sr, n_fft=N_FFT)[0],
            "rolloff_hz": librosa.feature.spectral_rolloff(S=mag, sr=sr, n_fft=N_FFT, roll_percent=0.85)[0],
            "flatness": librosa.feature.spectral_flatness(S=mag, amin=1e-10)[0],
            "zcr": librosa.feature.zero_crossing_rate(clip.y, frame_length=WIN, hop_length=HOP, center=True)[0],
            "flux": np.concatenate([[0.0], np.maximum(0.0, np.diff(logmel, axis=1)).mean(axis=0)]),
        }
        for k, v in frames.items():
            v = v[act]  # every frame series has one value per STFT frame
            out[f"{k}_mean"], out[f"{k}_std"] = float(np.mean(v)), float(np.std(v))
        contrast = librosa.feature.spectral_contrast(S=mag, sr=sr, n_fft=N_FFT, n_bands=N_CONTRAST, fmin=100.0)
        contrast = contrast[:, act]
        for b in range(N_CONTRAST + 1):
            out[f"contrast_{b}_mean"], out[f"contrast_{b}_std"] = float(contrast[b].mean()), float(contrast[b].std())
        ltas = 10.0 * np.log10(np.maximum(mel[:, act].mean(axis=1), 1e-10))
        ltas -= ltas.mean()
        for b in range(N_MELS):
            out[f"ltas_mel_{b:02d}"] = float(ltas[b])
        return out
