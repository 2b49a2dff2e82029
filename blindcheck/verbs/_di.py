"""The ``di`` verb: dataset inference on attack and blind scores of a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blindcheck.analysis.inference import DIResult, dataset_inference
from blindcheck.verbs._runs import VerbRun, manifest_and_scores


@dataclass(frozen=True)
class DIRun(VerbRun):
    """What the ``di`` verb returns: the dataset inference (``.result``, a
    :class:`~blindcheck.analysis.inference.DIResult`: ``.attack``, ``.blind``, ``.reasons``, ``.to_dict()`` ...) and
    the blind check (``.check``, whose ``.di`` is ``.result``)."""

    result: DIResult


def dataset_inference_manifest(manifest: Any, scores: Any = None, out: Any = None, *,
                               lower_is_member: tuple[str, ...] | list[str] = (), **check_kwargs: Any) -> DIRun:
    """The ``di`` verb: a blind check of ``manifest`` (for the out-of-fold blind score), then dataset inference
    on the attacks (``mia_*`` columns, ``scores``) and on the blind models' out-of-fold scores (all of them,
    Bonferroni); with the check's ``group_by`` every step of it takes whole groups. With ``out``, writes
    ``result.json`` with a ``di`` section (and ``attacks``). Returns a :class:`DIRun` (the DIResult, and
    ``.check``)."""
    from blindcheck.inputs.scores import align_scores
    from blindcheck.verbs._check import check
    from blindcheck.verbs._results import write_results

    m, scores = manifest_and_scores(manifest, scores, check_kwargs.pop("manifest_options", None))
    res = check(m, None, scores=scores, lower_is_member=lower_is_member, **check_kwargs)
    sep = res.separability
    attacks, _ = align_scores(sep.ids, m.table, scores)
    # every blind model the best was chosen from: the blind DI pays for the choice (Bonferroni over them). With the
    # check's group_by (a column, or the speakers inferred for "voice") DI takes whole groups, as the blind check's
    # folds did (sep.groups: one per clip of sep.ids; None without group_by)
    di = dataset_inference(attacks, sep.labels, res.settings, blind_scores={b.name: b.scores for b in sep.models},
                           lower_is_member=lower_is_member, groups=sep.groups,
                           group_by=res.settings.group_by if sep.groups is not None else None)
    res.di = di
    if out is not None:
        write_results(res, out)
    return DIRun(di, res)
