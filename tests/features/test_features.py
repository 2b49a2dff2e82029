"""Every feature family against signals whose true values are known, and on real speech."""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from blindcheck.features import get_extractor
from blindcheck.features.frames import active_frames
from blindcheck.inputs.audio import DecodedAudio, decode, load_clip, read_bytes, resample
from tests.conftest import SR, pulse_train, tone


def clip_of(y: np.ndarray, sr: int = SR, **kw):
    info = dict(channels=1, format="WAV", subtype="PCM_16", bit_depth=16.0, lossy=False, decoder="soundfile")
    info.update(kw)
    return load_clip("t", DecodedAudio(np.asarray(y, np.float32), sr, **info))


def feats(modality: str, y: np.ndarray, sr: int = SR, **kw) -> tuple[dict, list[str]]:
    clip = clip_of(y, sr, **kw)
    ext = get_extractor(modality)
    out = ext.extract(clip)
    assert set(out) == set(ext.feature_names())
    return out, clip.notes


# ------------------------------------------------------------------------------------------- recording


def test_levels_of_a_tone():
    y = tone(1000, 2.0, amp=10 ** (-6 / 20))  # peak -6 dBFS, RMS -9.03 dBFS
    f, _ = feats("recording", y)
    assert f["peak_dbfs"] == pytest.approx(-6.0, abs=0.05)
    assert f["rms_dbfs"] == pytest.approx(-6.0 - 3.0103, abs=0.05)
    assert f["crest_factor_db"] == pytest.approx(3.01, abs=0.1)
    assert f["dc_offset"] == pytest.approx(0.0, abs=1e-4)
    assert f["clipping_fraction"] == 0.0
    assert f["duration_s"] == pytest.approx(2.0)


def test_loudness_follows_bs1770():
    # BS.1770: a full-scale 1 kHz sine reads -3.01 LUFS, so a -20 dBFS one reads about -23.0 LUFS.
    f, _ = feats("recording", tone(1000, 3.0, amp=10 ** (-20 / 20)))
    assert f["loudness_lufs"] == pytest.approx(-23.01, abs=0.3)
    quieter, _ = feats("recording", tone(1000, 3.0, amp=10 ** (-26 / 20)))
    assert f["loudness_lufs"] - quieter["loudness_lufs"] == pytest.approx(6.0, abs=0.1)


def test_dc_offset_and_clipping():
    y = tone(200, 1.0, amp=0.9) + 0.05
    f, _ = feats("recording", y)
    assert f["dc_offset"] == pytest.approx(0.05, abs=1e-3)
    clipped = np.clip(tone(200, 1.0, amp=2.0), -1.0, 1.0)
    g, _ = feats("recording", clipped)
    # A sine at twice full scale spends 2/3 of its time beyond +-1: those samples are clipped.
    assert g["clipping_fraction"] == pytest.approx(2 / 3, abs=0.03)
    attenuated, _ = feats("recording", 0.3 * clipped)  # clipped, then turned down: still caught
    assert attenuated["clipping_fraction"] == pytest.approx(2 / 3, abs=0.03)
    assert f["clipping_fraction"] == 0.0


def test_padded_silence_is_measured():
    burst = tone(300, 0.5, amp=0.3)
    y = np.concatenate([np.zeros(int(0.7 * SR)), burst, np.zeros(int(0.3 * SR))])
    f, _ = feats("recording", y)
    assert f["leading_silence_s"] == pytest.approx(0.7, abs=0.03)
    assert f["trailing_silence_s"] == pytest.approx(0.3, abs=0.03)
    assert f["silence_ratio"] == pytest.approx(1.0 / 1.5, abs=0.04)


def test_snr_estimate_tracks_known_snr():
    rng = np.random.default_rng(1)
    burst = np.concatenate([np.zeros(SR), tone(500, 1.0, amp=0.3), np.zeros(SR)])
    signal_power = 0.3**2 / 2
    estimates = []
    for snr in (40, 30, 20, 10):
        noise = rng.normal(0, math.sqrt(signal_power / 10 ** (snr / 10)), len(burst))
        f, _ = feats("recording", burst + noise)
        estimates.append(f["snr_db"])
        assert f["snr_db"] == pytest.approx(snr, abs=3.0), (snr, f["snr_db"])
    assert estimates == sorted(estimates, reverse=True)


