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

# find_spec, not importorskip: importing sentence-transformers would bring torch into this process, and torch's
# OpenMP runtime next to xgboost's slows every later boosting test ~100x.
if any(importlib.util.find_spec(m) is None for m in ("sentence_transformers", "faster_whisper", "jiwer")):
    pytest.skip("text extras not installed (pip install -e '.[asr,text]' jiwer)", allow_module_level=True)
import jiwer  # noqa: E402

from blindcheck.cache import Store  # noqa: E402
from blindcheck.errors import BlindcheckError  # noqa: E402
from blindcheck.extract import extract_features  # noqa: E402
from blindcheck.manifest import load_manifest  # noqa: E402
from blindcheck.text import (  # noqa: E402
    ASRConfig,
    TextOptions,
    default_embedding_model,
    embed,
    lexical,
    text_unavailable,
    transcribe,
)

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def normalise(text: str) -> str:
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text.lower())
    return " ".join(re.sub(r"[^a-z' ]", " ", text).split())


def _tasks(paths):
    return [{"row": i, "path": str(p), "start": math.nan, "end": math.nan} for i, p in enumerate(paths)]


def test_lexical_statistics():
    f = lexical("The cat sat on the mat, 42 times!", 2.0, {"the", "cat", "sat", "on", "mat", "times"}, None)
    assert f["n_words"] == 8 and f["words_per_second"] == 4.0
    assert f["type_token_ratio"] == pytest.approx(7 / 8)
    assert f["digit_share"] == pytest.approx(2 / 26)
    assert f["punct_share"] == pytest.approx(2 / 26)
    assert f["oov_share"] == pytest.approx(1 / 8)  # "42"
    assert f["empty"] == 0 and math.isnan(f["asr_avg_logprob"])
    e = lexical("", 1.0, None, {"avg_logprob": -0.5, "no_speech_prob": 0.9, "compression_ratio": 1.0})
    assert e["empty"] == 1 and e["n_words"] == 0 and e["asr_no_speech_prob"] == 0.9


def test_embeddings_have_semantic_structure():
    # In a spawned process, as the pipeline does: torch never enters this (xgboost-running) process.
    v = embed(["The weather is lovely today.", "It is a beautiful sunny day.",
               "The invoice must be paid by Friday."], default_embedding_model())
    assert v.shape == (3, 384) and "torch" not in sys.modules
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_asr_on_real_speech_has_bounded_wer(fsdd_meta):
    """tiny.en on 8 kHz isolated digits: two clips per speaker, different digits."""
    sel = fsdd_meta.groupby("speaker").sample(2, random_state=1)
    out = sorted(transcribe(_tasks(sel["abspath"]), ASRConfig(), workers=2), key=lambda r: r["row"])
    assert all(r["error"] is None for r in out)
    hyp = [normalise(r["text"]) for r in out]
    wer = jiwer.wer(list(sel["text"]), hyp)
    # Isolated words at 8 kHz are hard for tiny.en (measured 0.5-0.6 WER): a loose bound here, a tight one on
    # clear sentences below.
    assert wer <= 0.7, list(zip(sel["text"], hyp, strict=True))
    assert sum(h == r for h, r in zip(hyp, sel["text"], strict=True)) >= 5
    assert all(r["avg_logprob"] < 0 and 0 <= r["no_speech_prob"] <= 1 for r in out if r["text"])
    assert all(r["language"] == "en" for r in out)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (.ci/run installs it)")
def test_asr_on_synthesised_sentences(tmp_path):
    sentences = ["the quick brown fox jumps over the lazy dog",
                 "please call stella and ask her to bring these things with her from the store",
                 "membership inference attacks need careful baselines"]
    paths = []
    for i, s in enumerate(sentences):
        p = tmp_path / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(p), s], check=True, capture_output=True)
        paths.append(p)
    out = sorted(transcribe(_tasks(paths), ASRConfig(), workers=1), key=lambda r: r["row"])
    wer = jiwer.wer(sentences, [normalise(r["text"]) for r in out])
    assert wer <= 0.4, [r["text"] for r in out]  # measured 0.33: espeak's voice is far from natural speech
    assert all(normalise(r["text"]).split()[-1] in ("dog", "store", "baselines", "signs") for r in out)


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
        from blindcheck.text import ASRConfig, Embedder, transcribe
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
    assert (t["given"], t["transcribed"], t["failed"]) == (9, 3, 0)
    assert len(res.features) == 12
    cols = res.feature_columns("text")
    assert "text.words_per_second" in cols and "text.emb_383" in cols
    tr = res.transcripts.set_index("id")
    assert set(tr["source"]) == {"given", "asr"}
    asr = tr[tr["source"] == "asr"]
    assert asr.loc[asr["text"] != "", "avg_logprob"].notna().all()  # an empty transcript has no segments
    assert (res.features["transcript"] == tr.loc[res.features["id"], "text"].to_numpy()).all()
    again = extract_features(m, tmp_path / "c", modalities=["recording", "text"], workers=2)
    assert again.stats["text"]["transcribed"] == 0 and again.stats["text"]["embedded"] == 0
    pd.testing.assert_frame_equal(res.features, again.features)
    assert any(p.name.startswith("asr-faster-whisper") for p in (tmp_path / "c" / "features").iterdir())
    assert Store(tmp_path / "c").read_features(ASRConfig().tag()).shape[0] == 3


def test_text_modality_requirements(tmp_path, fsdd_meta):
    table = pd.DataFrame({"id": ["a"], "path": [fsdd_meta["abspath"].iloc[0]], "label": [1]})
    assert text_unavailable(table, TextOptions(transcripts="given")) is not None
    assert text_unavailable(table, TextOptions()) is None  # ASR is installed here
    with pytest.raises(BlindcheckError, match="checkpoint"):
        ASRConfig(backend="openai-whisper").tag()
    # A missing package names the extra to install (a real failed import, in a fresh interpreter).
    code = ("import sys; sys.modules['sentence_transformers'] = None\n"
            "from blindcheck.text import Embedder\n"
            "try:\n    Embedder()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "MissingDependencyError" in r.stdout and "blindcheck[text]" in r.stdout


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
    out = transcribe(_tasks(fsdd_meta["abspath"].iloc[:1]), config, workers=1)
    assert [r["error"] for r in out] == [None], out
    assert all(isinstance(r["text"], str) and r["language"] == "en" for r in out)
    assert all(math.isnan(r["avg_logprob"]) or r["avg_logprob"] <= 0 for r in out)


def test_check_with_text_features_finds_a_content_confound(tmp_path, fsdd_meta):
    """Members say digits 0-4, non-members 5-9 (same speakers): the text modality alone separates them."""
    sel = fsdd_meta[fsdd_meta["take"] < 2].reset_index(drop=True)  # 120 clips
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "text": sel["text"],
                  "label": (sel["digit"] < 5).astype(int)}).to_csv(tmp_path / "m.csv", index=False)
    from blindcheck import check

    result = check(tmp_path / "m.csv", tmp_path / "out", modalities=["text"], workers=2, repeats=1)
    names = {m.name for m in result.separability.models}
    assert {"xgboost:text", "tfidf:text"} <= names
    assert result.status == "confounded" and result.verdict.top_modality == "text"
    assert result.separability.model("xgboost:text").auc > 0.95
    assert (tmp_path / "out" / "transcripts.parquet").exists()
