"""Long files in the voice and ASR stages, on real speech through the real models: a file longer than the policy's
threshold reaches the speaker encoder and Whisper only as its windows (the seconds each model was fed are counted
by the workers of a real run), its results are cached under the policy (the same policy reuses them, another one
recomputes only the long file), and ``long_file_s=None`` analyses it whole."""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from blindcheck.extraction.pipeline import extract_features
from blindcheck.inputs.audio import WindowPolicy
from blindcheck.inputs.manifest import load_manifest

SR = 8000
DATA = Path(__file__).parents[1] / "data" / "fsdd"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory, fsdd_meta):
    """About a minute of speech (the first 80 bundled clips, in the metadata's order: digits 0 to 2, six speakers,
    0.3 s apart; 8 kHz 16-bit FLAC), each default window cut out as a file of its own, two short bundled clips of
    other digits, and which digits each window holds."""
    d = tmp_path_factory.mktemp("longspeech")
    gap = np.zeros(int(0.3 * SR), np.float32)
    xs, spans, pos = [], [], 0
    for p, digit in zip(fsdd_meta["abspath"][:80], fsdd_meta["digit"][:80], strict=True):
        x = sf.read(p, dtype="float32")[0]
        xs += [x, gap]
        spans.append((pos, pos + len(x), int(digit)))
        pos += len(x) + len(gap)
    x = np.concatenate(xs)
    assert 45 < len(x) / SR < 70
    path = d / "long.flac"
    sf.write(path, x, SR, subtype="PCM_16")
    wins = WindowPolicy().windows(len(x), SR)
    cut, held = [], []
    for k, (lo, hi) in enumerate(wins):
        sf.write(d / f"w{k}.flac", x[lo:hi], SR, subtype="PCM_16")
        cut.append(str(d / f"w{k}.flac"))
        held.append({digit for a, b, digit in spans if a < hi and b > lo})
    short = [str(p) for p in fsdd_meta.loc[fsdd_meta["digit"].isin([7, 8]), "abspath"].iloc[[0, 25]]]
    return {"path": str(path), "seconds": len(x) / SR, "windows": cut, "digits": held, "short": short, "dir": d}


def _manifest(folder: Path, name: str, paths: dict[str, str], labels: list[int]) -> object:
    m = folder / f"{name}.csv"
    pd.DataFrame({"id": list(paths), "path": list(paths.values()), "label": labels}).to_csv(m, index=False)
    return load_manifest(m)


def _seconds_16k(path: str) -> float:
    """The seconds a clip holds at the analysis rate (what a model is fed of it whole)."""
    info = sf.info(path)
    return math.ceil(info.frames * 16_000 / info.samplerate) / 16_000


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="voice extra not installed")
def test_a_long_file_reaches_the_speaker_encoder_as_its_windows(tmp_path, long_speech):
    from blindcheck.features.voice import voice_unavailable

    if voice_unavailable():
        pytest.skip(voice_unavailable())
    ls = long_speech
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.flac"  # a long file without speech: the content gate reads its windows
    sf.write(noise, (0.02 * rng.standard_normal(40 * SR)).astype(np.float32), SR, subtype="PCM_16")
    paths = {"long": ls["path"], **{f"w{k}": p for k, p in enumerate(ls["windows"])}, "noise": str(noise)}
    m = _manifest(tmp_path, "m", paths, [1, 0, 1, 0, 1])
    cache = tmp_path / "cache"
    res = extract_features(m, cache, modalities=["voice"], workers=1)
    assert res.errors.empty, res.errors
    v = res.stats["voice"]
    # The encoder's worker was fed 3 x 5 s of the long file, and the three 5 s window files whole: nothing else.
    assert v["windowed"] == 1 and v["embedded"] == 4
    assert v["audio_seconds"] == pytest.approx(15.0 + sum(_seconds_16k(p) for p in ls["windows"]), abs=1e-3)
    # the noise file (windowed too) has no speech in its windows: the gate keeps it from the encoder
    assert res.stats["content"]["voice_skipped"] == 1
    emb = res.features.set_index("id").filter(like="voice.")
    assert emb.loc["noise"].isna().all()
    # The long file's embedding is the normed mean of its windows' (each embedded exactly as the cut-out file).
    per = emb.loc[["w0", "w1", "w2"]].to_numpy(float)
    assert np.isfinite(per).all()
    want = per.mean(axis=0) / np.linalg.norm(per.mean(axis=0))
    np.testing.assert_allclose(emb.loc["long"].to_numpy(float), want, atol=1e-5)

    again = extract_features(m, cache, modalities=["voice"], workers=1)
    assert again.stats["voice"]["embedded"] == 0 and again.stats["voice"]["audio_seconds"] == 0
    pd.testing.assert_frame_equal(again.features, res.features)

    # Another policy: the long file is embedded again (2 x 8 s of it); the short files' entries do not depend on the
    # policy and are reused.
    other = extract_features(m, cache, modalities=["voice"], workers=1, max_windows=2, window_s=8.0)
    assert other.stats["voice"]["embedded"] == 1
    assert other.stats["voice"]["audio_seconds"] == pytest.approx(16.0, abs=1e-3)
    emb2 = other.features.set_index("id").filter(like="voice.")
    assert not np.allclose(emb2.loc["long"].to_numpy(float), emb.loc["long"].to_numpy(float), atol=1e-3)
    np.testing.assert_array_equal(emb2.loc[["w0", "w1", "w2"]].to_numpy(), emb.loc[["w0", "w1", "w2"]].to_numpy())

    # No policy: the long file goes whole to the encoder (and the noise file is judged on all of it).
    whole = extract_features(m, cache, modalities=["voice"], workers=1, long_file_s=None)
    w = whole.stats["voice"]
    assert w["windowed"] == 0 and w["embedded"] == 1  # the long file; its windows' files are reused
    assert w["audio_seconds"] == pytest.approx(_seconds_16k(ls["path"]), abs=1e-3)
    emb3 = whole.features.set_index("id").filter(like="voice.")
    assert np.isfinite(emb3.loc["long"]).all()
    assert not np.allclose(emb3.loc["long"].to_numpy(float), emb.loc["long"].to_numpy(float), atol=1e-3)


