"""Decoding real files of every kind a speech dataset ships, and every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from blindcheck.inputs.audio import AudioError, content_hash, decode, read_bytes
from tests.conftest import SR, tone, write


def test_fsdd_wav(fsdd_meta):
    row = fsdd_meta.iloc[0]
    a = decode(read_bytes(row["abspath"]))
    assert (a.sr, a.channels, a.format, a.subtype, a.bit_depth, a.lossy) == (8000, 1, "WAV", "PCM_16", 16.0, False)
    assert a.duration_s == pytest.approx(row["duration"], abs=1e-3)
    ref, _ = sf.read(row["abspath"], dtype="float32")
    np.testing.assert_array_equal(a.samples, ref)


def test_stereo_24bit_is_mixed_to_mono(tmp_path):
    left, right = tone(440, 0.5, amp=0.4), tone(440, 0.5, amp=0.2)
    p = write(tmp_path / "s.wav", np.stack([left, right], axis=1), subtype="PCM_24")
    a = decode(read_bytes(p))
    assert (a.channels, a.bit_depth, a.subtype) == (2, 24.0, "PCM_24")
    np.testing.assert_allclose(a.samples, (left + right) / 2, atol=1e-5)


@pytest.mark.parametrize("fmt,subtype,lossy", [("FLAC", "PCM_16", False), ("OGG", "VORBIS", True),
                                                ("MP3", "MPEG_LAYER_III", True)])
def test_compressed_formats(tmp_path, fmt, subtype, lossy):
    y = tone(440, 1.0, amp=0.5)
    p = write(tmp_path / f"x.{fmt.lower()}", y, format=fmt, subtype=subtype)
    a = decode(read_bytes(p))
    assert a.format == fmt and a.lossy == lossy and a.sr == SR
    assert abs(a.duration_s - 1.0) < 0.08  # MP3 adds encoder delay/padding
    # The decoded waveform is still the tone: its level is right.
    assert np.sqrt(np.mean(a.samples**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    if lossy:
        assert np.isnan(a.bit_depth)


def test_ffmpeg_path_for_aac(tmp_path):
    av = pytest.importorskip("av")
    p = tmp_path / "x.m4a"
    y = tone(440, 1.0, amp=0.5)
    with av.open(str(p), "w") as out:
        stream = out.add_stream("aac", rate=SR)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
        frame.sample_rate = SR
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    a = decode(read_bytes(p))
    assert a.decoder == "ffmpeg" and a.subtype == "aac" and a.lossy and a.sr == SR
    assert abs(a.duration_s - 1.0) < 0.1
    assert np.sqrt(np.mean(a.samples**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)


def test_segment_selection(tmp_path):
    y = np.concatenate([tone(300, 1.0), np.zeros(SR, np.float32), tone(300, 1.0)])
    p = write(tmp_path / "long.wav", y)
    data = read_bytes(p)
    a = decode(data, start=1.0, end=2.0)
    assert a.duration_s == pytest.approx(1.0, abs=1e-3)
    assert np.abs(a.samples).max() < 1e-3  # the silent middle
    assert content_hash(data, 1.0, 2.0) != content_hash(data, 0.0, 1.0) != content_hash(data)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        decode(read_bytes(p))


def test_non_audio_bytes(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_bytes(b"this is a text file, not audio\n" * 50)
    with pytest.raises(AudioError, match="not a readable audio file"):
        decode(read_bytes(p))


def test_zero_length_audio(tmp_path):
    p = write(tmp_path / "zero.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="zero samples"):
        decode(read_bytes(p))


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III")])
def test_truncated_files_are_decode_errors_unless_allowed(tmp_path, fsdd_meta, fmt, subtype):
    """A file cut short (a partial download) is not analysed as if it were whole: what the container declares
    (RIFF data size, FLAC STREAMINFO, the MP3's frame count) is compared with what decodes (issue 15)."""
    y, sr = sf.read(fsdd_meta["abspath"].iloc[0], dtype="float32")
    y = np.tile(y, 12)  # ~4-5 s of real speech
    p = tmp_path / f"full.{fmt.lower()}"
    sf.write(p, y, sr, format=fmt, subtype=subtype)
    data = read_bytes(str(p))
    whole = decode(data)
    assert whole.truncated is None and not whole.notes
    assert abs(whole.duration_s - len(y) / sr) < 0.1
    cut = data[: len(data) // 2]
    declared = f"{len(y) / sr:.1f} s"
    with pytest.raises(AudioError, match=rf"truncated: the header declares {declared}, the file holds"):
        decode(cut)
    a = decode(cut, allow_truncated=True)
    assert a.duration_s < 0.5 * whole.duration_s
    assert a.notes and a.notes[0].startswith("truncated") and declared in a.notes[0]


def test_truncated_wav_of_a_few_frames_names_both_durations(tmp_path):
    p = write(tmp_path / "full.wav", tone(440, 1910 / SR), subtype="PCM_16")
    data = read_bytes(p)
    with pytest.raises(AudioError, match=r"truncated: the header declares 119 ms, the file holds 0 ms"):
        decode(data[: 44 + 2 * 8])


def test_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError, match="cannot read file"):
        read_bytes(str(tmp_path / "nope.wav"))
