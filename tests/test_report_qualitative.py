"""Qualitative grid from the runner's saved fine-tuned models (never fine-tuned again here)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bench.backbone import build_unet
from bench.datasets.splits import ClientSplit
from bench.reports.figures import save
from bench.reports.qualitative import find_models, qualitative_figures
from bench.weights import FORMAT, save_weights

CONFIG = {"model": {"widths": [4, 8], "norm": "instance"}}


def fake_bundle(size=32):
    yy, xx = np.mgrid[:size, :size]
    volumes = {}
    for i, patient in enumerate(["patient002", "patient001"]):
        image = np.stack(
            [np.exp(-((yy - 16) ** 2 + (xx - 16 - i) ** 2) / (40.0 + z)) for z in range(4)]
        ).astype(np.float32)
        label = np.zeros_like(image, dtype=np.uint8)
        label[2] = ((yy - 16) ** 2 + (xx - 16) ** 2 < 36).astype(np.uint8) * 3
        label[2][((yy - 16) ** 2 + (xx - 16) ** 2 < 9)] = 1
        volumes[patient] = [
            SimpleNamespace(patient_id=patient, phase="ED", image=image, label=label)
        ]
    split = SimpleNamespace(clients=[ClientSplit(0, [], {}, {}, [["patient002", "patient001"]])])
    return SimpleNamespace(
        volumes=volumes, split=split, num_classes=4, class_names=("RV", "Myo", "LV")
    )


def write_models(run: Path, config: dict, num_classes: int, names) -> None:
    (run / "models").mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    for name in names:
        unet = build_unet(config["model"], out_channels=num_classes)
        parts = {part: getattr(unet, part).state_dict() for part in ("encoder", "decoder", "head")}
        save_weights(
            run / "models" / name,
            [parts],
            {"format": FORMAT, "format_version": 1, "method": name, "model": config["model"]},
        )


def test_find_models_takes_smallest_seed(tmp_path):
    write_models(
        tmp_path,
        CONFIG,
        4,
        [
            "random-seed1-local-N1.safetensors",
            "random-seed0-local-N1.safetensors",
            "local_cl-seed0-federated-N4.safetensors",
            "notes.txt.safetensors",
        ],
    )
    found = find_models(tmp_path)
    assert list(found) == [("federated", 4), ("local", 1)]
    assert found[("local", 1)]["random"].name == "random-seed0-local-N1.safetensors"
    assert found[("federated", 4)]["local_cl"].name == "local_cl-seed0-federated-N4.safetensors"


def test_grid_of_same_slices_for_every_method(tmp_path):
    write_models(
        tmp_path,
        CONFIG,
        4,
        ["random-seed0-local-N1.safetensors", "simclr-seed0-local-N1.safetensors"],
    )
    figures, note = qualitative_figures(tmp_path, bundle=fake_bundle())
    assert note is None and len(figures) == 1
    slug, title, figure = figures[0]
    assert "local fine-tuning, N=1" in title
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["image", "ground truth", "Random init", "SimCLR"]
    labels = [ax.get_xlabel() for ax in figure.axes if ax.get_xlabel()]
    assert len(labels) == 4 and all(t.startswith("2D slice Dice ") for t in labels)
    # Cropped around the heart (a disc of radius 6 at (16, 16)), not the whole 32 x 32 slice.
    shown = figure.axes[0].get_images()[0].get_array().shape
    assert 13 <= shown[0] == shown[1] < 32
    rows = [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()]
    assert rows == [
        "patient001\nED z=2",
        "patient002\nED z=2",
    ]  # client 0's test patients, largest label
    saved = save(figure, tmp_path / "out", slug, title)
    pixels = np.asarray(Image.open(tmp_path / "out" / saved.files[0]).convert("RGB"), dtype=float)
    assert pixels.std() > 5


def test_many_methods_wrap_into_blocks_not_a_strip(tmp_path):
    """Seven methods + image + ground truth = 9 panels: two blocks of 5 columns (a row per
    patient in each), every method titled once, each row naming its patient."""
    methods = ["random", "simclr", "fcl", "local_cl", "moco", "byol", "swav"]
    write_models(tmp_path, CONFIG, 4, [f"{m}-seed0-local-N1.safetensors" for m in methods])
    (_, _, figure), *_ = qualitative_figures(tmp_path, bundle=fake_bundle())[0]
    visible = [ax for ax in figure.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in visible if ax.get_title()]
    names = {"Random init", "SimCLR", "FCL", "Local CL", "MoCo v2", "BYOL", "SwAV"}
    assert titles[:2] == ["image", "ground truth"] and set(titles[2:]) == names
    assert len(titles) == 9
    assert len(visible) == 9 * 2 and len(figure.axes) == 10 * 2
    rows = [ax.get_ylabel() for ax in visible if ax.get_ylabel()]
    assert rows == ["patient001\nED z=2", "patient002\nED z=2"] * 2
    width, height = figure.get_size_inches()
    assert width < 2 * height


def test_no_models_gives_a_note(tmp_path):
    figures, note = qualitative_figures(tmp_path)
    assert figures == [] and "no fine-tuned models saved" in note


@pytest.mark.slow
def test_grid_with_real_data_loading(tmp_path):
    """Synthetic volumes through bench.data.prepare_data, the loader the report uses."""
    from bench.config import load_config

    config = load_config(
        "tiny",
        [
            "data.synthetic.train=4",
            "data.synthetic.test=2",
            "split.clients=1",
            "split.n_values=[1]",
            "split.folds=1",
            "model.widths=[4,8]",
        ],
    )
    write_models(tmp_path, config, 4, ["random-seed0-local-N1.safetensors"])
    figures, note = qualitative_figures(tmp_path)
    assert note is None and len(figures) == 1


def test_slices_are_distinct_patients():
    from bench.reports.qualitative import pick_slices

    bundle = fake_bundle()
    volume = bundle.volumes["patient001"][0]
    volume.label[1] = volume.label[2] * (np.arange(32) < 16)  # a smaller second labelled slice
    picked = pick_slices(bundle, n_slices=3)
    assert [(p, where) for p, where, _, _ in picked] == [
        ("patient001", "ED z=2"),
        ("patient002", "ED z=2"),
    ]  # two patients: two rows, never a patient twice
    bundle.split.clients[0].test = [["patient001"]]
    assert len(pick_slices(bundle, n_slices=3)) == 1


def test_heart_box_is_a_square_around_the_label():
    from bench.reports.qualitative import heart_box

    label = np.zeros((64, 64), dtype=np.uint8)
    label[50:60, 4:12] = 1
    rows, cols = heart_box(label)
    assert rows.stop - rows.start == cols.stop - cols.start == 24  # the minimum side
    assert 0 <= cols.start <= 4 and cols.stop >= 12 and rows.start <= 50 and rows.stop == 64
