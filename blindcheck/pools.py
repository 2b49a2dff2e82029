"""Worker pools that stop at once: the one place where blindcheck starts and ends worker processes.

:func:`worker_pool` is a :class:`~concurrent.futures.ProcessPoolExecutor` whose workers ignore SIGINT (a
Ctrl-C in a terminal reaches the whole process group; only the main process should act on it) and whose exit
on any exception — a ``KeyboardInterrupt`` above all — cancels the queued work and terminates the workers
instead of waiting for them (``ProcessPoolExecutor.__exit__`` waits for every pending job, which for a queue
of ASR windows is minutes). :func:`interrupt_signals` turns SIGTERM into :class:`Interrupted`, a
``KeyboardInterrupt`` that remembers its signal, so one path handles both.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received in the main process; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: Any) -> None:
    # One interruption is enough: a second Ctrl-C must not break off the clean-up (terminating the workers)
    # that the first one started; the handlers are restored when ``interrupt_signals`` exits.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupt_signals() -> Iterator[None]:
    """In the main thread: SIGINT and SIGTERM raise :class:`Interrupted` (previous handlers restored after)."""
    old = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _child_init(init: Callable[..., None] | None, args: tuple) -> None:
    """Every worker: leave SIGINT to the main process, die on SIGTERM, then run the pool's own initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if init is not None:
        init(*args)


def terminate(pool: ProcessPoolExecutor, grace_s: float = 2.0) -> None:
    """Cancel queued jobs and end the pool's workers now (SIGTERM, then SIGKILL after ``grace_s``)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(grace_s)
            if p.is_alive():
                p.kill()
                p.join(1.0)


@contextlib.contextmanager
def worker_pool(max_workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = (),
                start_method: str | None = None) -> Iterator[ProcessPoolExecutor]:
    """A process pool for ``with``: normal exit waits for the workers as usual; an exception (Ctrl-C, SIGTERM,
    any error) terminates them first, so no job outlives the run and nothing is left behind."""
    ctx = multiprocessing.get_context(start_method) if start_method else None
    pool = ProcessPoolExecutor(max_workers=max_workers, mp_context=ctx, initializer=_child_init,
                               initargs=(initializer, tuple(initargs)))
    try:
        yield pool
    except BaseException:
        terminate(pool)
        raise
    pool.shutdown(wait=True)
