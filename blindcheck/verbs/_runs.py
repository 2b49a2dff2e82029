"""What the verbs built on ``check`` share: their return shape and the reading of attack scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from blindcheck.errors import BlindcheckError
from blindcheck.inputs.manifest import Manifest, load_manifest
from blindcheck.inputs.scores import check_scores_ids, has_attacks, read_scores


@dataclass(frozen=True)
class VerbRun:
    """A verb's result (``.result``, whose attributes it answers for) and the blind check it ran on (``.check``, a
    :class:`~blindcheck.verbs.CheckResult` that holds ``.result`` as a section). Neither points back at the
    other."""

    result: Any
    check: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.result, name)


def manifest_and_scores(manifest: Any, scores: Any, manifest_options: Any = None
                        ) -> tuple[Manifest, pd.DataFrame | None]:
    """The manifest loaded and the attack scores read, their ids checked against it; refused before any work when
    there are no attacks at all (no ``mia_*`` column and no scores)."""
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, manifest_options)
    if scores is None and not has_attacks(m.table):
        raise BlindcheckError("no attack scores: the manifest has no mia_* column and no scores file was given")
    if scores is not None:
        scores = scores if isinstance(scores, pd.DataFrame) else read_scores(scores)
        check_scores_ids(m.table["id"], scores)
    return m, scores
