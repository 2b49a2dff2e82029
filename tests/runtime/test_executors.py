"""Extraction on Dask distributed (a real LocalCluster of worker processes on loopback) against the local pool.

One cluster serves the module. The tests show that both executors compute the same table, that a worker killed
mid-run costs nothing, that a run interrupted on one executor resumes on the other reusing every finished
part, and that the CLI reaches a running scheduler by its address.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from blindcheck.extraction.pipeline import ExtractionConfig, extract_features
from blindcheck.inputs.manifest import Manifest

distributed = pytest.importorskip("distributed")

from blindcheck.runtime.executors import DaskExecutor  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODS = ("recording", "spectral", "prosodic")
N = 24


@pytest.fixture(scope="module")
def cluster():
    ex = DaskExecutor(workers=2)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def clips(fsdd_meta) -> Manifest:
    sel = fsdd_meta.sample(N, random_state=3)
    return Manifest(table=pd.DataFrame({"id": sel["id"].to_numpy(), "path": sel["abspath"].to_numpy(),
                                        "label": [0, 1] * (N // 2)}), source="fsdd")


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    """The local pool's table, from a cold cache."""
    return extract_features(clips, tmp_path_factory.mktemp("ref"), workers=2, modalities=MODS)


def _worker_pids(ex: DaskExecutor) -> dict[str, int]:
    return ex.client.run(os.getpid)


def test_dask_computes_what_the_local_pool_computes(cluster, clips, reference, tmp_path):
    res = extract_features(clips, tmp_path / "c", ExtractionConfig(modalities=MODS, executor="dask"), executor=cluster)
    assert res.stats["executor"].startswith("dask") and res.stats["computed"] == {m: N for m in MODS}
    assert res.stats["failed"] == 0 and len(res.features) == N
    pd.testing.assert_frame_equal(res.features, reference.features)
    pd.testing.assert_frame_equal(res.notes, reference.notes)
    # The workers wrote the cache parts themselves: one part per job and modality, none through the driver.
    parts = list((tmp_path / "c" / "features").glob("prosodic-*/part-*.parquet"))
    assert parts and sum(pd.read_parquet(p).shape[0] for p in parts) == N


def test_a_worker_killed_mid_run_loses_nothing(cluster, clips, reference, tmp_path):
    before = _worker_pids(cluster)
    killed = []

    def progress(done, total):
        if 0 < done < total and not killed:  # a job has come back: others are in flight on both workers
            pid = next(iter(before.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    res = extract_features(clips, tmp_path / "c", modalities=MODS, chunk_size=2, executor=cluster, progress=progress)
    assert killed, "the run ended before a worker could be killed"
    assert res.stats["failed"] == 0 and res.errors.empty
    pd.testing.assert_frame_equal(res.features, reference.features)
    after = _worker_pids(cluster)
    assert killed[0] not in after.values()  # the worker really died (the nanny started a new one)


@pytest.mark.parametrize("first,second", [("dask", "local"), ("local", "dask")])
def test_an_interrupted_run_resumes_on_the_other_executor(cluster, clips, reference, tmp_path, first, second):
    cache = tmp_path / "c"
    seen = []

    def stop(done, total):
        seen.append(done)
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(clips, cache, modalities=MODS, workers=2, chunk_size=2, progress=stop,
                         executor=cluster if first == "dask" else "local")
    kept = sum(pd.read_parquet(p).shape[0] for p in (cache / "features").glob("spectral-*/part-*.parquet"))
    assert 8 <= kept < N, kept
    res = extract_features(clips, cache, modalities=MODS, workers=2, executor=cluster if second == "dask" else "local")
    # Every part the first run finished is reused (a job still in flight when it stopped may land in between).
    assert 0 < res.stats["computed"]["spectral"] <= N - kept
    assert res.stats["reused"]["spectral"] == N - res.stats["computed"]["spectral"]
    pd.testing.assert_frame_equal(res.features, reference.features)


def test_cli_runs_on_a_scheduler_by_address(cluster, clips, reference, tmp_path):
    csv = tmp_path / "m.csv"
    clips.table.to_csv(csv, index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "blindcheck", "extract", str(csv), "--out", str(out), "--modalities",
                        ",".join(MODS), "--executor", "dask", "--scheduler", cluster.address, "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"dask on {cluster.address}" in r.stdout
    got = pd.read_parquet(out / "features.parquet")
    pd.testing.assert_frame_equal(got, reference.features)

    bad = subprocess.run([sys.executable, "-m", "blindcheck", "extract", str(csv), "--out", str(tmp_path / "o2"),
                          "--scheduler", cluster.address, "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "add --executor dask" in bad.stderr, bad.stderr


def test_a_local_cluster_leaves_the_drivers_environment_as_it_was():
    """A LocalCluster's nannies live in the driver and write their workers' environment (one OpenMP, MKL and
    OpenBLAS thread, a fixed PYTHONHASHSEED) into the driver's os.environ, where every process started later
    (the local pool's spawned ASR and embedding workers) inherited it. The executor puts it back."""
    before = dict(os.environ)
    ex = DaskExecutor(workers=1)
    try:
        assert dict(os.environ) == before
        assert ex.client.run(lambda: os.environ.get("OMP_NUM_THREADS")) == {w: "1" for w in ex.client.nthreads()}
    finally:
        ex.close()
    assert dict(os.environ) == before


def test_ctrl_c_on_a_local_cluster_ends_every_process_and_resumes(fsdd_meta, tmp_path):
    """SIGINT while a LocalCluster extracts: exit 130 within seconds, no worker or nanny left, and the rerun
    computes only what the interrupted run had not written."""
    psutil = pytest.importorskip("psutil")
    import time

    csv = tmp_path / "m.csv"
    pd.DataFrame({"id": fsdd_meta["id"], "path": fsdd_meta["abspath"],
                  "label": fsdd_meta["speaker"].isin(["george", "jackson"]).astype(int)}).to_csv(csv, index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "out"
    args = [sys.executable, "-m", "blindcheck", "extract", str(csv), "--out", str(out), "--modalities",
            "recording,prosodic", "--executor", "dask", "--workers", "2", "--no-progress"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc = psutil.Process(p.pid)
    parts = out / "cache" / "features"
    deadline = time.monotonic() + 120
    while not list(parts.glob("prosodic-*/part-*.parquet")):  # the workers have finished a first job
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
        time.sleep(0.05)
    kids = proc.children(recursive=True)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    _, alive = psutil.wait_procs(kids, timeout=5)
    assert p.returncode == 130 and took < 10 and not alive and len(kids) >= 2, (p.returncode, took, alive, err)
    assert "run the same command again to resume" in err
    kept = sum(pd.read_parquet(f).shape[0] for f in parts.glob("prosodic-*/part-*.parquet"))
    assert 0 < kept < len(fsdd_meta)
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    comp = r.stdout.split("computed/reused from cache: ")[1].splitlines()[0]
    done = int(comp.split("prosodic ")[1].split("/")[0])
    assert 0 < done <= len(fsdd_meta) - kept, (comp, kept)
