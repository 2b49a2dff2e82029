"""blindcheck: can a membership-inference split on speech be told apart without the model?"""

__version__ = "0.1.0"


def check(*args, **kwargs):
    """Run a blind check; see :func:`blindcheck.checker.check`. Returns a :class:`~blindcheck.checker.CheckResult`."""
    from blindcheck.checker import check as _check

    return _check(*args, **kwargs)


def match(*args, **kwargs):
    """Propose and verify a distribution-matched subset; see :func:`blindcheck.matching.match`. Returns a
    :class:`~blindcheck.matching.MatchResult`."""
    from blindcheck.matching import match as _match

    return _match(*args, **kwargs)


def report(*args, **kwargs):
    """Render a result directory as report.html/.md/.tex and figures; see :func:`blindcheck.report.report`."""
    from blindcheck.report import report as _report

    return _report(*args, **kwargs)
