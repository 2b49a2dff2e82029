"""The matching search's own verification, on tables with a known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from blindcheck.analysis.matching import MatchOptions, match_table
from blindcheck.settings import Settings


def test_a_speaker_disjoint_subset_is_never_accepted():
    """Speakers A-C as members, D-F as non-members, features that carry nothing: every subset a matcher keeps is
    still speaker-disjoint, which check never calls clean, so match must not accept one either (its fresh check
    weighs the kept clips' speakers as check does)."""
    rng = np.random.default_rng(0)
    spk = np.repeat(list("ABCDEF"), 40)
    y = np.isin(spk, list("ABC")).astype(int)
    feats = pd.DataFrame(rng.standard_normal((240, 8)), columns=[f"spectral.f{j}" for j in range(8)]).assign(
        id=[f"c{i}" for i in range(240)], label=y)
    meta = pd.DataFrame({"id": feats["id"], "label": y, "speaker": spk})
    res = match_table(feats, meta, rng.random(240), Settings(repeats=1, permutations=199), MatchOptions(), threads=2)
    assert not res.success and res.status == "failed"
    tried = [a for a in res.parts[0].attempts if a.verdict is not None]
    assert tried and all(a.verdict.status != "clean" for a in tried)
    assert all(any("speaker-disjoint" in p for p in a.problems) for a in tried), [a.problems for a in tried]
