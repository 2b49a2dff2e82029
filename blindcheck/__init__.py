"""blindcheck: can a membership-inference split on speech be told apart without the model?"""

__version__ = "0.1.0"


def check(*args, **kwargs):
    """Run a blind check; see :func:`blindcheck.check.check`. Returns a :class:`~blindcheck.check.CheckResult`."""
    from blindcheck.check import check as _check

    return _check(*args, **kwargs)
