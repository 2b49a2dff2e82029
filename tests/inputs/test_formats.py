"""Hugging Face Hub Parquet shards and lhotse manifests, built from real clips: the same features as a CSV."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from blindcheck.errors import BlindcheckError, ManifestError
from blindcheck.extraction.pipeline import extract_features
from blindcheck.inputs.audio import split_ref
from blindcheck.inputs.manifest import load_manifest

MODS = ["recording", "spectral", "prosodic"]


@pytest.fixture(scope="module")
def clips(fsdd_meta):
    """Twelve real clips of four speakers, six members and six non-members."""
    rows = fsdd_meta.iloc[[0, 1, 2, 50, 51, 52, 100, 101, 102, 150, 151, 152]].reset_index(drop=True)
    rows["label"] = ["member", "non-member"] * 6
    return rows


@pytest.fixture(scope="module")
def csv_features(clips, tmp_path_factory):
    d = tmp_path_factory.mktemp("csv")
    pd.DataFrame({"id": clips["id"], "path": clips["abspath"], "label": clips["label"], "text": clips["text"],
                  "speaker": clips["speaker"]}).to_csv(d / "m.csv", index=False)
    res = extract_features(load_manifest(d / "m.csv"), d / "cache", modalities=MODS, workers=1)
    assert res.errors.empty and len(res.features) == 12
    return res.features.set_index("id").sort_index()


def _same_features(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in a.columns if c.split(".", 1)[0] in MODS]
    assert len(cols) > 50 and list(b.index) == list(a.index)
    # NaN where NaN; else equal up to the order of floating-point sums (1e-15 apart across processes)
    np.testing.assert_allclose(b[cols].to_numpy(), a[cols].to_numpy(), rtol=1e-12, atol=1e-12)


def _write_shards(clips, d: Path, row_group_size: int = 2) -> None:
    """Hub layout: data/train-00000-of-00001.parquet, data/test-...; audio = struct {bytes, path}."""
    (d / "data").mkdir(parents=True)
    for split, label in (("train", "member"), ("test", "non-member")):
        part = clips[clips["label"] == label]
        audio = [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in part["abspath"]]
        table = pa.table({"audio": pa.array(audio, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                          "transcription": part["text"].to_list(), "speaker_id": part["speaker"].to_list()})
        pq.write_table(table, d / "data" / f"{split}-00000-of-00001.parquet", row_group_size=row_group_size)


def test_hub_shards_give_the_csv_features(clips, csv_features, tmp_path):
    _write_shards(clips, tmp_path)
    for source in (tmp_path / "data", str(tmp_path / "data" / "*.parquet")):
        m = load_manifest(source)
        t = m.table.set_index("id")
        assert sorted(t.index) == sorted(clips["id"])
        truth = clips.set_index("id")
        assert (t["label"] == (truth.loc[t.index, "label"] == "member").astype(int)).all()  # from the shard split
        assert (t["text"] == truth.loc[t.index, "text"]).all() and (t["speaker"] == truth.loc[t.index, "speaker"]).all()
        assert all(split_ref(p) is not None for p in t["path"])
    before = set(tmp_path.rglob("*"))
    res = extract_features(m, tmp_path / "cache", modalities=MODS, workers=2, chunk_size=3)
    assert res.errors.empty
    assert {p for p in set(tmp_path.rglob("*")) - before if "cache" not in p.parts} == set()  # nothing written out
    got = res.features.set_index("id").sort_index()
    _same_features(csv_features, got)
    assert (got["content_hash"] == csv_features["content_hash"]).all()  # the key is the bytes' content
    again = extract_features(m, tmp_path / "cache", modalities=MODS, workers=1)
    assert again.stats["dispatched"] == 0  # indexed by the shard's size and time and the row


def test_a_shard_row_without_bytes_costs_only_itself(clips, tmp_path):
    audio = [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in clips["abspath"][:4]]
    audio[2] = {"bytes": None, "path": "elsewhere.wav"}
    pq.write_table(pa.table({"audio": audio, "label": [1, 0, 1, 0]}), tmp_path / "one.parquet")
    res = extract_features(load_manifest(tmp_path / "one.parquet"), tmp_path / "c", modalities=["recording"],
                           workers=1)
    assert len(res.features) == 3 and list(res.errors["stage"]) == ["decode"]
    assert "holds no audio bytes (only a path 'elsewhere.wav')" in res.errors["message"].iloc[0]
    pq.write_table(pa.table({"x": [1, 2], "label": [0, 1]}), tmp_path / "d" / "p.parquet") if (tmp_path / "d").mkdir() \
        is None else None
    with pytest.raises(ManifestError, match="neither a Kaldi"):
        load_manifest(tmp_path / "d")
    with pytest.raises(ManifestError, match="no Parquet shards"):
        load_manifest(str(tmp_path / "nothing-*.parquet"))


needs_lhotse = pytest.mark.skipif(importlib.util.find_spec("lhotse") is None,
                                  reason="pip install 'blindcheck[lhotse]'")


def _jsonl_gz(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def _recording(rid: str, path: Path, stored_as: str | None = None) -> dict:
    info = sf.info(str(path))
    return {"id": rid, "sources": [{"type": "file", "channels": [0], "source": stored_as or str(path)}],
            "sampling_rate": info.samplerate, "num_samples": info.frames, "duration": info.frames / info.samplerate,
            "channel_ids": [0]}


@needs_lhotse
def test_lhotse_cuts_with_offsets_give_the_csv_features(clips, csv_features, tmp_path):
    """The twelve clips laid end to end in three long recordings; cuts point into them by offset and duration."""
    cuts, recs = [], []
    for k, group in enumerate(np.array_split(np.arange(12), 3)):
        ys = [sf.read(clips["abspath"][i], dtype="int16")[0] for i in group]
        gap = np.zeros(800, np.int16)
        long = tmp_path / f"session{k}.wav"
        sf.write(long, np.concatenate([y for i in range(len(ys)) for y in (gap, ys[i])] + [gap]), 8000,
                 subtype="PCM_16")
        rec = _recording(f"session{k}", long, long.name)  # relative: resolved against the manifest's folder
        recs.append(rec)
        pos = 0
        for i, y in zip(group, ys, strict=True):
            pos += len(gap)
            sup = {"id": f"sup-{clips['id'][i]}", "recording_id": rec["id"], "start": pos / 8000,
                   "duration": len(y) / 8000, "channel": 0, "text": clips["text"][i], "speaker": clips["speaker"][i],
                   "custom": {"label": clips["label"][i]}}
            cuts.append({"id": clips["id"][i], "start": pos / 8000, "duration": len(y) / 8000, "channel": 0,
                         "supervisions": [{**sup, "start": 0.0}], "recording": rec, "type": "MonoCut"})
            pos += len(y)
    _jsonl_gz(tmp_path / "cuts.jsonl.gz", cuts)
    m = load_manifest(tmp_path / "cuts.jsonl.gz")
    t = m.table.set_index("id").sort_index()
    truth = clips.set_index("id").sort_index()
    assert (t["text"] == truth["text"]).all() and (t["speaker"] == truth["speaker"]).all()
    assert (t["label"] == (truth["label"] == "member").astype(int)).all()
    assert t["start"].notna().all() and (t["end"] > t["start"]).all()
    res = extract_features(m, tmp_path / "cache", modalities=MODS, workers=1)
    assert res.errors.empty
    _same_features(csv_features, res.features.set_index("id").sort_index())


@needs_lhotse
def test_lhotse_recordings_and_supervisions_and_refusals(clips, csv_features, tmp_path):
    recs = [_recording(r.id, r.abspath) for r in clips.itertuples()]
    sups = [{"id": r.id, "recording_id": r.id, "start": 0.0, "duration": rec["duration"], "channel": 0,
             "text": r.text, "speaker": r.speaker, "custom": {"split": "train" if r.label == "member" else "test"}}
            for r, rec in zip(clips.itertuples(), recs, strict=True)]
    d = tmp_path / "lh"
    d.mkdir()
    _jsonl_gz(d / "demo_recordings_all.jsonl.gz", recs)
    _jsonl_gz(d / "demo_supervisions_all.jsonl.gz", sups)
    m = load_manifest(d / "demo_supervisions_all.jsonl.gz")  # its recordings are found beside it
    res = extract_features(m, tmp_path / "cache", modalities=MODS, workers=1)
    got = res.features.set_index("id").sort_index()
    _same_features(csv_features, got)
    assert (got["content_hash"] == csv_features["content_hash"]).all()  # whole-recording supervisions: the files
    (d / "demo_supervisions_all.jsonl.gz").unlink()
    with pytest.raises(ManifestError, match="recordings together with supervisions"):
        load_manifest(d / "demo_recordings_all.jsonl.gz")
    # Refused by name, in one read of a directory: a speed-perturbed recording and one channel of a stereo file.
    stereo = tmp_path / "stereo.wav"
    y = sf.read(clips["abspath"][0], dtype="int16")[0]
    sf.write(stereo, np.stack([y, y[::-1]], 1), 8000, subtype="PCM_16")
    two = {**_recording("st", stereo), "sources": [{"type": "file", "channels": [0, 1], "source": str(stereo)}],
           "channel_ids": [0, 1]}
    bad = [{**recs[0], "transforms": [{"name": "Speed", "kwargs": {"factor": 1.1}}]}, *recs[1:], two]
    _jsonl_gz(d / "demo_recordings_all.jsonl.gz", bad)
    _jsonl_gz(d / "demo_supervisions_all.jsonl.gz", [*sups, {**sups[1], "id": "st-1", "recording_id": "st",
                                                             "channel": 1}])
    with pytest.raises(BlindcheckError) as err:
        load_manifest(d)
    msg = str(err.value)
    assert msg.startswith("2 entries cannot be analysed")
    assert f"recording '{recs[0]['id']}' has transforms (Speed)" in msg
    assert "takes channel(s) [1] of the 2-channel recording 'st'" in msg
