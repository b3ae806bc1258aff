"""Every bad input gives a DataError whose message names the offending file or folder."""

import argparse
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.cli_data import add_data_commands
from bench.datasets.acdc import parse_info, read_acdc
from bench.datasets.check import check_dataset
from bench.datasets.errors import DataError
from bench.datasets.hvsmr import read_hvsmr
from bench.datasets.layout import detect_layout
from bench.datasets.nifti import LABEL_VALUES, load_image, load_pair

ACDC = LABEL_VALUES["acdc"]


def save(path: Path, data, zooms=(1.5, 1.5, 10.0)) -> Path:
    img = nib.Nifti1Image(np.asarray(data), np.eye(4))
    img.header.set_zooms(zooms[: np.ndim(data)] + (1.0,) * (np.ndim(data) - len(zooms)))
    nib.save(img, str(path))
    return path


def acdc_patient(tmp_path: Path, *, gt=True, info="ED: 1\nES: 5\nGroup: NOR\nNbFrame: 10\n"):
    folder = tmp_path / "database" / "training" / "patient001"
    folder.mkdir(parents=True)
    if info is not None:
        (folder / "Info.cfg").write_text(info)
    for frame in (1, 5):
        save(folder / f"patient001_frame{frame:02d}.nii.gz", np.zeros((8, 8, 3), np.int16))
        if gt:
            save(folder / f"patient001_frame{frame:02d}_gt.nii.gz", np.zeros((8, 8, 3), np.uint8))
    return folder


def raises_naming(path: Path, fn, *args, match=None, **kwargs) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    assert str(path) in str(info.value) and info.value.path == Path(path)
    return info.value


def test_folder_in_neither_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    err = raises_naming(tmp_path, detect_layout, tmp_path, match="neither ACDC nor HVSMR")
    assert "Info.cfg" in str(err) and "training_axial_crop_patN" in str(err)


def test_missing_gt_in_training(tmp_path):
    folder = acdc_patient(tmp_path, gt=False)
    raises_naming(folder / "patient001_frame01_gt.nii.gz", read_acdc, tmp_path, match="label")


def test_missing_info_cfg(tmp_path):
    folder = acdc_patient(tmp_path, info=None)
    raises_naming(folder / "Info.cfg", read_acdc, tmp_path, match="missing Info.cfg")


def test_missing_frame_file(tmp_path):
    folder = acdc_patient(tmp_path, info="ED: 2\nES: 5\nGroup: NOR\nNbFrame: 10\n")
    raises_naming(folder / "patient001_frame02.nii.gz", read_acdc, tmp_path, match="ED frame")


@pytest.mark.parametrize(
    "text, match",
    [
        ("ED: one\nES: 5\nGroup: NOR\n", "not an integer"),
        ("ED: 1\nES: 5\nGroup: XYZ\n", "unknown Group"),
        ("ED: 1\nES: 5\nGroup: NOR\nHeight: tall\n", "not a number"),
        ("ED 1\nES: 5\n", "not 'Key: value'"),
        ("ES: 5\nGroup: NOR\n", "no ED"),
        ("ED: 1\nES: 12\nNbFrame: 10\n", "outside"),
    ],
)
def test_bad_info_cfg(tmp_path, text, match):
    cfg = tmp_path / "Info.cfg"
    cfg.write_text(text)
    raises_naming(cfg, parse_info, cfg, match=match)


def test_truncated_and_corrupt_gzip(tmp_path):
    good = save(tmp_path / "good.nii.gz", np.random.rand(20, 20, 4).astype(np.float32))
    raw = good.read_bytes()
    for name, data in [
        ("half.nii.gz", raw[: len(raw) // 2]),
        ("tail.nii.gz", raw[:-4]),  # only the gzip trailer missing
        ("short.nii.gz", gzip.compress(gzip.decompress(raw)[:600])),
        ("junk.nii.gz", b"not a nifti at all" * 40),
        ("empty.nii.gz", b""),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        raises_naming(path, load_image, path)


def test_nan_intensities(tmp_path):
    data = np.random.rand(10, 10, 3).astype(np.float32)
    data[2, 3, 1] = np.nan
    path = save(tmp_path / "nan.nii.gz", data)
    raises_naming(path, load_image, path, match="NaN")
    data[2, 3, 1] = np.inf
    raises_naming(save(path, data), load_image, path, match="inf")


def test_4d_where_3d_expected(tmp_path):
    path = save(tmp_path / "cine.nii.gz", np.zeros((8, 8, 3, 5), np.float32))
    raises_naming(path, load_image, path, match="4D")
    assert load_image(path, expect_3d=False)[0].shape == (5, 3, 8, 8)


def test_image_label_shape_and_spacing_mismatch(tmp_path):
    image = save(tmp_path / "img.nii.gz", np.zeros((8, 8, 3), np.int16))
    label = save(tmp_path / "img_gt.nii.gz", np.zeros((8, 9, 3), np.uint8))
    raises_naming(label, load_pair, image, label, ACDC, match="shape")
    label = save(tmp_path / "img_gt.nii.gz", np.zeros((8, 8, 3), np.uint8), zooms=(1.5, 1.6, 10))
    raises_naming(label, load_pair, image, label, ACDC, match="spacing")
    save(label, np.zeros((8, 8, 3), np.uint8), zooms=(1.5, 1.5000001, 10))  # within tolerance
    load_pair(image, label, ACDC)


def test_label_out_of_range(tmp_path):
    data = np.zeros((8, 8, 3), np.uint8)
    data[0, 0, 0] = 4
    path = save(tmp_path / "lab.nii.gz", data)
    raises_naming(path, load_image, path, label_values=ACDC, match="4")
    data[0, 0, 0] = 3
    raises_naming(save(path, data), load_image, path, label_values=LABEL_VALUES["hvsmr"], match="3")
    half = save(path, np.full((8, 8, 3), 1.5, np.float32))
    raises_naming(half, load_image, half, label_values=ACDC, match="non-integer")


def test_hvsmr_missing_label(tmp_path):
    save(tmp_path / "training_axial_crop_pat0.nii.gz", np.zeros((8, 8, 8), np.float64))
    raises_naming(
        tmp_path / "training_axial_crop_pat0-label.nii.gz",
        read_hvsmr,
        tmp_path,
        match="missing label",
    )


def test_check_collects_problems_and_cli_returns_2(tmp_path, capsys):
    folder = acdc_patient(tmp_path)
    (folder / "patient001_frame05_gt.nii.gz").write_bytes(b"\x1f\x8b broken")
    other = tmp_path / "database" / "training" / "patient002"
    other.mkdir()
    layout, records, problems = check_dataset(tmp_path)
    assert layout == "acdc" and len(records) == 1
    named = {p.path.name for p in problems}
    assert named == {"patient001_frame05_gt.nii.gz", "Info.cfg"}
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "check", "--data", str(tmp_path), "--no-progress"])
    assert args.func(args) == 2
    assert "patient001_frame05_gt.nii.gz" in capsys.readouterr().err
    args = parser.parse_args(["data", "check", "--data", str(tmp_path / "database" / "testing")])
    assert args.func(args) == 2  # not a folder: DataError -> 2
