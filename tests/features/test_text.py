"""The text modality with the real bundled models: Whisper tiny.en (CTranslate2) and all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util  # noqa: E402
import math
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

# find_spec, not importorskip: importing sentence-transformers would bring torch into this process, and torch's
# OpenMP runtime next to xgboost's slows every later boosting test ~100x.
if any(importlib.util.find_spec(m) is None for m in ("sentence_transformers", "faster_whisper", "jiwer")):
    pytest.skip("text extras not installed (pip install -e '.[asr,text]' jiwer)", allow_module_level=True)
import jiwer  # noqa: E402

from blindcheck.errors import BlindcheckError  # noqa: E402
from blindcheck.extraction.cache import Store  # noqa: E402
from blindcheck.extraction.pipeline import extract_features  # noqa: E402
from blindcheck.features.text import (
    LEXICAL,
    ASRConfig,
    TextOptions,
    default_embedding_model,
    embed,
    lexical,
    text_unavailable,
    transcribe,
)
from blindcheck.inputs.audio import content_hash  # noqa: E402
from blindcheck.inputs.manifest import load_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HARVARD = [s for s in (ROOT / "tests" / "data" / "harvard" / "sentences.txt").read_text().splitlines() if s]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def normalise(text: str) -> str:
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text.lower())
    return " ".join(re.sub(r"[^a-z' ]", " ", text).split())


def _tasks(paths, durations=None):
    """ASR tasks keyed by a hash of each file's bytes, as the pipeline keys them (the content hash): packing orders
    clips by their key, so a path key would give each checkout and each tmp_path its own neighbours and its own
    transcripts (measured on 40 FSDD clips: 2-3 windows and WER 0-0.05 over five orders, 8 windows for one)."""
    durations = [math.nan] * len(paths) if durations is None else list(durations)
    return [{"row": i, "path": str(p), "start": math.nan, "end": math.nan, "duration_s": d,
             "key": content_hash(Path(p).read_bytes())}
            for i, (p, d) in enumerate(zip(paths, durations, strict=True))]


def test_lexical_statistics():
    f = lexical("The cat sat on the mat, 42 times!", {"the", "cat", "sat", "on", "mat", "times"})
    assert f["n_words"] == 8
    assert f["type_token_ratio"] == pytest.approx(7 / 8)
    assert f["digit_share"] == pytest.approx(2 / 26)
    assert f["punct_share"] == pytest.approx(2 / 26)
    assert f["oov_share"] == pytest.approx(1 / 8)  # "42"
    assert 0.5 < f["compression_ratio"] < 1.5
    assert f["empty"] == 0
    e = lexical("", None)
    assert e["empty"] == 1 and e["n_words"] == 0
    assert math.isnan(e["compression_ratio"])
    # The text modality depends on the transcript alone: no rate, no ASR confidence (issue 15).
    assert set(f) == set(LEXICAL) and not {"words_per_second", "asr_word_logprob"} & set(f)


def test_embeddings_have_semantic_structure():
    # In a spawned process, as the pipeline does: torch never enters this (xgboost-running) process.
    v = embed(["The weather is lovely today.", "It is a beautiful sunny day.",
               "The invoice must be paid by Friday."], default_embedding_model())
    assert v.shape == (3, 384) and "torch" not in sys.modules
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def _wer(truth, out):
    return jiwer.wer(list(truth), [normalise(r["text"]) or "<empty>" for r in out])


def test_packed_asr_on_real_speech_is_as_accurate_as_one_clip_per_call(fsdd_meta):
    """tiny.en on 8 kHz isolated digits, 40 clips packed into shared windows, and the first 20 of them one clip per
    call (the comparison is on those 20; one call per clip costs four times what packing does)."""
    sel = fsdd_meta.sample(40, random_state=3)
    tasks = _tasks(sel["abspath"], sel["duration"])
    stats: dict = {}
    packed = sorted(transcribe(tasks, ASRConfig(), workers=2, stats=stats), key=lambda r: r["row"])
    k = 20
    single = sorted(transcribe(tasks[:k], ASRConfig(pack=False), workers=2), key=lambda r: r["row"])
    assert len(single) == k and all(r["error"] is None for r in packed + single)
    # 40 clips in 2-3 windows; an order whose window is left doubtful (measured once in five orders: "14 of 29
    # clips got no words") costs a second round and a few clips alone, 8 windows in all, still 5x fewer calls.
    assert stats["packed_windows"] >= 1 and stats["windows"] <= len(tasks) // 4
    assert sum(r["mode"] == "packed" for r in packed) >= 32 and all(r["mode"] == "single" for r in single)
    wer_packed, wer_single = _wer(sel["text"], packed), _wer(sel["text"].iloc[:k], single)
    wer_packed_k = _wer(sel["text"].iloc[:k], packed[:k])
    # Measured: packed 0.0-0.10 (a list of digits gives Whisper context), single 0.35-0.45 (isolated words; 0.40 on
    # these 20, packed 0.0 on them).
    assert wer_packed <= 0.25 and wer_packed_k <= wer_single + 0.05, (wer_packed, wer_packed_k, wer_single)
    assert all(r["word_logprob"] <= 0 and r["language"] == "en" for r in packed if r["text"])
    assert all(r["window_size"] > 1 for r in packed if r["mode"] == "packed")


def test_transcripts_do_not_depend_on_the_blas_thread_environment(fsdd_meta, monkeypatch):
    """The same clips give the same transcripts whether the workers' environment asks OpenBLAS for one thread or
    leaves it free. Before the ASR worker pinned numpy's BLAS to one thread, the log-mel input's rounding followed
    OpenBLAS's thread count and greedy decoding turned it into other words: of 60 FSDD clips, these three read
    'One.' / '1.', 'one.' / 'One.' and 'A.' / '' (and 4 of 10 espeak sentences changed words)."""
    sel = fsdd_meta.sample(60, random_state=5).iloc[[28, 43, 53, 0]]
    tasks = _tasks(sel["abspath"], sel["duration"])
    runs = []
    for threads in (None, "1"):
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the spawned workers inherit
            if threads is None:
                monkeypatch.delenv(var, raising=False)
            else:
                monkeypatch.setenv(var, threads)
        out = sorted(transcribe(tasks, ASRConfig(pack=False), workers=2), key=lambda r: r["row"])
        assert all(r["error"] is None for r in out)
        runs.append(out)
    assert [r["text"] for r in runs[0]] == [r["text"] for r in runs[1]]
    np.testing.assert_array_equal([r["word_logprob"] for r in runs[0]], [r["word_logprob"] for r in runs[1]])


def _speak(sentences, folder, rate=150):
    paths = []
    for i, s in enumerate(sentences):
        p = folder / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-s", str(rate), "-w", str(p), s], check=True, capture_output=True)
        paths.append(p)
    return paths


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (.ci/run installs it)")
def test_packed_asr_keeps_sentence_boundaries(tmp_path):
    """Ten Harvard sentences (espeak-ng, 2-3 s each) share windows; each clip must get its own words."""
    sentences = HARVARD[:10]
    paths = _speak(sentences, tmp_path)
    tasks = _tasks(paths, [sf.info(p).duration for p in paths])
    packed = sorted(transcribe(tasks, ASRConfig(), workers=2), key=lambda r: r["row"])
    single = sorted(transcribe(tasks, ASRConfig(pack=False), workers=2), key=lambda r: r["row"])
    assert sum(r["mode"] == "packed" for r in packed) >= 8
    hyp = [normalise(r["text"]) for r in packed]
    # espeak's voice is far from natural speech: measured WER 0.28-0.45 packed (over six packing orders) and 0.53
    # single, with numpy's BLAS on one thread in the worker (see
    # test_transcripts_do_not_depend_on_the_blas_thread_environment; 0.35-0.43 single before, with two).
    assert _wer(sentences, packed) <= min(0.5, _wer(sentences, single) + 0.05), hyp
    # Boundaries survive: each transcript is nearest (in characters: tiny.en mishears espeak, "a rare dish" ->
    # "aroundish") to its own sentence, and no words moved to a neighbour
    # (which would lengthen one clip's transcript and shorten another's).
    nearest = [int(np.argmin([jiwer.cer(s, h or "<empty>") for s in sentences])) for h in hyp]
    assert nearest == list(range(len(sentences))), hyp
    assert sum(abs(len(h.split()) - len(s.split())) <= 1 for h, s in zip(hyp, sentences, strict=True)) >= 8, hyp


def test_packing_survives_near_identical_clips_and_silence(tmp_path, fsdd_meta):
    """Eight takes of "zero" by one speaker in a row once sent Whisper into "zero zero zero ..." loops; a silent
    clip gets no words in a window. Neither may leak words into other clips."""
    zeros = fsdd_meta[(fsdd_meta["digit"] == 0) & (fsdd_meta["speaker"] == "jackson")].iloc[:8]
    assert len(zeros) == 8
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    paths = [*zeros["abspath"], str(silence)]
    tasks = _tasks(paths, [*zeros["duration"], 1.0])
    for t in tasks:
        t["key"] = "same"  # one order of all, whatever the hashes
    stats: dict = {}
    out = sorted(transcribe(tasks, ASRConfig(), workers=1, stats=stats), key=lambda r: r["row"])
    assert all(r["error"] is None for r in out)
    zero_hyp = [normalise(r["text"]).split() for r in out[:-1]]
    assert all(len(h) <= 2 for h in zero_hyp), zero_hyp
    assert sum(h == ["zero"] for h in zero_hyp) >= 6, zero_hyp
    assert out[-1]["mode"] == "single"  # packing gave the silence no words, so it was transcribed alone
    assert stats["clips_redone"] >= 1


def test_an_unreadable_clip_costs_only_itself_in_a_packed_window(tmp_path, fsdd_meta):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF but not really audio" * 50)
    sel = fsdd_meta.iloc[[0, 100, 200]]
    tasks = _tasks([*sel["abspath"], bad], [*sel["duration"], 0.5])
    for t in tasks:
        t["key"] = "same"  # keep them in one window, in this order
    out = sorted(transcribe(tasks, ASRConfig(), workers=1), key=lambda r: r["row"])
    assert [r["error"] is None for r in out] == [True, True, True, False]
    assert out[3]["error"].startswith("decode:") and "bad.wav" not in out[0]["text"]
    assert all(r["mode"] == "packed" and r["window_size"] == 3 for r in out[:3] if r["text"]), out


def test_no_network_is_used(tmp_path, fsdd_meta):
    """Transcription (in spawned workers) and embedding with every socket refused, in all processes."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import socket
        class _NoNet(socket.socket):
            def connect(self, *a, **k):
                raise OSError("network disabled by the test")
            connect_ex = connect
        socket.socket = _NoNet
        socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network disabled by the test"))
    """))
    script = textwrap.dedent(f"""
        import math, sys
        sys.path.insert(0, {str(ROOT)!r})
        import socket
        assert socket.socket.__name__ == "_NoNet"
        from blindcheck.features.text import ASRConfig, Embedder, transcribe
        if __name__ == "__main__":
            out = transcribe([{{"row": 0, "path": {fsdd_meta['abspath'].iloc[3]!r}, "start": math.nan,
                               "end": math.nan}}], ASRConfig(), workers=1)
            assert out[0]["error"] is None, out
            v = Embedder().encode(["no network here"])
            print("OK", out[0]["text"], v.shape)
    """)
    (tmp_path / "run.py").write_text(script)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_extract_with_text_modality_and_cache(tmp_path, fsdd_meta):
    sel = fsdd_meta.iloc[::40].reset_index(drop=True)  # 12 clips
    text = sel["text"].copy()
    text.iloc[::4] = ""  # three clips need ASR under --transcripts auto
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": [0, 1] * 6, "text": text}).to_csv(
        tmp_path / "m.csv", index=False)
    m = load_manifest(tmp_path / "m.csv")
    res = extract_features(m, tmp_path / "c", modalities=["recording", "text"], workers=2)
    t = res.stats["text"]
    # Partial transcripts: every clip is transcribed, so that all text comes from one source, and it says so.
    assert (t["given"], t["transcribed"], t["failed"]) == (0, 12, 0)
    assert "9 of 12 clips have a transcript" in t["notes"][0]
    assert len(res.features) == 12
    cols = res.feature_columns("text")
    assert "text.emb_383" in cols and "text.n_words" in cols and "text.words_per_second" not in cols
    tr = res.transcripts.set_index("id")
    assert set(tr["source"]) == {"asr"}
    asr = tr[tr["source"] == "asr"]
    assert asr.loc[asr["text"] != "", "word_logprob"].notna().all()  # an empty transcript has no words
    assert set(asr["mode"]) <= {"packed", "single"} and res.stats["text"]["asr"]["windows"] >= 1
    assert (res.features["transcript"] == tr.loc[res.features["id"], "text"].to_numpy()).all()
    again = extract_features(m, tmp_path / "c", modalities=["recording", "text"], workers=2)
    assert again.stats["text"]["transcribed"] == 0 and again.stats["text"]["embedded"] == 0
    pd.testing.assert_frame_equal(res.features, again.features)
    assert any(p.name.startswith("asr-faster-whisper") for p in (tmp_path / "c" / "features").iterdir())
    assert Store(tmp_path / "c").read_features(ASRConfig().tag(tmp_path / "c")).shape[0] == 12


def test_text_modality_requirements(tmp_path, fsdd_meta):
    table = pd.DataFrame({"id": ["a"], "path": [fsdd_meta["abspath"].iloc[0]], "label": [1]})
    assert text_unavailable(table, TextOptions(transcripts="given")) is not None
    assert text_unavailable(table, TextOptions()) is None  # ASR is installed here
    with pytest.raises(BlindcheckError, match="checkpoint"):
        ASRConfig(backend="openai-whisper").tag()
    # A missing package names the extra to install (a real failed import, in a fresh interpreter).
    code = ("import sys; sys.modules['sentence_transformers'] = None\n"
            "from blindcheck.features.text import Embedder\n"
            "try:\n    Embedder()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "MissingDependencyError" in r.stdout and "blindcheck[text]" in r.stdout


def test_all_text_comes_from_one_source_and_one_decoding_path(tmp_path, fsdd_meta):
    """Issue 14 item 7: transcripts given for some clips only, or decoded on two paths, would let the text
    modality separate the sides by where its text came from."""
    sel = fsdd_meta.iloc[::60].reset_index(drop=True).head(6)
    text = sel["text"].copy()
    text.iloc[:2] = ""
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": [1, 1, 1, 0, 0, 0], "text": text}).to_csv(
        tmp_path / "m.csv", index=False)
    m = load_manifest(tmp_path / "m.csv")
    with pytest.raises(BlindcheckError, match=r"4 of 6 clips have a transcript \(members 1/3, non-members 3/3\)"):
        extract_features(m, tmp_path / "c", modalities=["text"], text=TextOptions(transcripts="given"))
    # A clip too long to pack sends every clip down the one-clip-per-call path, and the run says so.
    durations = np.array([sf.info(p).duration for p in sel["abspath"]])
    limit = float(np.median(durations))
    opts = TextOptions(transcripts="asr", asr=ASRConfig(max_packed_clip_s=limit, window_s=limit + 0.5, gap_s=0.2))
    res = extract_features(m, tmp_path / "c", modalities=["text"], text=opts)
    assert set(res.transcripts["mode"]) == {"single"}
    assert any("transcribed alone" in n for n in res.stats["text"]["notes"])
    # Packed windows' fallback clips falling mostly on one side stop the run; a few on both sides do not.
    from blindcheck.extraction.text import _check_decoding_paths

    labels = np.repeat([1, 0], 40)
    ok = np.ones(80, bool)
    modes = np.where(np.arange(80) >= 60, "single", "packed")  # 20 of 40 non-members, no member
    with pytest.raises(BlindcheckError, match="0 of 40 members and 20 of 40 non-members"):
        _check_decoding_paths(modes, labels, ok)
    modes = np.where(np.isin(np.arange(80), [3, 41, 50]), "single", "packed")
    _check_decoding_paths(modes, labels, ok)


def test_openai_whisper_backend_with_a_real_checkpoint_file(tmp_path, fsdd_meta):
    """No checkpoint can be downloaded here, so build one: a randomly initialised (tiny) Whisper saved the way
    openai-whisper saves its own, then the real load and transcription path runs on it."""
    import importlib.util

    if importlib.util.find_spec("whisper") is None:
        pytest.skip("openai-whisper not installed")
    ckpt = tmp_path / "random-tiny.en.pt"
    build = textwrap.dedent(f"""
        import torch
        from whisper.model import ModelDimensions, Whisper
        torch.manual_seed(0)
        dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                               n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1)
        torch.save({{"dims": dims.__dict__, "model_state_dict": Whisper(dims).state_dict()}}, {str(ckpt)!r})
    """)
    subprocess.run([sys.executable, "-c", build], check=True)  # torch stays out of this process
    config = ASRConfig(backend="openai-whisper", model=str(ckpt))
    assert config.tag().startswith("asr-openai-whisper-")
    sel = fsdd_meta.iloc[:3]
    out = transcribe(_tasks(sel["abspath"], sel["duration"]), config, workers=1)  # one packed window
    assert [r["error"] for r in out] == [None] * 3, out
    assert all(isinstance(r["text"], str) and r["language"] == "en" for r in out)
    assert all(math.isnan(r["word_logprob"]) or r["word_logprob"] <= 0 for r in out)


def test_check_with_text_features_finds_a_content_confound(tmp_path, fsdd_meta, shared_cache):
    """Members say digits 0-4, non-members 5-9 (same speakers): the text modality alone separates them."""
    sel = fsdd_meta[fsdd_meta["take"] < 2].reset_index(drop=True)  # 120 clips
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "text": sel["text"],
                  "label": (sel["digit"] < 5).astype(int)}).to_csv(tmp_path / "m.csv", index=False)
    from blindcheck import check

    result = check(tmp_path / "m.csv", tmp_path / "out", cache_dir=shared_cache, modalities=["text"], workers=2,
                   repeats=1)
    names = {m.name for m in result.separability.models}
    assert {"xgboost:text", "tfidf:text"} <= names
    assert result.status == "confounded" and result.verdict.top_modality == "text"
    assert result.separability.model("xgboost:text").auc > 0.95
    assert (tmp_path / "out" / "transcripts.parquet").exists()
