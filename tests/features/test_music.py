"""The music modality on real music: the committed renders of music21's corpus (tests/data/music) and the bundled
FSDD speech. Values are held to librosa called directly on the same clip, the loudness range to a computation from
pyloudnorm's own filters, and the whole check to the confounds the rendered set was built to show."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

librosa = pytest.importorskip("librosa")

from blindcheck import check  # noqa: E402
from blindcheck.errors import MissingDependencyError  # noqa: E402
from blindcheck.extraction.modalities import choose_modalities  # noqa: E402
from blindcheck.extraction.pipeline import extract_features  # noqa: E402
from blindcheck.features import get_extractor  # noqa: E402
from blindcheck.features.music import MusicExtractor, loudness_range, short_term_loudness  # noqa: E402
from blindcheck.inputs.audio import DecodedAudio, load_clip  # noqa: E402
from blindcheck.inputs.manifest import load_manifest  # noqa: E402
from tests.conftest import MUSIC, clip_of, music_renders  # noqa: E402

SR = 16_000


def _mono_clip(y: np.ndarray, name: str = "x"):
    y = np.asarray(y, dtype=np.float32)
    audio = DecodedAudio(samples=y, sr=SR, channels=1, format="WAV", subtype="PCM_16", bit_depth=16.0, lossy=False,
                         decoder="soundfile")
    return load_clip(name, audio, SR)


@pytest.fixture(scope="module")
def music_pool(tmp_path_factory):
    """The 64 mono renders' music and spectral features, extracted once into a cache the checks below reuse."""
    d = tmp_path_factory.mktemp("music")
    m = music_renders()
    m.assign(path=m["abspath"], label=(m["repertoire"] == "bach").astype(int))[["id", "path", "label"]].to_csv(
        d / "all.csv", index=False)
    res = extract_features(load_manifest(d / "all.csv"), d / "cache", workers=2, modalities=["music", "spectral"])
    assert len(res.features) == 64 and res.errors.empty
    return m, res, d


def test_the_committed_set_is_what_its_readme_says():
    m = pd.read_csv(MUSIC / "manifest.csv")
    mono = m[m["channels"] == 1]
    assert mono.groupby(["repertoire", "soundfont"]).size().to_dict() == {
        ("bach", "fluidr3"): 16, ("bach", "timgm6mb"): 16, ("ryans", "fluidr3"): 16, ("ryans", "timgm6mb"): 16}
    assert mono["piece"].is_unique and (m["channels"] == 2).sum() == 4
    for row in m.itertuples():
        info = sf.info(MUSIC / row.path)
        assert (info.samplerate, info.channels) == (row.samplerate, row.channels)
        assert abs(info.duration - row.duration) < 1e-3


def test_values_are_librosa_on_the_same_clip():
    """Chroma, tonnetz, tempo, onset rate, flux and the HPSS ratio against librosa's own functions called on the
    signal (each computing its own STFT), so a wrong definition or parameter fails."""
    ext = MusicExtractor()
    for piece in ("bach_00_fluidr3", "ryans_01_timgm6mb"):
        clip = clip_of(str(MUSIC / "mono" / f"{piece}.flac"))
        y = clip.y
        f = ext.extract(clip)
        assert clip.notes == []
        chroma = librosa.feature.chroma_stft(y=y, sr=SR)
        assert (chroma.max(axis=0) > 0).all()
        np.testing.assert_allclose([f[f"chroma_mean_{k:02d}"] for k in range(12)], chroma.mean(axis=1), rtol=1e-5)
        assert f["chroma_std"] == pytest.approx(chroma.std(axis=1).mean(), rel=1e-5)
        tz = librosa.feature.tonnetz(chroma=chroma, sr=SR)
        np.testing.assert_allclose([f[f"tonnetz_{d}_mean"] for d in range(6)], tz.mean(axis=1), rtol=1e-4, atol=1e-7)
        tempo, beats = librosa.beat.beat_track(y=y, sr=SR)
        assert f["tempo_bpm"] == pytest.approx(float(np.atleast_1d(tempo)[0]), rel=1e-9)
        ibi = np.diff(beats)
        assert f["beat_interval_cv"] == pytest.approx(ibi.std() / ibi.mean(), rel=1e-9)
        onsets = librosa.onset.onset_detect(y=y, sr=SR)
        assert f["onset_rate_hz"] == pytest.approx(len(onsets) / (len(y) / SR), rel=1e-12)
        assert f["flux_mean"] == pytest.approx(librosa.onset.onset_strength(y=y, sr=SR).mean(), rel=1e-5)
        harm, perc = librosa.decompose.hpss(np.abs(librosa.stft(y)))
        assert f["hp_ratio_db"] == pytest.approx(10 * np.log10((harm**2).sum() / (perc**2).sum()), abs=1e-4)
        # the figures themselves are those of real music: a pulse between 40 and 240 BPM, several onsets a second
        assert 40 < f["tempo_bpm"] < 240 and 1 < f["onset_rate_hz"] < 12 and f["key_clarity"] > 0.5


