"""The cine phantom: real ACDC layout, deterministic, ACDC-like anatomy, Rician noise."""

import nibabel as nib
import numpy as np
import pytest

from bench.data import data_source
from bench.datasets._phantom import seeded_rng
from bench.datasets.acdc import GROUPS, read_acdc
from bench.datasets.layout import detect_layout
from bench.datasets.nifti import LABEL_VALUES, load_image, load_pair
from bench.datasets.phantom_cine import (
    VERSION,
    CineHeart,
    Difficulty,
    add_rician_noise,
    draw_cases,
    write_cine_phantom,
)

N_TRAIN, N_TEST = 5, 1  # one patient per pathology group, one testing patient


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_cine_phantom(tmp_path_factory.mktemp("cine"), N_TRAIN, N_TEST, seed=3, workers=1)


def pairs(record):
    return {
        f.phase: load_pair(f.image_path, f.label_path, LABEL_VALUES["acdc"]) for f in record.frames
    }


def test_written_in_the_real_acdc_layout_with_its_header_quirks(root):
    assert detect_layout(root) == "acdc"
    records = read_acdc(root)
    assert [r.subset for r in records] == ["training"] * N_TRAIN + ["testing"] * N_TEST
    assert {r.group for r in records if r.subset == "training"} == set(GROUPS)
    for r in records:
        assert r.labeled and {f.phase for f in r.frames} == {"ED", "ES"}
        img = nib.load(str(r.frames[0].image_path))
        assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 0
        image, spacing = load_image(r.frames[0].image_path)
        z, h, w = image.shape
        assert 6 <= z <= 21 and 150 <= h <= 430 and 150 <= w <= 430
        assert 1.25 <= spacing[1] <= 1.95 and 5 <= spacing[0] <= 10


def test_same_seed_same_data_other_seed_other_data(root, tmp_path):
    again = write_cine_phantom(tmp_path / "a", N_TRAIN, N_TEST, seed=3, workers=1)
    other = write_cine_phantom(tmp_path / "b", 1, 0, seed=4, workers=1)
    for r, r2 in zip(read_acdc(root), read_acdc(again), strict=True):
        info = [x.frames[0].image_path.parent / "Info.cfg" for x in (r, r2)]
        assert info[0].read_text() == info[1].read_text()
        for f, f2 in zip(r.frames, r2.frames, strict=True):
            assert np.array_equal(load_image(f.image_path)[0], load_image(f2.image_path)[0])
            assert np.array_equal(load_image(f.label_path)[0], load_image(f2.label_path)[0])
    first, changed = read_acdc(root)[0], read_acdc(other)[0]
    assert load_image(first.frames[0].image_path)[0].shape != load_image(
        changed.frames[0].image_path
    )[0].shape or not np.array_equal(
        load_image(first.frames[0].image_path)[0], load_image(changed.frames[0].image_path)[0]
    )


def test_every_structure_present_with_acdc_like_volumes(root):
    """ACDC (Bernard et al. 2018): ED volumes of tens to a few hundred mL; ES cavities smaller."""
    for r in read_acdc(root):
        volumes = {}
        for phase, (_, label, spacing) in pairs(r).items():
            ml = np.prod(spacing) / 1000
            volumes[phase] = {c: (label == c).sum() * ml for c in (1, 2, 3)}
            assert (label > 0).mean() < 0.12  # the heart is a small part of the chest image
        ed, es = volumes["ED"], volumes["ES"]
        # the v2 spread's largest hearts (size factor up to 1.35) reach about 520 mL of RV,
        # above ACDC's largest dilated ventricles (docs/PROTOCOL.md, "Calibration")
        assert 25 < ed[3] < 450 and 40 < ed[2] < 300 and 20 < ed[1] < 600, (r.group, ed)
        assert es[3] < ed[3] and es[1] < ed[1], (r.group, ed, es)
        if r.group == "DCM":
            assert ed[3] > 150
        if r.group == "RV":
            assert ed[1] > ed[3]


def test_apex_slices_have_no_rv_and_base_slices_no_labels(root):
    for r in read_acdc(root):
        _, label, _ = pairs(r)["ED"]
        has = {c: np.flatnonzero((label == c).any(axis=(1, 2))) for c in (1, 2, 3)}
        # slice 0 is the base: the RV ends before the LV towards the apex
        assert has[1].max() < has[2].max(), r.patient_id
        apex = label[has[1].max() + 1 : has[2].max() + 1]
        assert (apex == 2).any() and not (apex == 1).any()
    cases = draw_cases(40, 0, seed=0, hard=Difficulty(), cine=False)
    assert sum(case.u_first < -0.03 for _, _, case in cases) > 10  # stacks start above the base


