"""blindcheck: can a membership-inference split on speech or audio be told apart without the model?

The package's API is these functions; each imports its verb when called (so that ``import blindcheck`` stays
cheap). The layers underneath, each importing only those before it: ``runtime`` -> ``inputs`` -> ``features`` ->
``extraction`` -> ``analysis`` -> ``verbs`` -> ``reporting`` -> ``cli`` (``tests/test_layers.py`` holds them to it).
"""

__version__ = "0.1.0"


def check(*args, **kwargs):
    """Run a blind check; see :func:`blindcheck.verbs.check`. Returns a :class:`~blindcheck.verbs.CheckResult`."""
    from blindcheck.verbs import check as _check

    return _check(*args, **kwargs)


def match(*args, **kwargs):
    """Propose and verify a distribution-matched subset; see :func:`blindcheck.verbs.match`. Returns a
    :class:`~blindcheck.analysis.matching.MatchResult`."""
    from blindcheck.verbs import match as _match

    return _match(*args, **kwargs)


def report(*args, **kwargs):
    """Render a result directory as report.html/.md/.tex and figures; see :func:`blindcheck.reporting.report`."""
    from blindcheck.reporting import report as _report

    return _report(*args, **kwargs)


def correlate(*args, **kwargs):
    """Attack scores against the blind baseline; see :func:`blindcheck.verbs.correlate`."""
    from blindcheck.verbs import correlate as _correlate

    return _correlate(*args, **kwargs)


def dataset_inference(*args, **kwargs):
    """Dataset inference on attack and blind scores; see :func:`blindcheck.verbs.dataset_inference_manifest`."""
    from blindcheck.verbs import dataset_inference_manifest

    return dataset_inference_manifest(*args, **kwargs)
