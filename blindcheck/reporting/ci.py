"""CI integration of ``gate``: the Markdown job summary (``$GITHUB_STEP_SUMMARY``) and GitHub annotations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from blindcheck.reporting.escape import github_annotation

_LEVEL = {"confounded": "error", "inconclusive": "warning", "clean": "notice"}


def annotations(result: dict[str, Any]) -> list[str]:
    """GitHub workflow commands: one annotation for the verdict (on the manifest file), one notice per further
    reason."""
    v = result.get("verdict") or {}
    status = str(v.get("status", "inconclusive"))
    reasons = [str(r) for r in v.get("reasons") or []] or [status]
    src = (result.get("manifest") or {}).get("source")
    props = [f"title={github_annotation(f'blindcheck: {status}', prop=True)}"]
    if src and not os.path.isabs(str(src)):
        props.insert(0, f"file={github_annotation(src, prop=True)}")
    lines = [f"::{_LEVEL.get(status, 'warning')} {','.join(props)}::{github_annotation(reasons[0])}"]
    lines += [f"::notice title=blindcheck%3A reason::{github_annotation(r)}" for r in reasons[1:]]
    return lines


def write_step_summary(result: dict[str, Any], out: str | os.PathLike | None = None) -> Path | None:
    """Append the Markdown report to ``$GITHUB_STEP_SUMMARY`` when that variable is set; returns its path."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    from blindcheck.reporting import render_markdown
    from blindcheck.reporting.data import ReportData

    d = ReportData(result=result, out=Path(out) if out else None)
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(render_markdown(d) + "\n")
    return Path(target)
