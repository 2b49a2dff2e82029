"""recording.* channel features on real speech: a spaced microphone pair (right = left delayed and attenuated),
against numpy on the decoded channels; mono, fake stereo and three channels; both decoders; and a stereo-vs-mono
split that `check` calls confounded for its channels."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from blindcheck.features.recording import RecordingExtractor
from blindcheck.inputs.audio import decode, load_clip, read_bytes

CHANNEL = ("channel_correlation", "side_mid_db", "channel_level_diff_db", "identical_channels")
DELAY, GAIN = 3, 0.6  # the right microphone: 3 samples later and 4.4 dB quieter


def _speech(fsdd_meta, n: int = 12) -> tuple[np.ndarray, int]:
    """A few seconds of the bundled speech (8 kHz), clips one after another."""
    xs = [sf.read(p, dtype="float32")[0] for p in fsdd_meta["abspath"].iloc[:n]]
    return np.concatenate(xs), 8000


def _pair(x: np.ndarray) -> np.ndarray:
    right = GAIN * np.concatenate([np.zeros(DELAY, np.float32), x[:-DELAY]])
    return np.stack([x, right], axis=1).astype(np.float32)


def _features(data: bytes) -> tuple[dict, list[str]]:
    clip = load_clip("c", decode(data))
    return RecordingExtractor().extract(clip), clip.notes


def _expected(ch: np.ndarray) -> dict:
    """The definitions, on the decoded channels (frames x channels), in numpy directly."""
    x = ch.astype(np.float64)
    c = x.shape[1]
    corr = np.corrcoef(x.T)
    left, right = x[:, 0], x[:, 1]
    return {"channel_correlation": float(np.mean(corr[np.triu_indices(c, 1)])),
            "side_mid_db": float(10 * np.log10(np.sum((left - right) ** 2) / np.sum((left + right) ** 2))),
            "channel_level_diff_db": float(abs(10 * np.log10(np.mean(left**2) / np.mean(right**2)))),
            "identical_channels": float(np.array_equal(left, right))}


def _check(got: dict, want: dict) -> None:
    for k in CHANNEL:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-9), k


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_spaced_pair_via_soundfile(tmp_path, fsdd_meta, fmt):
    x, sr = _speech(fsdd_meta)
    p = tmp_path / f"pair.{fmt.lower()}"
    sf.write(p, _pair(x), sr, format=fmt, subtype="PCM_16")
    got, _ = _features(read_bytes(p))
    decoded, _ = sf.read(p, dtype="float32", always_2d=True)
    _check(got, _expected(decoded))
    assert got["channels"] == 2 and got["identical_channels"] == 0.0
    # the physics: speech is low-passed enough that a 3-sample lag keeps the channels highly correlated, and the
    # level difference is the gain's 4.4 dB
    assert 0.5 < got["channel_correlation"] < 1.0
    assert got["channel_level_diff_db"] == pytest.approx(-20 * np.log10(GAIN), abs=0.05)


def _write_av(path, x: np.ndarray, sr: int, fmt: str, codec: str) -> None:
    """Encode frames x channels float audio with FFmpeg (the av wheel), 1024-sample frames."""
    av = pytest.importorskip("av")
    layout = "stereo" if x.shape[1] == 2 else "mono"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = layout
        for i in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[i:i + 1024].T), format="fltp", layout=layout)
            frame.sample_rate, frame.pts = sr, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _av_channels(data: bytes) -> np.ndarray:
    """The decoded channels, read with PyAV directly (frames x channels)."""
    import av

    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray() for f in c.decode(c.streams.audio[0])]
    return np.concatenate(frames, axis=1).T


@pytest.mark.parametrize("fmt,codec,rate", [("mp4", "aac", 8000), ("webm", "libopus", 48000)])
def test_spaced_pair_via_ffmpeg(tmp_path, fsdd_meta, fmt, codec, rate):
    import soxr

    x, sr = _speech(fsdd_meta)
    pair = soxr.resample(_pair(x), sr, rate).astype(np.float32)
    p = tmp_path / f"pair.{fmt}"
    _write_av(p, pair, rate, fmt, codec)
    data = read_bytes(p)
    assert decode(data).decoder == "ffmpeg"
    got, _ = _features(data)
    _check(got, _expected(_av_channels(data)))
    assert got["channels"] == 2 and got["identical_channels"] == 0.0 and got["channel_correlation"] > 0.5


def test_mono_and_fake_stereo_have_the_defined_values(tmp_path, fsdd_meta):
    x, sr = _speech(fsdd_meta)
    mono = write_wav(tmp_path / "mono.wav", x, sr)
    fake = write_wav(tmp_path / "fake.wav", np.stack([x, x], axis=1), sr)
    got_mono, _ = _features(read_bytes(mono))
    got_fake, _ = _features(read_bytes(fake))
    defined = {"channel_correlation": 1.0, "side_mid_db": -120.0, "channel_level_diff_db": 0.0,
               "identical_channels": 1.0}
    for k, v in defined.items():
        assert got_mono[k] == v and got_fake[k] == pytest.approx(v, abs=1e-9), k
    assert (got_mono["channels"], got_fake["channels"]) == (1.0, 2.0)
    # the mono mix is the same signal: the other features agree
    assert got_fake["rms_dbfs"] == pytest.approx(got_mono["rms_dbfs"], abs=1e-6)


def test_three_channels_and_a_silent_one(tmp_path, fsdd_meta):
    x, sr = _speech(fsdd_meta)
    three = np.concatenate([_pair(x), 0.3 * np.roll(x, 7)[:, None]], axis=1)
    p = write_wav(tmp_path / "three.wav", three, sr)
    got, _ = _features(read_bytes(p))
    decoded, _ = sf.read(p, dtype="float32", always_2d=True)
    _check(got, _expected(decoded))  # correlation: the mean of the 3 pairs; side/mid and levels: channels 0 and 1
    silent = write_wav(tmp_path / "silent.wav", np.stack([x, np.zeros_like(x)], axis=1), sr)
    got, notes = _features(read_bytes(silent))
    assert np.isnan(got["channel_correlation"]) and any("does not vary" in n for n in notes)
    assert got["side_mid_db"] == pytest.approx(0.0, abs=1e-9)  # L-R and L+R are both L
    assert got["channel_level_diff_db"] > 60  # against the floor


def write_wav(path, x: np.ndarray, sr: int):
    sf.write(path, x, sr, subtype="PCM_16")
    return path


@pytest.mark.parametrize("nonmembers", ["mono", "fake_stereo"])
def test_stereo_members_against_mono_nonmembers_is_confounded_by_channels(tmp_path, fsdd_meta, nonmembers):
    """Members: the spaced pair recorded from each clip; non-members: the mono mix of the same pair, as a mono file
    or as two identical channels, so that the mono signal every other feature sees is the same on both sides (to
    16-bit rounding) and only the channels differ. With fake stereo the channel count is 2 on both sides: only the
    channel image tells them apart."""
    from blindcheck import check

    base = fsdd_meta[fsdd_meta["take"] < 2].reset_index(drop=True)  # 120 clips
    labels = np.array([0, 1] * 60)
    (tmp_path / "audio").mkdir()
    paths = []
    for row, lab in zip(base.itertuples(), labels, strict=True):
        x, sr = sf.read(row.abspath, dtype="float32")
        pair = _pair(x)
        p = tmp_path / "audio" / f"{row.id}.wav"
        mix = pair.mean(axis=1)
        other = mix if nonmembers == "mono" else np.stack([mix, mix], axis=1)
        sf.write(p, pair if lab == 1 else other, sr, subtype="PCM_16")
        paths.append(str(p))
    pd.DataFrame({"id": base["id"], "path": paths, "label": labels}).to_csv(tmp_path / "m.csv", index=False)
    res = check(tmp_path / "m.csv", tmp_path / "out", workers=2, repeats=1, permutations=99,
                modalities=["recording"])
    v = res.verdict
    assert v.status == "confounded", v.reasons
    top = res.separability.top_features
    lead = top["feature"].iloc[0].split(".", 1)[1]
    assert lead in ((*CHANNEL, "channels") if nonmembers == "mono" else CHANNEL), top[["feature", "share"]].head()
    assert abs(top["auc"].iloc[0] - 0.5) > 0.45  # the leading feature alone separates the sides
    assert v.top_modality == "recording"