def test_effective_bandwidth_survives_upsampling(fsdd_meta):
    # An 8 kHz recording stored at 16 kHz still only carries energy up to ~4 kHz.
    audio = decode(read_bytes(fsdd_meta["abspath"].iloc[0]))
    up = resample(audio.samples, 8000, 16000)
    f, _ = feats("recording", up, 16000)
    assert f["sample_rate"] == 16000
    assert 3000 <= f["effective_bandwidth_hz"] <= 4100
    assert f["bandwidth_ratio"] <= 0.52
    # Full-band content at 16 kHz reaches close to Nyquist.
    rng = np.random.default_rng(0)
    g, _ = feats("recording", 0.1 * rng.standard_normal(SR), 16000)
    assert g["effective_bandwidth_hz"] > 7500
    # A band-limited signal (low-passed at 2 kHz) reads about 2 kHz.
    lp = librosa.resample(librosa.resample(0.1 * rng.standard_normal(SR), orig_sr=16000, target_sr=4000),
                          orig_sr=4000, target_sr=16000)
    h, _ = feats("recording", lp, 16000)
    assert 1800 <= h["effective_bandwidth_hz"] <= 2200


def test_pure_silence_gives_reasons_not_crashes():
    f, notes = feats("recording", np.zeros(SR))
    assert f["silence_ratio"] == 1.0
    assert math.isnan(f["effective_bandwidth_hz"]) and math.isnan(f["loudness_lufs"])
    assert any("silence" in n for n in notes)
    p, pnotes = feats("prosodic", np.zeros(SR))
    assert math.isnan(p["f0_mean_hz"]) and math.isnan(p["jitter_local"])
    assert any("no voiced frames" in n for n in pnotes)
    s, _ = feats("spectral", np.zeros(SR))
    assert all(np.isfinite(v) for v in s.values())


# -------------------------------------------------------------------------------------------- spectral


def test_spectral_shape_of_tone_and_noise():
    t, _ = feats("spectral", tone(1000, 1.0))
    assert t["centroid_hz_mean"] == pytest.approx(1000, rel=0.05)
    assert t["zcr_mean"] == pytest.approx(2 * 1000 / SR, rel=0.05)
    assert t["flatness_mean"] < 0.01
    ltas = np.array([t[f"ltas_mel_{b:02d}"] for b in range(40)])
    mel_f = librosa.mel_frequencies(n_mels=42, fmin=20.0, fmax=SR / 2)[1:-1]
    assert abs(mel_f[ltas.argmax()] - 1000) < 120
    rng = np.random.default_rng(0)
    n, _ = feats("spectral", 0.1 * rng.standard_normal(SR).astype(np.float32))
    assert n["flatness_mean"] > 0.3
    assert n["centroid_hz_mean"] == pytest.approx(SR / 4, rel=0.08)
    high, _ = feats("spectral", tone(3000, 1.0))
    assert high["rolloff_hz_mean"] > t["rolloff_hz_mean"] + 1500


