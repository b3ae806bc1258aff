"""Evaluation as the papers do it: Dice on the native grid, HD95 in mm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.datasets.preprocess import PreprocessSettings, Volume, preprocess_frame
from bench.evaluation import hd95_per_class, score_volume


def _native_volume():
    """A 3-slice frame with anisotropic spacing: 10 mm between slices, 1.0 x 1.7 mm in-plane."""
    z, h, w = 3, 26, 18
    label = np.zeros((z, h, w), np.uint8)
    label[:, 6:20, 3:15] = 2
    label[:, 9:17, 6:12] = 3
    label[1:, 4:7, 2:16] = 1
    image = label.astype(np.float32) + np.linspace(0, 1, w, dtype=np.float32)
    spacing = (10.0, 1.0, 1.7)
    out, lab, new_spacing, rshape, offset = preprocess_frame(
        image, label, spacing, PreprocessSettings(spacing_mm=1.3, size=24)
    )
    volume = Volume(
        "p",
        "ED",
        out,
        lab,
        new_spacing,
        spacing,
        label.shape,
        resampled_shape=rshape,
        crop_offset=offset,
        native_label=label,
    )
    return volume


def _numpy_native(prediction: np.ndarray, volume: Volume) -> np.ndarray:
    """Reference: undo the crop/pad, then nearest-neighbour back to the native voxels."""
    _, rh, rw = volume.resampled_shape
    top, left = volume.crop_offset
    _, nh, nw = volume.native_shape
    out = np.zeros(volume.native_shape, np.uint8)
    for y in range(nh):
        for x in range(nw):
            ry = min(int((y + 0.5) * rh / nh), rh - 1)  # native voxel centre on the resampled grid
            rx = min(int((x + 0.5) * rw / nw), rw - 1)
            py, px = ry - top, rx - left  # its pixel in the cropped/padded prediction
            if 0 <= py < prediction.shape[1] and 0 <= px < prediction.shape[2]:
                out[:, y, x] = prediction[:, py, px]
    return out


def test_native_dice_equals_a_numpy_reference_on_an_anisotropic_volume():
    volume = _native_volume()
    prediction = np.roll(volume.label, shift=(1, 2), axis=(1, 2))  # a wrong prediction
    prediction[0, :5] = 1
    scores = score_volume(prediction, volume, 4, native=True, hd95=False)
    native = _numpy_native(prediction, volume)
    for c, score in zip((1, 2, 3), scores, strict=True):
        a, b = native == c, volume.native_label == c
        expected = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert score["grid"] == "native"
        assert score["dice"] == pytest.approx(expected, abs=1e-6)  # MONAI: float32
    preprocessed = score_volume(prediction, volume, 4, native=False, hd95=False)
    assert preprocessed[0]["grid"] == "preprocessed"
    assert [s["dice"] for s in preprocessed] != [s["dice"] for s in scores]


def test_hd95_equals_a_hand_computed_value_on_two_small_shapes():
    """A 3x3 square and the same square 2 columns to the right, 1.5 mm per column: every
    boundary voxel of one is 0, 1 or 2 columns from the other's, and the 95th percentile of
    those distances is 2 columns = 3.0 mm, both ways."""
    label = np.zeros((1, 7, 9), np.uint8)
    prediction = np.zeros_like(label)
    label[0, 2:5, 2:5] = 1
    prediction[0, 2:5, 4:7] = 1
    prediction[0, 0, 0] = 2  # class 2 only predicted; class 3 nowhere
    hd, notes = hd95_per_class(prediction, label, 4, spacing=(8.0, 1.0, 1.5))
    assert hd[0] == pytest.approx(3.0)
    assert math.isnan(hd[1]) and notes[1] == "class absent from the label"
    assert math.isnan(hd[2]) and notes[2] == "class absent from the label and the prediction"
    label[0, 6, 8] = 2
    prediction[0, 0, 0] = 0
    hd, notes = hd95_per_class(prediction, label, 4, spacing=(8.0, 1.0, 1.5))
    assert notes[0] == "" and math.isnan(hd[1]) and notes[1] == "class absent from the prediction"