def _digits(text: str) -> list[int]:
    """The digits a transcript names (as figures or words)."""
    words = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text.lower())
    return [DIGITS.index(w) for w in re.sub(r"[^a-z ]", " ", words).split() if w in DIGITS]


_TEXT_EXTRAS = any(importlib.util.find_spec(m) is None for m in ("faster_whisper", "sentence_transformers"))


@pytest.fixture(scope="module")
def transcribed(tmp_path_factory, long_speech):
    """The long file and two short clips through the text modality (ASR), into a cache of this module's tests."""
    if _TEXT_EXTRAS:
        pytest.skip("text extras not installed")
    from blindcheck.features.text import TextOptions

    d = tmp_path_factory.mktemp("asr")
    ls = long_speech
    paths = {"long": ls["path"], "a": ls["short"][0], "b": ls["short"][1]}
    m = _manifest(d, "m", paths, [1, 0, 0])
    opts = TextOptions(transcripts="asr")
    res = extract_features(m, d / "cache", modalities=["text"], workers=1, text=opts)
    assert res.errors.empty, res.errors
    return {"res": res, "manifest": m, "cache": d / "cache", "options": opts, "paths": paths}


def test_a_long_file_reaches_whisper_as_its_windows(transcribed, long_speech):
    from blindcheck.features.asr import WINDOW_SEP
    from blindcheck.features.text import lexical

    ls, res = long_speech, transcribed["res"]
    asr = res.stats["text"]["asr"]
    # Whisper's workers decoded 3 x 5 s of the long file and the two short clips whole: nothing else.
    assert asr["windowed_clips"] == 1
    assert asr["audio_seconds"] == pytest.approx(15.0 + sum(_seconds_16k(p) for p in ls["short"]), abs=1e-3)
    # The windows are short clips like the others: packing is kept for every clip (no "transcribed alone" note).
    assert not any("transcribed alone" in n for n in res.stats["text"]["notes"])
    tr = res.transcripts.set_index("id")
    assert bool(tr.loc["long", "windowed"]) and not tr.loc[["a", "b"], "windowed"].any()
    assert set(tr["mode"]) <= {"packed", "single"} and asr["packed_windows"] >= 1
    # One part per window, in order, each naming the digits spoken in that window.
    parts = tr.loc["long", "text"].split(WINDOW_SEP)
    assert len(parts) == 3, tr.loc["long", "text"]
    for part, held in zip(parts, ls["digits"], strict=True):
        said = _digits(part)
        assert said and sum(d in held for d in said) >= 0.8 * len(said), (part, held)
    # The text features read the windows' words without the separators.
    feats = res.features.set_index("id")
    want = lexical(tr.loc["long", "text"].replace(WINDOW_SEP, " "), None)
    assert feats.loc["long", "text.n_chars"] == want["n_chars"]
    assert feats.loc["long", "text.punct_share"] == pytest.approx(want["punct_share"], nan_ok=True)
    # The same policy again: every transcript from the cache.
    t = transcribed
    again = extract_features(t["manifest"], t["cache"], modalities=["text"], workers=1, text=t["options"])
    assert again.stats["text"]["transcribed"] == 0
    assert again.transcripts.set_index("id").loc["long", "text"] == tr.loc["long", "text"]


