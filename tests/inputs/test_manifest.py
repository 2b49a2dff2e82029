"""Every manifest format, label mapping and validation error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from blindcheck.errors import ManifestError
from blindcheck.inputs.manifest import ManifestOptions, load_manifest


@pytest.fixture
def six(fsdd_meta):
    return fsdd_meta.iloc[[0, 1, 40, 41, 80, 81]].reset_index(drop=True)


def _frame(six, labels):
    return pd.DataFrame({"id": six["id"], "path": six["abspath"], "split": labels, "text": six["text"],
                         "speaker": six["speaker"], "mia_loss": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "take": six["take"]})


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_table_formats(tmp_path, six, ext):
    df = _frame(six, ["member", "non-member"] * 3)
    p = tmp_path / f"m.{ext}"
    if ext == "csv":
        df.to_csv(p, index=False)
    elif ext == "tsv":
        df.to_csv(p, sep="\t", index=False)
    elif ext == "jsonl":
        p.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    else:
        df.to_parquet(p)
    m = load_manifest(p)
    t = m.table
    assert list(t.columns[:5]) == ["id", "path", "label", "text", "speaker"]
    assert t["label"].tolist() == [1, 0, 1, 0, 1, 0]
    assert t["mia_loss"].dtype == float and t["mia_loss"].iloc[2] == pytest.approx(0.3)
    assert "take" in t.columns  # free metadata kept
    assert (m.n_members, m.n_nonmembers) == (3, 3)


def test_relative_paths_resolve_against_manifest_folder(tmp_path, six):
    audio = tmp_path / "audio"
    audio.mkdir()
    for p in six["abspath"]:
        shutil.copy(p, audio)
    sub = tmp_path / "lists"
    sub.mkdir()
    df = pd.DataFrame({"file": ["../audio/" + p.split("/")[-1] for p in six["abspath"]], "label": [1, 0] * 3})
    df.to_csv(sub / "m.csv", index=False)
    t = load_manifest(sub / "m.csv").table
    assert all(p.startswith(str(audio)) for p in t["path"])
    assert t["id"].tolist() == six["id"].tolist()  # ids from file stems when no id column


@pytest.mark.parametrize("values,expected", [
    (["train", "test"], [1, 0]), (["in", "out"], [1, 0]), (["1", "0"], [1, 0]), (["True", "false"], [1, 0]),
    (["Member", "Non-Member"], [1, 0]), (["yes", "no"], [1, 0]),
])
def test_label_values_map(tmp_path, six, values, expected):
    p = tmp_path / "m.csv"
    _frame(six, values * 3).to_csv(p, index=False)
    assert load_manifest(p).table["label"].tolist() == expected * 3


def test_label_column_and_member_value_override(tmp_path, six):
    df = _frame(six, ["a"] * 6)
    df["cohort"] = ["seen", "unseen", "seen", "unseen", "seen", "unseen"]
    p = tmp_path / "m.csv"
    df.to_csv(p, index=False)
    t = load_manifest(p, ManifestOptions(label_column="cohort", member_value="seen")).table
    assert t["label"].tolist() == [1, 0] * 3


def test_missing_file_names_the_row(tmp_path, six):
    df = _frame(six, ["member", "non-member"] * 3)
    df.loc[3, "path"] = str(tmp_path / "gone.wav")
    p = tmp_path / "m.csv"
    df.to_csv(p, index=False)
    with pytest.raises(ManifestError, match=r"row 4 \(id '.*'\): audio file not found: .*gone.wav"):
        load_manifest(p)
    m = load_manifest(p, ManifestOptions(skip_missing=True))
    assert len(m.table) == 5 and m.missing["path"].iloc[0].endswith("gone.wav")


def test_duplicate_ids(tmp_path, six):
    df = _frame(six, ["member", "non-member"] * 3)
    df.loc[4, "id"] = df.loc[1, "id"]
    p = tmp_path / "m.csv"
    df.to_csv(p, index=False)
    with pytest.raises(ManifestError, match=r"duplicate id '.*' in rows 2, 5"):
        load_manifest(p)


def test_unknown_label_value(tmp_path, six):
    p = tmp_path / "m.csv"
    _frame(six, ["member", "non-member", "member", "validation", "member", "non-member"]).to_csv(p, index=False)
    with pytest.raises(ManifestError, match=r"row 4 .*unknown label value 'validation'") as err:
        load_manifest(p)
    # The library names the setting as Python spells it; the command line, as its flag.
    assert "pass member_value" in str(err.value) and "--member-value" not in str(err.value)
    assert "pass --member-value" in err.value.for_cli() and "member_value" not in err.value.for_cli()


def test_one_class_only(tmp_path, six):
    p = tmp_path / "m.csv"
    _frame(six, ["member"] * 6).to_csv(p, index=False)
    with pytest.raises(ManifestError, match="only one class present"):
        load_manifest(p)


def test_no_label_column(tmp_path, six):
    p = tmp_path / "m.csv"
    pd.DataFrame({"path": six["abspath"]}).to_csv(p, index=False)
    with pytest.raises(ManifestError, match="no label column"):
        load_manifest(p)


def test_kaldi_dir_with_segments(tmp_path, six):
    d = tmp_path / "kaldi"
    d.mkdir()
    (d / "wav.scp").write_text("".join(f"rec{i} {p}\n" for i, p in enumerate(six["abspath"])))
    (d / "segments").write_text("".join(f"utt{i} rec{i} 0.0 0.2\n" for i in range(6)))
    (d / "text").write_text("".join(f"utt{i} {w}\n" for i, w in enumerate(six["text"])))
    (d / "utt2spk").write_text("".join(f"utt{i} {s}\n" for i, s in enumerate(six["speaker"])))
    (d / "utt2label").write_text("".join(f"utt{i} {'member' if i % 2 == 0 else 'non-member'}\n" for i in range(6)))
    t = load_manifest(d).table
    assert t["id"].tolist() == [f"utt{i}" for i in range(6)]
    assert t["label"].tolist() == [1, 0] * 3
    assert t["text"].tolist() == six["text"].tolist() and t["speaker"].tolist() == six["speaker"].tolist()
    assert (t["start"] == 0.0).all() and (t["end"] == 0.2).all()


def test_kaldi_dir_without_labels_or_with_pipes(tmp_path, six):
    d = tmp_path / "kaldi"
    d.mkdir()
    (d / "wav.scp").write_text(f"a {six['abspath'][0]}\n")
    with pytest.raises(ManifestError, match="utt2label"):
        load_manifest(d)
    (d / "wav.scp").write_text("a sox x.flac -t wav - |\n")
    with pytest.raises(ManifestError, match="piped command"):
        load_manifest(d)


def test_audiofolder_with_split_dirs(tmp_path, six):
    d = tmp_path / "af"
    for split in ("train", "test"):
        (d / split).mkdir(parents=True)
    rows = []
    for i, p in enumerate(six["abspath"]):
        split = "train" if i % 2 == 0 else "test"
        name = p.split("/")[-1]
        shutil.copy(p, d / split / name)
        rows.append({"file_name": f"{split}/{name}", "transcription": six["text"][i]})
    pd.DataFrame(rows).to_csv(d / "metadata.csv", index=False)
    t = load_manifest(d).table
    assert t["label"].tolist() == [1, 0] * 3
    assert t["text"].tolist() == six["text"].tolist()


def test_cli_reports_manifest_errors_with_exit_2(tmp_path, six):
    p = tmp_path / "m.csv"
    _frame(six, ["member"] * 6).to_csv(p, index=False)
    r = subprocess.run([sys.executable, "-m", "blindcheck", "extract", str(p), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "only one class present" in r.stderr and "Traceback" not in r.stderr
