"""The command line under real use: signals, exit codes, argument checks, summary.txt, one modality rule.

Every test drives the real CLI (a subprocess where signals or process trees matter) on real FSDD clips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blindcheck.cli import main

psutil = pytest.importorskip("psutil")
ROOT = Path(__file__).resolve().parents[1]
HAS_TEXT = importlib.util.find_spec("sentence_transformers") is not None
HAS_ASR = HAS_TEXT and importlib.util.find_spec("faster_whisper") is not None


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blindcheck", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=_env(), timeout=300)


def _manifest(path: Path, meta: pd.DataFrame, n: int, text: bool = False, seed: int = 0) -> Path:
    sel = meta.sample(n, random_state=seed) if n < len(meta) else meta
    df = pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "speaker": sel["speaker"],
                       "label": sel["speaker"].isin(["george", "jackson", "lucas"]).astype(int)})
    if text:
        df["text"] = sel["text"].to_numpy()
    df.to_csv(path, index=False)
    return path


def _start(*args) -> tuple[subprocess.Popen, psutil.Process]:
    p = subprocess.Popen([sys.executable, "-m", "blindcheck", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
    return p, psutil.Process(p.pid)


def _cmdline(proc) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # gone, or a zombie
        return ""


def _interrupt(p: subprocess.Popen, proc, sig: int, twice: bool = False) -> tuple[int, str, float, list]:
    """Send ``sig`` (``twice``: again 0.2 s later, an impatient user); the exit code, stderr, seconds until exit
    and the children still alive 5 s later."""
    kids = proc.children(recursive=True)
    t0 = time.monotonic()
    p.send_signal(sig)
    if twice:
        time.sleep(0.2)
        if p.poll() is None:
            p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    _, alive = psutil.wait_procs(kids, timeout=5)
    return p.returncode, err, took, alive


def test_ctrl_c_at_start_up_and_mid_extraction_then_sigterm_in_check(tmp_path, fsdd_meta):
    """SIGINT during start-up and (twice) during extraction, SIGTERM in check: each stops within seconds with
    130/143, leaves no process behind, says how to resume; the rerun reuses what the interrupted run cached."""
    m = _manifest(tmp_path / "m.csv", fsdd_meta, 240)
    out = tmp_path / "out"
    args = ["extract", m, "--out", out, "--modalities", "recording", "--workers", "2", "--no-progress"]

    p, proc = _start(*args)
    # Start-up: once the CLI runs (it maps numpy while building its parser; before that the interpreter itself
    # is starting, where Python's own Ctrl-C handling applies), 0.5 s into importing its libraries.
    deadline = time.monotonic() + 60
    while not any("numpy" in m.path for m in proc.memory_maps()):
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)
    rc, err, took, alive = _interrupt(p, proc, signal.SIGINT)
    assert rc == 130 and took < 10 and not alive, (rc, took, alive, err)
    assert "interrupted (SIGINT)" in err and "run the same command again" in err and "Traceback" not in err

    # Mid-extraction: a run long enough to be caught in the middle on a quiet machine too (the recording
    # modality alone takes ~1 ms per clip): prosody as well, over every clip four times (distinct ids).
    long = tmp_path / "long.csv"
    pd.DataFrame({"id": [f"{i}_{k}" for k in range(4) for i in fsdd_meta["id"]],
                  "path": list(fsdd_meta["abspath"]) * 4,
                  "label": list(fsdd_meta["speaker"].isin(["george", "jackson"]).astype(int)) * 4}).to_csv(long,
                                                                                                        index=False)
    largs = ["extract", long, "--out", out, "--modalities", "recording,prosodic", "--workers", "2", "--no-progress"]
    p, proc = _start(*largs)
    parts = out / "cache" / "features"
    deadline = time.monotonic() + 120
    while not proc.children(recursive=True):  # the pool's workers run
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
        time.sleep(0.05)
    time.sleep(1.0)
    workers = [c for c in proc.children(recursive=True)]
    rc, err, took, alive = _interrupt(p, proc, signal.SIGINT, twice=True)
    assert f"finished clips are kept in the cache {out / 'cache'}; run the same command again to resume" in err
    assert workers and rc == 130 and took < 10 and not alive, (workers, rc, took, alive, err)
    # What finished before the interruption was written on the way out (one row per distinct file).
    kept = sum(len(pd.read_parquet(f)) for f in parts.glob("recording-*/part-*.parquet"))
    assert 0 < kept < 480, kept

    r = _cli(*largs)
    assert r.returncode == 0, r.stderr
    comp = r.stdout.split("computed/reused from cache: ")[1].splitlines()[0]
    assert comp.startswith(f"recording {480 - kept}/"), comp  # only what was missing is computed

    p, proc = _start("check", m, "--out", out, "--modalities", "recording", "--workers", "2",
                     "--no-progress", "--repeats", "20", "--no-config")
    time.sleep(4.0)
    rc, err, took, alive = _interrupt(p, proc, signal.SIGTERM)
    assert rc == 143 and took < 10 and not alive and "interrupted (SIGTERM)" in err, (rc, took, alive, err)


@pytest.mark.skipif(not HAS_ASR, reason="needs the asr and text extras")
def test_ctrl_c_during_asr_ends_the_spawned_workers(tmp_path, fsdd_meta):
    m = tmp_path / "m.csv"
    _manifest(m, fsdd_meta, 60)
    p, proc = _start("extract", m, "--out", tmp_path / "out", "--modalities", "text", "--transcripts", "asr",
                     "--workers", "2", "--no-progress")
    deadline = time.monotonic() + 120
    while len([c for c in proc.children() if "multiprocessing" in _cmdline(c)]) < 2:
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
        time.sleep(0.05)
    time.sleep(1.0)  # the workers are loading Whisper or transcribing
    rc, err, took, alive = _interrupt(p, proc, signal.SIGINT)
    assert rc == 130 and took < 10 and not alive, (rc, took, alive, err)


def test_out_is_checked_before_any_work(tmp_path, fsdd_meta):
    m = _manifest(tmp_path / "m.csv", fsdd_meta, 12)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    r = _cli("gate", m, "--out", a_file, "--modalities", "recording")
    assert r.returncode == 2 and f"--out {a_file} is a file, not a directory" in r.stderr, r.stderr
    r = _cli("extract", m, "--out", a_file / "sub", "--modalities", "recording")
    assert r.returncode == 2 and f"{a_file} is a file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _cli("check", m, "--out", tmp_path / "o", "--cache-dir", a_file)
    assert r.returncode == 2 and "--cache-dir" in r.stderr
    assert not (tmp_path / "o").exists()  # nothing was extracted or written
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        r = _cli("check", m, "--out", ro, "--modalities", "recording")
        assert r.returncode == 2 and "cannot write there" in r.stderr


def test_unexpected_errors_exit_4_with_the_traceback_kept(tmp_path, fsdd_meta, monkeypatch, capsys):
    """A bug (here: a defect injected into the check) is exit 4 with the traceback in OUT, never 0, 1 or 3."""
    import blindcheck.verbs

    def broken(*args, **kwargs):
        raise ZeroDivisionError("injected defect")

    monkeypatch.setattr(blindcheck.verbs, "check", broken)
    m = _manifest(tmp_path / "m.csv", fsdd_meta, 12)
    for verb in ("check", "gate"):
        out = tmp_path / verb
        assert main([verb, str(m), "--out", str(out), "--no-config"]) == 4
        err = capsys.readouterr().err
        assert "internal error (ZeroDivisionError: injected defect)" in err and "blindcheck-error.log" in err
        log = (out / "blindcheck-error.log").read_text()
        assert "Traceback" in log and "injected defect" in log
    assert main(["gate", str(m), "--no-config"]) == 4  # no OUT: the traceback goes to stderr
    assert "Traceback" in capsys.readouterr().err


def test_arguments_work_or_are_refused_clearly(tmp_path, fsdd_meta, monkeypatch, capsys):
    m = _manifest(tmp_path / "m.csv", fsdd_meta, 12, seed=3)
    table = pd.read_csv(m)
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = ["--cache-dir", str(cache), "--modalities", "recording", "--no-progress", "--workers", "1"]

    def run(*args) -> tuple[int, str, str]:
        rc = main([str(a) for a in args])
        got = capsys.readouterr()
        return rc, got.out, got.err

    with pytest.raises(SystemExit) as exit_:
        main(["extract", str(m), "--out", str(out), "--workers", "0"])
    assert exit_.value.code == 2 and "--workers: must be at least 1, not 0" in capsys.readouterr().err

    rc, _, err = run("extract", m, "--out", out, "--label-column", "speaker", *common)
    counts = table["speaker"].value_counts()
    assert rc == 2 and f"column 'speaker' holds {len(counts)} values" in err, err
    assert all(f"'{s}' ({n})" in err for s, n in counts.items()) and "--member-value" in err
    who = counts.index[0]
    rc, _, err = run("extract", m, "--out", out, "--label-column", "speaker", "--member-value", who, *common)
    assert rc == 0, err
    saved = pd.read_parquet(out / "manifest.parquet").set_index("id")
    truth = table.set_index("id")["speaker"]
    assert (saved["label"] == (truth.loc[saved.index] == who).astype(int)).all()
    assert (saved["speaker"] == truth.loc[saved.index]).all()  # the column keeps its own role too

    table.assign(side=np.where(table["label"] == 1, "a", "b")).to_csv(tmp_path / "two.csv", index=False)
    rc, _, err = run("extract", tmp_path / "two.csv", "--out", out, "--label-column", "side", *common)
    assert rc == 2 and "holds two values" in err and "'a'" in err and "'b'" in err

    rc, stdout, err = run("check", m, "--out", out, "--folds", "50", "--repeats", "1", "--no-config",
                          "--permutations", "199", *common)
    smaller = int(min(table["label"].sum(), (1 - table["label"]).sum()))
    note = f"folds: 50 asked for, {smaller} used (the smaller side has {smaller} clips)"
    assert rc == 0 and (stdout + err).count(note) == 1, (stdout, err)  # said once, in the summary
    assert note in (out / "summary.txt").read_text() and f"{smaller}-fold CV" in stdout

    # An explicit request for text that cannot be met is refused, naming the extra; only auto may skip.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a, **k: None if n.split(".")[0] == "faster_whisper" else real(n, *a, **k))
    rc, _, err = run("extract", m, "--out", out, "--transcripts", "asr", "--cache-dir", cache)
    assert rc == 2 and "pip install 'blindcheck[asr]'" in err, err
    rc, _, err = run("extract", m, "--out", out, "--modalities", "recording,text", "--cache-dir", cache)
    assert rc == 2 and "pip install 'blindcheck[asr]'" in err
    rc, _, err = run("extract", m, "--out", out, "--transcripts", "given", "--cache-dir", cache)
    assert rc == 2 and "no text column" in err
    rc, stdout, err = run("extract", m, "--out", out, "--cache-dir", cache, "--no-progress", "--workers", "1")
    assert rc == 0 and "text modality skipped (transcripts auto)" in err and "blindcheck[asr]" in err, err
    assert "prosodic" in stdout and "text " not in stdout


def test_audiofolder_with_per_split_metadata_summary_and_decode_messages(tmp_path, fsdd_meta):
    """train/metadata.csv + test/metadata.csv loads with the split as the label; a broken file is named with its
    reason (not a buffer's repr); the terminal summary is kept in OUT/summary.txt."""
    root = tmp_path / "hf"
    for split, speaker in (("train", "george"), ("test", "theo")):
        (root / split).mkdir(parents=True)
        sel = fsdd_meta[fsdd_meta["speaker"] == speaker].head(5)
        names = []
        for row in sel.itertuples():
            (root / split / f"{row.id}.wav").symlink_to(row.abspath)
            names.append(f"{row.id}.wav")
        if split == "test":
            (root / split / "broken.wav").write_bytes(np.random.default_rng(0).bytes(3000))
            names.append("broken.wav")
        pd.DataFrame({"file_name": names}).to_csv(root / split / "metadata.csv", index=False)
    out = tmp_path / "out"
    r = _cli("extract", root, "--out", out, "--modalities", "recording", "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "(5 members, 6 non-members)" in r.stdout and "in table        10" in r.stdout
    broken = str((root / "test" / "broken.wav").resolve())
    line = next(x for x in r.stdout.splitlines() if broken in x)
    assert "decode: not a readable audio file" in line and "BytesIO" not in r.stdout, line
    assert (out / "summary.txt").read_text() == r.stdout
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors["path"]) == [broken] and "BytesIO" not in errors["message"].iloc[0]


def test_empty_vocabulary_skips_tfidf_with_a_note(fsdd_meta):
    """Transcripts of single characters (what ASR gives for spoken digits) leave TF-IDF without a term: the
    model is skipped with a note, the others still run."""
    from blindcheck.analysis.separability import run_separability
    from blindcheck.settings import Settings

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 30)
    table = pd.DataFrame({"recording.a": rng.normal(y * 2.0, 1.0), "recording.b": rng.normal(size=60)})
    texts = np.array([str(d) for d in rng.integers(0, 10, 60)])
    res = run_separability(table, y, Settings(repeats=1, permutations=199), texts=texts, threads=1)
    names = {mr.name for mr in res.models}
    assert "tfidf:text" not in names and "logreg:all" in names
    assert res.notes == ["tfidf:text skipped: no transcript holds a word of two or more characters "
                         "(an empty vocabulary)"]
    assert res.best.auc > 0.8  # the acoustic models still see the real shift
    words = np.where(y == 1, "yes indeed", "no never")
    res = run_separability(table, y, Settings(repeats=1, permutations=199), texts=words, threads=1)
    assert res.model("tfidf:text").auc == 1.0 and not res.notes