def test_mfcc_match_librosa_reference(fsdd_meta):
    audio = decode(read_bytes(fsdd_meta["abspath"].iloc[5]))
    clip = load_clip("x", audio)
    f = get_extractor("spectral").extract(clip)
    ref = librosa.feature.mfcc(y=clip.y, sr=SR, n_mfcc=21, n_fft=512, hop_length=160, win_length=400,
                               n_mels=40, fmin=20.0, fmax=SR / 2, center=True, pad_mode="constant",
                               htk=False, lifter=0)
    ours = np.array([f[f"mfcc_{i:02d}_mean"] for i in range(1, 21)])
    # Reference: librosa's pipeline (power_to_db with ref=1, amin=1e-10, top_db=80) on the same frames.
    logmel = librosa.power_to_db(librosa.feature.melspectrogram(
        y=clip.y, sr=SR, n_fft=512, hop_length=160, win_length=400, n_mels=40, fmin=20.0, fmax=SR / 2,
        pad_mode="constant"), ref=1.0, amin=1e-10, top_db=None)
    power = np.abs(librosa.stft(clip.y, n_fft=512, hop_length=160, win_length=400, pad_mode="constant")) ** 2
    act = active_frames(power)
    exact = librosa.feature.mfcc(S=logmel, n_mfcc=21)[:, act].mean(axis=1)[1:]
    np.testing.assert_allclose(ours, exact, rtol=1e-4, atol=1e-3)
    assert ref.shape[0] == 21


def test_spectral_statistics_ignore_silent_frames():
    """Padding a clip with digital silence changes recording.* but leaves the spectral shape alone."""
    y = pulse_train(140, 0.6)[0] + np.random.default_rng(0).normal(0, 1e-3, int(0.6 * SR)).astype(np.float32)
    padded = np.concatenate([np.zeros(int(0.5 * SR), np.float32), y, np.zeros(int(0.5 * SR), np.float32)])
    a, _ = feats("spectral", y)
    b, _ = feats("spectral", padded)
    for k in ("centroid_hz_mean", "flatness_mean", "mfcc_01_mean", "ltas_mel_10", "contrast_3_mean"):
        assert b[k] == pytest.approx(a[k], rel=0.05, abs=0.02), k
    power = np.abs(librosa.stft(padded, n_fft=512, hop_length=160, win_length=400, pad_mode="constant")) ** 2
    assert active_frames(power).sum() == pytest.approx(0.6 * SR / 160, abs=4)


# -------------------------------------------------------------------------------------------- prosodic


def test_f0_of_pulse_train():
    y, _ = pulse_train(150, 1.0)
    f, notes = feats("prosodic", y)
    assert f["f0_median_hz"] == pytest.approx(150, rel=0.01)
    assert f["f0_mean_hz"] == pytest.approx(150, rel=0.02)
    assert f["voiced_fraction"] > 0.85
    assert f["f0_range_st"] < 0.5
    assert f["hnr_db"] > 20
    assert not notes


def test_jitter_and_shimmer_match_their_truth():
    clean, _ = feats("prosodic", pulse_train(120, 1.5)[0])
    y, times = pulse_train(120, 1.5, jitter=0.02, seed=3)
    periods = np.diff(times)
    true_local = np.mean(np.abs(np.diff(periods))) / periods.mean()
    f, _ = feats("prosodic", y)
    assert f["jitter_local"] == pytest.approx(true_local, rel=0.3)
    assert f["jitter_local"] > 5 * clean["jitter_local"]
    assert f["jitter_rap"] > 5 * clean["jitter_rap"]
    s, _ = feats("prosodic", pulse_train(120, 1.5, shimmer=0.15, seed=4)[0])
    assert s["shimmer_local"] > 3 * clean["shimmer_local"] and s["shimmer_local"] > 0.08
    assert s["shimmer_apq3"] > 3 * clean["shimmer_apq3"]


def test_hnr_falls_with_noise():
    y, _ = pulse_train(140, 1.0)
    rng = np.random.default_rng(2)
    hnrs = []
    for noise_db in (-40, -20, -10):
        noisy = y + rng.normal(0, y.std() * 10 ** (noise_db / 20), len(y)).astype(np.float32)
        hnrs.append(feats("prosodic", noisy)[0]["hnr_db"])
    assert hnrs[0] > hnrs[1] > hnrs[2]
    assert hnrs[2] < 12


