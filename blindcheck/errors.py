"""Exception types. Every error a user can cause is a :class:`BlindcheckError` with a specific message."""

import re
from collections.abc import Iterator
from contextlib import contextmanager

_OPTION = re.compile("\x1f([^\x1e\x1f]*)\x1e([^\x1e\x1f]*)\x1f")


def option(python: str, cli: str | None = None) -> str:
    """A setting named inside an error message. Library code knows settings, not flags: ``str(error)`` shows the
    Python spelling (``member_value``), the CLI shows its flag (``--member-value``, or ``cli`` when the flag is
    spelled otherwise, e.g. ``option("ASRConfig(pack=False)", "--asr-no-pack")``)."""
    return f"\x1f{python}\x1e{cli or '--' + python.replace('_', '-')}\x1f"


def plain(message: str, cli: bool = False) -> str:
    """``message`` with every :func:`option` spelled for Python (default) or for the command line."""
    return _OPTION.sub(lambda m: m.group(2 if cli else 1), message)


class BlindcheckError(Exception):
    """Base class for errors caused by the user's input or settings (the CLI exits 2 on these). Settings named
    in the message with :func:`option` read as Python names here and as flags in :meth:`for_cli`."""

    def __str__(self) -> str:
        return plain(super().__str__())

    def for_cli(self) -> str:
        return plain(super().__str__(), cli=True)


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
