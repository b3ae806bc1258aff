"""`bench report`: read run folders, compute, and write every format into one folder."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.reports import figures, tables
from bench.reports.analysis import Analysis, analyse
from bench.reports.document import Code, Note, Report, Section
from bench.reports.html import report_html
from bench.reports.latex import report_latex, table_latex
from bench.reports.markdown import report_markdown
from bench.reports.published import FCL_TITLES, PAPER_CLIENTS, fcl_table, matching_table
from bench.reports.runs import Run, load_runs, planned

PROFILE_COLUMNS = [
    "phase",
    "method",
    "device",
    "batch",
    "image_size",
    "step_ms",
    "slices_per_s",
    "peak_mem_mb",
    "params",
    "flops_per_step",
    "achieved_flops",
    "peak_ratio",
    "bytes_per_round",
    "note",
]


@dataclass
class Written:
    out: Path
    report: Report
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def experiment_sections(analysis: Analysis, out: Path, matched: set[str]) -> list[Section]:
    sections = []
    for experiment in analysis.experiments:
        section = Section(f"{experiment.title} ({experiment.detail})")
        sections.append(section)
        if analysis.n_values(experiment):
            section.blocks.append(tables.measured_table(analysis, experiment))
        if not analysis.has_results(experiment):
            in_rows = bool((analysis.rows["experiment"] == experiment.slug).any())
            section.blocks.append(
                Note(
                    "Result rows exist, but no Dice value (every class absent or NaN)."
                    if in_rows
                    else "No results yet: the run's configuration asks for this experiment; none "
                    "of its units has finished."
                )
            )
            continue
        name = matching_table(experiment)
        if name is not None:
            matched.add(name)
            section.blocks.append(tables.comparison_table(analysis, experiment, name))
            clients = analysis.summary.loc[
                analysis.summary["experiment"] == experiment.slug, "n_clients"
            ].max()
            if clients != PAPER_CLIENTS:
                section.blocks.append(
                    Note(
                        f"Caution: the published numbers come from {PAPER_CLIENTS} clients; "
                        f"this run has results from {clients}."
                    )
                )
        section.blocks.append(
            figures.save(
                figures.dice_vs_n(analysis, experiment),
                out,
                f"dice-vs-n-{experiment.slug}",
                f"{experiment.title}: Dice vs {experiment.n_symbol}",
                "Lines: mean over clients; bands: 95% bootstrap CI over clients.",
            )
        )
        section.blocks.append(tables.detail_table(analysis, experiment))
        section.blocks += [
            tables.class_table(analysis, experiment, c) for c in analysis.classes(experiment)
        ]
        section.blocks.append(
            figures.save(
                figures.class_boxes(analysis, experiment),
                out,
                f"class-boxes-{experiment.slug}",
                f"{experiment.title}: per-class Dice",
                "Each point: one test volume of one client in one fold.",
            )
        )
    return sections


def published_section(matched: set[str]) -> Section:
    section = Section("Published numbers (not measured here)")
    section.blocks.append(
        Note(
            "Copied from the papers; shown alone where no run of this report follows the same "
            "protocol, and never mixed into measured numbers."
        )
    )
    section.blocks += [tables.published_table(name) for name in FCL_TITLES if name not in matched]
    section.blocks.append(tables.chaitanya_table())
    return section


def pretraining_section(runs: list[Run], out: Path) -> Section:
    section = Section("Pretraining loss")
    for run in runs:
        if run.losses.empty:
            continue
        slug = "pretrain-loss-" + "".join(c if c.isalnum() else "-" for c in run.name)
        section.blocks.append(
            figures.save(
                figures.loss_curves(run.losses, f"{run.name}: pretraining loss per round"),
                out,
                slug,
                f"{run.name}: pretraining loss",
                "Per method: mean over clients of each round's mean loss; band: sd over clients.",
            )
        )
    if not section.blocks:
        section.blocks.append(
            Note("No pretraining losses recorded (no pretrain_loss/ in the run folders).")
        )
    return section


def qualitative_section(runs: list[Run], out: Path, enabled: bool) -> Section:
    from bench.reports.qualitative import qualitative_figures

    section = Section("Qualitative results")
    if not enabled:
        section.blocks.append(Note("Qualitative figures were turned off (--no-qualitative)."))
        return section
    for run in runs:
        try:
            found, note = qualitative_figures(run.path, name=run.name)
        except Exception as error:  # a figure must not sink the report
            found, note = (
                [],
                f"{run.path}: qualitative figure skipped ({type(error).__name__}: {error}).",
            )
        section.blocks += [figures.save(fig, out, slug, title) for slug, title, fig in found]
        if note:
            section.blocks.append(Note(note))
    return section


def profile_section(runs: list[Run], out: Path) -> Section:
    section = Section("Profiles")
    for run in runs:
        for name, frame in run.profiles.items():
            slug = "".join(c if c.isalnum() else "-" for c in f"profile-{run.name}-{name}")
            shown = [c for c in PROFILE_COLUMNS if c in frame.columns]
            section.blocks.append(
                tables.frame_table(
                    frame[shown] if len(shown) >= 3 else frame,
                    slug,
                    f"{run.name}: profile {name}",
                    notes=[f"Every column: {run.path / 'profile' / (name + '.csv')}."],
                )
            )
            figure = figures.profile_bars(frame, f"{run.name}: profile {name}")
            if figure is not None:
                section.blocks.append(
                    figures.save(figure, out, slug, f"{run.name}: profile {name}")
                )
        for name, content in run.profile_json.items():
            if isinstance(content, dict):
                content = {
                    k: v for k, v in content.items() if k != "rows"
                }  # the rows are the CSV's
            section.blocks.append(
                Code(f"{run.name}: profile {name}.json", json.dumps(content, indent=2, default=str))
            )
    if not section.blocks:
        section.blocks.append(Note("No profiles (run `bench profile` to add them)."))
    return section


def summary_frame(analysis: Analysis) -> pd.DataFrame:
    """Tidy numbers behind the tables, with the published ones in their own columns."""
    frames = []
    for experiment in analysis.experiments:
        own = analysis.summary[analysis.summary["experiment"] == experiment.slug].copy()
        for key in ("dataset", "pretrain_dataset", "mode", "preset", "split_hash"):
            own[key] = getattr(experiment, key)
        name = matching_table(experiment)
        if name is not None:
            published = fcl_table(name).dropna(subset=["method"]).set_index(["method", "n"])
            keys = list(zip(own["variant"], own["n_labeled"], strict=False))
            own["published_wu2021_mean"] = [published["mean"].get(k) for k in keys]
            own["published_wu2021_std"] = [published["std"].get(k) for k in keys]
            own["difference_vs_published"] = own["mean"] - own["published_wu2021_mean"]
        frames.append(own)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_report(run_dirs, out_dir, *, qualitative: bool = True, quiet: bool = False) -> Written:
    from bench.provenance import code_version, hardware
    from bench.reports.provenance import provenance_blocks

    start = time.perf_counter()
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    runs, rows, notes = load_runs(run_dirs)
    _say(f"report: {len(runs)} run folder(s), {len(rows)} result rows", quiet)
    report = Report(
        "bench report: self-supervised pretraining for federated cardiac MRI segmentation"
    )
    overview = Section(
        "Overview",
        [
            Note(f"Run folders: {', '.join(str(r.path) for r in runs)}. Result rows: {len(rows)}."),
            *[Note(n) for n in notes],
        ],
    )
    report.sections.append(overview)
    matched: set[str] = set()
    plans = [p for p in (planned(run) for run in runs) if p is not None]
    analysis = analyse(rows, plans) if not rows.empty or any(p.modes for p in plans) else None
    if analysis is None:
        overview.blocks.append(Note("No result rows: there is nothing measured to tabulate yet."))
    else:
        report.sections += experiment_sections(analysis, out, matched)
    report.sections.append(published_section(matched))
    _say("report: figures", quiet)
    report.sections += [
        pretraining_section(runs, out),
        qualitative_section(runs, out, qualitative),
        profile_section(runs, out),
    ]
    report.sections.append(
        Section("Provenance", provenance_blocks(runs, hardware(), code_version()))
    )
    written = Written(out, report)
    for table in report.tables():
        pd.DataFrame([[c.plain for c in row] for row in table.rows], columns=table.columns).to_csv(
            out / "tables" / f"{table.slug}.csv", index=False
        )
        (out / "tables" / f"{table.slug}.tex").write_text(table_latex(table))
    if analysis is not None:
        summary_frame(analysis).to_csv(out / "summary.csv", index=False)
        analysis.class_summary.to_csv(out / "summary_per_class.csv", index=False)
        analysis.pairs.to_csv(out / "client_fold_scores.csv", index=False)
        written.files.update(
            summary=out / "summary.csv",
            per_class=out / "summary_per_class.csv",
            pairs=out / "client_fold_scores.csv",
        )
    for kind, text in (
        ("markdown", report_markdown(report)),
        ("latex", report_latex(report)),
        ("html", report_html(report)),
    ):
        path = out / {"markdown": "report.md", "latex": "report.tex", "html": "report.html"}[kind]
        path.write_text(text, encoding="utf-8")
        written.files[kind] = path
    written.seconds = time.perf_counter() - start
    _say(f"report: {written.files['html']} ({written.seconds:.1f} s)", quiet)
    return written
