"""`bench report`: read run folders, compute, and write every format into one folder."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.datasets.errors import DataError
from bench.reports import figures, tables
from bench.reports.analysis import Analysis, analyse
from bench.reports.convergence import convergence_table
from bench.reports.document import Code, Note, Report, Section
from bench.reports.html import report_html
from bench.reports.latex import report_latex, table_latex
from bench.reports.markdown import report_markdown
from bench.reports.names import display_name
from bench.reports.published import (
    FCL_TITLES,
    PAPER_CLIENTS,
    fcl_table,
    like_for_like,
    matching_table,
    run_protocol,
)
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
    "peak_ratio_thread",
    "others_cpu_share",
    "bytes_per_round",
    "note",
]
PROFILE_HEADERS = {
    "image_size": "image size (px)",
    "step_ms": "step (ms)",
    "slices_per_s": "slices/s",
    "peak_mem_mb": "peak memory (MiB)",
    "params": "parameters",
    "flops_per_step": "FLOPs per step",
    "achieved_flops": "achieved FLOP/s",
    "peak_ratio": "% of matmul peak",
    "peak_ratio_thread": "% of matmul peak (busiest-thread time)",
    "others_cpu_share": "CPU taken by other processes (%)",
    "bytes_per_round": "bytes sent per round",
}


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
        protocol = ((analysis.config(experiment) or {}).get("split") or {}).get("protocol")
        detail = (
            f"split protocol {protocol}, {experiment.detail}" if protocol else experiment.detail
        )
        section = Section(f"{experiment.title} ({detail})")
        sections.append(section)
        if analysis.n_values(experiment):
            section.blocks.append(tables.measured_table(analysis, experiment))
            convergence = convergence_table(analysis, experiment)
            if convergence is not None:
                section.blocks.append(convergence)
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
        name = matching_table(experiment, analysis.real_data(experiment))
        if name is not None:
            matched.add(name)
            config = analysis.config(experiment)
            section.blocks.append(
                tables.comparison_table(
                    analysis,
                    experiment,
                    name,
                    run_protocol(config, experiment.preset),
                    like_for_like(config, experiment.preset),
                )
            )
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
        paper = fcl_table(name).dropna(subset=["method"]) if name is not None else None
        section.blocks.append(
            figures.save(
                figures.dice_vs_n(analysis, experiment, paper),
                out,
                f"dice-vs-n-{experiment.slug}",
                f"{experiment.title}: Dice vs {experiment.n_symbol}",
                figures.dice_vs_n_caption(analysis, experiment, paper is not None),
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
                "Boxes: quartiles and 1.5 IQR whiskers; each point: one test volume (patient × "
                "frame) of one client in one fold, mean over seeds.",
            )
        )
    return sections


def cost_section(analysis: Analysis, runs: list[Run], out: Path) -> Section:
    from bench.reports.cost import accuracy_cost

    section = Section("Accuracy against cost")
    for experiment in analysis.experiments:
        if experiment.transfer or not analysis.has_results(experiment):
            continue  # a transfer run's pretraining cost is its source run's
        frame = accuracy_cost(analysis, experiment, runs)
        if frame.empty:
            continue
        section.blocks.append(tables.accuracy_cost_table(analysis, experiment, frame))
        figure = figures.accuracy_cost_figure(
            frame, f"{experiment.title}: accuracy against cost per client", analysis.name
        )
        if figure is not None:
            section.blocks.append(
                figures.save(
                    figure,
                    out,
                    f"cost-{experiment.slug}",
                    f"{experiment.title}: accuracy against cost per client",
                    "Dice (mean over clients) at N = 1 and 8 against what pretraining cost each "
                    "client; dashed steps and rings: the Pareto front (no method more accurate "
                    "for less). Costs as in the table above.",
                )
            )
        if frame["flops_per_step"].drop(frame.index[frame["method"] == "random"]).isna().any():
            section.blocks.append(
                Note(
                    "FLOPs missing for some methods: run `bench profile --run RUN_DIR` "
                    "(phase pretrain) to add the per-step FLOPs."
                )
            )
    if not section.blocks:
        section.blocks.append(Note("No pretraining in these runs (or no results) to weigh."))
    return section


def published_section(matched: set[str]) -> Section:
    section = Section("Published numbers (not measured here)")
    section.blocks.append(
        Note(
            "Copied from the papers and never mixed into measured numbers. Wu et al. 2021 stand "
            "beside a measured experiment only when its rows were computed on data read from a "
            "dataset folder (never on synthetic phantoms) with the same dataset and fine-tuning "
            "mode; otherwise, and for Chaitanya et al. 2020 (another protocol), they stand "
            "alone here."
        )
    )
    section.blocks += [tables.published_table(name) for name in FCL_TITLES if name not in matched]
    section.blocks.append(tables.chaitanya_table())
    return section


LOSS_CAPTION = (
    "Per method: mean over clients of each round's mean loss; band: sd over clients. Where a "
    "method records its loss's terms they are drawn beside the total."
)
FCL_CAPTION = (
    " FCL: its loss contrasts each query against negatives drawn from memory banks that start "
    "empty and fill over the first rounds (grey lines, right axis: local bank dotted, remote "
    "bank dash-dot; dashed vertical line: banks full); the number of negatives grows with them, "
    "so the loss rises while they fill: this is not divergence."
)


MOCO_CAPTION = (
    " MoCo v2: its queue of negatives (queue_size keys, 256 by default) starts as random unit "
    "vectors (lightly's memory bank), easy negatives far from every query; the batches' keys "
    "replace them over the first queue_size / batch steps and lie closer to the queries, so "
    "its loss rises while they do: not divergence either."
)


def pretraining_section(runs: list[Run], out: Path, name=lambda m: m) -> Section:
    section = Section("Pretraining loss")
    for run in runs:
        if run.losses.empty:
            continue
        slug = "pretrain-loss-" + "".join(c if c.isalnum() else "-" for c in run.name)
        caption = LOSS_CAPTION + (FCL_CAPTION if "bank_fill" in run.losses else "")
        if "moco" in set(run.losses["method"]):
            caption += MOCO_CAPTION
        section.blocks.append(
            figures.save(
                figures.loss_curves(run.losses, f"{run.name}: pretraining loss per round", name),
                out,
                slug,
                f"{run.name}: pretraining loss",
                caption,
            )
        )
    if not section.blocks:
        section.blocks.append(
            Note("No pretraining losses recorded (no pretrain_loss/ in the run folders).")
        )
    return section


QUALITATIVE_CAPTION = (
    "Rows: distinct test patients of client 0 (the slice with the largest labelled area), "
    "cropped around the heart. Under each prediction: the Dice of that 2D slice (mean over the "
    "foreground classes present), not the volume Dice of the tables."
)


def learning_section(runs: list[Run], out: Path, name) -> Section:
    section = Section("Fine-tuning learning curves")
    for run in runs:
        if run.curves.empty:
            continue
        for mode in sorted(run.curves["setting"].dropna().unique()):
            title = f"{run.name}: {mode} fine-tuning, per round"
            figure = figures.finetune_curves(run.curves, mode, title, name)
            if figure is None:
                continue
            slug = "curves-" + "".join(c if c.isalnum() else "-" for c in f"{run.name}-{mode}")
            section.blocks.append(
                figures.save(
                    figure,
                    out,
                    slug,
                    title,
                    "Per method and N: validation Dice per round (federated: the global model's; "
                    "local: mean over clients), or the training loss where no client has "
                    "validation patients; mean over folds and seeds. Rings: the rounds whose "
                    "models were kept and tested.",
                )
            )
    if not section.blocks:
        section.blocks.append(Note("No fine-tuning curves recorded (no curves/finetune/)."))
    return section


def qualitative_section(runs: list[Run], out: Path, enabled: bool, name=None) -> Section:
    from bench.reports.qualitative import qualitative_figures

    section = Section("Qualitative results")
    if not enabled:
        section.blocks.append(Note("Qualitative figures were turned off (--no-qualitative)."))
        return section
    for run in runs:
        try:
            found, note = qualitative_figures(run.path, name=run.name, display=name)
        except DataError:  # a crafted or corrupt model file is refused, not skipped
            raise
        except Exception as error:  # a figure must not sink the report
            found, note = (
                [],
                f"{run.path}: qualitative figure skipped ({type(error).__name__}: {error}).",
            )
        section.blocks += [
            figures.save(fig, out, slug, title, QUALITATIVE_CAPTION) for slug, title, fig in found
        ]
        if note:
            section.blocks.append(Note(note))
    return section


def _profiled(method: str, name) -> str:
    """A profile row's method as the figure shows it: display name, model or sampler."""
    return figures.SAMPLERS.get(method) or figures.STEP_MODELS.get(method) or name(method)


