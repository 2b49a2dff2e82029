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


def correlate(*args, **kwargs):
    """Attack scores against the blind baseline; see :func:`blindcheck.correlate.correlate`."""
    from blindcheck.correlate import correlate as _correlate

    return _correlate(*args, **kwargs)


def dataset_inference(*args, **kwargs):
    """Dataset inference on attack and blind scores; see :func:`blindcheck.inference.dataset_inference_manifest`."""
    from blindcheck.inference import dataset_inference_manifest

    return dataset_inference_manifest(*args, **kwargs)