def test_syllables_rate_and_pauses():
    syll, _ = pulse_train(130, 0.15)
    gap = np.zeros(int(0.1 * SR), np.float32)
    pause = np.zeros(int(0.6 * SR), np.float32)
    y = np.concatenate([gap] + [np.concatenate([syll, gap]) for _ in range(3)] + [pause]
                       + [np.concatenate([syll, gap]) for _ in range(2)])
    f, _ = feats("prosodic", y)
    assert f["syllable_count"] == 5
    assert f["pause_count"] == 1
    assert f["speaking_rate"] == pytest.approx(5 / (len(y) / SR), rel=0.01)
    assert f["articulation_rate"] > f["speaking_rate"]
    assert 0.2 < f["pause_ratio"] < 0.5


def test_prosodic_features_do_not_carry_the_recording_level(fsdd_meta):
    """Issue 15: each modality keeps to its own evidence. A 20 dB gain change moves recording.* but no
    prosodic feature (the level is the recording chain's, not prosody)."""
    clip = load_clip("x", decode(read_bytes(fsdd_meta["abspath"].iloc[3])))
    quiet = load_clip("q", decode(read_bytes(fsdd_meta["abspath"].iloc[3])))
    quiet.y = clip.y * 0.1
    quiet.audio.samples = quiet.audio.samples * 0.1
    ext = get_extractor("prosodic")
    a, b = ext.extract(clip), ext.extract(quiet)
    for k in ext.feature_names():
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-3), k
    rec = get_extractor("recording")
    assert rec.extract(clip)["rms_dbfs"] - rec.extract(quiet)["rms_dbfs"] == pytest.approx(20, abs=0.1)


def test_unvoiced_noise_gives_nan_with_reason():
    rng = np.random.default_rng(0)
    f, notes = feats("prosodic", 0.1 * rng.standard_normal(SR).astype(np.float32))
    assert math.isnan(f["f0_mean_hz"]) and math.isnan(f["hnr_db"])
    assert np.isfinite(f["intensity_std_db"]) and np.isfinite(f["intensity_range_db"])
    assert any("no voiced frames" in n for n in notes)


def test_real_speech_values_are_plausible(fsdd_meta):
    for path in fsdd_meta["abspath"].iloc[::40]:
        clip = load_clip("x", decode(read_bytes(path)))
        p = get_extractor("prosodic").extract(clip)
        r = get_extractor("recording").extract(clip)
        assert 60 < p["f0_median_hz"] < 260  # six adult male speakers
        assert 0 < p["jitter_local"] < 0.1
        assert 0 < r["effective_bandwidth_hz"] <= 4000
        assert r["sample_rate"] == 8000 and r["bit_depth"] == 16


def gaussian_pulses(marks: np.ndarray, amps: np.ndarray, dur: float, sr: int = SR, width: float = 2.5e-4):
    """Gaussian pulses (sigma 0.25 ms, 4 samples at 16 kHz) of amplitude ``amps`` centred exactly at ``marks``
    (sample j at (j + 0.5) / sr, as in a Praat Sound)."""
    t = (np.arange(int(dur * sr)) + 0.5) / sr
    y = np.zeros_like(t)
    for tk, ak in zip(marks, amps, strict=True):
        near = np.abs(t - tk) < 8 * width
        y[near] += ak * np.exp(-0.5 * ((t[near] - tk) / width) ** 2)
    return y


