"""The report's figures (seaborn on matplotlib's object API, no pyplot state), saved as PNG and
SVG."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FuncFormatter

from bench.reports.aggregate import BASELINE, Experiment
from bench.reports.analysis import Analysis
from bench.reports.document import Figure
from bench.reports.names import DISPLAY, registry_id

DPI = 300  # PNG; PDF and SVG are vector
STYLE = {"style": "whitegrid", "context": "paper"}
FORMATS = ("png", "pdf", "svg")
# Text stays text (TrueType in PDF, <text> in SVG): editable in a paper's figure.
EDITABLE_TEXT = {"pdf.fonttype": 42, "svg.fonttype": "none"}
MIN_CLIENTS_FOR_BAND = 3  # a bootstrap CI over two clients' values says nothing


def themed(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        figure = MplFigure(figsize=(width, height), layout="constrained")
        axes = figure.subplots(nrows, ncols, squeeze=False, **kwargs)
    return figure, axes


def save(figure: MplFigure, out_dir: Path, slug: str, title: str, caption: str = "") -> Figure:
    """Writes figures/<slug>.png (300 dpi), .pdf and .svg under out_dir; returns the figure."""
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    png = buffer.getvalue()
    (folder / f"{slug}.png").write_bytes(png)
    figure.set_layout_engine("none")  # laid out by the first save; keep it for the other two
    with matplotlib.rc_context(EDITABLE_TEXT):
        figure.savefig(folder / f"{slug}.pdf", format="pdf", metadata={"CreationDate": None})
        figure.savefig(folder / f"{slug}.svg", format="svg", metadata={"Date": None})
    return Figure(
        slug=slug,
        title=title,
        png=png,
        files=[f"figures/{slug}.{kind}" for kind in FORMATS],
        caption=caption,
    )


def _method_colours() -> dict[str, tuple]:
    """One fixed colour per registry id, the same in every figure: tab10 for ten methods
    (random init in its grey), two darker hues from tab20b for the other two."""
    tab10, tab20b = sns.color_palette("tab10", 10), sns.color_palette("tab20b", 20)
    hues = [c for i, c in enumerate(tab10) if i != 7] + [tab20b[0], tab20b[4]]
    methods = [m for m in DISPLAY if m != BASELINE]
    return {BASELINE: tab10[7], **dict(zip(methods, hues, strict=True))}


METHOD_COLOURS = _method_colours()


def palette(methods: list[str]) -> dict[str, tuple]:
    """A colour per method (variant) that is the same in every figure; a second variant of the
    same method, or an unknown method, takes the first colour no other method of the figure
    has."""
    spare = [c for c in sns.color_palette("tab20", 20) if c not in METHOD_COLOURS.values()]
    spare += sns.color_palette("husl", max(len(methods), 1))
    colours: dict[str, tuple] = {}
    for method in methods:
        colour = METHOD_COLOURS.get(registry_id(method))
        if colour is None or colour in colours.values():
            colour = next(c for c in spare if c not in colours.values())
        colours[method] = colour
    return colours


def dice_vs_n(
    analysis: Analysis, experiment: Experiment, published: pd.DataFrame | None = None
) -> MplFigure:
    """Mean Dice per method against N; random init as a grey reference line; bands (95% CI)
    only with at least 3 clients; ``published`` (method, n, mean) as dashed lines."""
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    methods, n_values = analysis.methods(experiment), analysis.n_values(experiment)
    colours = palette(methods)
    figure, axes = themed(6.5, 4.0)
    ax = axes[0, 0]
    for method in methods:
        own = summary[summary["variant"] == method].sort_values("n_labeled")
        if own.empty:
            continue
        reference = method.split(" [")[0] == BASELINE
        style = (
            {"color": "0.35", "lw": 2.2, "ls": "-.", "marker": "s", "zorder": 1}
            if reference
            else {"color": colours[method], "lw": 1.6, "marker": "o", "zorder": 3}
        )
        label = analysis.name(method) + (" (reference)" if reference else "")
        ax.plot(own["n_labeled"], own["mean"], label=label, **style)
        band = own[own["n_clients"] >= MIN_CLIENTS_FOR_BAND].dropna(subset=["ci_low"])
        if len(band):
            ax.fill_between(
                band["n_labeled"],
                band["ci_low"],
                band["ci_high"],
                color=style["color"],
                alpha=0.15,
                lw=0,
            )
        if published is not None:
            paper = published[published["method"] == method].sort_values("n")
            if len(paper):
                ax.plot(
                    paper["n"],
                    paper["mean"],
                    color=style["color"],
                    ls="--",
                    lw=1.1,
                    marker="x",
                    label=f"{analysis.name(method)}, published",
                )
    shown = sorted(set(n_values) | (set(published["n"]) if published is not None else set()))
    if len(shown) > 1 and min(shown) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(shown, [str(n) for n in shown])
    ax.set_xlabel(f"{experiment.n_symbol}: annotated patients per client")
    ax.set_ylabel("Dice (mean over clients)")
    ax.set_title(f"{experiment.title}: Dice vs {experiment.n_symbol}")
    ax.legend(title="method", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def dice_vs_n_caption(analysis: Analysis, experiment: Experiment, published: bool) -> str:
    clients = analysis.summary.loc[
        analysis.summary["experiment"] == experiment.slug, "n_clients"
    ].max()
    text = "Lines: mean over clients; grey dash-dot: random init, the reference. "
    if clients >= MIN_CLIENTS_FOR_BAND:
        text += (
            "Bands: 95% bootstrap CI over clients (none where a cell has fewer than 3 clients). "
        )
    else:
        text += (
            f"No confidence band: {clients} client(s) per cell, and a CI from fewer than "
            f"{MIN_CLIENTS_FOR_BAND} values says nothing. "
        )
    if published:
        text += "Dashed: published numbers (Wu et al. 2021), same colour as the method."
    return text.strip()


def class_boxes(analysis: Analysis, experiment: Experiment) -> MplFigure:
    rows = analysis.rows[analysis.rows["experiment"] == experiment.slug].dropna(subset=["dice"])
    keys = ["variant", "n_labeled", "class_name", "client", "fold", "patient", "phase"]
    volumes = rows.groupby(keys, as_index=False)["dice"].mean()  # over seeds
    volumes["method"] = volumes["variant"].map(analysis.name)
    methods, n_values, classes = (
        analysis.methods(experiment),
        analysis.n_values(experiment),
        analysis.classes(experiment),
    )
    names = [analysis.name(m) for m in methods]
    colours = {analysis.name(m): c for m, c in palette(methods).items()}
    present = [n for n in n_values if (volumes["n_labeled"] == n).any()] or n_values[:1]
    figure, axes = themed(max(3.4 * len(present), 5.0), 3.9, ncols=len(present), sharey=True)
    for ax, n in zip(axes[0], present, strict=False):
        data = volumes[volumes["n_labeled"] == n]
        with (
            sns.axes_style(STYLE["style"]),
            sns.plotting_context(STYLE["context"]),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", DeprecationWarning)  # seaborn 0.13, matplotlib `vert`
            common = {"data": data, "x": "class_name", "y": "dice", "hue": "method"}
            common |= {"order": classes, "hue_order": names}
            sns.boxplot(**common, palette=colours, ax=ax, showfliers=False, boxprops={"alpha": 0.5})
            sns.stripplot(
                **common, palette=colours, dodge=True, size=2.5, jitter=0.15, ax=ax, legend=False
            )
        ax.set_title(f"{experiment.n_symbol}={n}")
        ax.set_xlabel("class")
        ax.set_ylabel("Dice per test volume")
        if ax.get_legend():
            if ax is axes[0, -1]:
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="method")
            else:
                ax.get_legend().remove()
    figure.suptitle(f"{experiment.title}: per-class Dice")
    return figure


def _terms(frame: pd.DataFrame) -> list[str]:
    """A loss's recorded terms (``<name>_term``), e.g. FCL's bank and local terms."""
    return [
        c for c in frame.columns if c.endswith(("_term", "_term_mean")) and frame[c].notna().any()
    ]


# Bank fills a method records (FCL): label and line style on the loss figure's second axis.
BANKS = {"bank_fill": ("local bank", ":"), "remote_bank_fill": ("remote bank", "-.")}


def loss_curves(losses: pd.DataFrame, title: str, name=lambda m: m) -> MplFigure:
    """One panel per method: mean over clients of each round's mean loss (band: sd over
    clients); where the method records its loss's terms, they are drawn too, and where it
    records a bank fill (FCL), the fill is drawn on a second axis, the round it is full marked."""
    methods = sorted(losses["method"].unique(), key=lambda m: name(m).lower())
    ncols = min(4, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    figure, axes = themed(3.4 * ncols, 2.8 * nrows, ncols=ncols, nrows=nrows)
    for ax, method in zip(axes.flat, methods, strict=False):
        own = losses[losses["method"] == method].dropna(axis=1, how="all")
        lines = {"loss": "loss_mean"} | {
            c.removesuffix("_mean").replace("_", " "): c for c in _terms(own)
        }
        by_round = own.groupby("round")
        colours = sns.color_palette("dark", len(lines))
        for (label, column), colour in zip(lines.items(), colours, strict=True):
            mean, sd = by_round[column].mean(), by_round[column].std().fillna(0.0)
            ax.plot(mean.index, mean, marker="o", ms=3, color=colour, label=label)
            ax.fill_between(mean.index, mean - sd, mean + sd, color=colour, alpha=0.15, lw=0)
        banks = [c for c in BANKS if c in own]
        if banks:
            twin = ax.twinx()
            for column in banks:
                fill = by_round[column].mean()
                label = f"{BANKS[column][0]} filled"
                twin.plot(
                    fill.index, 100 * fill, color="0.5", ls=BANKS[column][1], lw=1, label=label
                )
            twin.legend(fontsize="x-small", loc="lower right")
            twin.set_ylim(0, 108)
            twin.set_ylabel("memory bank filled (%)", color="0.4")
            twin.grid(False)
            fill = (
                by_round[banks].mean().min(axis=1) if len(banks) > 1 else by_round[banks[0]].mean()
            )
            full = fill[fill >= 0.999]
            if len(full):
                ax.axvline(full.index[0], color="0.5", ls="--", lw=0.8)
                ax.annotate(
                    "banks full",
                    (full.index[0], 1),
                    xycoords=("data", "axes fraction"),
                    fontsize=7,
                    color="0.3",
                    ha="right",
                    va="top",
                    rotation=90,
                )
        if len(lines) > 1:
            ax.legend(fontsize="x-small", loc="best")
        ax.set_title(name(method))
        ax.set_xlabel("round")
        ax.set_ylabel("loss (mean over the round)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(methods) :]:
        ax.set_visible(False)
    figure.suptitle(title)
    return figure


STEP_PHASES = {
    "pretrain": "pretraining step",
    "finetune": "fine-tuning step",
    "inference": "inference",
}


SAMPLERS = {
    "pretrain_sampler": "pretraining sampler",
    "finetune_sampler": "fine-tuning sampler",
    "pretrain_augment": "pretraining augmentation",
}
STEP_MODELS = {"unet": "U-Net"}
# Above this share of the CPU taken by other processes, wall times say more about the machine
# than about the step (the profiler's own warning threshold): the figure reads the busiest
# thread's run time instead.
CONTENDED_SHARE = 0.2


def contended_share(frame: pd.DataFrame) -> float | None:
    """The share of the CPU other processes took while the steps were timed, where it is above
    ``CONTENDED_SHARE`` and the profile holds busiest-thread times to fall back on."""
    needed = {"others_cpu_share", "step_thread_s", "peak_ratio_thread", "batch"}
    if not needed <= set(frame.columns) or not frame["step_thread_s"].notna().any():
        return None
    share = frame["others_cpu_share"].max()
    return float(share) if pd.notna(share) and share > CONTENDED_SHARE else None


def profile_figure(frame: pd.DataFrame, title: str, name=lambda m: m) -> MplFigure | None:
    """Slices/s per step (annotated with the share of the device's fp32 matmul peak), peak
    memory beside it, and the data samplers in their own panel."""
    if frame.empty or "slices_per_s" not in frame or "method" not in frame:
        return None
    frame = frame.copy()
    frame["phase"] = frame["phase"].astype(str) if "phase" in frame else "pretrain"
    steps = frame[frame["phase"].isin(list(STEP_PHASES)) & frame["slices_per_s"].notna()].copy()
    samplers = frame[(frame["phase"] == "data") & frame["slices_per_s"].notna()]
    if steps.empty and samplers.empty:
        return None
    steps["label"] = [
        name(m)
        if p == "pretrain"
        else STEP_PHASES[p] + (f" ({STEP_MODELS.get(m, m)})" if m else "")
        for p, m in zip(steps["phase"], steps["method"].fillna("").astype(str), strict=True)
    ]
    contended = contended_share(frame)
    rate_label, ratio_column = "throughput (2D slices per second)", "peak_ratio"
    if contended is not None:  # the busiest thread's run time: what the step costs the CPU
        steps["slices_per_s"] = steps["batch"] / steps["step_thread_s"]
        rate_label = "throughput (2D slices per busiest-thread second)"
        ratio_column = "peak_ratio_thread"
    steps = steps.sort_values(
        ["phase", "label"], key=lambda c: c.map(list(STEP_PHASES).index) if c.name == "phase" else c
    )
    panels = 2 + (not samplers.empty) if not steps.empty else 1
    height = max(2.6, 0.32 * max(len(steps), len(samplers)) + 1.2)
    figure, axes = themed(4.2 * panels, height, ncols=panels)
    axes = list(axes[0])
    if not steps.empty:
        speed, memory = axes[0], axes[1]
        y = np.arange(len(steps))
        colours = [sns.color_palette("deep")[list(STEP_PHASES).index(p)] for p in steps["phase"]]
        speed.barh(y, steps["slices_per_s"], color=colours)
        speed.set_yticks(y, steps["label"])
        speed.invert_yaxis()
        speed.set_xlabel(rate_label)
        speed.set_title("Training and inference steps")
        ratio = steps.get(ratio_column, pd.Series(np.nan, steps.index))
        for yi, (rate, share) in enumerate(zip(steps["slices_per_s"], ratio, strict=False)):
            text = f"{100 * share:.1f}% of matmul peak" if pd.notna(share) else f"{rate:.0f}/s"
            speed.annotate(
                text, (rate, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=6
            )
        speed.set_xlim(0, steps["slices_per_s"].max() * 1.6)
        if "peak_mem_mb" in steps and steps["peak_mem_mb"].notna().any():
            memory.barh(y, steps["peak_mem_mb"].fillna(0), color=colours)
            kind = steps["memory_kind"].dropna().astype(str) if "memory_kind" in steps else []
            memory.set_xlabel(
                "peak memory (MiB)"
                + (" — device allocator" if any("cuda" in k for k in kind) else " — process growth")
            )
        else:
            memory.text(0.5, 0.5, "memory not recorded", ha="center", transform=memory.transAxes)
        memory.set_yticks(y, [""] * len(y))
        memory.invert_yaxis()
        memory.set_title("Memory")
    if not samplers.empty:
        ax = axes[-1]
        y = np.arange(len(samplers))
        ax.barh(y, samplers["slices_per_s"], color=sns.color_palette("muted")[2])
        ax.set_yticks(
            y, [SAMPLERS.get(str(m), str(m).replace("_", " ")) for m in samplers["method"]]
        )
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:g}k" if v else "0"))
        ax.invert_yaxis()
        if "consumer_slices_per_s" in samplers:
            for yi, need in enumerate(samplers["consumer_slices_per_s"]):
                if pd.notna(need):
                    ax.plot([need, need], [yi - 0.4, yi + 0.4], color="k", lw=1.5)
        ax.set_xlabel("2D slices per second\n(tick: the fastest step's demand)")
        ax.set_title("Data samplers")
    figure.suptitle(title)
    return figure


def profile_caption(frame: pd.DataFrame) -> str:
    text = (
        "Left: throughput of each step, annotated with the achieved FLOP/s as a share of the "
        "device's measured dense fp32 matmul peak; middle: peak memory of the same steps; "
    )
    if "phase" in frame and (frame["phase"] == "data").any():
        text += "right: the samplers on their own scale (they feed the steps between them). "
    contended = contended_share(frame)
    if contended is not None:
        text += (
            f"Other processes took {100 * contended:.0f}% of the CPU while the steps were timed, "
            "so throughput and the share of the peak are computed from the busiest thread's run "
            "time (what the step costs the CPU), not from the inflated wall time. "
        )
    if "device_name" in frame and frame["device_name"].notna().any():
        text += f"Device: {', '.join(map(str, frame['device_name'].dropna().unique()))}."
    return text.strip()


def label_overlay(ax, image: np.ndarray, label: np.ndarray, colours) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest")
    rgba = np.zeros((*label.shape, 4))
    for value, colour in enumerate(colours, start=1):
        rgba[label == value] = (*colour, 0.55)
    ax.imshow(rgba, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


# Where a point's label may go, in points from the point: right or left, above or below.
LABEL_OFFSETS = ((3, 2), (3, -8), (-3, 2), (-3, -8), (3, 9), (3, -15), (-3, 9), (-3, -15))


def _label_points(ax, xs, ys, labels, size: float) -> None:
    """Names beside scatter points, each at the first offset whose box overlaps no label
    placed before (points from the top down; the first offset when every one overlaps)."""
    ax.autoscale_view()
    scale = 72 / ax.figure.dpi  # display pixels to points
    placed: list[tuple[float, float, float, float]] = []
    order = sorted(zip(xs, ys, labels, strict=True), key=lambda p: -p[1])
    for x, y, label in order:
        px, py = (v * scale for v in ax.transData.transform((x, y)))
        width, height = 0.6 * size * len(label), size
        choice = LABEL_OFFSETS[0]
        for dx, dy in LABEL_OFFSETS:
            left = px + dx - (width if dx < 0 else 0)
            box = (left, py + dy, left + width, py + dy + height)
            if not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
            ):
                choice = (dx, dy)
                break
        dx, dy = choice
        left = px + dx - (width if dx < 0 else 0)
        placed.append((left, py + dy, left + width, py + dy + height))
        ax.annotate(
            label,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=size,
            ha="right" if dx < 0 else "left",
            va="bottom",
        )


def accuracy_cost_figure(frame: pd.DataFrame, title: str, name=lambda m: m) -> MplFigure | None:
    """Dice at N = 1 and 8 (rows) against each cost (columns), Pareto front joined and ringed."""
    from bench.reports.cost import COSTS, DICE_N

    ns = [n for n in DICE_N if frame[f"dice_n{n}"].notna().any()]
    costs = [c for c in COSTS if frame[c].notna().any()]
    if not ns or not costs:
        return None
    colours = palette(list(frame["method"]))
    figure, axes = themed(3.4 * len(costs), 2.9 * len(ns), ncols=len(costs), nrows=len(ns))
    for r, n in enumerate(ns):
        for c, cost in enumerate(costs):
            ax = axes[r, c]
            data = frame.dropna(subset=[cost, f"dice_n{n}"])
            for row in data.itertuples(index=False):
                x, y = getattr(row, cost), getattr(row, f"dice_n{n}")
                ax.scatter(x, y, color=colours[row.method], s=28, zorder=3)
            front = data[data[f"front_n{n}_{cost}"]].sort_values(cost)
            if len(front):
                ax.step(
                    front[cost],
                    front[f"dice_n{n}"],
                    where="post",
                    color="k",
                    lw=0.9,
                    ls="--",
                    zorder=2,
                    label="Pareto front",
                )
                ax.scatter(
                    front[cost],
                    front[f"dice_n{n}"],
                    s=90,
                    facecolors="none",
                    edgecolors="k",
                    lw=0.9,
                    zorder=4,
                )
            positive = data[cost][data[cost] > 0]
            if len(positive) > 1 and positive.max() / positive.min() > 50:
                ax.set_xscale("symlog", linthresh=float(positive.min()))
            ax.set_xlabel(COSTS[cost])
            ax.set_ylabel(f"Dice at N={n}")
            _label_points(
                ax, data[cost], data[f"dice_n{n}"], [name(m) for m in data["method"]], size=6
            )
            if r == 0 and c == 0 and len(front):
                ax.legend(fontsize="x-small", loc="lower right")
    figure.suptitle(title)
    return figure


def finetune_curves(curves: pd.DataFrame, mode: str, title: str, name=lambda m: m):
    """One panel per N: per method, the validation Dice per round (the server's under FedAvg,
    the clients' mean in local fine-tuning), or the training loss where no validation exists;
    mean over folds and seeds; rings: the rounds whose models were kept."""
    own = curves[curves["setting"] == mode]
    metric = "val_dice" if (own["metric"] == "val_dice").any() else "loss_mean"
    values = own[own["metric"] == metric]
    pooled = values[values["client"].isna()] if values["client"].isna().any() else values
    if pooled.empty:
        return None
    chosen = own[own["metric"] == "chosen_round"]
    ns = sorted(pooled["n_labeled"].dropna().astype(int).unique())
    methods = sorted(pooled["method"].unique(), key=lambda m: name(m).lower())
    colours = palette(methods)
    figure, axes = themed(3.4 * len(ns), 3.0, ncols=len(ns), sharey=True)
    for ax, n in zip(axes[0], ns, strict=True):
        for method in methods:
            unit = pooled[(pooled["method"] == method) & (pooled["n_labeled"] == n)]
            if unit.empty:
                continue
            curve = unit.groupby("round")["value"].mean()
            ax.plot(curve.index, curve, color=colours[method], label=name(method), lw=1.3)
            kept = chosen[(chosen["method"] == method) & (chosen["n_labeled"] == n)]
            rounds = sorted({int(r) for r in kept["value"]} & set(curve.index))
            ax.scatter(
                rounds,
                curve.loc[rounds],
                s=40,
                facecolors="none",
                edgecolors=colours[method],
                zorder=3,
            )
        ax.set_title(f"N={n}")
        ax.set_xlabel("round")
        ax.set_ylabel("validation Dice" if metric == "val_dice" else "training loss")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0, -1].legend(
        fontsize="x-small", title="method", loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    figure.suptitle(title)
    return figure
