"""Reports of a result directory: ``report.html`` (self-contained), ``report.md`` (pull-request comment),
``report.tex`` (booktabs table) and every figure as PNG and PDF under ``figures/``.

Rendering reads the result files and computes no new statistic. Every user-provided string is escaped by the
template environment of its format (see :mod:`blindcheck.reporting.escape`).
"""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from blindcheck.errors import BlindcheckError
from blindcheck.reporting.data import ReportData
from blindcheck.runtime.files import write_text_atomic

FORMATS = ("html", "md", "tex")


@dataclass
class ReportPaths:
    html: Path | None = None
    md: Path | None = None
    tex: Path | None = None
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _env(fmt: str):
    import jinja2

    from blindcheck.reporting import escape

    loader = jinja2.PackageLoader("blindcheck.reporting", "templates")
    if fmt == "html":
        return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    fn = {"md": escape.md, "tex": escape.tex}[fmt]
    env = jinja2.Environment(loader=loader, autoescape=False, finalize=fn, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.globals["code"] = escape.md_code
    return env


def _png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


def render_markdown(d: ReportData, figure_links: list[dict] | None = None) -> str:
    """The Markdown report (also the `$GITHUB_STEP_SUMMARY` of ``gate``): the same model as the HTML."""
    from blindcheck.reporting.sections import build

    figs = {f["name"]: f for f in figure_links or []}
    text = _env("md").get_template("report.md.j2").render(report=build(d), figures=figs)
    return _tidy_markdown(text)


def _tidy_markdown(text: str) -> str:
    """At most one blank line in a row, no trailing spaces, one final newline."""
    import re

    lines = [ln.rstrip() for ln in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def render(d: ReportData, out: str | os.PathLike | None = None, formats: tuple[str, ...] = FORMATS,
           figures: bool = True, progress=None) -> ReportPaths:
    """Write the reports of ``d`` into ``out`` (default: the result directory). ``progress``: an optional
    callable given one line per phase (figures, each format)."""
    import time

    from markupsafe import Markup

    from blindcheck.reporting.escape import Raw, tex_path
    from blindcheck.reporting.plots import render_figures
    from blindcheck.reporting.sections import build

    t0 = time.perf_counter()
    say = progress or (lambda _line: None)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise BlindcheckError(f"unknown report format '{unknown[0]}' (known: {', '.join(FORMATS)})")
    outp = Path(out) if out is not None else d.out
    if outp is None:
        raise BlindcheckError("report: no output directory")
    outp.mkdir(parents=True, exist_ok=True)
    model = build(d)
    if figures:
        say("report: drawing figures")
    figs = render_figures(d, outp / "figures") if figures else []
    paths = ReportPaths(figures=[p for f in figs for p in f["paths"].values()])
    if "html" in formats:
        say("report: writing report.html")
        for f in figs:
            f["data_uri"] = Markup("data:image/png;base64," + base64.b64encode(f["png"]).decode("ascii"))
            # shown at the size of a 100-dpi figure (CSS pixels), sharp on high-density screens and in print
            px = _png_size(f["png"])
            f["width"], f["height"] = (round(v * 100 / f.get("dpi", 100)) for v in px)
        paths.html = outp / "report.html"
        _write(paths.html, _env("html").get_template("report.html.j2").render(
            report=model, figures={f["name"]: f for f in figs}))
    if "md" in formats:
        paths.md = outp / "report.md"
        links = [{"name": f["name"], "caption": f["caption"], "path": Raw(f"figures/{f['name']}.png")} for f in figs
                 if "png" in f["paths"]]
        _write(paths.md, render_markdown(d, links))
    if "tex" in formats:
        paths.tex = outp / "report.tex"
        _write(paths.tex, _env("tex").get_template("report.tex.j2").render(
            report=model, tables=model.tables(tex_only=True), source_tt=tex_path(model.source)))
    paths.seconds = time.perf_counter() - t0
    return paths


_write = write_text_atomic


def report(out_dir: str | os.PathLike, formats: tuple[str, ...] = FORMATS, figures: bool = True,
           dest: str | os.PathLike | None = None, progress=None) -> ReportPaths:
    """Render the reports of the result directory ``out_dir`` (written by ``check``) into ``dest`` (default
    ``out_dir``)."""
    return render(ReportData.from_dir(out_dir), dest, formats, figures, progress)


__all__ = ["FORMATS", "ReportData", "ReportPaths", "render", "render_markdown", "report"]