@pytest.mark.parametrize("j,s", [(0.01, 0.05), (0.03, 0.2)])
def test_jitter_shimmer_of_known_marks(j, s):
    """Periods alternating P(1 +- j) and amplitudes A(1 +- s): by the definitions, jitter (local) is 2j (every
    consecutive pair differs by 2jP, the mean period is P), jitter (RAP) 4j/3 (a period against the mean of three:
    P(1 - j) vs P(1 + j/3)), shimmer (local) 2s and shimmer (APQ3) 4s/3. Every cycle's window spans 0.2 of each
    neighbouring period, whose sum is 2P for every inner mark, so the windowed RMS is proportional to A."""
    from blindcheck.features.periods import jitter_shimmer

    p0, n = 1 / 120, 120
    marks = 0.02 + np.concatenate([[0.0], np.cumsum(p0 * (1 + j * (-1.0) ** np.arange(n)))])
    amps = 0.3 * (1 + s * (-1.0) ** np.arange(n + 1))
    y = gaussian_pulses(marks, amps, marks[-1] + 0.03)
    jl, jr, sl, sa = jitter_shimmer(y, SR, marks)
    assert jl == pytest.approx(2 * j, rel=1e-9)  # n even: the mean period is exactly P
    assert jr == pytest.approx(4 * j / 3, rel=1e-9)
    assert sl == pytest.approx(2 * s, rel=2e-3)  # the mean amplitude of n of the n - 1 inner cycles: A(1 +- s/n)
    assert sa == pytest.approx(4 * s / 3, rel=2e-3)
    # Praat's rules: a period beyond 1.3x its neighbour is no period (a missing mark doubles one); jitter of the
    # remaining pairs is unchanged, and the definitions need 3 marks.
    gap = np.delete(marks, 61)
    assert jitter_shimmer(y, SR, gap)[0] == pytest.approx(2 * j, rel=0.02)
    assert all(math.isnan(v) for v in jitter_shimmer(y, SR, marks[:2]))


def test_jitter_shimmer_reproduce_praat_on_its_marks(fsdd_meta):
    """On Praat's own cross-correlation marks of real speech, the numpy definitions give Praat's four values."""
    import parselmouth
    from parselmouth.praat import call

    from blindcheck.features.periods import jitter_shimmer

    paths = list(fsdd_meta["abspath"].iloc[::60])
    ys = [load_clip("x", decode(read_bytes(p))).y.astype(np.float64) for p in paths]
    ys.append(np.concatenate([np.concatenate([y, np.zeros(1600)]) for y in ys]))  # several voiced stretches
    for y in ys:
        snd = parselmouth.Sound(y, sampling_frequency=SR)
        pitch = snd.to_pitch_ac(time_step=0.01, pitch_floor=75, pitch_ceiling=500, max_number_of_candidates=15)
        pp = call([snd, pitch], "To PointProcess (cc)")
        praat = [call(pp, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3),
                 call(pp, "Get jitter (rap)", 0, 0, 0.0001, 0.02, 1.3),
                 call([snd, pp], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6),
                 call([snd, pp], "Get shimmer (apq3)", 0, 0, 0.0001, 0.02, 1.3, 1.6)]
        ours = jitter_shimmer(y, SR, call(pp, "To Matrix").values[0])
        assert ours == pytest.approx(praat, rel=1e-9)


def test_fast_percentiles_are_numpys():
    from blindcheck.features.frames import percentiles, row_percentiles

    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 4, 7, 40, 41, 257]:
        a = rng.normal(size=n) * 100
        qs = (0, 5, 10, 25, 33.3, 75, 95, 99, 100)
        assert percentiles(a, qs, median=True) == [float(np.percentile(a, q)) for q in qs] + [float(np.median(a))]
        m = rng.normal(size=(4, n))
        assert np.array_equal(row_percentiles(m, (10, 50, 90)), np.percentile(m, (10, 50, 90), axis=1))
    assert math.isnan(percentiles(np.array([1.0, np.nan, 2.0]), (50,))[0])


