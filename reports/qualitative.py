"""Qualitative grid: the same test slices, their ground truth, and each method's prediction.

Uses the fine-tuned models the runner keeps
(``<run>/models/{method}-seed{s}-{mode}-N{n}.safetensors``,
fold 0, client 0): nothing is fine-tuned again here. Each row is a different test patient
of client 0 (the slice with the largest labelled area of its first labelled volume), cropped
around the heart (the labelled region with a margin); the Dice under each prediction is the
2D Dice of that slice (mean over the foreground classes present), not the volume's.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import seaborn as sns
import torch
import yaml
from matplotlib.figure import Figure as MplFigure

from bench.reports.aggregate import method_order
from bench.reports.figures import label_overlay, themed
from bench.reports.names import display_name

MODEL_NAME = re.compile(
    r"^(?P<method>.+)-seed(?P<seed>\d+)-(?P<mode>[a-z]+)-N(?P<n>\d+)\.safetensors$"
)


def find_models(run_dir: Path) -> dict[tuple[str, int], dict[str, Path]]:
    """(mode, n) -> method -> model file, the smallest seed of each."""
    found: dict[tuple[str, int], dict[str, tuple[int, Path]]] = {}
    for path in sorted((Path(run_dir) / "models").glob("*.safetensors")):
        match = MODEL_NAME.match(path.name)
        if not match:
            continue
        key, seed = (match["mode"], int(match["n"])), int(match["seed"])
        current = found.setdefault(key, {}).get(match["method"])
        if current is None or seed < current[0]:
            found[key][match["method"]] = (seed, path)
    return {key: {m: p for m, (_, p) in methods.items()} for key, methods in sorted(found.items())}


def pick_slices(bundle, n_slices: int = 3) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(patient, where, image, label) 2D slices of client 0's test volumes (those of fold 0), one
    per patient (distinct patients, never the same one twice): the slice with the largest
    labelled area."""
    picked = []
    for patient in sorted(bundle.split.clients[0].test_patients(0)):
        for volume in bundle.volumes[patient]:
            if volume.label is None:
                continue
            area = (volume.label > 0).reshape(volume.label.shape[0], -1).sum(axis=1)
            if area.max() > 0:
                z = int(np.argmax(area))
                picked.append((patient, f"{volume.phase} z={z}", volume.image[z], volume.label[z]))
                break
        if len(picked) == n_slices:
            break
    return picked


def heart_box(label: np.ndarray, margin: float = 0.35, minimum: int = 24) -> tuple[slice, slice]:
    """A square crop around the labelled region (the heart), with a margin, inside the image."""
    rows, cols = np.nonzero(label)
    if not len(rows):
        return slice(None), slice(None)
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    side = min(max(int(round(extent * (1 + 2 * margin))), minimum), *label.shape)
    box = []
    for c, size in zip(centre, label.shape, strict=True):
        start = int(round(c - side / 2))
        start = min(max(start, 0), size - side)
        box.append(slice(start, start + side))
    return box[0], box[1]


def load_model(config: dict, path: Path, num_classes: int) -> torch.nn.Module:
    from bench.backbone import build_unet
    from bench.weights import load_finetuned

    model = build_unet(config["model"], out_channels=num_classes)
    return load_finetuned(path, model).eval()


@torch.no_grad()
def predict_slice(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    return (
        model(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None])
        .argmax(1)[0]
        .numpy()
    )


def slice_dice(prediction: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    scores = []
    for value in range(1, num_classes):
        truth, guess = label == value, prediction == value
        if truth.any():
            scores.append(2 * (truth & guess).sum() / (truth.sum() + guess.sum()))
    return float(np.mean(scores)) if scores else float("nan")


WIDE_GRID = 8  # panels side by side at most (image, ground truth and 6 methods)


def grid(
    config: dict, bundle, models: dict[str, Path], title: str, n_slices: int = 3, name=None
) -> MplFigure:
    name = name or display_name
    slices = pick_slices(bundle, n_slices)
    methods = method_order(models)
    nets = {m: load_model(config, models[m], bundle.num_classes) for m in methods}
    colours = sns.color_palette("Set1", n_colors=bundle.num_classes - 1)
    columns = ["image", "ground truth", *[name(m) for m in methods]]
    # At most WIDE_GRID panels side by side: more methods wrap into further blocks of rows (a
    # row per patient in each block), so that the grid keeps a page's proportions.
    blocks = math.ceil(len(columns) / WIDE_GRID)
    per_row = math.ceil(len(columns) / blocks)
    figure, axes = themed(
        1.9 * per_row, 2.0 * blocks * len(slices) + 0.6, ncols=per_row, nrows=blocks * len(slices)
    )

    def at(patient: int, item: int):
        return axes[(item // per_row) * len(slices) + patient, item % per_row]

    for row, (patient, where, image, label) in enumerate(slices):
        crop = heart_box(label)
        at(row, 0).imshow(image[crop], cmap="gray", interpolation="nearest")
        at(row, 0).set_xticks([])
        at(row, 0).set_yticks([])
        label_overlay(at(row, 1), image[crop], label[crop], colours)
        for col, method in enumerate(methods, start=2):
            prediction = predict_slice(nets[method], image)
            label_overlay(at(row, col), image[crop], prediction[crop], colours)
            dice = slice_dice(prediction, label, bundle.num_classes)
            at(row, col).set_xlabel(f"2D slice Dice {dice:.2f}", fontsize=7)
        for block in range(blocks):  # the patient at the start of its row in every block
            at(row, block * per_row).set_ylabel(f"{patient}\n{where}", fontsize=7)
        for col, column in enumerate(columns):
            if row == 0:
                at(row, col).set_title(column, fontsize=8)
    for empty in range(len(columns), blocks * per_row):
        for row in range(len(slices)):
            at(row, empty).set_visible(False)
    legend = ", ".join(
        f"{class_name}: {['red', 'blue', 'green', 'purple'][i % 4]}"
        for i, class_name in enumerate(bundle.class_names)
    )
    figure.suptitle(f"{title}\n(cropped around the heart; {legend})", fontsize=9)
    return figure


def qualitative_figures(
    run_dir: Path, bundle=None, n_slices: int = 3, name: str | None = None, display=None
) -> tuple[list[tuple[str, str, MplFigure]], str | None]:
    """[(slug, title, figure)] for each (mode, N) with saved models, or a note saying why none."""
    run_dir = Path(run_dir)
    models = find_models(run_dir)
    if not models:
        return (
            [],
            f"{run_dir}: no fine-tuned models saved (models/ is absent or empty); no qualitative "
            "figure.",
        )
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if bundle is None:
        from bench.data import prepare_data

        bundle = prepare_data(config, run_dir, progress=False)
    out = []
    for (mode, n), by_method in models.items():
        title = (
            f"{name or run_dir.name}: test slices of client 0, {mode} fine-tuning, "
            f"N={n} (fold 0 model)"
        )
        slug = f"qualitative-{re.sub(r'[^A-Za-z0-9]+', '-', name or run_dir.name)}-{mode}-n{n}"
        out.append((slug, title, grid(config, bundle, by_method, title, n_slices, name=display)))
    return out, None
