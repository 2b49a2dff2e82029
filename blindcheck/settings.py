"""One settings object for the blind classifier and the verdict.

Precedence: explicit arguments (CLI flags) > ``[tool.blindcheck]`` in ``pyproject.toml`` > defaults.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from blindcheck.errors import BlindcheckError


@dataclass(frozen=True)
class Settings:
    # verdict
    alpha: float = 0.05  # family-wise error rate, over the models and the two criteria compared
    tolerated_auc: float = 0.60  # blind AUC a user accepts: "confounded" needs the lower bound above it, "clean"
    #                              every model's upper bound below it
    tolerated_share: float = 0.10  # share of one side a blind model may isolate at 1% error on the other side
    power: float = 0.80  # power the sample-size advice aims at
    # cross-validation
    folds: int = 5
    repeats: int | None = None  # None: ceil(2000 / n), between 1 and 5
    group_by: str | None = None  # manifest column whose groups never straddle train and test
    max_train_rows: int = 20_000  # training rows per fold above which a stratified subsample is used
    # statistics
    permutations: int = 2000  # label permutations of the out-of-fold scores
    refit_permutations: int = 0  # >0: the family-wise p-value from this many full CV re-runs on relabelled clips
    refit_repeats: int = 1  # CV repeats behind the refit test's statistic, observed and relabelled alike (the
    #                         first ones of the check's); 0: all of them, the verdict's own scores
    bootstrap: int = 0  # >0: stratified bootstrap CI with this many resamples instead of DeLong
    seed: int = 0
    # models
    xgb_trees: int = 150
    xgb_depth: int = 3
    logreg_c: float = 0.1
    text_min_coverage: float = 0.5  # share of clips with a transcript needed to fit the TF-IDF model
    top_features: int = 10
    # matching (blindcheck match / check --match)
    match_caliper: float = 0.2  # caliper in pooled SDs of the logit blind score
    match_ratio: int = 1  # partners from the larger side per clip of the smaller side (1:k)
    match_target_auc: float = 0.55  # a matched subset must re-check clean with a best AUC no higher than this
    match_min_retained: float = 0.25  # share of the smaller side a matched subset must keep
    # attacks: correlate (attack vs blind) and dataset inference (blindcheck/correlate.py, blindcheck/inference.py)
    attack_rho: float = 0.7  # |Spearman rho| of an attack's score with the blind score at which the attack is
    #                          "confounded-attack" (the level published for audio-LLM MIA benchmarks)
    attack_strata: int = 5  # quantile strata of the blind score for the attack's stratified AUC
    correlation_bootstrap: int = 1000  # bootstrap resamples for the CIs of Spearman and Pearson
    di_power: float = 0.95  # dataset inference: rejection rate (over subsamples) at which n suffices
    di_resamples: int = 400  # random subsamples per n of the grid
    di_grid: int = 40  # number of sample sizes (per side) in the grid, geometric from 2 to the smaller side
    # metadata as evidence (blindcheck.analysis.metadata): the manifest's own columns tested per side
    metadata_permutations: int = 1999  # relabellings for the metadata columns' permutation p-values
    metadata_ignore: tuple[str, ...] = ()  # manifest columns not tested (e.g. the very column the split was drawn on)
    # voice modality: inferred speakers (blindcheck.analysis.speakers)
    voice_cluster_threshold: float = 0.90  # cosine distance (centred GE2E embeddings) at which clusters stop merging

    def __post_init__(self) -> None:
        _check_attack_settings(self)
        if not 0 < self.alpha < 1:
            raise BlindcheckError(f"alpha must be in (0, 1), not {self.alpha}")
        if not 0.5 <= self.tolerated_auc < 1:
            raise BlindcheckError(f"tolerated AUC must be in [0.5, 1), not {self.tolerated_auc}")
        if not 0 < self.power < 1:
            raise BlindcheckError(f"power must be in (0, 1), not {self.power}")
        if self.folds < 2:
            raise BlindcheckError(f"folds must be at least 2, not {self.folds}")
        if not 0 < self.tolerated_share < 1:
            raise BlindcheckError(f"tolerated share must be in (0, 1), not {self.tolerated_share}")
        need = smallest_permutations(self.alpha)
        if self.permutations < 99:
            raise BlindcheckError(f"permutations must be at least 99, not {self.permutations}")
        if self.permutations < need:
            raise BlindcheckError(
                f"permutations = {self.permutations} cannot give a p-value <= alpha = {self.alpha} (the smallest "
                f"p-value of R relabellings is 1/(R+1)); use at least {need}")
        if 0 < self.refit_permutations < need:
            raise BlindcheckError(
                f"refit-permutations = {self.refit_permutations} cannot give a p-value <= alpha = {self.alpha} "
                f"(the smallest p-value of R relabellings is 1/(R+1) = {1 / (self.refit_permutations + 1):.3g}); "
                f"use at least {need}")
        if self.match_caliper <= 0:
            raise BlindcheckError(f"match caliper must be positive, not {self.match_caliper}")
        if self.match_ratio < 1:
            raise BlindcheckError(f"match ratio must be at least 1, not {self.match_ratio}")
        if not 0.5 <= self.match_target_auc < 1:
            raise BlindcheckError(f"match target AUC must be in [0.5, 1), not {self.match_target_auc}")
        if not 0 <= self.match_min_retained <= 1:
            raise BlindcheckError(f"match min-retained must be in [0, 1], not {self.match_min_retained}")
        if not 0 < self.voice_cluster_threshold < 2:
            raise BlindcheckError(f"voice-cluster-threshold must be in (0, 2), not {self.voice_cluster_threshold}")
        if self.refit_repeats < 0:
            raise BlindcheckError(f"refit-repeats must be 0 (every repeat) or positive, not {self.refit_repeats}")
        if self.refit_permutations < 0:
            raise BlindcheckError(f"refit-permutations must be 0 (off) or positive, not {self.refit_permutations}")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_attack_settings(s: Settings) -> None:
    if not 0 < s.attack_rho <= 1:
        raise BlindcheckError(f"attack_rho must be in (0, 1], not {s.attack_rho}")
    if s.attack_strata < 1:
        raise BlindcheckError(f"attack_strata must be at least 1, not {s.attack_strata}")
    if s.correlation_bootstrap < 100:
        raise BlindcheckError(f"correlation_bootstrap must be at least 100, not {s.correlation_bootstrap}")
    if not 0 < s.di_power < 1:
        raise BlindcheckError(f"di_power must be in (0, 1), not {s.di_power}")
    if s.metadata_permutations < 19:
        raise BlindcheckError(f"metadata_permutations must be at least 19, not {s.metadata_permutations}")
    if isinstance(s.metadata_ignore, str) or not all(isinstance(c, str) for c in s.metadata_ignore):
        raise BlindcheckError(f"metadata_ignore must be a list of column names, not {s.metadata_ignore!r}")
    if s.di_resamples < 20 or s.di_grid < 2:
        raise BlindcheckError(f"di_resamples (>= 20) and di_grid (>= 2) are too small: {s.di_resamples}, {s.di_grid}")


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file():
            return d / "pyproject.toml"
    return None


def load_settings(overrides: dict[str, Any] | None = None, pyproject: Path | None = None,
                  use_pyproject: bool = True) -> Settings:
    """Defaults, then ``[tool.blindcheck]`` of ``pyproject`` (or the nearest one), then ``overrides``.

    ``None`` values in ``overrides`` mean "not given". Unknown keys are errors, so a typo never passes silently.
    """
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    if use_pyproject:
        path = pyproject or find_pyproject()
        if path is not None:
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise BlindcheckError(f"{path}: cannot read [tool.blindcheck]: {exc}") from exc
            table = data.get("tool", {}).get("blindcheck", {})
            for key, value in table.items():
                name = key.replace("-", "_")
                if name not in known:
                    raise BlindcheckError(f"{path}: [tool.blindcheck] has an unknown setting '{key}' "
                                          f"(known: {', '.join(sorted(known))})")
                values[name] = value
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in known:
            raise BlindcheckError(f"unknown setting '{key}'")
        values[key] = value
    if "metadata_ignore" in values and isinstance(values["metadata_ignore"], list):
        values["metadata_ignore"] = tuple(values["metadata_ignore"])
    return Settings(**values)




def smallest_permutations(alpha: float) -> int:
    """Fewest Monte Carlo relabellings R for which p = (1 + #) / (R + 1) can reach ``alpha`` (p <= alpha)."""
    return max(1, math.ceil(1 / alpha - 1 - 1e-9))
