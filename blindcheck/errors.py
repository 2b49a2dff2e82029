"""Exception types. Every error a user can cause is a :class:`BlindcheckError` with a specific message."""

from collections.abc import Iterator
from contextlib import contextmanager


class BlindcheckError(Exception):
    """Base class for errors caused by the user's input or settings (the CLI exits 2 on these)."""


class ManifestError(BlindcheckError):
    """The manifest cannot be read or fails validation. The message names the row and the problem."""


class AudioError(BlindcheckError):
    """One audio file cannot be decoded. Recorded per clip; never aborts a whole run."""


class MissingDependencyError(BlindcheckError):
    """An optional package is needed; the message names the extra to install."""


@contextmanager
def worker_errors() -> Iterator[None]:
    """Around a process pool's results: a :class:`MissingDependencyError` met in a worker (or its initializer,
    whose failure reaches the caller only as a broken pool) comes out as itself, with its message."""
    try:
        yield
    except MissingDependencyError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, MissingDependencyError) or "MissingDependencyError" in repr(exc):
            raise MissingDependencyError(str(cause)) from exc
        raise