def test_noise_is_rician():
    rng = np.random.default_rng(0)
    sigma = 0.1
    for signal in (0.0, 0.05, 1.0):
        noisy = add_rician_noise(np.full(200_000, signal, np.float32), sigma, rng)
        assert noisy.min() >= 0
        # second moment of a Rician: A^2 + 2 sigma^2, whatever A
        assert np.mean(noisy.astype(np.float64) ** 2) == pytest.approx(
            signal**2 + 2 * sigma**2, rel=0.02
        )
    zero = add_rician_noise(np.zeros(200_000, np.float32), sigma, rng)
    assert zero.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.01)  # Rayleigh
    bright = add_rician_noise(np.ones(200_000, np.float32), sigma, rng)
    assert bright.mean() == pytest.approx(1 + sigma**2 / 2, abs=0.002)  # high-SNR bias


def test_air_in_the_written_images_is_rayleigh_distributed(root):
    """Where the noiseless signal is zero the written magnitude is Rayleigh (mean/sd 1.913),
    not Gaussian clipped at zero (1.32); the test reproduces each patient's draw."""
    cases = draw_cases(N_TRAIN, N_TEST, seed=3, hard=Difficulty(), cine=False)
    for (_, index, case), record in zip(cases, read_acdc(root), strict=True):
        heart = CineHeart(case, seeded_rng(3, 12, index), Difficulty())
        _, signal = heart.render(0.0)
        image = load_image(next(f for f in record.frames if f.phase == "ED").image_path)[0]
        air = image[signal == 0].astype(np.float64)
        if image.dtype == np.uint8 or air.size < 5000:
            continue  # too coarsely quantised to tell
        assert air.mean() / air.std() == pytest.approx(1.913, abs=0.08), record.patient_id


def test_between_patient_spread_follows_the_difficulty():
    """The orientation and the heart's offset from its mean position scale with their knobs
    (same random draws), so a calibration that raises them makes patients less alike."""
    case = draw_cases(1, 0, seed=0, hard=Difficulty(), cine=False)[0][2]
    base = Difficulty(position_mm=8.0, rotation_sd=0.3)
    wide = Difficulty(position_mm=16.0, rotation_sd=0.6)
    hearts = [CineHeart(case, seeded_rng(0, 12, 0), hard) for hard in (base, wide)]
    mean_centre = np.array([-10.0, 15.0])
    offsets = [np.array(heart.centre) - mean_centre for heart in hearts]
    np.testing.assert_allclose(offsets[1], 2 * offsets[0], rtol=1e-6)
    assert hearts[1].phi == pytest.approx(2 * hearts[0].phi)


def test_tissue_contrast_varies_between_patients_with_gamma_sd():
    """``gamma_sd`` raises each patient's noiseless image to its own power (tissue contrast
    as it differs between scanners) and changes nothing else that patient draws."""
    case = draw_cases(1, 0, seed=0, hard=Difficulty(), cine=False)[0][2]
    plain, varied = (
        CineHeart(case, seeded_rng(0, 12, 1), Difficulty(gamma_sd=sd)) for sd in (0.0, 0.5)
    )
    assert plain.gamma == 1.0 and varied.gamma != pytest.approx(1.0, abs=0.05)
    assert varied.phi == plain.phi and varied.level == plain.level
    (labels, image), (same_labels, plain_image) = varied.render(0.0), plain.render(0.0)
    np.testing.assert_array_equal(labels, same_labels)
    np.testing.assert_allclose(
        image / varied.bias, (plain_image / plain.bias) ** varied.gamma, rtol=1e-4, atol=1e-6
    )


def test_result_rows_say_where_the_data_came_from():
    synth = {"layout": "acdc", "phantom": "cine"}
    assert data_source({"root": None, "synthetic": synth}) == f"synthetic:cine-v{VERSION}"
    assert data_source({"root": None, "synthetic": {**synth, "phantom": "easy"}}) == (
        "synthetic:easy-v1"
    )
    assert data_source({"root": "/data/ACDC", "synthetic": synth}) == "folder"
