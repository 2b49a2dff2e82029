"""Where the work runs: the local process pool (default) or Dask distributed, behind one small interface.

An :class:`Executor` runs a function over a stream of jobs and yields ``(job, result)`` pairs as they finish,
with at most a bounded number of jobs in flight (so a queue of 100k clips never sits in memory as futures).
A job whose worker process *died* under it (a crash in a native library, a killed machine) comes back as
``(job, LOST)``; what to do about it (split the job, retry its parts one at a time, blame a clip) is the
caller's, because only the caller knows what a job is made of. Any other exception raised by the function is
a bug and is raised in the driver.

- :class:`LocalExecutor`: a :func:`blindcheck.runtime.pools.worker_pool` (workers ignore Ctrl-C; the pool is torn down
  at once on any exception). ``workers=1`` runs the jobs in this process, except with ``start_method="spawn"``,
  which asks for a fresh interpreter (to keep torch or CTranslate2 out of the driver) even for one worker.
- :class:`DaskExecutor`: a ``distributed.Client`` on a scheduler address, or on a ``LocalCluster`` of
  ``workers`` single-threaded processes on 127.0.0.1 when no address is given. Dask itself reschedules the task
  of a worker that died (``distributed.scheduler.allowed-failures`` times; 1 on a LocalCluster started here);
  a task that keeps killing workers comes back as LOST.

Functions sent to a Dask worker must be importable there (blindcheck installed, same version) and must set up
what they need lazily (a module-level memo), since a Dask worker has no pool initializer.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from blindcheck.errors import BlindcheckError
from blindcheck.runtime.pools import worker_pool

EXECUTORS = ("local", "dask")


class _Lost:
    def __repr__(self) -> str:
        return "LOST"


LOST = _Lost()  # the result of a job whose worker process died while running it


def usable_cores() -> int:
    """Cores this process may use (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Executor:
    """Runs ``fn(job)`` for a stream of jobs; see the module docstring."""

    name = "executor"
    workers = 1

    def run(self, fn: Callable[[Any], Any], jobs: Iterable[Any], max_in_flight: int | None = None) -> \
            Iterator[tuple[Any, Any]]:
        raise NotImplementedError

    def run_retrying(self, fn: Callable[[Any], Any], jobs: Iterable[Any], split: Callable[[Any], Iterable[Any]]) -> \
            Iterator[tuple[Any, Any]]:
        """:meth:`run`, then the jobs whose worker died again: each cut by ``split`` (into one job per item, or
        itself again) and run one in flight at a time, so that a crash is blamed on its true cause. Yields every
        result; ``LOST`` only for a job that died again on its own."""
        lost = []
        for job, result in self.run(fn, jobs):
            if result is LOST:
                lost.append(job)
            else:
                yield job, result
        if lost:
            yield from self.run(fn, (part for job in lost for part in split(job)), max_in_flight=1)

    def describe(self) -> str:
        return f"{self.name}, {self.workers} workers"

    def check_shared_path(self, path: str) -> None:
        """Make sure every worker sees the directory ``path`` (the cache its jobs write to) before work is sent.
        Local workers share this machine's filesystem: nothing to check."""

    def close(self, abort: bool = False) -> None:
        """Release the workers; ``abort`` (an interruption, an error): at once, without waiting for running work."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(abort=exc_type is not None)


class LocalExecutor(Executor):
    """A process pool on this machine (``fork`` by default, so workers inherit what the driver warmed up)."""

    name = "local"

    def __init__(self, workers: int | None = None, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), start_method: str | None = None):
        self.workers = max(1, workers or usable_cores())
        self.initializer, self.initargs, self.start_method = initializer, tuple(initargs), start_method

    def run(self, fn, jobs, max_in_flight=None):
        jobs = iter(jobs)
        if self.workers == 1 and self.start_method != "spawn":
            from threadpoolctl import threadpool_limits

            # One BLAS thread while the jobs run here, as in a worker (on a busy machine a small matrix product
            # under two OpenBLAS threads took 100x longer); the driver's own setting is restored after.
            with threadpool_limits(limits=1):
                if self.initializer is not None:
                    self.initializer(*self.initargs)
                for job in jobs:
                    yield job, fn(job)
            return
        limit = max(1, max_in_flight or 2 * self.workers)
        while True:  # one pool per round; a worker that dies breaks the pool, and the next round starts afresh
            with worker_pool(self.workers, self.initializer, self.initargs, self.start_method) as pool:
                futures: dict[Future, Any] = {}
                broken = exhausted = False
                while True:
                    while not broken and not exhausted and len(futures) < limit:
                        try:
                            job = next(jobs)
                        except StopIteration:
                            exhausted = True
                            break
                        futures[pool.submit(fn, job)] = job
                    if not futures:
                        break
                    done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                    for fut in done:
                        job = futures.pop(fut)
                        try:
                            result = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            result = LOST
                        yield job, result
            if exhausted and not futures:
                return


class DaskExecutor(Executor):
    """Dask distributed: ``address`` (``tcp://host:port``) of a running scheduler, or a LocalCluster here."""

    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None, allowed_failures: int = 1):
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise BlindcheckError("the Dask executor needs dask distributed: pip install 'blindcheck[dask]'") \
                from None
        self.cluster = None
        if address:
            try:
                self.client = Client(address, timeout="20s")
            except OSError as exc:
                raise BlindcheckError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        else:
            n = max(1, workers or usable_cores())
            # Dask's statistical profiler samples every task thread's stack every 10 ms, under the GIL: off. Its
            # nannies start workers with MALLOC_TRIM_THRESHOLD_=64 KiB, which also turns off glibc's adaptive mmap
            # threshold, so every numpy temporary above 128 KiB is mapped and unmapped again (in one process the
            # recording extractor ran 1.33x slower with it): the glibc default instead, as in the local pool.
            environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                       if k != "MALLOC_TRIM_THRESHOLD_"}
            # A LocalCluster's nannies live in this process and set their workers' environment (one thread for
            # OpenMP, MKL and OpenBLAS; a fixed PYTHONHASHSEED) by writing it into this process's os.environ,
            # where it stayed: every process started later inherited it (the local pool's spawned ASR and
            # embedding workers, torch's thread count). The driver's environment is restored once the workers
            # are up, and again at close (a nanny that restarts a killed worker writes it again).
            self._environ = dict(os.environ)
            with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures,
                                  "distributed.worker.profile.enabled": False,
                                  "distributed.nanny.pre-spawn-environ": environ}):
                try:
                    self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                                                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
                finally:
                    self._restore_environ()
            self.client = Client(self.cluster)
        self.address = address or self.cluster.scheduler_address
        self.workers = max(1, sum(self.client.nthreads().values()))
        self._seen_paths: set[str] = set()

    def _restore_environ(self) -> None:
        for key in set(os.environ) - set(self._environ):
            del os.environ[key]
        for key, value in self._environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value

    def describe(self) -> str:
        where = "a LocalCluster" if self.cluster is not None else self.address
        return f"dask on {where}, {self.workers} worker threads"

    def run(self, fn, jobs, max_in_flight=None):
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        jobs = iter(jobs)
        limit = max(1, max_in_flight or 2 * self.workers)
        pending: dict[Any, Any] = {}
        ac = as_completed()
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        job = next(jobs)
                    except StopIteration:
                        exhausted = True
                        break
                    fut = self.client.submit(fn, job, pure=False)
                    pending[fut.key] = job
                    ac.add(fut)
                if not pending:
                    return
                fut = next(ac)
                job = pending.pop(fut.key)
                try:
                    result = fut.result()
                except KilledWorker:
                    result = LOST
                fut.release()
                yield job, result
        finally:
            if pending:  # interrupted or failed: nothing queued outlives the run
                with contextlib.suppress(Exception):
                    self.client.cancel(list(ac.futures))

    def check_shared_path(self, path: str) -> None:
        """Every worker must see the cache directory at the same path: find out before any work is sent (once per
        path: the stages of one run share it)."""
        if path in self._seen_paths:
            return
        probe = os.path.join(path, f".probe-{os.getpid()}")
        with open(probe, "w") as fh:
            fh.write("blindcheck")
        try:
            seen = self.client.run(os.path.exists, probe)
        finally:
            os.unlink(probe)
        blind = sorted(w for w, ok in seen.items() if not ok)
        if blind:
            raise BlindcheckError(f"Dask worker(s) {', '.join(blind)} cannot see the cache directory {path}: mount "
                                  "one shared filesystem at the same path on the driver and on every worker")
        self._seen_paths.add(path)

    def close(self, abort: bool = False) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=2 if abort else 10)
        if self.cluster is None:
            return
        # A LocalCluster's nannies live in this process and its workers are our child processes. Its work is done
        # (or abandoned, on ``abort``) and the results are in the cache: the nannies are asked to stop without
        # restarting anyone, and a worker still alive a moment later (a graceful close waits out running work and
        # the interpreter shutdown of workers that loaded librosa, torch or CTranslate2, 4 s and more) is killed.
        import multiprocessing
        import threading

        closer = threading.Thread(target=lambda: self.cluster.close(timeout=10), daemon=True)
        closer.start()
        closer.join(0.5 if abort else 1.0)
        for child in multiprocessing.active_children():
            with contextlib.suppress(Exception):
                child.kill()
        closer.join(10)
        self._restore_environ()
