"""The ``di`` verb: dataset inference on attack and blind scores of a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blindcheck.analysis.inference import DIResult, dataset_inference
from blindcheck.errors import BlindcheckError


@dataclass(frozen=True)
class DIRun:
    """What the ``di`` verb returns: the dataset inference (:class:`~blindcheck.analysis.inference.DIResult`, whose
    attributes it answers for: ``.attack``, ``.blind``, ``.reasons``, ``.to_dict()`` ...) and the blind check
    (``.check``, whose ``.di`` is ``.result``). Neither result points back at the other."""

    result: DIResult
    check: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.result, name)


def dataset_inference_manifest(manifest: Any, scores: Any = None, out: Any = None, *,
                               lower_is_member: tuple[str, ...] | list[str] = (), **check_kwargs: Any) -> DIRun:
    """The ``di`` verb: a blind check of ``manifest`` (for the out-of-fold blind score), then dataset inference
    on the attacks (``mia_*`` columns, ``scores``) and on the blind models' out-of-fold scores (all of them,
    Bonferroni). With ``out``, writes ``result.json`` with a ``di`` section (and ``attacks``). Returns a
    :class:`DIRun` (the DIResult, and ``.check``)."""
    from blindcheck.inputs.manifest import Manifest, load_manifest
    from blindcheck.inputs.scores import align_scores, check_scores_ids, has_attacks, read_scores
    from blindcheck.verbs._check import check
    from blindcheck.verbs._results import write_results

    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, check_kwargs.pop("manifest_options",
                                                                                                 None))
    if scores is None and not has_attacks(m.table):
        raise BlindcheckError("no attack scores: the manifest has no mia_* column and no scores file was given")
    if scores is not None:
        scores = scores if hasattr(scores, "columns") else read_scores(scores)
        check_scores_ids(m.table["id"], scores)
    res = check(m, None, scores=scores, lower_is_member=lower_is_member, **check_kwargs)
    sep = res.separability
    attacks, _ = align_scores(sep.ids, m.table, scores)
    # every blind model the best was chosen from: the blind DI pays for the choice (Bonferroni over them)
    di = dataset_inference(attacks, sep.labels, res.settings, blind_scores={b.name: b.scores for b in sep.models},
                           lower_is_member=lower_is_member)
    res.di = di
    if out is not None:
        write_results(res, out)
    return DIRun(di, res)
