"""Helpers for tests that watch real processes: the spawned workers of a run, and waiting on a condition while
the run is still alive."""

from __future__ import annotations

import subprocess
import time

import psutil


def spawned_workers(pid: int) -> list[psutil.Process]:
    """The ``multiprocessing`` spawn workers below process ``pid`` (ASR, embedding and voice pools)."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def wait_for(cond, what: str, proc: subprocess.Popen, timeout: float = 120):
    """``cond()``'s first truthy value, polled every 10 ms; fails if ``proc`` ends first or after ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        assert proc.poll() is None, f"the run ended before {what}"
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