@pytest.mark.skipif(not HAS_TEXT, reason="needs the text extra")
def test_api_and_cli_choose_the_same_modalities_and_verdict(tmp_path, fsdd_meta, shared_cache, capsys):
    """The CLI's ``main`` (in this process, on the session's feature cache) and the Python API choose the same
    default modalities and reach the same verdict from the same features."""
    import blindcheck

    m = _manifest(tmp_path / "m.csv", fsdd_meta, 24, text=True, seed=5)
    cache = shared_cache
    api = blindcheck.check(m, tmp_path / "api", cache_dir=cache, workers=1, repeats=1, permutations=199)
    rc = main(["check", str(m), "--out", str(tmp_path / "cli"), "--cache-dir", str(cache), "--workers", "1",
               "--repeats", "1", "--permutations", "199", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    cli = json.loads((tmp_path / "cli" / "result.json").read_text())
    from blindcheck.features.voice import voice_unavailable

    voice = ["voice"] if voice_unavailable() is None else []  # the voice extra, where installed, is a default too
    assert api.extraction.modalities == cli["extraction"]["modalities"]
    assert sorted(api.extraction.modalities) == sorted(["content", "recording", "spectral", "prosodic", *voice, "text"])
    assert api.status == cli["verdict"]["status"] and api.verdict.best_model == cli["verdict"]["best_model"]
    assert {mr.name: round(mr.auc, 6) for mr in api.separability.models} == \
        {x["name"]: round(x["auc"], 6) for x in cli["models"]}
    assert "nan s" not in out
    rc = main(["extract", str(m), "--out", str(tmp_path / "t"), "--cache-dir", str(cache), "--modalities", "text",
               "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "nan" not in out and "time " in out, out


def test_refit_repeats_flows_from_the_cli_and_the_api_alike(tmp_path, fsdd_meta, shared_cache, capsys):
    """``--refit-repeats`` (CLI) and ``refit_repeats=`` (API) give the same setting and the same refit p-values;
    ``[tool.blindcheck]`` sets it below the flag; the report lists it only where the refit test ran; -1 is refused
    with exit 2 before any work."""
    import blindcheck
    from blindcheck.reporting import ReportData
    from blindcheck.reporting.sections import _applicable_settings

    m = _manifest(tmp_path / "m.csv", fsdd_meta, 40, seed=2)
    common = ["--cache-dir", str(shared_cache), "--modalities", "recording", "--no-progress", "--workers", "1",
              "--repeats", "2", "--permutations", "199", "--no-config"]
    rc = main(["check", str(m), "--out", str(tmp_path / "cli"), *common, "--refit-permutations", "19",
               "--refit-repeats", "0"])
    _, err = capsys.readouterr()
    assert rc in (0, 1, 3), err
    cli = json.loads((tmp_path / "cli" / "result.json").read_text())
    api = blindcheck.check(m, tmp_path / "api", cache_dir=shared_cache, workers=1, repeats=2, permutations=199,
                           modalities=["recording"], refit_permutations=19, refit_repeats=0)
    assert cli["settings"]["refit_repeats"] == api.settings.refit_repeats == 0
    assert cli["settings"]["refit_permutations"] == api.settings.refit_permutations == 19
    fam = api.separability.family
    assert "refit" in fam.method
    got = cli["family_test"]
    assert (got["p_auc"], got["p_isolation"]) == pytest.approx((fam.p_auc, fam.p_isolation))

    listed = dict(_applicable_settings(ReportData.from_dir(tmp_path / "cli")))
    assert listed["refit_permutations"] == "19" and listed["refit_repeats"] == "0"
    rc = main(["check", str(m), "--out", str(tmp_path / "plain"), *common])
    capsys.readouterr()
    listed = dict(_applicable_settings(ReportData.from_dir(tmp_path / "plain")))
    assert listed["refit_permutations"] == "0" and "refit_repeats" not in listed  # shapes no test that ran

    (tmp_path / "pyproject.toml").write_text("[tool.blindcheck]\nrefit-permutations = 19\nrefit-repeats = 2\n")
    from blindcheck.settings import load_settings

    assert load_settings(pyproject=tmp_path / "pyproject.toml").refit_repeats == 2
    assert load_settings({"refit_repeats": 0}, pyproject=tmp_path / "pyproject.toml").refit_repeats == 0

    r = _cli("gate", tmp_path / "never_read.csv", "--refit-permutations", "19", "--refit-repeats", "-1",
             "--no-config", cwd=tmp_path)
    assert r.returncode == 2 and "refit-repeats must be 0 (every repeat) or positive, not -1" in r.stderr
    assert "Traceback" not in r.stderr and "never_read" not in r.stderr  # refused before the manifest is read
    assert "--refit-repeats" in _cli("match", "--help").stdout
