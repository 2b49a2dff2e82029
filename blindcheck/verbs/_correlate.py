"""The ``correlate`` verb: a blind check and every attack against it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from blindcheck.analysis.attacks import CorrelateResult
from blindcheck.errors import BlindcheckError
from blindcheck.inputs.scores import check_scores_ids, has_attacks, read_scores


@dataclass(frozen=True)
class CorrelateRun:
    """What the ``correlate`` verb returns: the attacks (:class:`~blindcheck.analysis.attacks.CorrelateResult`,
    whose attributes it answers for: ``.attacks``, ``.split_status``, ``.frame()`` ...) and the blind check they were
    measured against (``.check``, a :class:`~blindcheck.verbs.CheckResult`, whose ``.attacks`` is ``.result``).
    Neither result points back at the other."""

    result: CorrelateResult
    check: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.result, name)


def correlate(manifest: Any, scores: pd.DataFrame | str | os.PathLike | None = None,
              out: str | os.PathLike | None = None, *, lower_is_member: tuple[str, ...] | list[str] = (),
              **check_kwargs: Any) -> CorrelateRun:
    """The ``correlate`` verb: a blind check of ``manifest`` (features cached as in ``check``) and every attack
    (``mia_*`` columns, ``scores``) against it. With ``out``, writes ``result.json`` (with ``attacks``),
    ``blind_scores.parquet`` and ``attacks.parquet``. Returns a :class:`CorrelateRun` (the attacks, and ``.check``,
    the :class:`~blindcheck.verbs.CheckResult`)."""
    from blindcheck.inputs.manifest import Manifest, load_manifest
    from blindcheck.verbs._check import check

    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, check_kwargs.pop("manifest_options",
                                                                                                 None))
    if scores is None and not has_attacks(m.table):
        raise BlindcheckError("no attack scores: the manifest has no mia_* column and no scores file was given")
    if scores is not None:
        scores = scores if isinstance(scores, pd.DataFrame) else read_scores(scores)
        check_scores_ids(m.table["id"], scores)
    res = check(m, out, scores=scores, lower_is_member=lower_is_member, **check_kwargs)
    return CorrelateRun(res.attacks, res)
