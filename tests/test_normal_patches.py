"""A.9 normal-only sampling: normal slices of training patients only, test patients refused, the foreground check
and the variable square holes; one check on the real LGG folder."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.data.datasets import load_dataset
from cadx.data.image import ImageData, LazyImage
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError
from cadx.pipeline.normal_patches import (
    NormalPatchSampler,
    Slice2D,
    center_mask,
    lesion_slices,
    normal_slices,
    study_slices,
)
from conftest import shared_path


def _volume_study(pid: str, lesion_slices_: tuple[int, ...], value: float = 100.0) -> Study:
    """A (2, 4, 32, 32) volume whose channel 1 is ``value`` (channel 0 is 7), lesion squares on the given slices."""
    img = np.full((2, 4, 32, 32), 7.0, np.float32)
    img[1] = value
    mask = np.zeros((1, 4, 32, 32), np.uint8)
    for z in lesion_slices_:
        mask[0, z, 8:16, 8:16] = 1
    return Study(pid + "_s", pid, images={"image": LazyImage(lambda: ImageData(img, (1.0, 1.0, 1.0)), f"{pid}.nii")},
                 label="G2", masks={"mask": LazyImage(lambda: ImageData(mask, (1.0, 1.0, 1.0)), f"{pid}_m.nii")})


def _cohort() -> Cohort:
    return Cohort([_volume_study("p0", (1, 2)), _volume_study("p1", (0,)), _volume_study("p2", (1,))], name="toy")


def test_normal_slices_come_from_training_patients_only() -> None:
    sl = normal_slices(_cohort(), ["p0", "p1"], ["p2"], size=16, channel=1)
    assert [(s.patient_id, s.index) for s in sl] == [("p0", 0), ("p0", 3), ("p1", 1), ("p1", 2), ("p1", 3)]
    assert all(s.image.shape == (16, 16) and not s.lesion.any() for s in sl)
    assert np.allclose(sl[0].image, 1.0)  # channel 1 divided by its 99th percentile
    with pytest.raises(CadxDataError, match=r"toy: patient_id: 1 test patient\(s\) .* e\.g\. p1"):
        normal_slices(_cohort(), ["p0", "p1"], ["p1", "p2"], size=16)
    with pytest.raises(CadxDataError, match="no normal slice"):
        normal_slices(_cohort(), ["p0"], [], size=16, normal_label="normal")
    les = lesion_slices(_cohort(), ["p2"], size=32, channel=1, min_pixels=64)
    assert [(s.patient_id, s.index, int(s.lesion.sum())) for s in les] == [("p2", 1, 64)]


def test_study_slices_channel_mean_resize_and_errors() -> None:
    s = study_slices(_volume_study("p0", (1,), value=207.0), size=8)  # channel mean (7 + 207) / 2 = 107
    assert len(s) == 4 and s[1].lesion.sum() == 4 and s[0].image.shape == (8, 8)
    assert np.allclose(s[0].image, 1.0)
    with pytest.raises(CadxDataError, match=r"p0.nii: channel: channel 5 of a 2-channel image"):
        study_slices(_volume_study("p0", ()), size=8, channel=5)


def _slices(pid: str = "p0") -> list[Slice2D]:
    img = np.zeros((40, 40), np.float32)
    img[:, :20] = 0.8  # tissue on the left half only
    return [Slice2D("s", pid, 0, img, np.zeros((40, 40), bool))]


def test_sampler_patches_pass_the_foreground_check_and_holes_are_squares() -> None:
    smp = NormalPatchSampler(_slices(), fov=16, hole_min=3, hole_max=9, fg_threshold=0.05, fg_fraction=0.5)
    x, m = smp.sample(200, np.random.default_rng(0))
    assert x.shape == m.shape == (200, 1, 16, 16) and x.dtype == np.float32
    assert ((x > 0.05).mean(axis=(1, 2, 3)) >= 0.5).all()
    sides = []
    for mi in m[:, 0]:
        ys, xs = np.nonzero(mi)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert h == w and mi.sum() == h * w  # one filled square
        sides.append(int(h))
    assert min(sides) == 3 and max(sides) == 9  # the whole range is drawn
    x2, m2 = smp.sample(200, np.random.default_rng(0))
    assert np.array_equal(x, x2) and np.array_equal(m, m2)  # same rng state, same batch
    strict = NormalPatchSampler(_slices(), fov=16, hole_min=3, hole_max=9, fg_fraction=0.99, max_tries=50)
    x3, _ = strict.sample(20, np.random.default_rng(1))
    assert (x3 > 0.05).all()  # patches fully inside the tissue half


def test_sampler_refuses_test_patients_and_bad_settings() -> None:
    with pytest.raises(CadxDataError, match="test patient's slice reached"):
        NormalPatchSampler(_slices("pt"), 16, 3, 9, forbidden_patients=["pt"])
    with pytest.raises(CadxConfigError, match="hole_min"):
        NormalPatchSampler(_slices(), 16, 9, 3)
    with pytest.raises(CadxDataError, match="smaller than the field of view"):
        NormalPatchSampler(_slices(), 64, 3, 9)
    empty = NormalPatchSampler(_slices(), 16, 3, 9, fg_threshold=0.9, max_tries=20)
    with pytest.raises(CadxDataError, match="fg_fraction"):
        empty.sample(1, np.random.default_rng(0))


def test_center_mask() -> None:
    m = center_mask(8, 4)
    assert m.sum() == 16 and m[2:6, 2:6].all()
    with pytest.raises(CadxConfigError):
        center_mask(8, 8)


def test_real_lgg_normal_slices_have_no_tumour_and_no_test_patient() -> None:
    root = shared_path("lgg")
    cohort = load_dataset("lgg", root)
    pids = sorted(cohort.patients)[:3]
    train, test = pids[:2], pids[2:]
    sl = normal_slices(cohort, train, test, size=64, channel=1)
    assert {s.patient_id for s in sl} <= set(train) and not any(s.lesion.any() for s in sl)
    assert 0 < len(sl) < sum(s.metadata["n_slices"] for s in cohort.studies if s.patient_id in train)
    assert all(0.0 <= s.image.min() and s.image.max() <= 1.0 for s in sl)
