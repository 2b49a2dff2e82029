"""Exception types. Every error a user can cause is a :class:`BlindcheckError` with a specific message."""


class BlindcheckError(Exception):
    """Base class for errors caused by the user's input or settings (the CLI exits 2 on these)."""


class ManifestError(BlindcheckError):
    """The manifest cannot be read or fails validation. The message names the row and the problem."""


class AudioError(BlindcheckError):
    """One audio file cannot be decoded. Recorded per clip; never aborts a whole run."""


class MissingDependencyError(BlindcheckError):
    """An optional package is needed; the message names the extra to install."""
