"""Preprocessing: shapes, spacing, normalisation and the content-keyed cache."""

import nibabel as nib
import numpy as np
import pytest

from bench.datasets import nifti, preprocess
from bench.datasets.acdc import read_acdc
from bench.datasets.preprocess import (
    PreprocessSettings,
    Volume,
    load_volumes,
    preprocess_frame,
    restore_native,
)
from bench.datasets.synthetic import write_synthetic

SMALL = PreprocessSettings(spacing_mm=2.0, size=48)


@pytest.fixture(scope="module")
def acdc(tmp_path_factory):
    root = write_synthetic(
        tmp_path_factory.mktemp("acdc"),
        "acdc",
        n_train=3,
        n_test=1,
        seed=3,
        cine=True,
        cine_frames=(4, 5),
    )
    return read_acdc(root)


def test_shapes_spacing_and_labels(acdc, tmp_path):
    vols = load_volumes(acdc, SMALL, tmp_path, progress=False)
    assert set(vols) == {r.patient_id for r in acdc}
    for r in acdc:
        assert [v.phase for v in vols[r.patient_id]] == ["ED", "ES"]
        for v in vols[r.patient_id]:
            z, _h, _w = v.native_shape
            assert v.image.shape == v.label.shape == (z, 48, 48)
            assert v.image.dtype == np.float32 and v.label.dtype == np.uint8
            assert v.group == r.group and v.subset == r.subset
            assert v.spacing[0] == pytest.approx(v.native_spacing[0])  # slice spacing kept
            for k in (1, 2):  # in-plane spacing as close to 2 mm as the grid allows
                n = v.native_shape[k]
                assert abs(v.spacing[k] - 2.0) <= 2.0 / (n * v.native_spacing[k] / 2.0) + 1e-6
            assert set(np.unique(v.label)) <= {0, 1, 2, 3} and (v.label == 3).any()
            assert v.native_label.shape == v.native_shape


def test_minmax_and_zscore():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, (4, 30, 40)).astype(np.float32)
    out, _, spacing, rshape, offset = preprocess_frame(
        image, None, (8.0, 1.0, 1.0), PreprocessSettings(spacing_mm=2.0, size=32)
    )
    assert rshape == (4, 15, 20) and spacing == pytest.approx((8.0, 2.0, 2.0))
    assert out.shape == (4, 32, 32) and offset == (-8, -6)
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)
    assert (out[:, 0, :] == 0).all()  # padding takes the minimum
    z, *_ = preprocess_frame(
        image,
        None,
        (8.0, 1.0, 1.0),
        PreprocessSettings(spacing_mm=None, size=None, normalise="zscore"),
    )
    assert z.shape == image.shape
    assert abs(float(z.mean())) < 1e-3 and float(z.std()) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError):
        PreprocessSettings(normalise="robust")


def test_restore_native_roundtrip():
    label = np.zeros((3, 30, 50), np.uint8)
    label[:, 10:20, 5:45] = 2
    settings = PreprocessSettings(spacing_mm=None, size=40)  # crop width, pad height
    _, lab, spacing, rshape, offset = preprocess_frame(
        label.astype(np.float32), label, (5.0, 1.0, 1.0), settings
    )
    vol = Volume(
        "p",
        "ED",
        lab.astype(np.float32),
        lab,
        spacing,
        spacing,
        label.shape,
        resampled_shape=rshape,
        crop_offset=offset,
    )
    back = restore_native(lab, vol)
    assert back.shape == label.shape
    assert (back[:, :, 5:45] == label[:, :, 5:45]).all()


