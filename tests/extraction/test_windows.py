"""The long-file window policy on real speech: where the windows are, that only they are decoded (both decoders),
that a 5-minute file's features are those of its windows, and that the policy is part of the cache key."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from blindcheck.errors import AudioError, BlindcheckError
from blindcheck.extraction.pipeline import ExtractionConfig, extract_features
from blindcheck.inputs.audio import WindowPolicy, decode, decode_windows, read_bytes
from blindcheck.inputs.manifest import load_manifest

SR = 8000
_BUNDLED = str(sorted((Path(__file__).parents[1] / "data" / "fsdd" / "recordings").glob("*.wav"))[0])
WHOLE = ("duration_s", "sample_rate", "channels", "bit_depth", "lossy", "float_format")


@pytest.fixture(scope="module")
def long_pair(tmp_path_factory, fsdd_meta) -> tuple[str, np.ndarray]:
    """About 5 minutes of speech: every bundled clip once, 0.2 s apart, as a spaced stereo pair (the right channel
    3 samples later at 0.6 of the level), 16-bit FLAC; and its samples as decoded."""
    gap = np.zeros(int(0.2 * SR), np.float32)
    xs = []
    for p in fsdd_meta["abspath"]:
        xs += [sf.read(p, dtype="float32")[0], gap]
    x = np.concatenate(xs)
    pair = np.stack([x, 0.6 * np.concatenate([np.zeros(3, np.float32), x[:-3]])], axis=1)
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, pair, SR, subtype="PCM_16")
    decoded, _ = sf.read(path, dtype="float32", always_2d=True)
    assert len(decoded) / SR > 300
    return str(path), decoded


def test_the_windows_are_evenly_spaced_from_start_to_end():
    pol = WindowPolicy(long_s=30, count=4, window_s=5)
    assert pol.windows(30 * SR, SR) is None  # not longer than long_s: whole
    wins = pol.windows(300 * SR + 1, SR)
    assert [b - a for a, b in wins] == [5 * SR] * 4
    assert wins[0][0] == 0 and wins[-1][1] == 300 * SR + 1
    starts = np.array([a for a, _ in wins])
    assert np.ptp(np.diff(starts)) <= 1  # equal steps, to the rounding of a sample
    assert WindowPolicy(long_s=None).windows(10**9, SR) is None
    for bad in ({"count": 1}, {"window_s": 0.0}, {"long_s": 19.0}):
        with pytest.raises(ValueError):
            WindowPolicy(**{"long_s": 30, "count": 4, "window_s": 5, **bad})
    with pytest.raises(BlindcheckError, match="long-file policy"):
        ExtractionConfig(long_file_s=10, max_windows=4, window_s=5)


def test_only_the_windows_are_decoded(long_pair):
    path, decoded = long_pair
    pol = WindowPolicy()
    pieces = decode_windows(read_bytes(path), policy=pol)
    wins = pol.windows(len(decoded), SR)
    assert len(pieces) == pol.count == len(wins) and sum(len(a.samples) for a in pieces) == pol.count * 5 * SR
    for a, (lo, hi) in zip(pieces, wins, strict=True):
        np.testing.assert_array_equal(a.samples, decoded[lo:hi].mean(axis=1))
        assert a.window == (lo / SR, hi / SR) and a.span_s == len(decoded) / SR
        assert a.channel_sums["frames"] == hi - lo and a.channels == 2
    assert pieces[0].notes[0].startswith(f"windowed: {pol.count} windows of 5 s starting at 0.0, ")
    # a manifest segment is windowed within itself
    seg = decode_windows(read_bytes(path), 100.0, 150.0, policy=pol)
    lo = 100 * SR + pol.windows(50 * SR, SR)[1][0]
    np.testing.assert_array_equal(seg[1].samples, decoded[lo:lo + 5 * SR].mean(axis=1))


def test_ffmpeg_windows_match_its_whole_decode(tmp_path, long_pair):
    av = pytest.importorskip("av")
    _, decoded = long_pair
    p = tmp_path / "long.m4a"
    with av.open(str(p), "w") as out:  # AAC in MP4: FFmpeg's path, timestamps to the sample
        stream = out.add_stream("aac", rate=SR)
        stream.layout = "stereo"
        for i in range(0, len(decoded), 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(decoded[i:i + 1024].T), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = SR, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = read_bytes(p)
    whole = decode(data)
    pieces = decode_windows(data, policy=WindowPolicy())
    assert whole.decoder == pieces[0].decoder == "ffmpeg" and len(pieces) == WindowPolicy().count
    for a in pieces:
        lo = int(round(a.window[0] * SR))
        np.testing.assert_allclose(a.samples, whole.samples[lo:lo + len(a.samples)], atol=1e-6)
        assert len(a.samples) >= 5 * SR - 1024


def test_a_truncated_long_file_is_still_caught(long_pair):
    path, decoded = long_pair
    cut = read_bytes(path)[: len(read_bytes(path)) // 2]
    with pytest.raises(AudioError, match="truncated: the header declares"):
        decode_windows(cut, policy=WindowPolicy())
    pieces = decode_windows(cut, allow_truncated=True, policy=WindowPolicy())
    assert 1 <= len(pieces) < WindowPolicy().count  # the windows past the data are left out, and said so
    assert any(n.startswith("truncated") for n in pieces[0].notes)
    assert any("windows hold no samples" in n for n in pieces[0].notes)


def _extract(tmp_path, name: str, paths: list[str], cache, **kw):
    """Extract ``paths`` (ids c0, c1, ...) beside one bundled clip of the other side (a manifest needs both), which
    is then dropped from the features."""
    m = tmp_path / f"{name}.csv"
    other = _BUNDLED
    pd.DataFrame({"id": [f"c{i}" for i in range(len(paths))] + ["other"], "path": [*paths, other],
                  "label": [1] * len(paths) + [0]}).to_csv(m, index=False)
    res = extract_features(load_manifest(m), cache, workers=1, modalities=["recording", "spectral", "prosodic"], **kw)
    res.features = res.features[res.features["id"] != "other"].reset_index(drop=True)
    res.notes = res.notes[res.notes["id"] != "other"].reset_index(drop=True)
    return res


def test_a_five_minute_file_is_its_windows(tmp_path, long_pair):
    """The long file's features equal the mean of the features of its windows cut out and analysed as files of
    their own (the same samples), except what describes the whole file."""
    path, decoded = long_pair
    wins = WindowPolicy().windows(len(decoded), SR)
    cut = []
    for k, (lo, hi) in enumerate(wins):
        p = tmp_path / f"w{k}.flac"
        sf.write(p, decoded[lo:hi], SR, subtype="PCM_16")
        cut.append(str(p))
    long = _extract(tmp_path, "long", [path], tmp_path / "cache")
    parts = _extract(tmp_path, "parts", cut, tmp_path / "cache", long_file_s=None)
    assert long.stats["windowed"] == 1 and parts.stats["windowed"] == 0
    assert long.stats["window_policy"] == WindowPolicy().key()
    cols = long.feature_columns()
    got = long.features[cols].iloc[0]
    per = parts.features[cols].to_numpy(dtype=float)
    with warnings.catch_warnings():  # a feature NaN in every window (its mean: NaN, as the pipeline's)
        warnings.simplefilter("ignore", RuntimeWarning)
        want = pd.Series(np.nanmean(per, axis=0), index=cols)
    want["recording.leading_silence_s"] = parts.features["recording.leading_silence_s"].iloc[0]
    want["recording.trailing_silence_s"] = parts.features["recording.trailing_silence_s"].iloc[-1]
    want["recording.duration_s"] = len(decoded) / SR
    for c in ("recording.format_flac", "recording.channels", "recording.sample_rate"):
        assert got[c] == want[c]
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), rtol=2e-5, atol=1e-5, equal_nan=True)
    assert got["recording.channel_correlation"] < 0.95 and got["recording.identical_channels"] == 0
    notes = long.notes["note"]
    assert notes.str.startswith(f"windowed: {WindowPolicy().count} windows of 5 s").sum() == 1


def test_the_policy_is_in_the_cache_key(tmp_path, long_pair):
    path, _ = long_pair
    cache = tmp_path / "cache"
    first = _extract(tmp_path, "a", [path], cache)
    again = _extract(tmp_path, "a", [path], cache)
    # (two clips: the long file and the short companion)
    assert again.stats["reused"]["recording"] == 2 and again.stats["computed"]["recording"] == 0
    other = _extract(tmp_path, "a", [path], cache, max_windows=2, window_s=8.0)
    assert other.stats["computed"]["recording"] == 2  # not the first policy's features, for either clip
    assert other.notes["note"].str.startswith("windowed: 2 windows of 8 s").any()
    cols = first.feature_columns("spectral")
    assert not np.allclose(first.features[cols].to_numpy(float), other.features[cols].to_numpy(float),
                           equal_nan=True)
    dirs = {d.name for d in (cache / "features").iterdir()}
    assert len(dirs) == 6  # 3 modalities x 2 policies
    back = _extract(tmp_path, "a", [path], cache)
    assert back.stats["computed"]["recording"] == 0
    pd.testing.assert_frame_equal(back.features, first.features)


def test_the_cli_sets_the_policy(tmp_path, long_pair):
    """`--long-file-s/--max-windows/--window-s` reach the extraction (and `none` analyses files whole)."""
    from blindcheck.cli import main

    path, _ = long_pair
    m = tmp_path / "m.csv"
    pd.DataFrame({"id": ["long", "other"], "path": [path, _BUNDLED], "label": [1, 0]}).to_csv(m, index=False)
    common = [str(m), "--modalities", "recording", "--workers", "1", "--cache-dir", str(tmp_path / "cache")]
    assert main(["extract", *common, "--out", str(tmp_path / "a"), "--max-windows", "2", "--window-s", "8"]) == 0
    notes = pd.read_csv(tmp_path / "a" / "notes.csv")
    assert notes["note"].str.startswith("windowed: 2 windows of 8 s").sum() == 1
    assert main(["extract", *common, "--out", str(tmp_path / "b"), "--long-file-s", "none"]) == 0
    notes = pd.read_csv(tmp_path / "b" / "notes.csv") if (tmp_path / "b" / "notes.csv").exists() else pd.DataFrame(
        {"note": []})
    assert not notes["note"].astype(str).str.startswith("windowed").any()
    with pytest.raises(SystemExit):
        main(["extract", *common, "--out", str(tmp_path / "c"), "--long-file-s", "soon"])
