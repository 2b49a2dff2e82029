"""The report model: what a report says, as data, before any format. Every format (HTML, Markdown, LaTeX, the CI
summary) renders this one model, so a section cannot exist in one format and be missing in another.

A :class:`Report` is a list of :class:`Section`; a section holds blocks of five kinds: :class:`Para` (one
paragraph), :class:`Bullets`, :class:`Table`, :class:`Code` and :class:`Figure` (a figure drawn by
:mod:`blindcheck.reporting.plots`, by name). Strings are plain text: each format escapes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Para:
    text: str
    kind: str = "para"


@dataclass
class Bullets:
    items: list[str]
    kind: str = "bullets"


@dataclass
class Code:
    text: str
    kind: str = "code"


@dataclass
class Figure:
    name: str  # a key of blindcheck.reporting.plots.FIGURES
    kind: str = "figure"


@dataclass
class Table:
    """A table of plain-text cells. ``align``: one of "l" / "r" per column; ``keys``: a stable name per row (HTML
    ``data-key``, what tests look rows up by); ``swatches``: a colour per row (the model's colour in every figure),
    or None; ``tex``: also a LaTeX table (``label`` its \\label; ``tex_columns`` / ``tex_rows`` / ``tex_align`` a
    narrower form of it for a paper's column); ``more``: a line on rows left out."""

    columns: list[str]
    rows: list[list[str]]
    align: str = ""
    caption: str = ""
    keys: list[str] | None = None
    swatches: list[str | None] | None = None
    tex: bool = False
    label: str = ""
    more: str = ""
    id: str = ""
    tex_columns: list[str] | None = None  # a narrower form for the LaTeX table (default: the same)
    tex_rows: list[list[str]] | None = None
    tex_align: str = ""
    kind: str = "table"

    def __post_init__(self) -> None:
        if not self.align:
            self.align = "l" * len(self.columns)
        if len(self.align) != len(self.columns) or any(len(r) != len(self.columns) for r in self.rows):
            raise ValueError(f"table {self.id or self.caption!r}: every row needs {len(self.columns)} cells")
        if self.tex_columns is None:
            self.tex_columns, self.tex_rows, self.tex_align = self.columns, self.rows, self.align
        self.tex_align = self.tex_align or "l" * len(self.tex_columns)
        if any(len(r) != len(self.tex_columns) for r in self.tex_rows or []):
            raise ValueError(f"table {self.id!r}: every LaTeX row needs {len(self.tex_columns)} cells")


Block = Para | Bullets | Code | Figure | Table


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    def add(self, *blocks: Block | None) -> Section:
        self.blocks.extend(b for b in blocks if b is not None)
        return self


@dataclass
class Report:
    title: str
    source: str
    status: str
    headline: str
    meta: str
    sections: list[Section]

    def tables(self, tex_only: bool = False) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table) and (b.tex or not tex_only)]

    def figures(self) -> list[str]:
        return [b.name for s in self.sections for b in s.blocks if isinstance(b, Figure)]

    def section(self, sid: str) -> Section | None:
        return next((s for s in self.sections if s.id == sid), None)
