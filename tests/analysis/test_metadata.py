"""The manifest's metadata as evidence (blindcheck.analysis.metadata), on the bundled FSDD metadata: its error rate
on random splits, the columns it must find, its tests against scipy, and the grouped relabelling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, chi2_contingency, mannwhitneyu

from blindcheck.analysis.metadata import attribute_columns, holm, metadata_evidence, metadata_line

META = pd.read_csv(Path(__file__).parents[1] / "data" / "fsdd" / "metadata.csv")
N = len(META)
HALF = np.r_[np.ones(N // 2), np.zeros(N - N // 2)].astype(int)


def test_roles_and_scores_are_not_attributes():
    table = META.assign(mia_loss=0.0, caption_2="x", start=0.0, prompt="p", raw_text="kept")
    cols = attribute_columns(table, exclude=("take",))
    assert cols == ["digit", "gender", "accent", "samplerate", "duration", "subtype", "raw_text"]


def test_random_splits_are_rarely_significant_and_never_decisive():
    """On random splits of the real metadata (plus a random 8-level column) the family-wise error is held: the
    share of splits with any Holm-significant column is within a binomial bound at alpha."""
    rng = np.random.default_rng(7)
    reps, alpha = 80, 0.05
    sig = dec = 0
    for r in range(reps):
        table = META.assign(session=rng.integers(0, 8, N).astype(str))
        rep = metadata_evidence(table, rng.permutation(HALF), alpha, 0.6, permutations=199, cv_relabellings=39,
                                seed=r)
        assert [s["column"] for s in rep.skipped] == ["gender", "samplerate", "subtype"]  # constant here
        sig += bool(rep.significant)
        dec += bool(rep.decisive)
    assert sig <= binom.ppf(0.999, reps, alpha)
    assert dec <= binom.ppf(0.999, reps, alpha / 4)  # decisive needs the bound above 0.60 too


def test_a_column_that_differs_by_side_is_decisive_and_said_in_words():
    rng = np.random.default_rng(3)
    y = rng.permutation(HALF)
    gender = np.where(rng.random(N) < np.where(y == 1, 0.7, 0.3), "female", "male")
    rep = metadata_evidence(META.assign(gender=gender), y, 0.05, 0.6, seed=1)
    col = {c["column"]: c for c in rep.columns}
    g = col["gender"]
    assert g["decisive"] and rep.to_dict()["decisive"] == ["gender"]
    share1 = (gender[y == 1] == g["most_different_level"]).mean()
    share0 = (gender[y == 0] == g["most_different_level"]).mean()
    assert g["most_different_member_share"] == pytest.approx(share1)
    assert g["most_different_nonmember_share"] == pytest.approx(share0)
    # the cross-fitted AUC of a 2-level column: close to its Bayes AUC 0.5 + |share difference| / 2
    assert g["effect_auc"] == pytest.approx(0.5 + abs(share1 - share0) / 2, abs=0.03)
    assert 0.6 < g["lower_bound"] < g["effect_auc"]
    line = metadata_line(g, 0.05, 0.6, len(rep.columns))
    level = g["most_different_level"]
    assert f"gender: members {100 * share1:.0f}% {level}, non-members {100 * share0:.0f}%" in line
    assert "lower bound" in line and "above the tolerated 0.60" in line
    assert not any(col[c]["decisive"] for c in col if c != "gender")


def test_the_chi_square_and_the_auc_agree_with_scipy():
    rng = np.random.default_rng(5)
    y = rng.permutation(HALF)
    accent = META["accent"].to_numpy()
    # a mild real association: drop a third of the Greek speaker's clips from the non-members' side
    keep = ~((accent == "GRC/Greek") & (y == 0) & (rng.random(N) < 0.5))
    table, yk = META[keep].reset_index(drop=True), y[keep]
    rep = metadata_evidence(table, yk, 0.05, 0.6, permutations=999, seed=2)
    col = {c["column"]: c for c in rep.columns}
    a = col["accent"]
    ct = pd.crosstab(table["accent"], yk).to_numpy()
    chi, p_asym, *_ = chi2_contingency(ct, correction=False)
    assert a["chi2"] == pytest.approx(chi)
    assert a["cramers_v"] == pytest.approx(math.sqrt(chi / len(yk)))
    assert abs(a["p"] - p_asym) < 0.02 + 3 * math.sqrt(p_asym * (1 - p_asym) / 999)  # permutation vs asymptotic
    d = col["duration"]
    u = mannwhitneyu(table["duration"][yk == 1], table["duration"][yk == 0])
    assert d["auc"] == pytest.approx(u.statistic / ((yk == 1).sum() * (yk == 0).sum()))
    assert abs(d["p"] - u.pvalue) < 0.03 + 3 * math.sqrt(u.pvalue * (1 - u.pvalue) / 1999)


def test_holm_matches_its_definition():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04, running maximum
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_grouped_relabelling_counts_groups_not_clips():
    """A speaker attribute on a speaker-disjoint split: per clip it looks overwhelming; with the speakers as
    groups only 20 ways exist to put 3 of 6 speakers on a side, so its p-value cannot fall below 1/20-ish."""
    spk = META["speaker"].to_numpy()
    names = sorted(set(spk))
    y = np.isin(spk, names[:3]).astype(int)
    accent = META["accent"]
    per_clip = metadata_evidence(pd.DataFrame({"accent": accent}), y, 0.05, 0.6, permutations=499, seed=0)
    grouped = metadata_evidence(pd.DataFrame({"accent": accent}), y, 0.05, 0.6, permutations=499, seed=0,
                                groups=spk)
    assert per_clip.columns[0]["p"] < 0.01
    assert grouped.columns[0]["p"] >= 1 / 20 - 1e-9 and grouped.grouped
    assert not grouped.columns[0]["decisive"]


def test_identifiers_and_constants_are_skipped_with_the_reason():
    table = META.assign(file_hash=[f"h{i}" for i in range(N)])
    rep = metadata_evidence(table, np.random.default_rng(0).permutation(HALF), 0.05, 0.6, permutations=99,
                            cv_relabellings=19)
    why = {s["column"]: s["reason"] for s in rep.skipped}
    assert why["gender"] == "constant" and "identifier" in why["file_hash"]
    assert "file_hash" not in {c["column"] for c in rep.columns}


def test_check_tests_content_types_and_leaves_out_columns_read_as_text():
    """manifest_evidence (what check and match run): the clips' content type from the feature table's shares is
    tested with the manifest's columns, and a column the text modality read as a source is not an attribute."""
    from blindcheck.analysis.metadata import manifest_evidence
    from blindcheck.settings import Settings

    rng = np.random.default_rng(4)
    y = rng.permutation(HALF)
    speech = np.where(y == 1, rng.random(N) < 0.95, rng.random(N) < 0.6)  # members 95% speech, non-members 60%
    feats = pd.DataFrame({"content.speech_share": np.where(speech, 0.9, 0.05),
                          "content.music_share": np.where(speech, 0.0, 0.9), "content.other_share": 0.05,
                          "content.silence_share": 0.05, "text:annotation": "x"})
    meta = META.assign(annotation=np.where(y == 1, "a dog barks", "music plays"))
    rep = manifest_evidence(meta, feats, y, Settings(metadata_permutations=199))
    col = {c["column"]: c for c in rep.columns}
    assert "annotation" not in col and "content_type" in col
    assert col["content_type"]["decisive"] and col["content_type"]["summary"].startswith("content_type: members ")
    with pytest.raises(Exception, match="ignore-column 'genre'"):
        manifest_evidence(meta, feats, y, Settings(metadata_ignore=("genre",)))
