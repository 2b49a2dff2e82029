"""What every extraction stage shares: the loop that runs its jobs and the result it returns.

A stage (the acoustic extractors, the voice embeddings, the text embeddings) builds jobs, runs them on an
executor, retries the jobs whose worker died one part at a time, records what came back, and compacts the cache
directories it wrote. :func:`run_stage` is that loop; :class:`StageResult` is what the voice and text stages return
to :func:`blindcheck.extraction.pipeline.extract_features`. ASR keeps its own scheduler (packed windows, rounds of
retries by clip) in :mod:`blindcheck.features.asr`, called from the text stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from blindcheck.errors import worker_errors
from blindcheck.runtime.executors import LOST


@dataclass
class StageResult:
    """A stage's additions to the feature table: ``features`` (``id`` and the stage's columns, one row per clip
    that succeeded), ``notes`` and ``errors`` (dicts with ``id``, ``path`` and, for errors, ``stage`` and
    ``message``), ``stats`` (counts for result.json), and for the text stage ``transcripts``."""

    features: pd.DataFrame
    errors: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    transcripts: pd.DataFrame | None = None


def run_stage(executor, fn: Callable[[Any], Any], jobs: Iterable[Any], split: Callable[[Any], Iterable[Any]], *,
              on_result: Callable[[Any, Any], None], on_lost: Callable[[Any], Any],
              store=None, tags: Iterable[str] = ()) -> None:
    """Run ``fn`` over ``jobs`` on ``executor`` (:meth:`~blindcheck.runtime.executors.Executor.run_retrying`: a
    job whose worker died is split by ``split`` and its parts tried again alone). Each finished job's result goes
    to ``on_result(job, result)``; a part that died again on its own goes to ``on_lost(job)``, which returns the
    result to record in its place (errors for its clips) or raises. A missing dependency met in a worker comes out
    as itself (:func:`blindcheck.errors.worker_errors`). Then the cache directories ``tags`` of ``store`` are
    compacted (parts merged; nothing written is lost if that is interrupted)."""
    with worker_errors():
        for job, result in executor.run_retrying(fn, jobs, split):
            on_result(job, on_lost(job) if result is LOST else result)
    tags = list(tags)
    if store is not None and tags:
        store.compact(tags)
