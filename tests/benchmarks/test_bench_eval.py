"""Evaluation hot paths: 3D Dice per class, slice-wise prediction of a volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.backbone import build_unet
from bench.evaluation import dice_per_class, predict_volume


def _label_pair(rng, shape, classes=4):
    label = rng.integers(0, classes, shape, dtype=np.uint8)
    noisy = label.copy()
    flip = rng.random(shape) < 0.1
    noisy[flip] = rng.integers(0, classes, int(flip.sum()), dtype=np.uint8)
    return noisy, label


@pytest.mark.parametrize("shape", [(10, 192, 192), (8, 64, 64)], ids=["default", "tiny"])
def test_dice_per_class(benchmark, rng, shape):
    prediction, label = _label_pair(rng, shape)
    scores = benchmark(dice_per_class, prediction, label, 4)
    assert scores.shape == (3,) and np.all((scores > 0.8) & (scores <= 1))


def test_predict_volume_tiny(benchmark, tiny_config):
    model = build_unet(tiny_config["model"], out_channels=4).eval()
    size = tiny_config["data"]["preprocess"]["size"]
    image = np.random.default_rng(0).random((8, size, size), dtype=np.float32)
    with torch.inference_mode():
        labels = benchmark(predict_volume, model, image, "cpu")
    assert labels.shape == image.shape
