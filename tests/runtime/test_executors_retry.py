"""``Executor.run_retrying``, the one retry rule of every stage (extraction, voice, embeddings), on real worker
processes that really die: a job whose worker died is cut into parts that run one at a time, and only a part that
dies again on its own comes back LOST."""

from __future__ import annotations

import os

from blindcheck.runtime.executors import LOST, LocalExecutor

POISON = 7


def _sum_or_die(job: dict) -> int:
    if POISON in job["items"]:
        os._exit(3)  # the worker process ends at once, as a segfault or the OOM killer would end it
    return sum(job["items"])


def test_a_dead_workers_job_is_retried_item_by_item_and_only_the_poison_is_lost():
    jobs = [{"items": list(range(k, k + 4))} for k in range(0, 16, 4)]
    split = lambda job: ({"items": [i]} for i in job["items"])  # noqa: E731
    with LocalExecutor(2) as ex:
        got = list(ex.run_retrying(_sum_or_die, jobs, split))
    lost = [job["items"] for job, result in got if result is LOST]
    assert lost == [[POISON]]
    done = {tuple(job["items"]): result for job, result in got if result is not LOST}
    # the three healthy jobs whole, and the poisoned job's other items one by one
    assert done == {(0, 1, 2, 3): 6, (8, 9, 10, 11): 38, (12, 13, 14, 15): 54, (4,): 4, (5,): 5, (6,): 6}


def test_a_job_retried_whole_that_dies_again_is_lost_and_a_healthy_run_retries_nothing():
    with LocalExecutor(2) as ex:
        got = list(ex.run_retrying(_sum_or_die, [{"items": [1, POISON]}, {"items": [2]}], lambda job: [job]))
        assert sorted((tuple(j["items"]), r if r is not LOST else "lost") for j, r in got) == \
            [((1, POISON), "lost"), ((2,), 2)]
        assert list(ex.run_retrying(_sum_or_die, [{"items": [1]}], lambda job: [])) == [({"items": [1]}, 1)]