def test_another_policy_transcribes_the_long_file_again(tmp_path, transcribed):
    from blindcheck.features.asr import WINDOW_SEP

    t = transcribed
    cache = tmp_path / "cache"
    shutil.copytree(t["cache"], cache)
    other = extract_features(t["manifest"], cache, modalities=["text"], workers=1, text=t["options"], max_windows=2,
                             window_s=8.0)
    assert other.stats["text"]["transcribed"] == 1  # the long file only; the short clips' entries are reused
    assert other.stats["text"]["asr"]["audio_seconds"] == pytest.approx(16.0, abs=1e-3)
    assert len(other.transcripts.set_index("id").loc["long", "text"].split(WINDOW_SEP)) == 2


def test_without_a_policy_whisper_gets_the_long_file_whole(tmp_path, transcribed):
    from blindcheck.features.asr import WINDOW_SEP

    t = transcribed
    whole = extract_features(t["manifest"], tmp_path / "cache", modalities=["text"], workers=1, text=t["options"],
                             long_file_s=None)
    w = whole.stats["text"]
    assert w["transcribed"] == 3 and w["asr"]["windowed_clips"] == 0  # a clip too long to pack: every clip alone
    assert any("transcribed alone" in n for n in w["notes"])
    assert w["asr"]["audio_seconds"] == pytest.approx(sum(_seconds_16k(p) for p in t["paths"].values()), abs=1e-3)
    text = whole.transcripts.set_index("id").loc["long", "text"]
    windowed = t["res"].transcripts.set_index("id").loc["long", "text"]
    assert WINDOW_SEP not in text and len(_digits(text)) > len(_digits(windowed))


def test_window_results_are_joined_in_order_with_their_words_weighted():
    """How a long clip's transcript is made of its windows' (pure: no model)."""
    from blindcheck.features.asr import WINDOW_SEP, join_windows, window_tasks

    def part(text, n, logprob, mode="packed", nsp=0.1):
        return {"text": text, "n_words": n, "word_logprob": logprob, "no_speech_prob": nsp,
                "compression_ratio": math.nan, "language": "en", "mode": mode, "window_size": 3, "duration_s": 5.0,
                "error": None}

    got = join_windows([part("one two three", 3, -0.1), part("", 0, math.nan, nsp=0.9), part("four", 1, -0.5)])
    assert got["text"] == f"one two three{WINDOW_SEP}four"  # an empty window adds no separator of its own
    assert got["word_logprob"] == pytest.approx((3 * -0.1 + -0.5) / 4)
    assert got["no_speech_prob"] == 0.9 and got["duration_s"] == 15.0 and got["mode"] == "packed"
    assert join_windows([part("a", 1, -0.1), part("b", 1, -0.1, mode="single")])["mode"] == "single"
    failed = join_windows([part("a", 1, -0.1), {"row": (0, 1), "error": "decode: bad"}])
    assert failed["error"] == "window 2 of 2: decode: bad"
    policy = {"long_s": 30.0, "count": 3, "window_s": 5.0}
    subs = window_tasks([{"row": 7, "key": "h", "path": "x", "policy": policy}, {"row": 8, "key": "g", "path": "y"}])
    assert [t["row"] for t in subs] == [(7, 0), (7, 1), (7, 2), 8]
    assert [t.get("duration_s") for t in subs[:3]] == [5.0] * 3 and len({t["key"] for t in subs}) == 4


