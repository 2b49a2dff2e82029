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
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received in the main process; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STATE: dict[str, Any] = {"acknowledged": False}
RETRY_S = 1.0


def _raise(signum: int, frame: Any) -> None:
    if _STATE["acknowledged"]:  # the clean-up the first signal started must not be broken off by a second
        return
    if _STATE.get("defer"):  # inside native code that calls back into Python: raised when it has returned
        _STATE["pending"] = signum
        return
    # The exception can land where Python swallows it (a ``__del__``, a weakref callback: llvmlite's finalisers
    # during librosa's start-up did): until the run has acknowledged it, send the signal again.
    timer = threading.Timer(RETRY_S, _again, args=(signum,))
    timer.daemon = True
    timer.start()
    raise Interrupted(signum)


def _again(signum: int) -> None:
    if not _STATE["acknowledged"]:
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while native code runs that calls back into Python (xgboost builds its
    QuantileDMatrix through a Python iterator): an exception raised inside such a callback left xgboost freeing
    memory twice (``double free or corruption``, exit -6, in 2 of 12 SIGTERMs during the classifier phase). The
    signal is raised as soon as the block ends; each block is one model fit or prediction, well under a second."""
    _STATE["defer"] = _STATE.get("defer", 0) + 1
    try:
        yield
    finally:
        _STATE["defer"] -= 1
        pending = _STATE.pop("pending", None) if not _STATE["defer"] else None
    if pending is not None:
        _raise(pending, None)


def acknowledge() -> None:
    """The interruption reached code that acts on it: later signals are ignored while it cleans up."""
    _STATE["acknowledged"] = True


@contextlib.contextmanager
def interrupt_signals() -> Iterator[None]:
    """In the main thread: SIGINT and SIGTERM raise :class:`Interrupted` (previous handlers restored after)."""
    _STATE["acknowledged"] = False
    old = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    old_hook = sys.unraisablehook

    def hook(unraisable) -> None:  # an Interrupted swallowed by a finaliser is re-sent (see _raise): no traceback
        if not isinstance(unraisable.exc_value, Interrupted):
            old_hook(unraisable)

    sys.unraisablehook = hook
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        interrupted = interrupted or _STATE["acknowledged"]
        _STATE["acknowledged"] = True
        sys.unraisablehook = old_hook
        for s, h in old.items():
            # After an interruption the process is on its way out: a second Ctrl-C must not kill it half-way
            # through its exit (joining the pools' threads) with a traceback.
            signal.signal(s, signal.SIG_IGN if interrupted else h)
        _STATE["acknowledged"] = False


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
    # The pool's manager thread sees its workers gone and releases the queues; let it finish, so that no
    # half-closed pipe is written to at interpreter exit.
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None:
        manager.join(grace_s)


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
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            acknowledge()
        terminate(pool)
        raise
    pool.shutdown(wait=True)
