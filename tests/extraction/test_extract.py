"""The extraction pipeline: bad clips excluded and recorded, cache reuse, workers, kill-and-resume, CLI."""

from __future__ import annotations

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

from blindcheck.cli import main
from blindcheck.extraction.pipeline import extract_features
from blindcheck.inputs.manifest import load_manifest
from blindcheck.verbs import write_outputs
from tests.conftest import SR, tone, write
from tests.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mixed_manifest(tmp_path, fsdd_meta):
    """20 real clips plus one of every kind of bad or odd file."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_bytes(b"not audio at all " * 100)
    write(bad / "zero.wav", np.zeros(0, np.float32))
    write(bad / "silence.wav", np.zeros(SR, np.float32))
    write(bad / "stereo24.wav", np.stack([tone(220, 0.5), tone(220, 0.5)], 1), subtype="PCM_24")
    write(bad / "speech.mp3", tone(180, 0.8), format="MP3")
    full = (bad / "silence.wav").read_bytes()
    (bad / "truncated.wav").write_bytes(full[: 44 + 2 * 2000])
    real = fsdd_meta.iloc[::12].head(20)
    paths = list(real["abspath"]) + [str(p) for p in sorted(bad.iterdir())]
    df = pd.DataFrame({"path": paths, "label": [i % 2 for i in range(len(paths))]})
    p = tmp_path / "m.csv"
    df.to_csv(p, index=False)
    return p


def test_bad_clips_are_recorded_and_excluded(tmp_path, mixed_manifest):
    m = load_manifest(mixed_manifest)
    res = extract_features(m, tmp_path / "cache", workers=1)
    errs = res.errors.set_index("id")
    assert set(errs.index) == {"empty", "text", "zero", "truncated"}
    assert (errs["stage"] == "decode").all()
    assert errs.at["truncated", "message"].startswith("truncated: the header declares 1.0 s, the file holds 125 ms")
    assert "empty file" in errs.at["empty", "message"] and "zero samples" in errs.at["zero", "message"]
    ids = set(res.features["id"])
    assert {"silence", "stereo24", "speech"} <= ids and len(ids) == len(m.table) - 4
    row = res.features.set_index("id")
    assert row.at["stereo24", "recording.channels"] == 2 and row.at["stereo24", "recording.bit_depth"] == 24
    assert row.at["speech", "recording.format_mp3"] == 1 and row.at["speech", "recording.lossy"] == 1
    assert np.isnan(row.at["silence", "prosodic.f0_mean_hz"])
    notes = res.notes
    assert (notes["id"] == "silence").any()
    assert res.stats["failed"] == 4 and res.stats["in_table"] == len(m.table) - 4
    # allow-truncated analyses it, with a note; a later run without it rejects it from the cache too.
    allowed = extract_features(m, tmp_path / "cache", workers=1, allow_truncated=True)
    assert "truncated" in set(allowed.features["id"]) and allowed.stats["failed"] == 3
    note = allowed.notes.set_index("id").loc[["truncated"], "note"]
    assert note.str.startswith("truncated: the header declares 1.0 s").any()
    again = extract_features(m, tmp_path / "cache", workers=1)
    assert "truncated" not in set(again.features["id"]) and again.stats["failed"] == 4
    assert again.stats["computed"]["recording"] == 0


def test_cache_reuse_and_workers_agree(tmp_path, fsdd_meta):
    df = pd.DataFrame({"path": fsdd_meta["abspath"].iloc[:48], "label": [0, 1] * 24})
    df.to_csv(tmp_path / "m.csv", index=False)
    m = load_manifest(tmp_path / "m.csv")
    first = extract_features(m, tmp_path / "c1", workers=2)
    assert first.stats["computed"] == {"content": 48, "recording": 48, "spectral": 48, "prosodic": 48}
    again = extract_features(m, tmp_path / "c1", workers=2)
    assert again.stats["computed"] == {"content": 0, "recording": 0, "spectral": 0, "prosodic": 0}
    assert again.stats["dispatched"] == 0  # not even opened: the index maps (path, size, mtime) to the hash
    pd.testing.assert_frame_equal(first.features, again.features)
    single = extract_features(m, tmp_path / "c2", workers=1)
    pd.testing.assert_frame_equal(first.features, single.features)
    # One new modality subset reuses the others; a changed file is recomputed.
    assert len(list((tmp_path / "c1" / "features").iterdir())) == 4


def test_changed_file_is_recomputed(tmp_path, fsdd_meta):
    src = fsdd_meta["abspath"].iloc[:4].tolist()
    paths = []
    for i, s in enumerate(src):
        p = tmp_path / f"c{i}.wav"
        p.write_bytes(Path(s).read_bytes())
        paths.append(str(p))
    pd.DataFrame({"path": paths, "label": [0, 1, 0, 1]}).to_csv(tmp_path / "m.csv", index=False)
    m = load_manifest(tmp_path / "m.csv")
    before = extract_features(m, tmp_path / "c", workers=1, modalities=["recording"])
    write(Path(paths[0]), tone(300, 1.0, sr=8000), sr=8000)
    after = extract_features(m, tmp_path / "c", workers=1, modalities=["recording"])
    assert after.stats["computed"] == {"recording": 1} and after.stats["dispatched"] == 1
    assert after.features["recording.duration_s"].iloc[0] == pytest.approx(1.0)
    assert after.features["content_hash"].iloc[0] != before.features["content_hash"].iloc[0]


def test_touched_or_rewritten_files_with_the_same_bytes_are_only_rehashed(tmp_path, fsdd_meta):
    """The cache is keyed by content: a file whose time changed (touch) or that was rewritten byte for byte is read
    and hashed again (its index entry is stale) but none of its modalities is recomputed; a file whose bytes changed
    is, and only that one."""
    src = fsdd_meta["abspath"].iloc[:4].tolist()
    paths = []
    for i, s in enumerate(src):
        p = tmp_path / f"c{i}.wav"
        p.write_bytes(Path(s).read_bytes())
        paths.append(p)
    pd.DataFrame({"path": [str(p) for p in paths], "label": [0, 1, 0, 1]}).to_csv(tmp_path / "m.csv", index=False)
    m = load_manifest(tmp_path / "m.csv")
    mods = ["recording", "spectral"]
    before = extract_features(m, tmp_path / "c", workers=1, modalities=mods)
    st = paths[0].stat()
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched
    paths[1].write_bytes(paths[1].read_bytes())  # rewritten, same bytes
    paths[2].write_bytes(Path(fsdd_meta["abspath"].iloc[10]).read_bytes())  # other bytes
    after = extract_features(m, tmp_path / "c", workers=1, modalities=mods)
    assert after.stats["dispatched"] == 3  # the three whose index entry no longer matches, read and hashed
    assert after.stats["computed"] == {"recording": 1, "spectral": 1}, after.stats["computed"]
    assert list(after.features["content_hash"].iloc[[0, 1, 3]]) == list(before.features["content_hash"].iloc[[0, 1, 3]])
    assert after.features["content_hash"].iloc[2] != before.features["content_hash"].iloc[2]
    cols = [c for c in before.features.columns if c.startswith(("recording.", "spectral."))]
    pd.testing.assert_frame_equal(after.features[cols].iloc[[0, 1, 3]], before.features[cols].iloc[[0, 1, 3]])
    again = extract_features(m, tmp_path / "c", workers=1, modalities=mods)  # the index now has the new times
    assert again.stats["dispatched"] == 0


def test_sigkill_resume_keeps_finished_clips(tmp_path, fsdd_meta):
    """A real extraction process is SIGKILLed part-way; the re-run reuses every clip it had written."""
    n = 120  # the kill comes after 3 parts of 2 clips: the run is caught part-way, and the rerun has work to do
    df = pd.DataFrame({"path": fsdd_meta["abspath"].iloc[:n], "label": [0, 1] * (n // 2)})
    df.to_csv(tmp_path / "m.csv", index=False)
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from blindcheck.extraction.pipeline import extract_features
        from blindcheck.inputs.manifest import load_manifest
        extract_features(load_manifest({str(tmp_path / 'm.csv')!r}), {str(cache)!r}, workers=1,
                         chunk_size=2, modalities=["recording", "prosodic"])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    part_dir = cache / "features"
    wait_for(lambda: part_dir.exists() and len(list(part_dir.glob("prosodic-*/part-*.parquet"))) >= 3,
             "three prosodic parts reached the cache", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = {}
    for mod in ("recording", "prosodic"):
        rows = [pq.read_table(p).num_rows for p in part_dir.glob(f"{mod}-*/part-*.parquet")]
        written[mod] = sum(rows)
    assert 0 < written["prosodic"] < n

    m = load_manifest(tmp_path / "m.csv")
    resumed = extract_features(m, cache, workers=1, modalities=["recording", "prosodic"])
    for mod in ("recording", "prosodic"):
        assert resumed.stats["computed"][mod] == n - written[mod]
    assert resumed.stats["dispatched"] == n - min(written.values())
    assert len(resumed.features) == n
    fresh = extract_features(m, tmp_path / "fresh", workers=1, modalities=["recording", "prosodic"])
    pd.testing.assert_frame_equal(resumed.features, fresh.features)


def test_cli_extract_writes_table_and_summary(tmp_path, mixed_manifest, capsys):
    out = tmp_path / "out"
    assert main(["extract", str(mixed_manifest), "--out", str(out), "--workers", "1", "--no-progress",
                 "--modalities", "recording,spectral,prosodic"]) == 0
    text = capsys.readouterr().out
    m = load_manifest(mixed_manifest)
    n_ok = len(m.table) - 4
    assert f"in table    {n_ok:>6}" in text and f"failed      {4:>6}  (decode 4)" in text
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors.columns) == ["id", "path", "stage", "message"]
    assert set(errors["id"]) == {"empty", "text", "zero", "truncated"} and (errors["stage"] == "decode").all()
    for r in errors.head(3).itertuples():  # the summary names failed files with their reasons, then a count
        assert f"{r.path}: decode: {r.message}" in text
    assert "... 1 more in errors.csv" in text
    assert (out / "summary.txt").read_text() == text
    table = pd.read_parquet(out / "features.parquet")
    # The table the CLI wrote is the one the library computes (from the same cache: nothing recomputed) ...
    direct = extract_features(m, out / "cache", workers=1, modalities=["recording", "spectral", "prosodic"])
    assert direct.stats["computed"] == {"recording": 0, "spectral": 0, "prosodic": 0}
    pd.testing.assert_frame_equal(table, direct.features)
    assert len(table) == n_ok and set(table["id"]) == set(m.table["id"]) - {"empty", "text", "zero", "truncated"}
    # ... and holds true values: every real clip's duration is its file's.
    import soundfile as sf

    durations = table.set_index("id")["recording.duration_s"]
    for r in m.table.iloc[:20].itertuples():
        assert durations[r.id] == pytest.approx(sf.info(r.path).duration, abs=1e-3)


def test_write_outputs_roundtrip(tmp_path, fsdd_meta):
    pd.DataFrame({"path": fsdd_meta["abspath"].iloc[:6], "label": [0, 1] * 3}).to_csv(tmp_path / "m.csv",
                                                                                       index=False)
    m = load_manifest(tmp_path / "m.csv")
    res = extract_features(m, tmp_path / "c", workers=1, modalities=["spectral"])
    paths = write_outputs(res, m, tmp_path / "o")
    back = pd.read_parquet(paths["features"])
    pd.testing.assert_frame_equal(back, res.features)
    assert all(c.startswith("spectral.") for c in res.feature_columns())


def test_a_worker_crash_costs_only_its_clip(tmp_path, fsdd_meta, monkeypatch):
    """A worker process that dies (as in a crash inside a native library) loses only the clip it was on."""
    import multiprocessing

    import blindcheck.extraction.pipeline as ext

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("needs fork: the patched function must reach the worker processes")
    sel = fsdd_meta.iloc[:24]
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": [0, 1] * 12}).to_csv(tmp_path / "m.csv",
                                                                                          index=False)
    victim = sel["id"].iloc[13]
    real = ext._process_clip

    def crashing(task, sr, allow_truncated):
        if task["id"] == victim:
            os._exit(1)  # the worker dies without a Python exception
        return real(task, sr, allow_truncated)

    monkeypatch.setattr(ext, "_process_clip", crashing)
    res = extract_features(load_manifest(tmp_path / "m.csv"), tmp_path / "c", workers=2, chunk_size=4,
                           modalities=["recording"])
    assert len(res.features) == 23 and victim not in set(res.features["id"])
    err = res.errors.set_index("id")
    assert list(err.index) == [victim] and err.at[victim, "stage"] == "worker"


def test_extraction_config_is_one_typed_object_and_refuses_bad_settings(tmp_path):
    from blindcheck.cli import _extraction, build_parser
    from blindcheck.errors import BlindcheckError
    from blindcheck.extraction.pipeline import ExtractionConfig
    from blindcheck.features import Modality

    cfg = ExtractionConfig(modalities=["prosodic", "recording"], workers=3)
    assert cfg.modalities == (Modality.PROSODIC, Modality.RECORDING) and cfg.requested[0] is Modality.PROSODIC
    for bad, match in (({"modalities": ["loudness"]}, "unknown modality"), ({"workers": 0}, "at least 1"),
                       ({"executor": "ray"}, "unknown executor"), ({"scheduler": "tcp://x:1"}, "dask executor"),
                       ({"chunk_size": 0}, "at least 1")):
        with pytest.raises(BlindcheckError, match=match):
            ExtractionConfig(**bad)
    # The CLI turns its flags into that object, and nothing else does.
    args = build_parser().parse_args(["extract", "m.csv", "--out", str(tmp_path), "--workers", "2", "--executor",
                                      "dask", "--chunk-size", "16", "--asr-compute-type", "int8_float32"])
    cfg = _extraction(args, ["recording"])
    assert (cfg.workers, cfg.executor, cfg.chunk_size, cfg.modalities) == (2, "dask", 16, (Modality.RECORDING,))
    assert cfg.text.asr.compute_type == "int8_float32" and cfg.text.asr.resolved_compute_type() == "int8_float32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["extract", "m.csv", "--out", str(tmp_path), "--asr-compute-type", "int4"])
