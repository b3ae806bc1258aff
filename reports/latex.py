"""LaTeX rendering of tables (booktabs; \\textbf best, \\underline second), ready to paste.

Needs ``\\usepackage{booktabs}`` (and ``graphicx`` for the widest tables, which are
scaled to the line width). ``report_latex`` wraps every table and every figure
(``figures/<slug>.pdf``, relative to the report folder) in a document that compiles on
its own.
"""

from __future__ import annotations

from bench.reports.document import Cell, Figure, Report, Table

WIDE = 7  # tables with more columns are scaled to \linewidth
FLUSH = 8  # tables between two \clearpage
_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"$<$",
    ">": r"$>$",
    "±": r"$\pm$",
    "†": r"$^{\dagger}$",
    "‡": r"$^{\ddagger}$",
    "—": "---",
    "–": "--",
    "→": r"$\rightarrow$",
    "Δ": r"$\Delta$",
    "−": r"$-$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "·": r"$\cdot$",
}


def escape(text: str) -> str:
    return "".join(_SPECIAL.get(char, char) for char in str(text))


def cell_latex(cell: Cell) -> str:
    text = cell.latex if cell.latex is not None else escape(cell.text)
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    if cell.underline:
        text = rf"\underline{{{text}}}"
    return text + (cell.latex_suffix if cell.latex_suffix is not None else escape(cell.suffix))


def table_latex(table: Table) -> str:
    ncols = len(table.columns)
    header = table.group_columns if table.groups and table.group_columns else table.columns
    lines = [
        r"% needs \usepackage{booktabs}" + (r" and \usepackage{graphicx}" if ncols > WIDE else ""),
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{escape(table.title)}}}",
        rf"\label{{tab:{table.slug}}}",
    ]
    wide = ncols > WIDE
    if wide:
        lines.append(r"\resizebox{\linewidth}{!}{%")
    lines += [rf"\begin{{tabular}}{{l{'c' * (ncols - 1)}}}", r"\toprule"]
    if table.groups:
        cells, rules, start = [], [], 1
        for label, span in table.groups:
            cells.append(
                rf"\multicolumn{{{span}}}{{c}}{{{escape(label)}}}" if span > 1 else escape(label)
            )
            if label and span > 1:
                rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
    lines += [" & ".join(escape(c) for c in header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell_latex(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}" + ("}" if wide else "")]
    if table.notes:
        notes = " ".join(escape(n) for n in table.notes)
        lines += [
            r"\par\smallskip",
            rf"\begin{{minipage}}{{\linewidth}}\footnotesize {notes}\end{{minipage}}",
        ]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def figure_latex(figure: Figure) -> str:
    pdf = next((f for f in figure.files if f.endswith(".pdf")), f"figures/{figure.slug}.pdf")
    caption = escape(figure.title) + (f". {escape(figure.caption)}" if figure.caption else "")
    return (
        "\n".join(
            [
                r"\begin{figure}[htbp]",
                r"\centering",
                rf"\includegraphics[width=\linewidth,height=0.8\textheight,keepaspectratio]{{{pdf}}}",
                rf"\caption{{{caption}}}",
                rf"\label{{fig:{figure.slug}}}",
                r"\end{figure}",
            ]
        )
        + "\n"
    )


def report_latex(report: Report) -> str:
    parts = [
        r"\documentclass[10pt]{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\usepackage[margin=1.5cm]{geometry}",
        r"\begin{document}",
        rf"\section*{{{escape(report.title)}}}",
    ]
    for section in report.sections:
        floats = [b for b in section.blocks if isinstance(b, (Table, Figure))]
        if floats:
            parts.append(rf"\subsection*{{{escape(section.title)}}}")
            for start in range(0, len(floats), FLUSH):  # LaTeX holds at most 18 pending floats
                parts += [
                    table_latex(b) if isinstance(b, Table) else figure_latex(b)
                    for b in floats[start : start + FLUSH]
                ]
                parts.append(r"\clearpage")
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"
