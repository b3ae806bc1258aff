"""Segmentation of 3D volumes slice by slice; Dice and HD95 per class with MONAI.

Scores are computed on the preprocessed grid, or on the native grid (the
prediction resampled back, nearest neighbour, onto the frame's own voxels, as
Chaitanya et al. 2020 report Dice) when ``native`` is set.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import DiceMetric, compute_hausdorff_distance
from monai.networks.utils import one_hot

from bench.datasets.preprocess import restore_native


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module, image: np.ndarray, device, batch_size: int = 32
) -> np.ndarray:
    """Label map (Z, H, W) for a volume (Z, H, W)."""
    was_training = model.training
    model.eval()
    slices = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(1)
    labels = [
        model(slices[start : start + batch_size].to(device)).argmax(dim=1).cpu()
        for start in range(0, slices.shape[0], batch_size)
    ]
    model.train(was_training)
    return torch.cat(labels).numpy().astype(np.uint8)


def dice_per_class(prediction: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """3D Dice of each foreground class; NaN where the class is absent from the label."""
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    return (
        metric(_onehot(prediction, num_classes), _onehot(label, num_classes))[0]
        .numpy()
        .astype(np.float64)
    )


def _onehot(volume: np.ndarray, num_classes: int) -> torch.Tensor:
    return one_hot(torch.from_numpy(volume.astype(np.int64))[None, None], num_classes)


def mean_dice(model: torch.nn.Module, volumes, num_classes: int, device) -> float:
    """Mean over volumes and foreground classes, as used for model selection."""
    scores = [
        dice_per_class(predict_volume(model, v.image, device), v.label, num_classes)
        for v in volumes
    ]
    return float(np.nanmean(np.stack(scores))) if scores else float("nan")


def hd95_per_class(
    prediction: np.ndarray, label: np.ndarray, num_classes: int, spacing
) -> tuple[np.ndarray, list[str]]:
    """95th-percentile symmetric Hausdorff distance in mm of each foreground class (MONAI,
    ``spacing`` = (z, y, x) mm of the arrays' axes), and for each a note: NaN with the
    reason where the class is absent from the label or the prediction, else ""."""
    with warnings.catch_warnings():  # MONAI warns of absent classes; the notes record them
        warnings.simplefilter("ignore")  # and its deprecation notices about its own arguments
        distances = compute_hausdorff_distance(
            _onehot(prediction, num_classes),
            _onehot(label, num_classes),
            include_background=False,
            percentile=95,
            spacing=[float(s) for s in spacing],
        )[0]
    values, notes = [], []
    for c in range(1, num_classes):
        absent = [
            name for name, a in (("label", label), ("prediction", prediction)) if not (a == c).any()
        ]
        if absent:
            values.append(float("nan"))
            notes.append(f"class absent from the {' and the '.join(absent)}")
        else:
            values.append(float(distances[c - 1]))
            notes.append("")
    return np.asarray(values, dtype=np.float64), notes


def score_volume(
    prediction: np.ndarray, volume, num_classes: int, *, native: bool, hd95: bool
) -> list[dict]:
    """One dict per foreground class: ``dice``, ``grid`` and, with ``hd95``, ``hd95_mm`` and
    ``hd95_note``, on the native grid (``native``) or the preprocessed one."""
    if native:
        prediction = restore_native(prediction, volume, order=0)
        label, spacing, grid = volume.native_label, volume.native_spacing, "native"
    else:
        label, spacing, grid = volume.label, volume.spacing, "preprocessed"
    dice = dice_per_class(prediction, label, num_classes)
    scores = [{"dice": float(d), "grid": grid} for d in dice]
    if hd95:
        distances, notes = hd95_per_class(prediction, label, num_classes, spacing)
        for score, distance, note in zip(scores, distances, notes, strict=True):
            score.update(hd95_mm=float(distance), hd95_note=note)
    return scores


def score_volumes(
    model: torch.nn.Module,
    volumes,
    class_names: tuple[str, ...],
    device,
    *,
    native_dice: bool,
    hd95: bool,
) -> list[dict]:
    """Per test volume and foreground class: ``patient``, ``phase``, ``class_name`` and the
    scores of ``score_volume`` (metrics only: this is what a site sends back)."""
    rows = []
    for volume in volumes:
        prediction = predict_volume(model, volume.image, device)
        scores = score_volume(
            prediction, volume, len(class_names) + 1, native=native_dice, hd95=hd95
        )
        for class_name, score in zip(class_names, scores, strict=True):
            rows.append(
                {
                    "patient": volume.patient_id,
                    "phase": volume.phase,
                    "class_name": class_name,
                    **score,
                }
            )
    return rows
