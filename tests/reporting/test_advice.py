"""The report's advice on real speech: on a split where a matched subset exists, the command it prints succeeds
when run; on a speaker-disjoint split it proposes no ``match`` (see also test_report's speaker-split fixture)."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pandas as pd
import pytest

from blindcheck.cli import main
from blindcheck.reporting import ReportData
from blindcheck.reporting.sections import build
from tests.conftest import altered_paths


@pytest.fixture(scope="module")
def attenuated(tmp_path_factory, fsdd_meta):
    """Every bundled clip, labels drawn at random, and 30% of the non-members 20 dB quieter: a confound in part of
    one side that matching can trim away. The check runs through the CLI, so the advice carries its real command."""
    d = tmp_path_factory.mktemp("advice")
    rng = np.random.default_rng(7)
    meta = fsdd_meta.reset_index(drop=True)
    labels = np.zeros(len(meta), int)
    labels[rng.permutation(len(meta))[: len(meta) // 2]] = 1
    non = np.nonzero(labels == 0)[0]
    touched = np.zeros(len(meta), bool)
    touched[rng.choice(non, int(round(0.3 * len(non))), replace=False)] = True
    paths = altered_paths(meta, touched, lambda x, sr: x * 0.1, d / "quiet")
    manifest = d / "quiet.csv"
    pd.DataFrame({"id": meta["id"], "path": paths, "label": labels, "speaker": meta["speaker"]}).to_csv(
        manifest, index=False)
    # The re-check of a subset of ~400 clips tolerates AUC 0.65 and aims at 0.60 (as test_match's codec case:
    # equivalence at 0.60 on a subset this size is a coin flip); the settings travel in the config file.
    config = d / "pyproject.toml"
    config.write_text("[tool.blindcheck]\ntolerated-auc = 0.65\nmatch-target-auc = 0.60\n")
    out = d / "out"
    rc = main(["check", str(manifest), "--out", str(out), "--cache-dir", str(d / "cache"), "--workers", "2",
               "--repeats", "1", "--permutations", "199", "--modalities", "recording,spectral", "--config",
               str(config), "--no-progress", "--no-report"])
    assert rc == 0
    return out, d


def test_suggested_match_command_succeeds_when_run(attenuated, capsys):
    out, d = attenuated
    result = json.loads((out / "result.json").read_text())
    assert result["verdict"]["status"] == "confounded", result["verdict"]["reasons"]
    items = result["advice"]
    match_items = [a for a in items if (a.get("command") or {}).get("verb") == "match"]
    assert [a["kind"] for a in items][:1] == ["match"] and len(match_items) == 1, items
    report = build(ReportData.from_dir(out))
    codes = [b.text for b in report.section("next").blocks if b.kind == "code"]
    assert len(codes) == 1 and codes[0].startswith("blindcheck match ")
    argv = shlex.split(codes[0])
    assert argv[argv.index("--out") + 1] == f"{out}/matched"  # inside the result directory, not the working one
    capsys.readouterr()
    rc = main([*argv[1:], "--no-report"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    matched = pd.read_csv(out / "matched" / "matched.csv")
    assert "MATCHED" in printed and len(matched) > 0.5 * len(result["manifest"] and pd.read_csv(d / "quiet.csv"))


def test_no_match_is_advised_where_no_subset_can_exist(attenuated, tmp_path):
    """The same clips split by speaker: the advice says what split to build, and names no `match`."""
    out, d = attenuated
    m = pd.read_csv(d / "quiet.csv")
    m["label"] = m["speaker"].isin(sorted(m["speaker"].unique())[:3]).astype(int)
    m.to_csv(tmp_path / "by_speaker.csv", index=False)
    rc = main(["check", str(tmp_path / "by_speaker.csv"), "--out", str(tmp_path / "o"), "--cache-dir",
               str(d / "cache"), "--workers", "2", "--repeats", "1", "--permutations", "199", "--modalities",
               "recording,spectral", "--no-config", "--no-progress", "--no-report"])
    assert rc == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    kinds = [a["kind"] for a in result["advice"]]
    assert kinds[0] == "build-shared-speaker-split", kinds
    assert all((a.get("command") or {}).get("verb") != "match" for a in result["advice"])
    text = " ".join(b.text for b in build(ReportData.from_dir(tmp_path / "o")).section("next").blocks
                    if hasattr(b, "text"))
    assert "blindcheck match" not in text and "same speakers" in text
