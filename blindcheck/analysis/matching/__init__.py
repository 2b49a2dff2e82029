"""The ``match`` verb: distribution-matched member/non-member subsets, verified afresh.

Input: the feature table and the out-of-fold blind scores of a ``check`` (nothing here knows about audio).
Methods, tried in this order when none is named:

- ``optimal``: the assignment that minimises the total distance on standardised features (scipy's
  ``linear_sum_assignment``), using the features that differ between the sides before matching (|SMD| >= 0.1),
  pairs restricted to the propensity caliper below; only where the sides are small enough
  (``OPTIMAL_MAX_CELLS`` pairs per stratum). Pairs close in the shifted features balance them better than
  pairs close in the score alone, so this comes first where it fits.
- ``propensity``: nearest-neighbour matching on the logit of the blind model's out-of-fold score, 1:k
  without replacement, within a caliper (default 0.2 pooled SD of the logit; Austin 2011), optionally exactly
  within metadata columns. The smaller side is matched; each of its clips takes its nearest free partner in a
  seeded random order. Scales to any size (O(n log n)).
- ``trim``: overlap trimming, no pairs: clips whose blind score lies outside the region both sides share
  (between the higher of the two sides' 1st percentiles and the lower of their 99th) are dropped.

Every candidate subset is verified by a *fresh* cross-validated blind check (new folds and seed, every model
of ``check``) and accepted only when that check's verdict is ``clean`` and its best AUC is at most the target
(``match_target_auc``), while at least ``match_min_retained`` of the smaller side is kept. The selection's own
estimate (the original out-of-fold scores on the kept clips, which the selection has seen and therefore flatters)
is reported next to the fresh one. When no method succeeds the best attempt is reported with the reasons, and
no matched manifest is written.

The ``disentangle`` design (manifests with ``speaker`` and ``text``) builds two subsets that separate the voice
from the words: members against non-members saying the *same text* in *another speaker's* voice, and members
against non-members of the *same speaker* saying *other texts*; each is matched on the blind score and verified
as above.

The package is split by concern: :mod:`.balance` (SMDs, variance ratios), :mod:`.pairing` (scores, calipers,
pairs, the shared region) and :mod:`.search` (attempts, verification, the result types). Its public names are
re-exported here."""

from blindcheck.analysis.matching.balance import (
    SMD_BALANCED,
    balance_summary,
    balance_table,
    pooled_sd,
    smd,
    variance_ratio,
)
from blindcheck.analysis.matching.pairing import (
    OPTIMAL_MAX_CELLS,
    TRIM_QUANTILE,
    caliper_width,
    greedy_pairs,
    logit,
    optimal_pairs,
    shared_region,
    standardised,
)
from blindcheck.analysis.matching.search import (
    DESIGNS,
    FRESH_SEED_OFFSET,
    METHODS,
    REFINE_FROM,
    REFINE_Z,
    Attempt,
    DesignPart,
    MatchOptions,
    MatchResult,
    balance_table_masked,
    match_attempt,
    match_table,
    matching_model,
    no_overlap_reasons,
    refine_balance,
)

__all__ = [
    "SMD_BALANCED",
    "balance_summary",
    "balance_table",
    "pooled_sd",
    "smd",
    "variance_ratio",
    "OPTIMAL_MAX_CELLS",
    "TRIM_QUANTILE",
    "caliper_width",
    "greedy_pairs",
    "logit",
    "optimal_pairs",
    "shared_region",
    "standardised",
    "DESIGNS",
    "FRESH_SEED_OFFSET",
    "METHODS",
    "REFINE_FROM",
    "REFINE_Z",
    "Attempt",
    "DesignPart",
    "MatchOptions",
    "MatchResult",
    "balance_table_masked",
    "match_attempt",
    "match_table",
    "matching_model",
    "no_overlap_reasons",
    "refine_balance",
]
