"""Segmentation of 3D volumes slice by slice, and Dice per class with MONAI."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot


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