def test_mean_std_and_zero_crossings_are_the_straightforward_ones(fsdd_meta):
    """The cheaper helpers give the values of the numpy/librosa computations they replace, bit for bit, on real
    speech: frames.mean_std (one sum for mean and std), frames.fmean (np.mean without its wrappers) and
    spectral._zcr (bisected sign changes)."""
    from blindcheck.features.frames import clip_active_frames, fmean, mean_std, stft_power
    from blindcheck.features.spectral import _zcr

    y, sr = sf.read(fsdd_meta.abspath[0], dtype="float32")
    # pauses of zeros, of -0.0 and of tiny negative values (|y| <= 1e-10 counts as no sign) between real speech
    raw = np.concatenate([np.zeros(800), y, -1e-11 * np.ones(300), -0.0 * y[:500], y]).astype(np.float32)
    clip = clip_of(raw, sr)
    power = stft_power(clip)
    logp = np.log(power + 1e-10)
    act = clip_active_frames(clip)
    for a in (logp, logp[:, act], np.ascontiguousarray(logp), np.ascontiguousarray(logp)[:, act], logp[:40].T):
        for axis in (0, 1):
            m, s = mean_std(a, axis=axis)
            assert np.array_equal(m, a.mean(axis=axis)) and np.array_equal(s, a.std(axis=axis))
            assert np.array_equal(fmean(a, axis=axis), a.mean(axis=axis))
            assert np.array_equal(fmean(a, axis=axis, keepdims=True), a.mean(axis=axis, keepdims=True))
    m, s = mean_std(logp[5])
    assert (m, s) == (float(np.mean(logp[5])), float(np.std(logp[5])))
    assert fmean(logp[5]) == np.mean(logp[5]) and fmean(logp[5, act]) == np.mean(logp[5, act])
    for x in (raw, clip.y, clip.y[:1000], np.ones(100, np.float32)):
        n_frames = 1 + len(x) // 160
        ref = librosa.feature.zero_crossing_rate(x, frame_length=400, hop_length=160, center=True)[0]
        assert np.array_equal(_zcr(x, n_frames), ref)


def test_mean_log_is_the_mean_of_the_logs(fsdd_meta):
    """spectral._mean_log (one log per 16 rows, of their product) against np.log(p).mean(axis=0) on real speech's
    floored STFT power, and on powers whose products would overflow (then it takes each log)."""
    from blindcheck.features.frames import stft_power
    from blindcheck.features.spectral import _mean_log

    y, sr = sf.read(fsdd_meta.abspath[3], dtype="float32")
    pt = np.maximum(stft_power(clip_of(np.concatenate([np.zeros(1000, np.float32), y]), sr)), 1e-10)
    for p in (pt, pt[:, 1::2], pt[:100], 1e12 * pt):
        assert np.allclose(_mean_log(p), np.log(p).mean(axis=0), rtol=1e-14, atol=0)
    big = pt.copy()
    big[:2] = 1e300  # their product overflows
    assert np.array_equal(_mean_log(big), np.log(big).mean(axis=0))


