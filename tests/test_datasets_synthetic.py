"""Synthetic data: real layouts and file quirks, plausible anatomy, determinism."""

import argparse

import nibabel as nib
import numpy as np
import pytest

from bench.cli_data import add_data_commands
from bench.datasets.acdc import GROUPS, read_acdc
from bench.datasets.hvsmr import read_hvsmr
from bench.datasets.layout import detect_layout, read_dataset
from bench.datasets.nifti import LABEL_VALUES, load_image, load_pair
from bench.datasets.synthetic import acdc_real_sizes, write_synthetic


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("acdc"), "acdc", seed=0)  # tiny preset


@pytest.fixture(scope="module")
def hvsmr_root(tmp_path_factory):
    return write_synthetic(
        tmp_path_factory.mktemp("hvsmr"), "hvsmr", n_train=3, n_test=2, size_range=(32, 40)
    )


def frames(record):
    return {
        f.phase: load_pair(f.image_path, f.label_path, LABEL_VALUES["acdc"]) for f in record.frames
    }


def test_acdc_layout_read_back(acdc_root):
    assert (acdc_root / "database" / "training" / "patient001" / "Info.cfg").is_file()
    assert detect_layout(acdc_root) == "acdc"
    records = read_acdc(acdc_root)
    train = [r for r in records if r.subset == "training"]
    test = [r for r in records if r.subset == "testing"]
    assert len(train) == 12 and len(test) == 4
    assert [r.patient_id for r in test] == [f"patient{i:03d}" for i in range(13, 17)]
    # training patients come in blocks per group, in ACDC's group order
    blocks = [r.group for r in train]
    assert blocks == sorted(blocks, key=GROUPS.index) and set(blocks) == set(GROUPS)
    assert any(r.info["ED"] != 1 for r in records)
    assert all(r.labeled for r in records)
    for r in records:
        assert r.info["ED"] < r.info["ES"] <= r.info["NbFrame"]
        image, _ = load_image(r.frames[0].image_path)
        assert 64 <= image.shape[1] <= 96 and 6 <= image.shape[0] <= 10


def test_acdc_header_quirks(acdc_root):
    dtypes, spacings = set(), set()
    for r in read_acdc(acdc_root):
        img = nib.load(str(r.frames[0].image_path))
        lab = nib.load(str(r.frames[0].label_path))
        assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 0
        assert np.allclose(np.linalg.norm(img.affine[:3, :3], axis=0), 1.0)  # unscaled
        zooms = img.header.get_zooms()
        assert 0.7 <= zooms[0] <= 1.95 and zooms[0] == zooms[1] and zooms[2] >= 5
        assert lab.get_data_dtype() == np.uint8
        dtypes.add(img.get_data_dtype().name)
        spacings.add(round(float(zooms[0]), 3))
    assert dtypes <= {"int16", "float32", "uint8"} and len(dtypes) >= 2
    assert len(spacings) > 3


def test_anatomy(acdc_root):
    ratios = {}
    for r in read_acdc(acdc_root):
        (ed_img, ed, _sp), (_, es, _) = frames(r)["ED"], frames(r)["ES"]
        assert set(np.unique(ed)) == {0, 1, 2, 3}
        lv = (ed == 3).sum(axis=(1, 2))
        heart = np.flatnonzero(lv)
        assert lv[heart[0]] > lv[heart[-1]]  # LV shrinks from base to apex
        assert np.argmax(lv) <= heart[0] + len(heart) // 2
        rv = (ed == 1).sum(axis=(1, 2))
        assert rv[heart[-1]] < rv[heart].max()  # RV vanishes towards the apex
        assert (es == 3).sum() < (ed == 3).sum()  # ES cavity smaller than ED
        assert ed_img[ed == 3].mean() > ed_img[ed == 2].mean()  # bright blood, dark muscle
        ratios.setdefault(r.group, []).append((ed == 2).sum() / (ed == 3).sum())
    assert np.mean(ratios["HCM"]) > np.mean(ratios["NOR"]) > np.mean(ratios["DCM"])


