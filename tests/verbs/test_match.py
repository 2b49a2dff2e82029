"""Matched subsets on real speech: a partial codec shift, disjoint speakers, a speaker mix, disentanglement."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from blindcheck import check, match
from blindcheck.analysis.matching import MatchOptions, balance_table, greedy_pairs, optimal_pairs, smd
from blindcheck.cli import main
from blindcheck.errors import BlindcheckError
from blindcheck.inputs.manifest import load_manifest
from blindcheck.verbs import match_from_check, write_match
from tests.conftest import altered_paths

# One CV repeat (for the checks and every fresh re-check): measured against two on the codec, disentangle and
# speaker-mix designs below, the outcomes each test allows were the same (codec: a clean subset keeping no touched
# clip, fresh AUC 0.568 against 0.569; disentangle: 102/134 clips kept against 96/142; mix: refused, fresh AUCs
# 0.60-0.69), at half the time.
FAST = {"workers": 2, "repeats": 1, "permutations": 199, "modalities": ["recording", "spectral", "prosodic"]}
CLI_FAST = ["--workers", str(FAST["workers"]), "--repeats", str(FAST["repeats"]), "--permutations",
            str(FAST["permutations"]), "--modalities", ",".join(FAST["modalities"])]


@pytest.fixture(scope="module")
def base(tmp_path_factory, fsdd_meta, shared_cache):
    """240 clips (6 speakers x 10 digits x takes 0-3) and the session's feature cache, shared by every scenario."""
    d = tmp_path_factory.mktemp("match")
    return fsdd_meta[fsdd_meta["take"] < 4].reset_index(drop=True), d, shared_cache


def _cli(capsys, *args) -> tuple[int, str, str]:
    """``blindcheck`` (the CLI's ``main``) in this process: exit code, stdout, stderr."""
    rc = main([str(a) for a in args])
    got = capsys.readouterr()
    return rc, got.out, got.err


