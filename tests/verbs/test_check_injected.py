"""Differences injected into real speech (whole sides, partial subsets, failures, duration) and the verdict that
must flag them, led by the right modality. Apart from test_check.py so that the two halves run on different
test processes (pytest-xdist --dist loadfile)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from blindcheck import check
from blindcheck.inputs.audio import resample
from tests.conftest import altered_paths


def _inject(kind: str, x: np.ndarray, sr: int, rng: np.random.Generator, tmp) -> np.ndarray:
    if kind == "resampled":
        return resample(resample(x, sr, 4000), 4000, sr)
    if kind == "mp3":
        p = tmp / f"t{rng.integers(1 << 30)}.mp3"
        sf.write(p, x, sr, format="MP3")
        return sf.read(p, dtype="float32")[0]
    if kind == "quieter":
        return x * 10 ** (-6 / 20)
    if kind == "much_quieter":
        return x * 10 ** (-20 / 20)
    if kind == "leading_silence":
        return np.concatenate([np.zeros(int(0.25 * sr), np.float32), x])
    if kind == "noise":
        return x + rng.normal(0, np.sqrt(np.mean(x.astype(np.float64) ** 2) / 1000), len(x)).astype(np.float32)
    raise ValueError(kind)


# Which modality must lead the reasons for each injected difference.
EXPECTED = {
    "resampled": {"recording", "spectral"},
    "mp3": {"recording", "spectral"},
    "quieter": {"recording"},
    "leading_silence": {"recording"},
    "noise": {"recording", "spectral"},
}


@pytest.mark.parametrize("kind", list(EXPECTED) + ["speakers"])
def test_injected_confounds_are_flagged(tmp_path, fsdd_meta, shared_cache, kind):
    base = fsdd_meta[fsdd_meta["take"] < 4].reset_index(drop=True)  # 240 clips, 6 speakers
    rng = np.random.default_rng(11)
    if kind == "speakers":
        labels = base["speaker"].isin(["george", "jackson", "lucas"]).astype(int).to_numpy()
        paths = list(base["abspath"])
    else:
        labels = np.zeros(len(base), int)
        labels[rng.permutation(len(base))[: len(base) // 2]] = 1
        paths = altered_paths(base, labels == 0, lambda x, sr: _inject(kind, x, sr, rng, tmp_path),
                              tmp_path / "audio")
    pd.DataFrame({"id": base["id"], "path": paths, "label": labels, "text": base["text"]}).to_csv(
        tmp_path / "m.csv", index=False)
    # acoustic confounds (same words both sides). One CV repeat: measured on all ten designs of this test and the
    # next, one and two repeats gave the same verdicts, criteria and top modality, best AUCs within 0.03 and
    # isolated shares within 0.08
    result = check(tmp_path / "m.csv", tmp_path / "out", cache_dir=shared_cache, workers=2, repeats=1,
                   modalities=["recording", "spectral", "prosodic"])
    v = result.verdict
    assert v.status == "confounded", v.reasons
    # White noise 30 dB below the speech mostly sits under FSDD's own noise floor: a subtle change.
    assert v.best_auc > (0.75 if kind == "noise" else 0.9)
    if kind in EXPECTED:
        assert v.top_modality in EXPECTED[kind], (v.top_modality, v.reasons)
        assert any(v.top_modality in r for r in v.reasons[1:3])
    assert (tmp_path / "out" / "result.json").exists()


# Partial confounds: (transform, share of the non-members touched, whether the isolated share is estimated
# within +-0.10 of the truth, modalities whose features must explain the isolated clips). MP3 on 8 kHz speech
# and a 20 dB level drop are only partly separable from the untouched clips (the natural spread of levels and
# of codec-like artefacts across speakers overlaps them), so for those only a lower estimate is promised.
# At 120 clips a side the exact lower bound (level 1 - alpha/2/(2m), the estimated threshold included) shows a
# fully separable subset beyond the tolerated 10% only from about 21% of the side up (README, isolated subset):
# resampling touches 30% here (20% was shown only by the old bound, which treated the threshold as fixed).
PARTIAL = [("resampled", 0.3, True, {"recording", "spectral"}), ("leading_silence", 0.3, True, {"recording"}),
           ("much_quieter", 0.5, False, {"recording", "prosodic"}), ("mp3", 0.5, False, {"recording", "spectral"})]


@pytest.mark.parametrize("kind,fraction,estimated,modalities", PARTIAL)
def test_partial_confounds_are_flagged_by_the_isolated_subset(tmp_path, fsdd_meta, shared_cache, kind, fraction,
                                                              estimated, modalities):
    base = fsdd_meta[fsdd_meta["take"] < 4].reset_index(drop=True)  # 240 clips, 6 speakers
    rng = np.random.default_rng(11)
    labels = np.zeros(len(base), int)
    labels[rng.permutation(len(base))[: len(base) // 2]] = 1
    non = np.nonzero(labels == 0)[0]
    touched = np.zeros(len(base), bool)
    touched[rng.choice(non, int(round(fraction * len(non))), replace=False)] = True
    paths = altered_paths(base, touched, lambda x, sr: _inject(kind, x, sr, rng, tmp_path), tmp_path / "audio")
    pd.DataFrame({"id": base["id"], "path": paths, "label": labels}).to_csv(tmp_path / "m.csv", index=False)
    v = check(tmp_path / "m.csv", tmp_path / "out", cache_dir=shared_cache, workers=2, repeats=1,
              modalities=["recording", "spectral", "prosodic"]).verdict  # one repeat: see the test above
    assert v.status == "confounded" and "subset" in v.criteria, v.reasons
    sub = v.subset
    assert sub["side"] == "nonmembers"
    assert sub["share"] <= fraction + 0.1
    if estimated:
        assert abs(sub["share"] - fraction) <= 0.1, sub
    line = next(r for r in v.reasons if r.startswith("a subset of the non-members separates"))
    assert f"{sub['n_isolated']} of {len(non)} non-members" in line
    named = [r for r in v.reasons if r.startswith("the isolated non-members differ in")]
    assert named and all(r.split()[5].split(".")[0] in modalities for r in named[:1]), named


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="needs the text extra")
def test_duration_only_confound_is_not_blamed_on_the_words(tmp_path, fsdd_meta, shared_cache):
    """The same words on both sides, the non-members time-stretched (slower, same pitch): the transcripts carry
    nothing about it, so the text modality must not lead the reasons."""
    import librosa

    base = fsdd_meta[fsdd_meta["take"] < 2].reset_index(drop=True)  # 120 clips, every digit of every speaker
    labels = np.array([0, 1] * 60)
    paths = altered_paths(base, labels == 0, lambda x, sr: librosa.effects.time_stretch(x, rate=0.7),
                          tmp_path / "audio")
    pd.DataFrame({"id": base["id"], "path": paths, "label": labels, "text": base["text"]}).to_csv(
        tmp_path / "m.csv", index=False)
    # one CV repeat: measured against two, the same verdict and top modality (spectral, best AUC 0.955 / 0.959) and
    # text AUCs 0.27 / 0.17 (the same words on both sides: the text models anti-learn), far under 0.6 either way
    res = check(tmp_path / "m.csv", tmp_path / "out", cache_dir=shared_cache, workers=2, repeats=1,
                modalities=["recording", "spectral", "prosodic", "text"])
    v = res.verdict
    assert v.status == "confounded", v.reasons
    assert v.top_modality != "text", v.reasons
    text_models = [mr for mr in res.separability.models if mr.modality == "text"]
    assert text_models and all(mr.auc < 0.6 for mr in text_models), [(mr.name, mr.auc) for mr in text_models]


def test_failures_on_one_side_are_named(tmp_path, fsdd_meta):
    """A quarter of the non-members are files nothing can decode: the verdict says the failures are a confound
    (15 of 60: Newcombe's lower bound of the gap at 1 - alpha/3, the failures criterion's share of alpha, is 12.9%;
    12 of 60 gave 8.8%)."""
    base = fsdd_meta[fsdd_meta["take"] < 2].reset_index(drop=True)  # 120 clips
    labels = np.array([0, 1] * 60)
    paths = list(base["abspath"])
    rng = np.random.default_rng(12)
    for i in rng.choice(np.nonzero(labels == 0)[0], 15, replace=False):
        bad = tmp_path / f"broken_{i}.wav"
        bad.write_bytes(rng.bytes(4000))
        paths[i] = str(bad)
    pd.DataFrame({"id": base["id"], "path": paths, "label": labels}).to_csv(tmp_path / "m.csv", index=False)
    res = check(tmp_path / "m.csv", tmp_path / "out", workers=2, repeats=1, modalities=["recording"])
    v = res.verdict
    assert v.status == "confounded" and "failures" in v.criteria, v.reasons
    assert "0 of 60 members (0%) and 15 of 60 non-members (25%) failed" in " ".join(v.reasons)
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["extraction"]["failed_by_side"]["nonmembers_failed"] == 15
    assert saved["verdict"]["failures"]["members_failed"] == 0
