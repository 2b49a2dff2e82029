"""A voice worker process that dies costs only its clips: the batch's clips are tried again one at a time, and a
clip whose worker dies again is recorded as an error; the run goes on (before, the whole run failed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from blindcheck.features.voice import voice_unavailable

if voice_unavailable():
    pytest.skip(f"voice modality unavailable: {voice_unavailable()}", allow_module_level=True)
pytest.importorskip("psutil")

from tests.procs import spawned_workers, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_a_dying_voice_worker_costs_only_its_clip(tmp_path, fsdd_meta):
    sel = fsdd_meta.iloc[::50].head(4)
    pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": [0, 1] * 2}).to_csv(tmp_path / "m.csv",
                                                                                       index=False)
    script = textwrap.dedent(f"""
        import json, sys; sys.path.insert(0, {str(ROOT)!r})
        from blindcheck.extraction.pipeline import extract_features
        from blindcheck.inputs.manifest import load_manifest
        if __name__ == "__main__":
            res = extract_features(load_manifest({str(tmp_path / 'm.csv')!r}), {str(tmp_path / 'cache')!r},
                                   modalities=["voice"], workers=1)
            print(json.dumps({{"voice": res.stats["voice"], "errors": res.errors.to_dict("records"),
                              "ids": list(res.features["id"])}}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = wait_for(lambda: spawned_workers(proc.pid), "a voice worker", proc)[0]
    first.kill()  # the batch in its hands is lost: its clips are tried again, one at a time
    second = wait_for(lambda: [w for w in spawned_workers(proc.pid) if w.pid != first.pid], "a fresh worker", proc)[0]
    second.kill()  # and the clip it was given alone dies too: that clip is an error, the others go on
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    res = json.loads(out.strip().splitlines()[-1])
    assert len(res["errors"]) == 1 and res["errors"][0]["stage"] == "voice", res["errors"]
    assert "worker process died while embedding" in res["errors"][0]["message"]
    assert res["voice"]["embedded"] == 3 and res["voice"]["failed"] == 1
    assert sorted(res["ids"]) == sorted(set(sel["id"]) - {res["errors"][0]["id"]})
