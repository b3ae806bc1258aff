"""ACDC reader on files in the real naming scheme, with the real files' quirks."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.datasets.acdc import parse_info, read_acdc
from bench.datasets.layout import detect_layout, read_dataset
from bench.datasets.nifti import LABEL_VALUES, load_image, load_pair


def save_acdc(path: Path, data_xyz: np.ndarray, zooms) -> Path:
    """Like ACDC: unscaled affine in the sform (code 2), qform code 0, spacing in pixdim."""
    affine = np.eye(4)
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    img = nib.Nifti1Image(data_xyz, affine)
    img.header.set_zooms(zooms)
    img.header.set_sform(affine, code=2)
    img.header.set_qform(None, code=0)
    nib.save(img, str(path))
    return path


def write_patient(
    base: Path,
    subset: str,
    num: int,
    *,
    ed=1,
    es=9,
    group="NOR",
    nb=20,
    dtype=np.int16,
    labels=True,
    cine=False,
    shape=(40, 30, 5),
    zooms=(1.5, 1.5, 10.0),
) -> Path:
    pid = f"patient{num:03d}"
    folder = base / "database" / subset / pid
    folder.mkdir(parents=True)
    lines = [f"ED: {ed}", f"ES: {es}"] + ([f"Group: {group}"] if group else [])
    lines += ["Height: 180.0", f"NbFrame: {nb}", "Weight: 80.0"]
    (folder / "Info.cfg").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(num)
    for frame in (ed, es):
        image = (rng.random(shape) * 200).astype(dtype)
        save_acdc(folder / f"{pid}_frame{frame:02d}.nii.gz", image, zooms)
        if labels:
            label = rng.integers(0, 4, shape).astype(np.uint8)
            save_acdc(folder / f"{pid}_frame{frame:02d}_gt.nii.gz", label, zooms)
    if cine:
        save_acdc(
            folder / f"{pid}_4d.nii.gz",
            rng.random(shape + (nb,)).astype(np.float32),
            zooms + (1.0,),
        )
    return folder


def test_parse_info_types(tmp_path):
    cfg = tmp_path / "Info.cfg"
    cfg.write_text("ED: 4\nES: 12\nGroup: MINF\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
    info = parse_info(cfg)
    assert info == {
        "ED": 4,
        "ES": 12,
        "Group": "MINF",
        "Height": 184.0,
        "NbFrame": 30,
        "Weight": 95.0,
    }
    assert isinstance(info["ED"], int) and isinstance(info["Weight"], float)


def test_reader_real_layout_with_quirks(tmp_path):
    write_patient(tmp_path, "training", 1, ed=4, es=12, group="DCM", dtype=np.int16, cine=True)
    write_patient(tmp_path, "training", 2, ed=1, es=10, group="RV", dtype=np.uint8)
    write_patient(tmp_path, "testing", 101, ed=1, es=8, group=None, dtype=np.float32, labels=False)
    for root in (tmp_path, tmp_path / "database"):
        assert detect_layout(root) == "acdc"
        records = read_acdc(root)
        assert [r.patient_id for r in records] == ["patient001", "patient002", "patient101"]
    p1, p2, p101 = records
    assert (p1.subset, p1.group, p1.layout) == ("training", "DCM", "acdc")
    assert [f.phase for f in p1.frames] == ["ED", "ES"]
    assert p1.frames[0].image_path.name == "patient001_frame04.nii.gz"  # ED read from Info.cfg
    assert p1.frames[1].label_path.name == "patient001_frame12_gt.nii.gz"
    assert p1.cine_path.name == "patient001_4d.nii.gz" and p2.cine_path is None
    assert p1.info["NbFrame"] == 20 and p1.info["ED"] == 4
    assert p101.subset == "testing" and p101.group is None
    assert all(f.label_path is None for f in p101.frames) and not p101.labeled
    assert read_dataset(tmp_path)[0] == "acdc"


def test_spacing_from_pixdim_and_axis_order(tmp_path):
    folder = write_patient(
        tmp_path, "training", 1, ed=4, es=12, shape=(40, 30, 5), zooms=(1.25, 1.25, 8.0)
    )
    path = folder / "patient001_frame04.nii.gz"
    img = nib.load(str(path))
    assert np.allclose(np.abs(np.diag(img.affine))[:3], 1.0)  # the affine carries no spacing
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 0
    array, spacing = load_image(path)
    assert array.shape == (5, 30, 40) and array.dtype == np.float32
    assert spacing == pytest.approx((8.0, 1.25, 1.25))
    raw = np.asanyarray(img.dataobj)
    assert array[2, 7, 3] == raw[3, 7, 2]
    image, label, spacing = load_pair(
        path, folder / "patient001_frame04_gt.nii.gz", LABEL_VALUES["acdc"]
    )
    assert label.dtype == np.uint8 and label.shape == image.shape
    assert set(np.unique(label)) <= {0, 1, 2, 3}


def test_varying_dtypes_load_as_float32(tmp_path):
    for num, dtype in enumerate((np.int16, np.uint8, np.float32), 1):
        write_patient(tmp_path, "training", num, dtype=dtype)
    for r in read_acdc(tmp_path):
        assert nib.load(str(r.frames[0].image_path)).get_data_dtype() in (
            np.dtype(np.int16),
            np.dtype(np.uint8),
            np.dtype(np.float32),
        )
        assert load_image(r.frames[0].image_path)[0].dtype == np.float32