def test_mel_filterbank_is_librosas_bit_for_bit_without_importing_it():
    import subprocess
    import sys

    import librosa.filters

    from blindcheck.features.frames import mel_filterbank

    for sr, n_fft, n_mels, fmin, fmax in [(16000, 512, 40, 20.0, 8000.0), (16000, 400, 40, 0.0, None),
                                          (8000, 512, 40, 20.0, 4000.0), (44100, 2048, 128, 0.0, None)]:
        ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
        theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    # an extraction worker's warm-up (every acoustic extractor on a clip) imports neither librosa nor numba
    code = ("import sys; from blindcheck.extraction.pipeline import _warm_worker; "
            "_warm_worker(['recording', 'spectral', 'prosodic']); "
            "print(sorted(m for m in ('librosa', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


# ------------------------------------------------------------------- families added for issue 21 (v4/v3)


def shaped_noise(slope_db_per_khz: float, dur: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """White noise whose power spectrum falls (or rises) by a known number of dB per kHz."""
    x = np.fft.rfft(np.random.default_rng(seed).standard_normal(int(dur * sr)))
    f_khz = np.fft.rfftfreq(int(dur * sr), 1.0 / sr) / 1000.0
    y = np.fft.irfft(x * 10 ** (slope_db_per_khz * f_khz / 20), int(dur * sr))
    return (0.1 * y / y.std()).astype(np.float32)


def test_linear_ltas_and_slopes_follow_a_known_tilt():
    f, _ = feats("spectral", shaped_noise(-6.0, 3.0))
    lin = np.array([f[f"ltas_lin_{b:02d}"] for b in range(32)])
    # 250 Hz bands on a -6 dB/kHz spectrum: each band 1.5 dB below the one under it (each band's level is a
    # mean of ~2400 correlated periodogram bins: about 0.15 dB of estimation noise).
    slope, icpt = np.polyfit(np.arange(32), lin, 1)
    assert slope == pytest.approx(-1.5, abs=0.05)
    assert np.abs(lin - (icpt + slope * np.arange(32))).max() < 0.6
    assert np.mean(10 ** (lin / 10)) == pytest.approx(1.0)  # relative to the bands' mean power
    assert f["slope_500_1500_db_khz_mean"] == pytest.approx(-6.0, abs=0.3)
    # 0-500 Hz holds 16 bins: a frame's slope scatters by ~13 dB/kHz, its mean over 12 s by ~0.4.
    long, _ = feats("spectral", shaped_noise(-6.0, 12.0, seed=1))
    assert long["slope_0_500_db_khz_mean"] == pytest.approx(-6.0, abs=1.2)
    flat, _ = feats("spectral", shaped_noise(0.0, 3.0))
    assert abs(flat["slope_500_1500_db_khz_mean"]) < 0.5
    assert np.ptp([flat[f"ltas_lin_{b:02d}"] for b in range(32)]) < 1.0
    # Alpha ratio of white noise: energy in 50-1000 Hz over 1-5 kHz = their bin counts (30 vs 128 bins of
    # 31.25 Hz), whatever the level.
    assert flat["alpha_ratio_db_mean"] == pytest.approx(10 * math.log10(30 / 128), abs=0.3)


def test_hammarberg_index_of_two_tones():
    # Strongest bin below 2 kHz (a 1 kHz tone) over strongest 2-5 kHz (3 kHz tone at a tenth the amplitude).
    y = tone(1000, 1.0, amp=0.5) + tone(3000, 1.0, amp=0.05)
    f, _ = feats("spectral", y)
    assert f["hammarberg_db_mean"] == pytest.approx(20.0, abs=0.2)
    assert f["hammarberg_db_std"] < 0.2


def test_frame_feature_percentiles_see_both_halves():
    # 30% of the frames hold a 1 kHz tone, 70% a 3 kHz tone (same level): p10 reads the first, p50/p90 the second.
    y = np.concatenate([tone(1000, 0.6), tone(3000, 1.4)])
    f, _ = feats("spectral", y)
    assert f["centroid_hz_p10"] == pytest.approx(1000, rel=0.03)
    assert f["centroid_hz_p50"] == pytest.approx(3000, rel=0.03)
    assert f["centroid_hz_p90"] == pytest.approx(3000, rel=0.03)
    assert f["rolloff_hz_p10"] < 1200 < 2800 < f["rolloff_hz_p50"]


@pytest.mark.parametrize(("fm", "band"), [(5.5, "mod_4_8hz"), (24.0, "mod_16_32hz"), (1.5, "mod_1_2hz")])
def test_envelope_modulation_band_of_an_am_tone(fm, band):
    t = np.arange(3 * SR) / SR
    y = (0.3 * (1 + np.sin(2 * np.pi * fm * t)) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    f, _ = feats("spectral", y)
    shares = {k: v for k, v in f.items() if k.startswith("mod_")}
    assert len(shares) == 6 and sum(shares.values()) == pytest.approx(1.0)
    assert shares[band] > 0.85, shares


def test_modulation_needs_a_full_cycle():
    f, notes = feats("spectral", tone(500, 0.5))
    assert math.isnan(f["mod_1_2hz"]) and np.isfinite(f["mod_2_4hz"])
    assert any("1-2 Hz envelope modulation undefined" in n for n in notes)


def test_noise_floor_shape_in_the_pauses():
    burst = tone(440, 0.5, amp=0.5)
    for slope in (0.0, -6.0):
        noise = shaped_noise(slope, 2.0, seed=3) * 0.01  # about -46 dB below the tone
        y = noise.copy()
        y[SR // 2: SR] += burst
        f, _ = feats("recording", y)
        bands = np.array([f[f"noise_band_{b:02d}_db"] for b in range(8)])
        # 1 kHz bands: each 6 dB (or 0 dB) below the previous one, relative to their mean power.
        np.testing.assert_allclose(np.diff(bands), slope, atol=0.6)
        assert f["noise_slope_db_khz"] == pytest.approx(slope, abs=0.5)
        assert np.mean(10 ** (bands / 10)) == pytest.approx(1.0)


def harmonics(f0, amps, dur=1.5):
    t = np.arange(int(dur * SR)) / SR
    return (0.2 * sum(a * np.sin(2 * np.pi * f0 * k * t + k) for k, a in enumerate(amps, 1))).astype(np.float32)


@pytest.mark.parametrize("f0", [100.0, 160.0, 230.0])
def test_harmonic_differences_of_a_known_source(f0):
    # H1 = 1, H2 = 0.5, H4 = 0.25: H1-H2 = H2-H4 = 20 log10(2) = 6.02 dB.
    f, notes = feats("prosodic", harmonics(f0, [1.0, 0.5, 0.3, 0.25, 0.1]))
    assert f["f0_median_hz"] == pytest.approx(f0, rel=0.01)
    assert f["h1_h2_db_mean"] == pytest.approx(6.02, abs=0.5)
    assert f["h2_h4_db_mean"] == pytest.approx(6.02, abs=0.5)
    assert f["h1_h2_db_std"] < 0.3
    flipped, _ = feats("prosodic", harmonics(f0, [0.5, 1.0, 0.3, 0.5, 0.1]))  # H2 over H1 by 6 dB
    assert flipped["h1_h2_db_mean"] == pytest.approx(-6.02, abs=0.5)


def test_h1_h2_of_the_pulse_train_is_its_resonance_ratio():
    # The pulse train's pulses are exp(-t/2.5 ms) sin(2 pi 700 t): |H(f)| = w0 / |(a + j w)^2 + w0^2|.
    a, w0 = 1 / 0.0025, 2 * np.pi * 700

    def gain(f):
        return w0 / abs((a + 2j * np.pi * f) ** 2 + w0**2)

    f, _ = feats("prosodic", pulse_train(140, 1.0)[0])
    assert f["h1_h2_db_mean"] == pytest.approx(20 * math.log10(gain(140) / gain(280)), abs=0.3)


def test_cpp_falls_with_noise():
    y, _ = pulse_train(140, 1.0)
    rng = np.random.default_rng(5)
    cpps = [feats("prosodic", y + rng.normal(0, y.std() * 10 ** (nd / 20), len(y)).astype(np.float32))[0]
            ["cpp_db_mean"] for nd in (-40, -20, -5)]
    assert cpps[0] > cpps[1] > cpps[2] > 0
    assert cpps[0] > 3 * cpps[2]


def test_f0_glide_velocity_and_iqr():
    # F0 doubles over 1.5 s (exponential glide): 8 semitones per second, an IQR of half the 12 st range.
    t = np.arange(int(1.5 * SR)) / SR
    f0 = 110 * 2 ** (t / 1.5)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = (0.2 * (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.3 * np.sin(3 * phase))).astype(np.float32)
    f, _ = feats("prosodic", y)
    assert f["f0_velocity_st_s"] == pytest.approx(8.0, rel=0.15)
    assert f["f0_iqr_st"] == pytest.approx(6.0, abs=0.6)
    steady, _ = feats("prosodic", harmonics(150, [1.0, 0.5, 0.3]))
    assert steady["f0_velocity_st_s"] < 0.5 and steady["f0_iqr_st"] < 0.1


def test_voiced_segments_of_syllables():
    syll, _ = pulse_train(130, 0.2)
    gap = np.zeros(int(0.2 * SR), np.float32)
    y = np.concatenate([gap] + [np.concatenate([syll, gap]) for _ in range(4)])
    f, _ = feats("prosodic", y)
    assert f["voiced_segment_rate"] == pytest.approx(4 / (len(y) / SR), rel=0.01)
    assert f["voiced_segment_mean_s"] == pytest.approx(0.2, abs=0.05)
    assert f["hnr_std_db"] >= 0
