"""A format-neutral report: sections of tables, figures, notes and code blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

MISSING = "—"


@dataclass
class Cell:
    """One table cell: plain text (Markdown, HTML, CSV) and its LaTeX form."""

    text: str
    latex: str | None = None
    bold: bool = False
    underline: bool = False
    suffix: str = ""  # after the emphasis, e.g. significance marks
    latex_suffix: str | None = None

    @property
    def tex(self) -> str:
        return self.text if self.latex is None else self.latex

    @property
    def tex_suffix(self) -> str:
        return self.suffix if self.latex_suffix is None else self.latex_suffix

    @property
    def plain(self) -> str:
        return self.text + self.suffix


@dataclass
class Table:
    slug: str
    title: str
    columns: list[str]  # header of each column, the first one labels the rows
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    # Optional header row above ``columns``: (label, span) pairs covering every column.
    groups: list[tuple[str, int]] | None = None
    # With ``groups``: the header under them (HTML, LaTeX); flat formats use ``columns``.
    group_columns: list[str] | None = None

    def column_texts(self, index: int) -> list[str]:
        return [row[index].text for row in self.rows]


@dataclass
class Figure:
    slug: str
    title: str
    png: bytes
    files: list[str] = field(default_factory=list)  # paths written, relative to the report folder
    caption: str = ""


@dataclass
class Note:
    text: str


@dataclass
class Code:
    title: str
    text: str


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    anchor: str = ""


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)

    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]
