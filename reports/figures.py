"""The report's figures (seaborn on matplotlib's object API, no pyplot state), saved as PNG and
SVG."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure

from bench.reports.aggregate import Experiment
from bench.reports.analysis import Analysis
from bench.reports.document import Figure

DPI = 110
STYLE = {"style": "whitegrid", "context": "paper"}
PROFILE_METRICS = [
    "slices_per_s",
    "step_ms",
    "peak_mem_mb",
    "achieved_flops",
    "peak_ratio",
    "bytes_per_round",
    "params",
    "flops_per_step",
]


def themed(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        figure = MplFigure(figsize=(width, height), layout="constrained")
        axes = figure.subplots(nrows, ncols, squeeze=False, **kwargs)
    return figure, axes


def save(figure: MplFigure, out_dir: Path, slug: str, title: str, caption: str = "") -> Figure:
    """Writes figures/<slug>.png and .svg under out_dir; returns the document figure."""
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    png = buffer.getvalue()
    (folder / f"{slug}.png").write_bytes(png)
    figure.savefig(folder / f"{slug}.svg", format="svg", metadata={"Date": None})
    return Figure(
        slug=slug,
        title=title,
        png=png,
        files=[f"figures/{slug}.png", f"figures/{slug}.svg"],
        caption=caption,
    )


def palette(methods: list[str]) -> dict[str, tuple]:
    return dict(
        zip(methods, sns.color_palette("tab10", n_colors=max(len(methods), 1)), strict=False)
    )


def dice_vs_n(analysis: Analysis, experiment: Experiment) -> MplFigure:
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    methods, n_values = analysis.methods(experiment), analysis.n_values(experiment)
    colours = palette(methods)
    figure, axes = themed(6.5, 4.0)
    ax = axes[0, 0]
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        sns.lineplot(
            data=summary,
            x="n_labeled",
            y="mean",
            hue="variant",
            hue_order=methods,
            palette=colours,
            marker="o",
            errorbar=None,
            ax=ax,
        )
        for method in methods:
            own = summary[(summary["variant"] == method) & summary["ci_low"].notna()].sort_values(
                "n_labeled"
            )
            if len(own):
                ax.fill_between(
                    own["n_labeled"],
                    own["ci_low"],
                    own["ci_high"],
                    color=colours[method],
                    alpha=0.18,
                    lw=0,
                )
    if len(n_values) > 1 and min(n_values) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(n_values, [str(n) for n in n_values])
    ax.set_xlabel(f"{experiment.n_symbol} (annotated patients per client)")
    ax.set_ylabel("Dice (mean over clients)")
    ax.set_title(f"{experiment.title} ({experiment.detail})")
    ax.legend(title="method", fontsize="small")
    return figure


def class_boxes(analysis: Analysis, experiment: Experiment) -> MplFigure:
    rows = analysis.rows[analysis.rows["experiment"] == experiment.slug].dropna(subset=["dice"])
    keys = ["variant", "n_labeled", "class_name", "client", "fold", "patient", "phase"]
    volumes = rows.groupby(keys, as_index=False)["dice"].mean()  # over seeds
    methods, n_values, classes = (
        analysis.methods(experiment),
        analysis.n_values(experiment),
        analysis.classes(experiment),
    )
    figure, axes = themed(max(3.2 * len(n_values), 5.0), 3.8, ncols=len(n_values), sharey=True)
    for ax, n in zip(axes[0], n_values, strict=False):
        with (
            sns.axes_style(STYLE["style"]),
            sns.plotting_context(STYLE["context"]),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # seaborn 0.13 passes matplotlib's old `vert`
            sns.boxplot(
                data=volumes[volumes["n_labeled"] == n],
                x="class_name",
                y="dice",
                hue="variant",
                order=classes,
                hue_order=methods,
                palette=palette(methods),
                ax=ax,
                fliersize=2,
            )
        ax.set_title(f"{experiment.n_symbol}={n}")
        ax.set_xlabel("")
        ax.set_ylabel("Dice per test volume")
        if ax.get_legend():
            if ax is axes[0, -1]:
                ax.get_legend().set_title("method")
            else:
                ax.get_legend().remove()
    figure.suptitle(f"{experiment.title}: per-class Dice ({experiment.detail})")
    return figure


def loss_curves(losses: pd.DataFrame, title: str) -> MplFigure:
    methods = sorted(losses["method"].unique())
    ncols = min(4, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    figure, axes = themed(3.2 * ncols, 2.6 * nrows, ncols=ncols, nrows=nrows)
    for ax, method in zip(axes.flat, methods, strict=False):
        own = losses[losses["method"] == method].copy()
        own["seed"] = "seed " + own["seed"].astype(str)
        hue = "seed" if own["seed"].nunique() > 1 else None
        with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
            sns.lineplot(
                data=own, x="round", y="loss_mean", hue=hue, errorbar="sd", marker="o", ax=ax
            )
        ax.set_title(method)
        ax.set_ylabel("loss (mean over the round)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(methods) :]:
        ax.set_visible(False)
    figure.suptitle(title)
    return figure


def profile_bars(frame: pd.DataFrame, title: str) -> MplFigure | None:
    metrics = [
        m for m in PROFILE_METRICS if m in frame.columns and pd.api.types.is_numeric_dtype(frame[m])
    ]
    if not metrics:
        metrics = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])][:6]
    if not metrics or frame.empty:
        return None
    label = "method" if "method" in frame.columns else frame.columns[0]
    data = frame.assign(**{label: frame[label].astype(str)})
    if "phase" in frame.columns and label == "method":
        data[label] = frame["phase"].astype(str) + ": " + data[label]
    hue = (
        "device"
        if "device" in frame.columns and label != "device" and frame["device"].nunique() > 1
        else None
    )
    metrics = [m for m in metrics if data[m].notna().any()]
    if not metrics:
        return None
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    figure, axes = themed(3.6 * ncols, 3.4 * nrows, ncols=ncols, nrows=nrows)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
            sns.barplot(
                data=data.dropna(subset=[metric]), x=label, y=metric, hue=hue, ax=ax, errorbar=None
            )
        ax.set_title(metric)
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelrotation=45)
        if ax is not axes[0, 0] and ax.get_legend():
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    figure.suptitle(title)
    return figure


def label_overlay(ax, image: np.ndarray, label: np.ndarray, colours) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest")
    rgba = np.zeros((*label.shape, 4))
    for value, colour in enumerate(colours, start=1):
        rgba[label == value] = (*colour, 0.55)
    ax.imshow(rgba, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