def test_features_are_level_free():
    ext = MusicExtractor()
    clip = clip_of(str(MUSIC / "mono" / "ryans_02_fluidr3.flac"))
    a = ext.extract(clip)
    b = ext.extract(_mono_clip(clip.y * 10 ** (-10 / 20)))
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-4), k


def test_key_clarity_is_higher_on_chorales_than_on_speech(music_pool, fsdd_meta):
    """Bach's four-part chorales against real speech (one speaker's first eight digits, joined): key clarity
    separates them by a one-sided Mann-Whitney test at P < 0.001 (no tie: its exact null distribution)."""
    from scipy.stats import mannwhitneyu

    m, res, _ = music_pool
    feats = res.features.set_index("id").loc[m["id"]]
    chorales = feats["music.key_clarity"].to_numpy()[(m["repertoire"] == "bach").to_numpy()]
    ext, speech = MusicExtractor(), []
    for _, group in fsdd_meta.groupby("speaker"):
        y = np.concatenate([clip_of(p).y for p in group.sort_values("id")["abspath"].iloc[:8]])
        speech.append(ext.extract(_mono_clip(y))["key_clarity"])
    assert len(chorales) == 32 and len(speech) == 6 and np.isfinite(speech).all()
    assert mannwhitneyu(chorales, speech, alternative="greater").pvalue < 1e-3
    assert np.median(chorales) > 0.7 > max(speech) - 0.05


def _reference_lra(y: np.ndarray, sr: int) -> float:
    """EBU Tech 3342 by hand: pyloudnorm's K-weighting stages applied one after another (its own filters, not
    blindcheck's merged sections), 3 s windows every 0.1 s, -70 LUFS and -20 LU gates, P95 - P10."""
    import pyloudnorm
    from scipy.signal import lfilter

    x = np.asarray(y, dtype=np.float64)
    for f in pyloudnorm.Meter(sr)._filters.values():
        x = f.passband_gain * lfilter(f.b, f.a, x)
    win, step = 3 * sr, sr // 10
    st = np.array([-0.691 + 10 * np.log10(np.mean(x[i:i + win] ** 2)) for i in range(0, len(x) - win + 1, step)])
    st = st[st > -70]
    rel = 10 * np.log10(np.mean(10 ** (st / 10))) - 20
    st = st[st > rel]
    return float(np.percentile(st, 95) - np.percentile(st, 10))


@pytest.mark.parametrize("step_db", [12.0, 30.0])
def test_loudness_range_of_a_level_step(step_db):
    """A real chorale excerpt followed by itself ``step_db`` quieter: the hand computation's LRA to 1e-9 LU; a
    12 dB step reads about 12 LU (the excerpt's own short-term spread on top); at 30 dB the quiet half sits
    under the relative gate and only the windows that straddle the step count."""
    y = clip_of(str(MUSIC / "mono" / "bach_02_fluidr3.flac")).y.astype(np.float64)
    x = np.concatenate([y, y * 10 ** (-step_db / 20)])
    lra = loudness_range(short_term_loudness(x, SR))
    assert lra == pytest.approx(_reference_lra(x, SR), abs=1e-9)
    flat = loudness_range(short_term_loudness(np.concatenate([y, y]), SR))
    assert flat < 2.0
    if step_db == 12.0:
        assert 11.0 < lra < 12.0 + flat + 0.5
    else:
        assert lra < step_db - 5
    clip = _mono_clip(x)
    assert MusicExtractor().extract(clip)["lra_lu"] == pytest.approx(lra, abs=0.05)  # float32 samples


def test_short_silent_and_speech_clips_give_nan_with_notes(fsdd_meta):
    ext = MusicExtractor()
    dur = fsdd_meta.set_index("abspath")["duration"]
    short = clip_of(dur[dur < 0.45].index[0])
    f = ext.extract(short)
    assert all(math.isnan(v) for v in f.values()) and "shorter than 0.5 s" in short.notes[0]
    silent = _mono_clip(np.zeros(3 * SR))
    assert all(math.isnan(v) for v in ext.extract(silent).values()) and "silence" in silent.notes[0]
    digit = clip_of(dur[(dur > 0.8) & (dur < 1.8)].index[0])
    f = ext.extract(digit)
    assert math.isfinite(f["chroma_entropy"]) and math.isfinite(f["onset_rate_hz"])
    assert math.isnan(f["tempo_bpm"]) and math.isnan(f["lra_lu"])
    assert any("tempo" in n for n in digit.notes) and any("loudness range" in n for n in digit.notes)