def test_a_long_clips_embedding_is_the_normed_mean_of_its_voiced_windows():
    from blindcheck.features.voice import from_windows

    rng = np.random.default_rng(1)
    names = [f"emb_{j:03d}" for j in range(4)]
    vecs = [v / np.linalg.norm(v) for v in rng.standard_normal((2, 4))]
    values = [dict(zip(names, v, strict=True)) for v in vecs] + [dict.fromkeys(names, math.nan)]
    out, notes = from_windows(values, [[], [], ["voice: only 0.05 s of voiced speech; ..., voice features are NaN"]])
    want = (vecs[0] + vecs[1]) / np.linalg.norm(vecs[0] + vecs[1])
    np.testing.assert_allclose([out[k] for k in names], want)
    assert notes == ["voice: 1 of 3 windows hold less than 0.10 s of voiced speech: the embedding is the mean of "
                     "the other 2"]
    none, notes = from_windows([dict.fromkeys(names, math.nan)] * 2, [[], []])
    assert all(math.isnan(v) for v in none.values()) and "none of the 2 windows" in notes[0]


def _m4a(path: Path, x: np.ndarray, sr: int) -> None:
    """``x`` as AAC in an MP4 container (a format only FFmpeg reads here)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or _TEXT_EXTRAS, reason="voice or text extras missing")
def test_truncated_and_ffmpeg_files_reach_voice_and_asr_as_the_acoustic_stage_read_them(tmp_path, long_speech,
                                                                                          fsdd_meta):
    """With allow_truncated a real WAV cut short (a long one, windowed, and a short bundled clip) is read by the
    voice and ASR workers as the acoustic stage read it, with the acoustic stage's one note, not failed there; without
    it the clips are decode errors and no stage sees them. An AAC file (FFmpeg only) has a known duration without
    the recording modality, so packing stays on and it is packed like the WAV clips."""
    from blindcheck.features.text import TextOptions
    from blindcheck.features.voice import voice_unavailable

    if voice_unavailable():
        pytest.skip(voice_unavailable())
    ls = long_speech
    x, sr = sf.read(ls["path"], dtype="float32")
    sf.write(tmp_path / "long.wav", x, sr, subtype="PCM_16")
    data = (tmp_path / "long.wav").read_bytes()
    (tmp_path / "long_cut.wav").write_bytes(data[:44 + 2 * int(0.9 * len(x))])  # the last 10% (in window 3) gone
    clip = fsdd_meta.sort_values("duration").iloc[-1]  # the longest bundled clip, cut to 70% of its bytes
    data = Path(clip["abspath"]).read_bytes()
    (tmp_path / "short_cut.wav").write_bytes(data[:int(0.7 * len(data))])
    y, sr8 = sf.read(ls["short"][0], dtype="float32")
    _m4a(tmp_path / "aac.m4a", y, sr8)
    paths = {"long_cut": str(tmp_path / "long_cut.wav"), "short_cut": str(tmp_path / "short_cut.wav"),
             "aac": str(tmp_path / "aac.m4a"), "b": ls["short"][1]}
    m = _manifest(tmp_path, "m", paths, [1, 0, 1, 0])
    cache = tmp_path / "cache"
    opts = TextOptions(transcripts="asr")
    res = extract_features(m, cache, modalities=["voice", "text"], workers=1, text=opts, allow_truncated=True,
                           min_speech_share=0.0)
    assert res.errors.empty, res.errors
    assert set(res.features["id"]) == set(paths)
    emb = res.features.set_index("id").filter(like="voice.")
    assert np.isfinite(emb.to_numpy(float)).all()
    cut = res.notes[res.notes["note"].str.startswith("truncated")]
    assert sorted(cut["id"]) == ["long_cut", "short_cut"]  # one note each: the acoustic stage's
    assert not res.notes.loc[res.notes["modality"].isin(["voice", "text"]), "note"].str.contains("truncat").any()
    tr = res.transcripts.set_index("id")
    assert (tr["source"] == "asr").all()
    assert bool(tr.loc["long_cut", "windowed"]) and res.stats["text"]["asr"]["windowed_clips"] == 1
    from blindcheck.features.asr import WINDOW_SEP

    parts = tr.loc["long_cut", "text"].split(WINDOW_SEP)
    assert len(parts) == 3 and all(_digits(p) for p in parts), tr.loc["long_cut", "text"]
    # packing stayed on for every clip: the AAC file's duration was known
    assert not any("cannot be packed" in n for n in res.stats["text"]["notes"]), res.stats["text"]["notes"]
    assert tr.loc["aac", "mode"] == "packed" and _digits(tr.loc["aac", "text"]), tr.loc["aac"]

    strict = extract_features(m, cache, modalities=["voice", "text"], workers=1, text=opts, min_speech_share=0.0)
    errs = strict.errors.set_index("id")
    assert set(errs.index) == {"long_cut", "short_cut"} and (errs["stage"] == "decode").all(), strict.errors
    assert set(strict.features["id"]) == {"aac", "b"}
