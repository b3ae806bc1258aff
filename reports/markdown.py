"""Markdown rendering of a report (GitHub-flavoured tables; figures link to their PNG files)."""

from __future__ import annotations

import re

from bench.reports.document import MISSING, Cell, Code, Figure, Note, Report, Section, Table


def text_markdown(text: str) -> str:
    """Run data as Markdown text: no raw HTML (Markdown renders it) and no table breaks."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|")


def cell_markdown(cell: Cell) -> str:
    text = text_markdown(cell.text)
    if cell.bold:
        text = f"**{text}**"
    if cell.underline:
        text = f"<u>{text}</u>"
    return text + cell.suffix


def _numeric(table: Table, index: int) -> bool:
    """Whether a column holds numbers (right-aligned) rather than text."""
    texts = [row[index].text for row in table.rows if row[index].text not in (MISSING, "")]
    return all(t[:1].isdigit() or t[:1] in "+-[" for t in texts)


def table_markdown(table: Table, level: int = 3) -> str:
    lines = [f"{'#' * level} {text_markdown(table.title)}", ""]
    lines.append("| " + " | ".join(text_markdown(c) for c in table.columns) + " |")
    lines.append(
        "|"
        + "|".join(
            ":---" if i == 0 or not _numeric(table, i) else "---:"
            for i in range(len(table.columns))
        )
        + "|"
    )
    lines += ["| " + " | ".join(cell_markdown(c) for c in row) + " |" for row in table.rows]
    lines.append("")
    lines += [f"_{text_markdown(note)}_  " for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def block_markdown(block) -> str:
    if isinstance(block, Table):
        return table_markdown(block)
    if isinstance(block, Figure):
        image = block.files[0] if block.files else ""
        title, caption = text_markdown(block.title), text_markdown(block.caption)
        return f"### {title}\n\n![{title}]({image})\n\n{caption}\n".rstrip() + "\n"
    if isinstance(block, Note):
        return text_markdown(block.text) + "\n"
    if isinstance(block, Code):
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall("`+", block.text)), default=0))
        code = f"{fence}\n{block.text.rstrip()}\n{fence}"
        summary = text_markdown(block.title)
        return f"<details><summary>{summary}</summary>\n\n{code}\n\n</details>\n"
    raise TypeError(f"unknown block {type(block).__name__}")


def section_markdown(section: Section) -> str:
    return f"## {text_markdown(section.title)}\n\n" + "\n".join(
        block_markdown(b) for b in section.blocks
    )


def report_markdown(report: Report) -> str:
    return f"# {report.title}\n\n" + "\n".join(section_markdown(s) for s in report.sections)
