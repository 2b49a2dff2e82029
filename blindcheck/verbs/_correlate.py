"""The ``correlate`` verb: a blind check and every attack against it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from blindcheck.analysis.attacks import CorrelateResult
from blindcheck.verbs._check import check
from blindcheck.verbs._runs import VerbRun, manifest_and_scores


@dataclass(frozen=True)
class CorrelateRun(VerbRun):
    """What the ``correlate`` verb returns: the attacks (``.result``, a
    :class:`~blindcheck.analysis.attacks.CorrelateResult`: ``.attacks``, ``.split_status``, ``.frame()`` ...) and the
    blind check they were measured against (``.check``, whose ``.attacks`` is ``.result``)."""

    result: CorrelateResult


def correlate(manifest: Any, scores: pd.DataFrame | str | os.PathLike | None = None,
              out: str | os.PathLike | None = None, *, lower_is_member: tuple[str, ...] | list[str] = (),
              **check_kwargs: Any) -> CorrelateRun:
    """The ``correlate`` verb: a blind check of ``manifest`` (features cached as in ``check``) and every attack
    (``mia_*`` columns, ``scores``) against it. With ``out``, writes ``result.json`` (with ``attacks``),
    ``blind_scores.parquet`` and ``attacks.parquet``. Returns a :class:`CorrelateRun` (the attacks, and ``.check``,
    the :class:`~blindcheck.verbs.CheckResult`)."""
    m, scores = manifest_and_scores(manifest, scores, check_kwargs.pop("manifest_options", None))
    res = check(m, out, scores=scores, lower_is_member=lower_is_member, **check_kwargs)
    return CorrelateRun(res.attacks, res)