def test_cine_matches_frames(tmp_path):
    root = write_synthetic(
        tmp_path, "acdc", n_train=2, n_test=0, cine=True, cine_frames=(5, 6), seed=1
    )
    for r in read_acdc(root):
        cine, spacing = load_image(r.cine_path, expect_3d=False)
        assert cine.shape[0] == r.info["NbFrame"]
        ed, ed_spacing = load_image(r.frames[0].image_path)
        assert np.array_equal(cine[r.info["ED"] - 1], ed) and spacing == ed_spacing


def test_deterministic(tmp_path):
    kw = {"n_train": 2, "n_test": 1, "size_range": (32, 40), "slices_range": (4, 5)}
    a = write_synthetic(tmp_path / "a", "acdc", seed=7, **kw)
    b = write_synthetic(tmp_path / "b", "acdc", seed=7, **kw)
    c = write_synthetic(tmp_path / "c", "acdc", seed=8, **kw)
    for ra, rb, rc in zip(read_acdc(a), read_acdc(b), read_acdc(c), strict=False):
        ia, ib = load_image(ra.frames[0].image_path)[0], load_image(rb.frames[0].image_path)[0]
        assert np.array_equal(ia, ib)
        ic = load_image(rc.frames[0].image_path)[0]
        assert ia.shape != ic.shape or not np.array_equal(ia, ic)


def test_hvsmr_layout_read_back(hvsmr_root):
    names = sorted(p.name for p in hvsmr_root.iterdir())
    assert "training_axial_crop_pat0.nii.gz" in names
    assert "training_axial_crop_pat0-label.nii.gz" in names
    assert "testing_axial_crop_pat4.nii.gz" in names
    layout, records = read_dataset(hvsmr_root)
    assert layout == "hvsmr"
    assert [r.patient_id for r in records] == [f"pat{i}" for i in range(5)]
    assert [r.subset for r in records] == ["training"] * 3 + ["testing"] * 2
    for r in records:
        assert r.group is None and [f.phase for f in r.frames] == ["volume"]
        lab = nib.load(str(r.frames[0].label_path))
        assert lab.get_data_dtype() == np.uint16
        img = nib.load(str(r.frames[0].image_path))
        assert np.allclose(np.linalg.norm(img.affine[:3, :3], axis=0), img.header.get_zooms())
        _image, label, spacing = load_pair(
            r.frames[0].image_path, r.frames[0].label_path, LABEL_VALUES["hvsmr"]
        )
        assert set(np.unique(label)) == {0, 1, 2}
        assert 0.65 <= spacing[0] <= 0.9 and 0.7 <= spacing[1] <= 1.05
    unlabeled = write_synthetic(
        hvsmr_root.parent / "u",
        "hvsmr",
        n_train=1,
        n_test=1,
        size_range=(24, 26),
        test_labels=False,
    )
    assert read_hvsmr(unlabeled)[1].frames[0].label_path is None


def test_real_sizes_option():
    kw = acdc_real_sizes()
    assert (kw["n_train"], kw["n_test"]) == (100, 50)
    assert kw["size_range"] == (150, 430) and kw["slices_range"] == (6, 21)


def test_cli_synth_then_check(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "syn"
    args = parser.parse_args(
        [
            "data",
            "synth",
            "--layout",
            "hvsmr",
            "--out",
            str(out),
            "--train",
            "2",
            "--test",
            "1",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    args = parser.parse_args(["data", "check", "--data", str(out), "--no-progress"])
    assert args.func(args) == 0
    assert "hvsmr: 3 patients, 3 frames, 0 problem(s)" in capsys.readouterr().out


def test_cli_preprocess_fills_the_cache_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    root = write_synthetic(tmp_path / "acdc", "acdc", n_train=3, n_test=1, seed=2)
    command = [
        "data",
        "preprocess",
        "--data",
        str(root),
        "--preset",
        "tiny",
        "--set",
        "data.phases=[ED,ES]",
        "--no-progress",
    ]
    args = parser.parse_args(command)
    assert args.func(args) == 0
    assert "acdc: 4 patients, 8 volumes (8 entries computed" in capsys.readouterr().out
    entries = sorted((tmp_path / "cache" / "preprocessed").glob("*.npz"))
    assert len(entries) == 8
    assert args.func(args) == 0
    assert "(0 entries computed" in capsys.readouterr().out
    assert sorted((tmp_path / "cache" / "preprocessed").glob("*.npz")) == entries
