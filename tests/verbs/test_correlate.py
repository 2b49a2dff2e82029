"""Attack scores against the blind baseline on real speech: constructed attacks whose relation to the blind
score is known, the statuses, the CLI verbs (correlate, di, check, gate) and bad scores files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from blindcheck.analysis import stats
from blindcheck.analysis.attacks import attack_status, correlate_attacks, correlations
from blindcheck.analysis.separability import feature_columns
from blindcheck.cli import main
from blindcheck.errors import BlindcheckError
from blindcheck.settings import Settings
from blindcheck.verbs import check, correlate_check

MODS = ["recording", "spectral"]


@pytest.fixture(scope="module")
def split(tmp_path_factory, fsdd_meta, shared_cache):
    """120 clips (20 per speaker), members drawn with probability 0.75 for three speakers and 0.25 for the
    other three: a partly confounded split. Features extracted once; one blind check."""
    d = tmp_path_factory.mktemp("corr")
    sel = fsdd_meta.groupby("speaker").sample(20, random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(0)
    first = sel["speaker"].isin(sorted(sel["speaker"].unique())[:3]).to_numpy()
    label = (rng.random(len(sel)) < np.where(first, 0.75, 0.25)).astype(int)
    m = pd.DataFrame({"id": sel["id"], "path": sel["abspath"], "label": label, "speaker": sel["speaker"]})
    m.to_csv(d / "m.csv", index=False)
    res = check(d / "m.csv", None, cache_dir=shared_cache, modalities=MODS, workers=2, settings=Settings(repeats=1))
    sep = res.separability
    assert sep.best.ci_low > 0.55  # the blind classifier sees the speaker share: a confound to attack
    feats = res.extraction.features.set_index("id").loc[sep.ids]
    X = feats[feature_columns(res.extraction.features)].to_numpy(float)
    return {"dir": d, "manifest": m, "result": res, "X": X, "y": sep.labels, "blind": sep.best.scores,
            "ids": sep.ids, "cache": shared_cache}


def _z(x):
    return (x - x.mean()) / x.std()


def _run(split, attacks, **kw):
    res = split["result"]
    return correlate_attacks(attacks, split["y"], split["blind"], split["X"], res.settings, ids=split["ids"],
                             split_status=res.verdict.status, **kw)


def test_constructed_attacks_get_their_statuses(split):
    y, z = split["y"], _z(split["blind"])
    rng = np.random.default_rng(1)
    n = len(y)
    # The split is confounded (blind AUC ~0.75 with the 272 acoustic features), so a genuine attack must beat the
    # blind baseline significantly to be called beyond-blind: at 1.2 SD of membership signal (AUC ~0.83, paired
    # DeLong p ~0.07) the status is rightly confounded-attack; at 1.6 SD (AUC ~0.90) it is beyond-blind.
    attacks = {
        "mia_confound": z + 0.3 * rng.standard_normal(n),  # the blind score, a little noise
        "mia_noise": rng.standard_normal(n),  # independent of the audio and of membership
        "mia_genuine": 1.6 * y + rng.standard_normal(n),  # membership the audio does not show
        "mia_inverted": -1.6 * y + rng.standard_normal(n),  # the same, wrong direction
        "mia_mixture": 0.5 * z + 1.6 * y + rng.standard_normal(n),  # part confound, part genuine
    }
    corr = _run(split, attacks)
    got = {a.name: a for a in corr.attacks}
    assert got["mia_confound"].status == "confounded-attack"
    assert got["mia_noise"].status == "no-signal"
    assert got["mia_genuine"].status == "beyond-blind"
    assert got["mia_inverted"].status == "inverted-direction" and "inverted" in got["mia_inverted"].reasons[0]
    m = {k: a.metrics for k, a in got.items()}
    # a pure confound keeps no signal once the blind part is removed; a genuine one keeps it
    assert m["mia_confound"]["residual_ci_low"] < 0.5 < m["mia_confound"]["residual_ci_high"]
    assert m["mia_genuine"]["residual_ci_low"] > 0.5 and m["mia_mixture"]["residual_ci_low"] > 0.5
    assert m["mia_genuine"]["stratified_ci_low"] > 0.5
    assert m["mia_confound"]["spearman"] > 0.9 and abs(m["mia_noise"]["spearman"]) < 0.25
    assert 0.3 < m["mia_mixture"]["spearman"] < m["mia_confound"]["spearman"]
    # the blind score of the same clips, the paired test: the genuine attack beats the blind baseline
    assert m["mia_genuine"]["blind_auc"] == pytest.approx(split["result"].separability.best.auc)
    assert m["mia_genuine"]["delong_p"] < 0.05 and m["mia_confound"]["delong_p"] > 0.05
    d = got["mia_genuine"].to_dict()
    assert {"name", "direction", "n", "auc", "ci_low", "ci_high", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "blind_auc",
            "delong_p", "spearman", "spearman_ci_low", "pearson", "pearson_ci_high", "residual_auc", "residual_ci_low",
            "stratified_auc", "stratified_ci_high", "status", "reasons"} <= set(d)
    frame = corr.frame()
    assert list(frame.columns[:3]) == ["id", "label", "blind_score"] and "mia_genuine.residual" in frame.columns
    assert np.allclose(frame["mia_genuine"], attacks["mia_genuine"])


def test_rho_is_recovered_within_its_interval(split):
    """Blind score + noise at a chosen Pearson correlation: the bootstrap interval covers it at about its level,
    and |rho| >= 0.7 makes the attack confounded."""
    y, blind = split["y"], split["blind"]
    z = _z(blind)
    rng = np.random.default_rng(2)
    for rho in (0.3, 0.8):
        covered = 0
        for _ in range(30):
            s = z * rho + np.sqrt(1 - rho ** 2) * rng.standard_normal(len(y))
            _, _, _, pe, lo, hi = correlations(s, blind, y, 500, 0.95, rng)
            covered += lo <= rho <= hi
        # nominal 95%: P(fewer than 25 of 30) < 0.02 for a calibrated interval
        assert covered >= 25, (rho, covered)
    s = 0.95 * z + np.sqrt(1 - 0.95 ** 2) * rng.standard_normal(len(y))
    a = _run(split, {"mia_rho95": s}).attacks[0]
    assert a.metrics["pearson_ci_low"] <= 0.95 <= a.metrics["pearson_ci_high"]
    assert a.status == "confounded-attack" and "rho" in a.reasons[0]


def test_status_rules_are_a_pure_function_of_the_numbers():
    s = Settings()
    base = {"auc": 0.8, "ci_low": 0.7, "ci_high": 0.9, "p_auc": 1e-5, "p_below_chance": 1.0, "spearman": 0.2,
            "spearman_ci_low": 0.1, "spearman_ci_high": 0.3, "blind_auc": 0.6, "delong_p": 0.01,
            "residual_auc": 0.75, "residual_ci_low": 0.65, "residual_ci_high": 0.85, "residual_p": 1e-4,
            "stratified_auc": 0.74, "stratified_ci_low": 0.64, "stratified_ci_high": 0.84, "stratified_p": 1e-4,
            "strata_used": 5}
    assert attack_status(base, "clean", s)[0] == "beyond-blind"
    # the residual evidence decides (issue 27, item 9): |rho| >= attack_rho and a confounded split are reasons, not
    # the status; without residual signal, an attack that follows the audio within each class is confounded
    status, reasons = attack_status({**base, "spearman": -0.72}, "clean", s)
    assert status == "beyond-blind" and any("|rho| >= 0.7" in r for r in reasons)
    assert not any("|rho|" in r for r in attack_status({**base, "spearman": 0.72}, "clean",
                                                        s.replace(attack_rho=0.8))[1])
    assert attack_status({**base, "delong_p": 0.2}, "confounded", s)[0] == "beyond-blind"
    assert attack_status({**base, "delong_p": 0.2}, "clean", s)[0] == "beyond-blind"
    follows = {**base, "residual_p": 0.3, "within_class_rho": 0.6, "within_class_p": 1e-4}
    assert attack_status(follows, "clean", s)[0] == "confounded-attack"
    assert attack_status({**base, "p_auc": 0.2}, "confounded", s)[0] == "no-signal"
    assert attack_status({**base, "p_auc": 0.99, "p_below_chance": 0.001}, "clean", s)[0] == "inverted-direction"
    assert attack_status({**base, "residual_p": 0.3}, "clean", s)[0] == "unresolved"
    assert attack_status({**base, "stratified_p": float("nan")}, "clean", s)[0] == "beyond-blind"


def test_paired_delong_is_calibrated():
    """Two scores with equal true AUC sharing a component: the paired SE matches the spread of the AUC
    difference over simulations, and p < 0.05 happens at about 5%."""
    rng = np.random.default_rng(3)
    diffs, ses, ps = [], [], []
    for _ in range(400):
        y = np.r_[np.ones(80), np.zeros(80)].astype(int)
        common = rng.standard_normal(160)
        s1 = 0.8 * y + common + 0.7 * rng.standard_normal(160)
        s2 = 0.8 * y + common + 0.7 * rng.standard_normal(160)
        a1, a2, se, p = stats.delong_paired(y, s1, s2)
        diffs.append(a1 - a2)
        ses.append(se)
        ps.append(p)
    assert np.mean(ses) == pytest.approx(np.std(diffs), rel=0.15)
    assert 0.02 < np.mean(np.array(ps) < 0.05) < 0.09


def test_missing_and_nonfinite_scores_are_counted_per_attack(split):
    res = split["result"]
    ids = split["ids"]
    rng = np.random.default_rng(4)
    a = 1.2 * split["y"] + rng.standard_normal(len(ids))
    a[5:8] = np.nan
    a[8] = np.inf
    scores = pd.DataFrame({"id": ids[5:], "mia_a": a[5:], "mia_b": rng.standard_normal(len(ids) - 5)})
    scores = pd.concat([scores, pd.DataFrame({"id": ["ghost_1"], "mia_a": [0.1], "mia_b": [0.2]})])
    corr = correlate_check(res, scores)
    msg = corr.mismatch.message()
    assert "1 ids in the scores have no analysed clip (e.g. ghost_1)" in msg and "5 analysed clips have no score" in msg
    ma, mb = (x.metrics for x in corr.attacks)
    assert (ma["n_missing"], ma["n_nonfinite"], ma["n"]) == (8, 1, len(ids) - 9)
    assert (mb["n_missing"], mb["n_nonfinite"], mb["n"]) == (5, 0, len(ids) - 5)
    assert any("left out of this attack" in r for r in corr.attacks[0].reasons)
    with pytest.raises(BlindcheckError, match="no id of the scores file matches"):
        correlate_check(res, pd.DataFrame({"id": ["x", "y"], "mia_a": [1.0, 2.0]}))
    with pytest.raises(BlindcheckError, match="lower-is-member names unknown attack 'mia_z'"):
        correlate_check(res, scores, lower_is_member=["mia_z"])


def _cli(capsys, *args) -> tuple[int, str, str]:
    """``blindcheck`` (the CLI's ``main``) in this process: exit code, stdout, stderr."""
    rc = main([str(a) for a in args])
    got = capsys.readouterr()
    return rc, got.out, got.err


def test_cli_correlate_gate_and_di(split, monkeypatch, capsys):
    d, m = split["dir"], split["manifest"]
    monkeypatch.chdir(d)
    rng = np.random.default_rng(5)
    y = m["label"].to_numpy()
    loss = -(2.0 * y + rng.standard_normal(len(y)))  # lower = member
    pd.DataFrame({"id": m["id"], "mia_loss": loss}).to_csv(d / "scores.csv", index=False)
    common = ["--cache-dir", split["cache"], "--workers", "1", "--repeats", "1", "--no-config",
              "--modalities", ",".join(MODS), "--no-progress"]
    out = d / "out"
    rc, stdout, err = _cli(capsys, "correlate", d / "m.csv", "--scores", d / "scores.csv", "--lower-is-member",
                           "mia_loss", "--out", out, *common)
    assert rc == 0, err
    assert "mia_loss" in stdout and "beyond-blind" in stdout
    res = json.loads((out / "result.json").read_text())
    assert res["schema"] == "blindcheck.result/1" and res["seed"] == 0
    (att,) = res["attacks"]
    assert att["name"] == "mia_loss" and att["direction"] == "lower-is-member" and att["auc"] > 0.7
    assert att["status"] == "beyond-blind" and res["attack_blind_model"] == res["verdict"]["best_model"]
    pq = pd.read_parquet(out / "attacks.parquet")
    assert len(pq) == len(m) and {"id", "label", "blind_score", "mia_loss", "mia_loss.residual"} <= set(pq.columns)
    assert np.allclose(pq.set_index("id").loc[m["id"], "mia_loss"], loss)

    # gate: an mia_* column that follows the blind score is a confounded attack: exit 1, named
    blind = pd.read_parquet(out / "blind_scores.parquet").set_index("id")["blind_score"]
    gm = m.assign(mia_confound=_z(blind.loc[m["id"]].to_numpy()) + 0.3 * rng.standard_normal(len(m)))
    gm.to_csv(d / "gm.csv", index=False)
    # a tolerated AUC of 0.95 keeps the split itself from "confounded": exit 1 comes from the attack alone
    rc, stdout, err = _cli(capsys, "gate", d / "gm.csv", *common[:-1], "--tolerated-auc", "0.95")
    assert rc == 1, stdout + err
    line = json.loads(stdout)
    assert line["confounded_attacks"] == ["mia_confound"] and line["verdict"] != "confounded"


def test_python_api_dataset_inference(split):
    import blindcheck
    import blindcheck.verbs  # noqa: F401 - importing the verbs leaves blindcheck.correlate the API function

    d, m = split["dir"], split["manifest"]
    rng = np.random.default_rng(6)
    y = m["label"].to_numpy()
    scores = pd.DataFrame({"id": m["id"], "mia_loss": -(2.0 * y + rng.standard_normal(len(y)))})
    di = blindcheck.dataset_inference(d / "m.csv", scores, d / "di", lower_is_member=["mia_loss"],
                                      cache_dir=split["cache"], modalities=MODS, workers=1, repeats=1,
                                      settings=Settings(di_resamples=100, di_grid=15))
    res = json.loads((d / "di" / "result.json").read_text())
    assert res["schema"] == "blindcheck.result/1" and res["di"]["seed"] == 0
    a, b = res["di"]["attack"], res["di"]["blind"]
    assert a["name"] == "mia_loss" and a["rejects"] and a["n_min"] == di.attack.n_min is not None
    assert b["name"] == "blind" and b["rejects"]  # the blind score separates this partly confounded split too
    assert res["di"]["explainable_without_model"] == (b["n_min"] is not None and (a["n_min"] is None
                                                                                    or b["n_min"] <= a["n_min"]))
    corr = blindcheck.correlate(d / "m.csv", scores, lower_is_member=["mia_loss"], cache_dir=split["cache"],
                                modalities=MODS, workers=1, settings=Settings(repeats=1))
    assert corr.attacks[0].status == "beyond-blind", corr.attacks[0].reasons
    assert corr.check.verdict.status == split["result"].verdict.status


def test_di_verb_with_group_by_tests_whole_speakers(split, tmp_path):
    """``di`` with the check's group_by: the blind check's folds and every step of DI take whole speakers, and
    result.json says so (6 speakers, each with clips on both sides)."""
    from blindcheck.verbs import dataset_inference_manifest

    d, m = split["dir"], split["manifest"]
    rng = np.random.default_rng(7)
    y = m["label"].to_numpy()
    scores = pd.DataFrame({"id": m["id"], "mia_loss": -(2.0 * y + rng.standard_normal(len(y)))})
    run = dataset_inference_manifest(d / "m.csv", scores, tmp_path / "di", lower_is_member=["mia_loss"],
                                     cache_dir=split["cache"], modalities=MODS, workers=1,
                                     settings=Settings(repeats=1, group_by="speaker", di_resamples=50, di_grid=8))
    res = json.loads((tmp_path / "di" / "result.json").read_text())
    assert res["cv"]["group_by"] == "speaker" and run.check.separability.group_by == "speaker"
    di = res["di"]
    assert di["group_by"] == "speaker" and di["n_groups"] == {"suspect": 6, "reference": 6, "both_sides": 6}
    assert "on group means" in di["test"]
    a, b = di["attack"], di["blind"]
    assert a["rejects"] and a["n_groups_suspect"] == a["n_groups_reference"] == 6 and a["df"] <= 10
    assert [c["groups"] for c in a["curve"]] == [c["groups"] for c in b["curve"]] == list(range(2, 7))
    assert "grouped by speaker" in " ".join(di["reasons"])


BAD = [
    ("id,mia_a\n{i0},1\n{i0},2\n{i1},3\n", "duplicate id '{i0}'"),
    ("id,mia_a\n{i0},0.5\n{i1},high\n{i2},0.1\n", "id '{i1}': score column 'mia_a' holds 'high', not a number"),
    ("id,mia_a\n{i0},3\n{i1},3\n{i2},3\n", "score column 'mia_a' gives every clip the same score (3)"),
    ("id,mia_a\nnobody,0.3\nnoone,0.4\n", "no id of the scores file is in the manifest"),
    ("clip,mia_a\n{i0},0.3\n", "a scores file needs an 'id' column"),
]


@pytest.mark.parametrize("verb, case", [("correlate", 0), ("di", 1), ("check", 2)])
def test_bad_scores_files_exit_2_before_any_work(split, tmp_path, monkeypatch, capsys, verb, case):
    ids = split["manifest"]["id"]
    fmt = {"i0": ids[0], "i1": ids[1], "i2": ids[2]}
    content, message = BAD[case]
    f = tmp_path / "s.csv"
    f.write_text(content.format(**fmt))
    monkeypatch.chdir(tmp_path)
    rc, _, err = _cli(capsys, verb, split["dir"] / "m.csv", "--scores", f, "--out", tmp_path / "o", "--cache-dir",
                      tmp_path / "empty_cache", "--modalities", "recording", "--no-config")
    assert rc == 2 and message.format(**fmt) in err and "Traceback" not in err, err
    assert not (tmp_path / "empty_cache").exists()  # refused before extracting anything


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_scores_files_messages(split, tmp_path, case):
    from blindcheck.inputs.scores import check_scores_ids, read_scores

    ids = split["manifest"]["id"]
    fmt = {"i0": ids[0], "i1": ids[1], "i2": ids[2]}
    content, message = BAD[case]
    f = tmp_path / "s.csv"
    f.write_text(content.format(**fmt))
    with pytest.raises(BlindcheckError) as err:
        check_scores_ids(ids, read_scores(f))
    assert message.format(**fmt) in str(err.value)