def test_music_is_chosen_only_when_named_and_refused_without_librosa(monkeypatch):
    table = pd.DataFrame({"id": ["a"], "path": ["a.wav"], "label": [1]})
    assert "music" not in choose_modalities(table, None).modalities
    assert choose_modalities(table, "music,spectral").modalities == ["music", "spectral"]
    assert get_extractor("music").feature_names()[0] == "chroma_mean_00"
    monkeypatch.setitem(sys.modules, "librosa", None)  # what an environment without the package looks like
    with pytest.raises(MissingDependencyError, match=r"blindcheck\[music\]"):
        choose_modalities(table, ["music", "spectral"])
    with pytest.raises(MissingDependencyError, match="librosa is not installed"):
        get_extractor("music")


def _check_split(m: pd.DataFrame, members: pd.Series, d, name: str):
    """``check`` of the renders ``m`` with ``members`` (a boolean per row) as members, on the pool's cache."""
    m.assign(path=m["abspath"], label=members.astype(int))[["id", "path", "label"]].to_csv(d / f"{name}.csv",
                                                                                        index=False)
    return check(d / f"{name}.csv", d / f"out_{name}", cache_dir=d / "cache", workers=2, repeats=1,
                 modalities=["music", "spectral"])


def test_soundfont_split_is_confounded(music_pool):
    """Members rendered with FluidR3, non-members with TimGM6mb, both sides the same half-and-half repertoire mix."""
    m, _, d = music_pool
    res = _check_split(m, m["soundfont"] == "fluidr3", d, "font")
    v = res.verdict
    assert v.status == "confounded", v.reasons
    assert v.best_auc > 0.9 and v.top_modality in {"music", "spectral"}
    assert res.extraction.stats["computed"] == {"music": 0, "spectral": 0}  # from the pool's cache


def test_repertoire_split_on_one_soundfont_is_confounded_by_music_features(music_pool):
    """16 chorales against 16 fiddle tunes, all rendered with FluidR3 on one piano program."""
    m, _, d = music_pool
    one = m[m["soundfont"] == "fluidr3"]
    res = _check_split(one, one["repertoire"] == "bach", d, "rep")
    v = res.verdict
    assert v.status == "confounded", v.reasons
    top = list(res.separability.top_features.iloc[:5, 0])
    assert any(f.startswith("music.") for f in top), top
    assert any("music." in r for r in v.reasons), v.reasons


def test_a_warmed_worker_pays_librosa_before_the_first_clip():
    """The extraction workers' warm-up (``_warm_worker``, what the pool initializer and the driver before forking
    run) imports librosa and runs its numba paths on music's own signal, so the first real clip costs what the
    second does. Measured here: warm-up 4.4-4.9 s, then 0.2 s a clip; without it the first clip took 4.5-5.5 s
    (about 30 s with an empty numba cache). In a fresh process, as a worker is."""
    import subprocess

    code = ("import sys, time; from blindcheck.extraction import pipeline as P\n"
            f"task = dict(row=0, id='c', path={str(MUSIC / 'mono' / 'bach_00_fluidr3.flac')!r}, start=float('nan'), "
            "end=float('nan'), modalities=['music'])\n"
            "t = time.perf_counter(); P._warm_worker(['music']); tw = time.perf_counter() - t\n"
            "assert 'librosa' in sys.modules and 'music' in P._WORKER['extractors']\n"
            "t = time.perf_counter(); r = P._process_clip(task, 16000, False); t1 = time.perf_counter() - t\n"
            "assert not r['errors'], r['errors']\n"
            "t = time.perf_counter(); P._process_clip(task, 16000, False); t2 = time.perf_counter() - t\n"
            "print(tw, t1, t2)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[2]))
    tw, t1, t2 = map(float, out.stdout.split())
    # cold, the first clip costs about 20x the second; warmed, the same (ratios: other load scales both)
    assert t1 < 0.25 * tw and t1 < 3 * t2 + 0.1, (tw, t1, t2)


def test_random_splits_of_the_renders_are_not_confounded_beyond_alpha(music_pool):
    """Issue 29: random member/non-member halves of the 64 renders (nothing to find, but four tight clusters: two
    repertoires on two soundfonts, which a random half never splits evenly) are confounded in at most the binomial
    allowance of alpha (the 99.9% quantile of Binomial(splits, alpha)). 64 clips are too few for the equivalence
    claim, so clean is not asked for here; benchmarks/calibration_music.py measures clean and the codec subset on a
    set of 200. Measured on 80 splits (repeats=1): 3 confounded, 77 inconclusive, none clean."""
    from scipy.stats import binom

    from blindcheck.analysis.separability import run_separability
    from blindcheck.analysis.verdict import decide
    from blindcheck.settings import Settings

    m, res, _ = music_pool
    table = res.features.set_index("id").loc[m["id"]].reset_index()
    settings = Settings(repeats=1)
    rng = np.random.default_rng(29)
    splits, statuses = 8, []
    for _ in range(splits):
        y = np.zeros(len(table), int)
        y[rng.permutation(len(table))[: len(table) // 2]] = 1
        v = decide(run_separability(table, y, settings), settings)
        statuses.append(v.status)
    assert statuses.count("confounded") <= binom.ppf(0.999, splits, settings.alpha), statuses
