"""The verbs: each runs the pipeline (inputs -> extraction -> analysis) for one question and returns a result
object; writing a result directory is :mod:`blindcheck.verbs._results`' job alone. The CLI and the package's
own functions (``blindcheck.check`` ...) call these."""

from blindcheck.verbs._check import CheckResult, check, write_results
from blindcheck.verbs._correlate import correlate
from blindcheck.verbs._di import dataset_inference_manifest
from blindcheck.verbs._match import match, match_from_check, write_match

__all__ = ["CheckResult", "check", "correlate", "dataset_inference_manifest", "match", "match_from_check",
           "write_match", "write_results"]