def _manifest(path, base, labels, paths=None, **extra):
    df = pd.DataFrame({"id": base["id"], "path": paths if paths is not None else base["abspath"], "label": labels,
                       "speaker": base["speaker"], "text": base["text"], **extra})
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def codec(base):
    """30% of the non-members passed through a low-bitrate MP3 codec (constant bit rate, lowest quality)."""
    meta, d, cache = base
    rng = np.random.default_rng(11)
    labels = np.zeros(len(meta), int)
    labels[rng.permutation(len(meta))[: len(meta) // 2]] = 1
    non = np.nonzero(labels == 0)[0]
    touched = np.zeros(len(meta), bool)
    touched[rng.choice(non, int(round(0.3 * len(non))), replace=False)] = True

    def mp3(x, sr):
        sf.write(d / "codec.mp3", x, sr, format="MP3", compression_level=0.99, bitrate_mode="CONSTANT")
        return sf.read(d / "codec.mp3", dtype="float32")[0]

    paths = altered_paths(meta, touched, mp3, d / "codec")
    m = _manifest(d / "codec.csv", meta, labels, paths, note=["x"] * len(meta))
    result = check(m, None, cache_dir=cache, **FAST)
    # A subset of ~160-200 clips cannot show equivalence at AUC 0.60 reliably: every model's upper bound below 0.60
    # needs the best of seven fresh AUCs below ~0.54, which a null subset of this size reaches about half the time
    # (any change to the features or seeds flipped which method passed). The claim here is that the codec is
    # matched away, so the re-check tolerates 0.65 and aims at 0.60; the split itself is judged at the defaults.
    # Likewise the isolated share: at ~80 clips a side its upper bound cannot fall below 10% even on a null subset
    # (the threshold must sit at the other side's 4th highest clip to stay below the population 1%-FPR point: a
    # null subset reads ~11%; README, the isolated share's bounds), so the re-check tolerates 15%.
    relaxed = dataclasses.replace(result, settings=result.settings.replace(
        tolerated_auc=0.65, match_target_auc=0.60, tolerated_share=0.15))
    res = match_from_check(relaxed)
    write_match(res, result.manifest, d / "codec_out")
    return res, result, meta, labels, touched, d


def test_partial_codec_shift_is_matched_away_and_rechecks_clean(codec):
    res, result, meta, labels, touched, d = codec
    assert res.before["status"] == "confounded"
    part = res.part("matched")
    assert part.success, part.reasons
    a = part.chosen
    assert a.verdict.status == "clean" and a.fresh.best.auc <= 0.60
    assert a.fresh.seed != res.settings.seed  # a fresh cross-validation, not the selection's own
    pos = pd.Index(meta["id"]).get_indexer(res.ids)
    t, y = touched[pos], labels[pos]
    # the touched clips go, the untouched ones stay. Each re-check pays for the three methods the search may try
    # (alpha/3): here the paired subsets (which keep no touched clip) then re-check inconclusive (upper bounds
    # 0.67-0.68 against the tolerated 0.65) and trimming is accepted; it keeps clips by their score, so a touched
    # clip the blind model ranked among the untouched stays (1 of 36 here)
    assert (a.keep & t).sum() <= (2 if a.method == "trim" else 0), (a.method, (a.keep & t).sum())
    assert (a.keep & ~t & (y == 0)).sum() >= 0.7 * (~t & (y == 0)).sum()
    # the features the codec moved most (touched vs untouched non-members) were far off before; after, what is
    # left is the sampling noise of an SMD at ~80 clips a side (SE ~0.16; keeping exactly the untouched clips
    # leaves the same noise), so the bound is 0.25 per feature and 0.15 on average over the five
    f = result.extraction.features.set_index("id").loc[meta["id"]]
    cols = [c for c in f.columns if "." in c]
    non = labels == 0
    moved = {c: abs(smd(f[c].to_numpy(float)[touched], f[c].to_numpy(float)[non & ~touched])) for c in cols}
    off = sorted((c for c in cols if np.isfinite(moved[c])), key=lambda c: -moved[c])[:5]
    feats = a.balance.set_index("feature").loc[off]
    assert (feats["smd_before"].abs() > 0.7).all(), feats
    assert (feats["smd_after"].abs() < 0.25).all() and feats["smd_after"].abs().mean() < 0.15, feats
    # outputs: every input column plus match_id; the manifest loads as it is
    out = d / "codec_out"
    rows = pd.read_csv(out / "matched.csv")
    assert list(rows.columns) == ["id", "path", "label", "speaker", "text", "note", "match_id"]
    assert len(rows) == int(a.keep.sum())
    if a.method in ("optimal", "propensity"):  # pairs; trimming keeps clips without pairing them
        assert rows["match_id"].value_counts().max() == 2
        assert (rows.groupby("match_id")["label"].nunique() == 2).all()
    else:
        assert rows["match_id"].isna().all()
    assert load_manifest(out / "matched.csv").table["id"].tolist() == rows["id"].astype(str).tolist()
    j = json.loads((out / "match.json").read_text())
    r = j["parts"][0]["result"]
    assert j["status"] == "matched" and r["fresh_check"]["status"] == "clean"
    assert r["selection_estimate"]["auc"] is not None and {"all", "recording", "spectral"} <= set(r["balance_summary"])
    assert j["parts"][0]["balance"][0].keys() >= {"feature", "smd_before", "smd_after", "variance_ratio_after"}
    dropped = pd.read_csv(out / "dropped.csv")
    assert len(dropped) == len(meta) - len(rows) and dropped["reason"].str.len().min() > 0


@pytest.fixture(scope="module")
def disjoint(base):
    """Different speakers (each with their own recording set-up) on the two sides."""
    meta, d, cache = base
    labels = meta["speaker"].isin(["george", "jackson", "lucas"]).astype(int).to_numpy()
    m = _manifest(d / "disjoint.csv", meta, labels)
    return check(m, None, cache_dir=cache, **FAST), d, cache


def test_disjoint_speakers_are_refused_with_the_reason(disjoint, capsys):
    result, d, cache = disjoint
    res = match_from_check(result)
    part = res.part("matched")
    assert not part.success and part.chosen is None
    assert part.reasons[0].startswith("no method found a subset")
    assert any("keeps" in r or "fresh check" in r or "share no region" in r for r in part.reasons), part.reasons
    paths = write_match(res, result.manifest, d / "disjoint_out")
    assert "matched" not in paths and not (d / "disjoint_out" / "matched.csv").exists()
    assert json.loads((d / "disjoint_out" / "match.json").read_text())["status"] == "failed"
    # exactly within speaker: nothing to match
    res = match_from_check(result, MatchOptions(exact=("speaker",)))
    assert not res.success
    assert any("no value of speaker holds both members and non-members" in r for r in res.parts[0].reasons)
    # the CLI verb: exit 1 and the reason, no matched manifest
    out = d / "disjoint_cli"
    rc, stdout, err = _cli(capsys, "match", d / "disjoint.csv", "--out", out, "--cache-dir", cache, *CLI_FAST,
                           "--no-config", "--exact", "speaker")
    assert rc == 1, err
    assert "NO SUBSET" in stdout and "no value of speaker holds both members and non-members" in stdout
    assert not (out / "matched.csv").exists() and (out / "match.json").exists() and (out / "result.json").exists()
    # and no speaker repeats across the sides: the disentanglement design says so
    res = match_from_check(result, MatchOptions(design="disentangle"))
    same_speaker = res.part("same_speaker_other_text")
    assert not same_speaker.success and "no speaker occurs on both sides" in same_speaker.reasons[0]


def test_cli_and_python_api_write_the_same_result_directory(disjoint, capsys):
    """`blindcheck match` and `blindcheck.match()` are one assembly: the same check, the same match, the same files
    (result.json with its match section, match.json, dropped.csv), apart from timings and the recorded command."""
    result, d, cache = disjoint
    m = d / "disjoint.csv"
    api_out, cli_out = d / "api_match", d / "cli_match"
    res = match(m, api_out, cache_dir=cache, **FAST)
    rc, _, err = _cli(capsys, "match", m, "--out", cli_out, "--cache-dir", cache, *CLI_FAST, "--no-config",
                      "--no-report")
    assert rc == (0 if res.success else 1), err
    assert {p.name for p in api_out.iterdir()} - {"cache"} == {p.name for p in cli_out.iterdir()} - {"cache"}

    def plain(path):
        j = json.loads(path.read_text())
        for k in ("created", "command", "seconds"):
            j.pop(k, None)
        return j

    a, c = plain(api_out / "result.json"), plain(cli_out / "result.json")
    assert a["match"] == c["match"] and a["match"]["status"] == res.status
    # the level every fresh re-check ran at: alpha over the three methods the default search may try
    recheck = a["match"]["parts"][0]["recheck"]
    assert recheck["alpha"] == pytest.approx(0.05 / 3) and recheck["tries"] == 3 and recheck["run_alpha"] == 0.05
    assert json.loads((api_out / "match.json").read_text())["parts"][0]["recheck"] == recheck
    assert a["verdict"] == c["verdict"] and a["models"] == c["models"]
    ja, jc = (json.loads((o / "match.json").read_text()) for o in (api_out, cli_out))
    assert ja["status"] == jc["status"] and [p["name"] for p in ja["parts"]] == [p["name"] for p in jc["parts"]]
    assert [p["reasons"] for p in ja["parts"]] == [p["reasons"] for p in jc["parts"]]
    assert pd.read_csv(api_out / "dropped.csv").equals(pd.read_csv(cli_out / "dropped.csv"))


def test_speaker_mix_keeps_half_and_rechecks_clean_cli(base, capsys):
    """The same speakers on both sides, 70:30 in one half of them and 30:70 in the other."""
    meta, d, cache = base
    rng = np.random.default_rng(5)
    labels = np.zeros(len(meta), int)
    for spk, g in meta.groupby("speaker"):
        share = 0.7 if spk in ("george", "jackson", "lucas") else 0.3
        idx = rng.permutation(g.index.to_numpy())
        labels[idx[: int(round(share * len(idx)))]] = 1
    m = _manifest(d / "mix.csv", meta, labels)
    out = d / "mix_out"
    rc, stdout, err = _cli(capsys, "check", m, "--out", out, "--cache-dir", cache, *CLI_FAST, "--no-config",
                           "--match")
    assert rc == 0, err
    res = json.loads((out / "result.json").read_text())
    assert res["verdict"]["status"] != "clean"
    sec = res["match"]
    p = sec["parts"][0]
    # At 240 clips a matched subset of ~180 is often too small for the equivalence verdict to say clean (measured
    # on three draws of this design: one matched, two inconclusive with fresh AUCs 0.51-0.60): match then
    # refuses rather than returning a subset it could not verify. Either way it never passes off a bad subset.
    if sec["status"] == "matched":
        assert p["success"] and p["retained"]["smaller_side_share"] >= 0.5
        assert p["fresh"]["status"] == "clean" and p["fresh"]["auc"] <= 0.55
        rows = pd.read_csv(out / "matched.csv")
        assert len(rows) == p["retained"]["members"] + p["retained"]["nonmembers"]
        assert "matched" in stdout.lower()
    else:
        assert sec["status"] == "failed" and not p["success"] and not (out / "matched.csv").exists()
        assert p["fresh"]["status"] != "clean" or p["fresh"]["auc"] > 0.55, p
        assert any("inconclusive" in x or "above the target" in x for x in p["reasons"]), p["reasons"]
        assert "NO SUBSET" in stdout


def test_disentangle_design_pairs_same_text_other_speaker_and_same_speaker_other_text(codec):
    """On the codec split's check (speakers and digits on both sides), without a second check."""
    res0, result, meta, labels, touched, d = codec
    res = match_from_check(result, MatchOptions(design="disentangle", method="optimal"))
    write_match(res, result.manifest, d / "dis_out")
    assert [p.name for p in res.parts] == ["same_text_other_speaker", "same_speaker_other_text"]
    man = result.manifest.table.set_index("id")
    for part, same, other in ((res.parts[0], "text", "speaker"), (res.parts[1], "speaker", "text")):
        a = part.best
        assert a is not None and a.keep.sum() >= 40, part.reasons
        kept = man.loc[[str(i) for i in res.ids[a.keep]]].assign(match_id=a.match_id[a.keep])
        for _, pair in kept.groupby("match_id"):
            assert sorted(pair["label"]) == [0, 1]
            assert pair[same].nunique() == 1 and pair[other].nunique() == 2
        assert a.verdict is not None and a.balance is not None  # verified and balanced like any subset
        assert (d / "dis_out" / f"{part.name}.csv").exists() == part.success
    j = json.loads((d / "dis_out" / "match.json").read_text())
    assert j["design"] == "disentangle" and len(j["parts"]) == 2
    assert [p["recheck"]["alpha"] for p in j["parts"]] == [0.05, 0.05]  # one method named: one chance each


def test_matchers_on_known_scores():
    rng = np.random.default_rng(0)
    t = np.array([0.0, 1.0, 5.0])
    c = np.array([0.05, 0.9, 1.02, 9.0])
    pairs = greedy_pairs(t, c, caliper=0.2, ratio=1, rng=rng)
    assert sorted(pairs) == [(0, 0), (1, 2)]  # nearest free partner; 5.0 has none within the caliper
    assert len({p[1] for p in pairs}) == len(pairs)  # without replacement
    # 1:2 takes two partners each where they exist
    pairs2 = greedy_pairs(t, c, caliper=0.2, ratio=2, rng=np.random.default_rng(0))
    assert sorted(p[1] for p in pairs2) == [0, 1, 2]
    # deterministic for a seed, on a large problem too
    big_t, big_c = rng.normal(size=2000), rng.normal(0.3, 1, size=3000)
    a = greedy_pairs(big_t, big_c, 0.05, 1, np.random.default_rng(7))
    assert a == greedy_pairs(big_t, big_c, 0.05, 1, np.random.default_rng(7))
    assert all(abs(big_t[i] - big_c[j]) <= 0.05 for i, j in a) and len({j for _, j in a}) == len(a)
    # optimal: the assignment minimises the total feature distance (a greedy pass would take the shared partner)
    tf = np.array([[0.0], [1.0]])
    cf = np.array([[0.6], [-1.0]])
    opt = optimal_pairs(tf, cf, np.zeros(2), np.zeros(2), caliper=1.0, ratio=1)
    assert sorted(opt) == [(0, 1), (1, 0)]
    # pairs outside the score caliper are never formed
    assert optimal_pairs(tf, cf, np.array([0.0, 0.0]), np.array([5.0, 5.0]), caliper=1.0, ratio=1) == []


def test_balance_table_smd_and_variance_ratio():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(500), np.zeros(500)].astype(int)
    X = np.column_stack([np.r_[rng.normal(1, 1, 500), rng.normal(0, 1, 500)], rng.normal(size=1000)])
    keep = np.ones(1000, bool)
    keep[:250] = False  # drop half of the members: the shifted feature stays shifted
    bal = balance_table(X, ["recording.a", "spectral.b"], y, keep).set_index("feature")
    assert abs(bal.loc["recording.a", "smd_before"] - 1.0) < 0.15
    assert abs(bal.loc["spectral.b", "smd_before"]) < 0.15
    assert 0.8 < bal.loc["spectral.b", "variance_ratio_before"] < 1.25
    assert smd(np.array([8000.0] * 5), np.array([44100.0] * 5)) == -np.inf
    # after matching the SMD divides by the SD before matching: a subset that narrows the spread (here the middle
    # of each side) shows its mean difference in the pool's units, not inflated by its own smaller SD
    a = X[:, 0]
    narrow = np.abs(a - np.where(y == 1, 1.0, 0.0)) < 0.3
    bal = balance_table(X, ["recording.a", "spectral.b"], y, narrow).set_index("feature")
    pre = np.sqrt((a[y == 1].var(ddof=1) + a[y == 0].var(ddof=1)) / 2)
    diff = a[narrow & (y == 1)].mean() - a[narrow & (y == 0)].mean()
    assert bal.loc["recording.a", "smd_after"] == pytest.approx(diff / pre)
    assert abs(smd(a[narrow & (y == 1)], a[narrow & (y == 0)])) > 2 * abs(diff / pre)  # the own-SD figure


def test_no_overlap_is_said_in_plain_words():
    from blindcheck.analysis.matching.search import _Data, no_overlap_reasons
    from blindcheck.settings import Settings

    y = np.r_[np.ones(20), np.zeros(20)].astype(int)
    rng = np.random.default_rng(0)
    X = np.column_stack([np.where(y == 1, 8000.0, 44100.0), rng.normal(size=40)])
    feats = pd.DataFrame(X, columns=["recording.sample_rate", "spectral.x"]).assign(id=[str(i) for i in range(40)],
                                                                                    label=y)
    d = _Data(features=feats, meta=feats[["id"]], y=y, score=np.full(40, 0.5), cols=["recording.sample_rate",
              "spectral.x"], X=X, texts=None, settings=Settings(), threads=1)
    assert no_overlap_reasons(d, np.ones(40, bool)) == [
        "no overlap in recording.sample_rate: every member is 8.00 kHz, every non-member is 44.10 kHz"]


def test_bad_options_are_errors(tmp_path, capsys):
    (tmp_path / "a.wav").write_bytes(b"")
    pd.DataFrame({"path": ["a.wav", "a.wav"], "id": ["a", "b"], "label": [0, 1]}).to_csv(tmp_path / "m.csv",
                                                                                         index=False)
    with pytest.raises(BlindcheckError, match="exact 'gender': the manifest has no such column"):
        match(tmp_path / "m.csv", exact=["gender"])
    # matched rows keep the user's columns as written, with paths made absolute (matched.csv lives elsewhere)
    from blindcheck.verbs import manifest_rows

    raw = pd.DataFrame({"file": ["a.wav", "a.wav"], "uid": ["a", "b"], "split": ["train", "test"], "extra": ["1", ""]})
    raw.to_csv(tmp_path / "raw.csv", index=False)
    rows = manifest_rows(load_manifest(tmp_path / "raw.csv"), ["b"])
    assert rows.to_dict("records") == [{"file": str((tmp_path / "a.wav").resolve()), "uid": "b", "split": "test",
                                        "extra": ""}]
    with pytest.raises(BlindcheckError, match="unknown match method"):
        MatchOptions(method="nearest")
    from blindcheck.settings import Settings

    with pytest.raises(BlindcheckError, match="target AUC"):
        Settings(match_target_auc=0.4)
    rc, _, err = _cli(capsys, "match", tmp_path / "none.csv", "--out", tmp_path / "o")
    assert rc == 2 and "manifest not found" in err
