"""Escaping of user-provided strings for each output format, applied to every template expression.

Templates never build markup from user strings: the environments escape every ``{{ … }}`` value unless it is a
:class:`Raw` (markup the report layer itself produced from already-escaped parts).
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape


class Raw(str):
    """A string already in the target format; templates output it unchanged."""


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
        ">": r"\textgreater{}", "|": r"\textbar{}"}
# Characters the report's own words use that pdflatex's default (utf8, T1) input does not typeset in text mode.
_TEX.update({"≤": r"$\le$", "≥": r"$\ge$", "−": r"$-$", "·": r"$\cdot$", "×": r"$\times$", "ρ": r"$\rho$",
             "α": r"$\alpha$", "τ": r"$\tau$", "–": "--", "—": "---", "…": r"\dots{}", "→": r"$\rightarrow$",
             "’": "'", "⁻": r"\textsuperscript{-}"})
_TEX_RE = re.compile("|".join(re.escape(k) for k in _TEX))


def tex(value: object) -> str:
    """LaTeX text mode: every special character escaped."""
    if isinstance(value, Raw):
        return value
    return _TEX_RE.sub(lambda m: _TEX[m.group()], _text(value))


# Characters that open or close inline markup, plus the table separator; '<' and '&' become entities so that
# GitHub's HTML pass-through never sees a tag, '@' so that no user string mentions anyone.
_MD_PUNCT = re.compile(r"([\\`*_{}\[\]|~])")
# Markers that would turn a value placed at a line start into a heading, list or quote; numbers ("1.00", "-1.7")
# are left alone (no template puts a value where a number would start an ordered list).
_MD_LINE_START = re.compile(r"^(\s*)([#+=>]|-(?![\d.]))")


def tex_path(value: object) -> Raw:
    """A path or file name in LaTeX: typewriter, never hyphenated, breakable after each '/'."""
    return Raw(r"\texttt{" + tex(value).replace("/", r"/\allowbreak{}") + "}")


def md(value: object) -> str:
    """Markdown (GitHub-flavoured) inline text, safe inside table cells and at the start of a line."""
    if isinstance(value, Raw):
        return value
    s = _text(value).replace("&", "&amp;").replace("<", "&lt;").replace("@", "&#64;")
    s = _MD_PUNCT.sub(r"\\\1", s.replace("\r", " ").replace("\n", " "))
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), s)


def md_code(value: object) -> str:
    """Markdown inline code span that holds any text (backticks fenced by a longer run)."""
    s = _text(value).replace("\n", " ")
    ticks = "`" * (max((len(r) for r in re.findall("`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return Raw(f"{ticks}{pad}{s}{pad}{ticks}")


def html(value: object) -> Markup:
    return value if isinstance(value, Markup) else escape(_text(value))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def github_annotation(value: object, prop: bool = False) -> str:
    """A GitHub workflow-command message (``prop``: a property value such as ``title``)."""
    s = _text(value).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return s.replace(":", "%3A").replace(",", "%2C") if prop else s