def test_cache_hit_does_not_decode_nifti(acdc, tmp_path, monkeypatch):
    first = load_volumes(acdc, SMALL, tmp_path, progress=False, include_cine=True)
    assert not list(tmp_path.glob("*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("NIfTI decoded on a cache hit")

    monkeypatch.setattr(nib, "load", boom)
    monkeypatch.setattr(nib.Nifti1Image, "from_bytes", boom)
    monkeypatch.setattr(nifti, "_decode", boom)
    second = load_volumes(acdc, SMALL, tmp_path, progress=False, include_cine=True)
    for pid, vols in first.items():
        assert [v.phase for v in vols] == [v.phase for v in second[pid]]
        for a, b in zip(vols, second[pid], strict=False):
            assert np.array_equal(a.image, b.image)


def test_cine_frames_are_extra_unlabeled_volumes(acdc, tmp_path):
    vols = load_volumes(acdc, SMALL, tmp_path, progress=False, include_cine=True)
    for r in acdc:
        phases = [v.phase for v in vols[r.patient_id]]
        nb = r.info["NbFrame"]
        cine = [p for p in phases if p.startswith("cine")]
        assert len(cine) == nb - 2
        assert f"cine{r.info['ED']:02d}" not in cine and f"cine{r.info['ES']:02d}" not in cine
        assert all(v.label is None for v in vols[r.patient_id] if v.phase.startswith("cine"))


def test_changed_file_or_setting_is_recomputed(tmp_path):
    root = write_synthetic(tmp_path / "data", "acdc", n_train=1, n_test=0, seed=5)
    records = read_acdc(root)
    cache = tmp_path / "cache"
    before = load_volumes(records, SMALL, cache, progress=False)["patient001"][0]
    n_files = len(list(cache.glob("*.npz")))
    path = records[0].frames[0].label_path
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).copy()
    data[data == 3] = 1  # relabel the LV as RV
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    after = load_volumes(records, SMALL, cache, progress=False)["patient001"][0]
    assert (before.label == 3).any() and not (after.label == 3).any()
    resized = load_volumes(
        records, PreprocessSettings(spacing_mm=2.0, size=40), cache, progress=False
    )["patient001"][0]
    assert resized.image.shape[1:] == (40, 40)
    assert len(list(cache.glob("*.npz"))) == n_files + 3


def test_entries_from_other_preprocessing_code_are_not_served(tmp_path, monkeypatch):
    root = write_synthetic(tmp_path / "data", "acdc", n_train=1, n_test=0, seed=5)
    records = read_acdc(root)
    cache = tmp_path / "cache"
    load_volumes(records, SMALL, cache, progress=False)
    (entry,) = cache.glob("patient001_ED_*.npz")
    monkeypatch.setattr(preprocess, "CODE_DIGEST", "another-version")
    load_volumes(records, SMALL, cache, progress=False)
    assert sorted(cache.glob("patient001_ED_*.npz")) != [entry]
    assert len(list(cache.glob("patient001_ED_*.npz"))) == 2


def test_process_pool_matches_serial(tmp_path):
    root = write_synthetic(
        tmp_path / "data", "hvsmr", n_train=3, n_test=0, seed=1, size_range=(24, 32)
    )
    from bench.datasets.hvsmr import read_hvsmr

    records = read_hvsmr(root)
    serial = load_volumes(
        records, SMALL, tmp_path / "a", phases=("volume",), progress=False, workers=1
    )
    pooled = load_volumes(
        records, SMALL, tmp_path / "b", phases=("volume",), progress=False, workers=2
    )
    for pid in serial:
        assert np.array_equal(serial[pid][0].image, pooled[pid][0].image)
        assert np.array_equal(serial[pid][0].label, pooled[pid][0].label)
        assert set(np.unique(serial[pid][0].label)) <= {0, 1, 2}


def test_n4_removes_a_smooth_bias_field_and_is_part_of_the_cache_key():
    from bench.datasets.preprocess import n4_correct

    z, h, w = 4, 48, 48
    yy, xx = np.mgrid[0:h, 0:w] / h
    disc = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16).astype(np.float32)
    tissue = np.repeat((100 * disc + 5)[None], z, axis=0)
    bias = np.exp(0.6 * (xx - 0.5) + 0.4 * (yy - 0.5)).astype(np.float32)  # a smooth field
    biased = tissue * bias[None]
    corrected = n4_correct(biased, (8.0, 1.5, 1.5))
    inside = np.repeat(disc[None] > 0, z, axis=0)

    def spread(a):  # coefficient of variation over the homogeneous disc
        return float(a[inside].std() / a[inside].mean())

    assert spread(corrected) < 0.5 * spread(biased)
    assert PreprocessSettings(n4=True).fingerprint() != PreprocessSettings().fingerprint()