def profile_section(runs: list[Run], out: Path, name=lambda m: m) -> Section:
    section = Section("Profiles")
    for run in runs:
        for profile, frame in run.profiles.items():
            slug = "".join(c if c.isalnum() else "-" for c in f"profile-{run.name}-{profile}")
            title = f"{run.name}: profile {profile.removeprefix('profile-')}"
            shown = [c for c in PROFILE_COLUMNS if c in frame.columns]
            readable = frame[shown] if len(shown) >= 3 else frame
            if "method" in readable:
                readable = readable.assign(
                    method=readable["method"].astype(str).map(lambda m: _profiled(m, name))
                )
            for column in ("peak_ratio", "peak_ratio_thread", "others_cpu_share"):
                if column in readable:
                    readable = readable.assign(**{column: 100 * readable[column]})
            section.blocks.append(
                tables.frame_table(
                    readable.rename(columns=PROFILE_HEADERS),
                    slug,
                    f"{title}: measured steps",
                    notes=[f"Every column: {run.path / 'profile' / (profile + '.csv')}."],
                )
            )
            figure = figures.profile_figure(frame, title, name)
            if figure is not None:
                section.blocks.append(
                    figures.save(
                        figure,
                        out,
                        slug,
                        title,
                        figures.profile_caption(frame),
                    )
                )
        for profile, content in run.profile_json.items():
            if isinstance(content, dict):
                content = {
                    k: v for k, v in content.items() if k != "rows"
                }  # the rows are the CSV's
            section.blocks.append(
                Code(
                    f"{run.name}: profile {profile}.json",
                    json.dumps(content, indent=2, default=str),
                )
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
        name = matching_table(experiment, analysis.real_data(experiment))
        if name is not None:
            published = fcl_table(name).dropna(subset=["method"]).set_index(["method", "n"])
            keys = list(zip(own["variant"], own["n_labeled"], strict=False))
            own["published_wu2021_mean"] = [published["mean"].get(k) for k in keys]
            own["published_wu2021_std"] = [published["std"].get(k) for k in keys]
            own["difference_vs_published"] = own["mean"] - own["published_wu2021_mean"]
        frames.append(own)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_report(
    run_dirs,
    out_dir,
    *,
    qualitative: bool = True,
    quiet: bool = False,
    show_unverified: bool = False,
) -> Written:
    from bench.provenance import code_version, hardware
    from bench.reports.provenance_section import provenance_blocks

    start = time.perf_counter()
    out = Path(out_dir)
    runs, rows, notes = load_runs(run_dirs, show_unverified=show_unverified)
    (out / "tables").mkdir(parents=True, exist_ok=True)
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
    hparams = {}
    for run in runs:
        for method, values in ((run.config or {}).get("pretrain", {}).get("methods") or {}).items():
            hparams.setdefault(method, values or {})
    configs = {str(run.path): run.config for run in runs if run.config}
    analysis = (
        analyse(rows, plans, hparams, configs)
        if not rows.empty or any(p.modes for p in plans)
        else None
    )
    if analysis is None:
        overview.blocks.append(Note("No result rows: there is nothing measured to tabulate yet."))
    else:
        report.sections += experiment_sections(analysis, out, matched)
    name = analysis.name if analysis is not None else display_name
    if analysis is not None:
        report.sections.append(cost_section(analysis, runs, out))
    report.sections.append(published_section(matched))
    _say("report: figures", quiet)
    report.sections += [
        pretraining_section(runs, out, name),
        learning_section(runs, out, name),
        qualitative_section(runs, out, qualitative, name),
        profile_section(runs, out, name),
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
