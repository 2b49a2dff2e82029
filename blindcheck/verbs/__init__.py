"""The verbs: each runs the pipeline (inputs -> extraction -> analysis) for one question and returns a result
object; writing a result directory is :mod:`blindcheck.verbs._results`' job alone. The CLI and the package's
own functions (``blindcheck.check`` ...) call these."""

from blindcheck.verbs._check import CheckResult, check, correlate_check, split_overrides
from blindcheck.verbs._correlate import correlate
from blindcheck.verbs._di import dataset_inference_manifest
from blindcheck.verbs._match import check_match_options, match, match_after_check, match_from_check
from blindcheck.verbs._results import (
           add_to_result_json,
           manifest_rows,
           write_match,
           write_outputs,
           write_results,
           write_summary,
)

__all__ = ["CheckResult", "add_to_result_json", "check", "check_match_options", "correlate", "correlate_check",
           "dataset_inference_manifest", "manifest_rows", "match", "match_after_check", "match_from_check",
           "split_overrides", "write_match", "write_outputs", "write_results", "write_summary"]
