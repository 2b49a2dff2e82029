"""The ``correlate`` verb: a blind check and every attack against it."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from blindcheck.analysis.attacks import CorrelateResult
from blindcheck.errors import BlindcheckError
from blindcheck.inputs.scores import check_scores_ids, has_attacks, read_scores


def correlate(manifest: Any, scores: pd.DataFrame | str | os.PathLike | None = None,
              out: str | os.PathLike | None = None, *, lower_is_member: tuple[str, ...] | list[str] = (),
              **check_kwargs: Any) -> CorrelateResult:
    """The ``correlate`` verb: a blind check of ``manifest`` (features cached as in ``check``) and every attack
    (``mia_*`` columns, ``scores``) against it. With ``out``, writes ``result.json`` (with ``attacks``),
    ``blind_scores.parquet`` and ``attacks.parquet``. Returns the :class:`CorrelateResult`; its ``check``
    attribute holds the :class:`~blindcheck.verbs.CheckResult`."""
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
    res.attacks.check = res
    return res.attacks
