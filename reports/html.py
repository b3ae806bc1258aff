"""One self-contained HTML page: every table, and every figure embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import re

from bench.reports.document import Cell, Code, Figure, Note, Report, Section, Table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #aaa; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0 0.3em; font-size: 0.9em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.4em; }
th, td { padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead tr:last-child th { border-bottom: 1px solid #222; }
table { border-top: 2px solid #222; border-bottom: 2px solid #222; }
tbody tr:nth-child(even) { background: #f4f4f4; }
p.note { font-size: 0.8em; color: #555; margin: 0.1em 0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #444; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.published { color: #7a4b00; }
"""


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cell_html(cell: Cell, tag: str = "td") -> str:
    text = html.escape(cell.text)
    if cell.bold:
        text = f"<b>{text}</b>"
    if cell.underline:
        text = f"<u>{text}</u>"
    return f"<{tag}>{text}{html.escape(cell.suffix)}</{tag}>"


def table_html(table: Table) -> str:
    css = ' class="published"' if "published" in table.slug else ""
    head = []
    if table.groups:
        head.append(
            "<tr>"
            + "".join(
                f'<th colspan="{span}">{html.escape(label)}</th>' for label, span in table.groups
            )
            + "</tr>"
        )
    columns = table.group_columns if table.groups and table.group_columns else table.columns
    head.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
    body = ["<tr>" + "".join(cell_html(c) for c in row) + "</tr>" for row in table.rows]
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in table.notes)
    slug = html.escape(table.slug, quote=True)
    return (
        f'<div class="table" id="{slug}"><table{css} '
        f'data-slug="{slug}"><caption>{html.escape(table.title)}</caption>'
        f"<thead>{''.join(head)}</thead><tbody>{''.join(body)}</tbody></table>{notes}</div>"
    )


def figure_html(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    caption = html.escape(figure.title) + (
        f" — {html.escape(figure.caption)}" if figure.caption else ""
    )
    slug = html.escape(figure.slug, quote=True)
    return (
        f'<figure id="{slug}" data-slug="{slug}"><img '
        f'alt="{html.escape(figure.title)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def block_html(block) -> str:
    if isinstance(block, Table):
        return table_html(block)
    if isinstance(block, Figure):
        return figure_html(block)
    if isinstance(block, Note):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Code):
        summary = f"<summary>{html.escape(block.title)}</summary>"
        return f"<details>{summary}<pre>{html.escape(block.text)}</pre></details>"
    raise TypeError(f"unknown block {type(block).__name__}")


def section_html(section: Section) -> str:
    return (
        f'<section id="{anchor(section.title)}"><h2>{html.escape(section.title)}</h2>'
        + "\n".join(block_html(b) for b in section.blocks)
        + "</section>"
    )


def report_html(report: Report) -> str:
    toc = "".join(
        f'<li><a href="#{anchor(s.title)}">{html.escape(s.title)}</a></li>' for s in report.sections
    )
    body = "\n".join(section_html(s) for s in report.sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta '
        f'charset="utf-8"><title>{html.escape(report.title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(report.title)}</h1><nav><ul>{toc}</ul></nav>\n{body}\n</body></html>\n"
    )
