"""Thesis A.4 patch pipeline (cadx.pipeline.patches) on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.errors import CadxDataError
from cadx.pipeline.patches import (
    augment_copies,
    pad_to_square,
    patient_patches,
    percentile_stretch,
    prepare_slice,
    tumour_centre,
    tumour_slices,
)


def test_pad_to_square_centres_even_and_odd() -> None:
    a = np.arange(8, dtype=np.float32).reshape(1, 2, 4) + 1
    p = pad_to_square(a)
    assert p.shape == (1, 4, 4)
    np.testing.assert_array_equal(p[0, 1:3], a[0])
    assert p[0, 0].sum() == 0 and p[0, 3].sum() == 0
    b = np.ones((2, 3, 6), np.float32)  # 3 rows pad: 1 top, 2 bottom (odd remainder bottom/right)
    q = pad_to_square(b)
    assert q.shape == (2, 6, 6)
    np.testing.assert_array_equal(q[:, :, 0].sum(axis=1), [3, 3])
    np.testing.assert_array_equal(q[0, :, 0], [0, 1, 1, 1, 0, 0])
    c = np.ones((1, 5, 2), np.float32)  # wide pad: 1 left, 2 right
    np.testing.assert_array_equal(pad_to_square(c)[0, 0], [0, 1, 1, 0, 0])


def test_percentile_stretch_values() -> None:
    ramp = np.arange(101, dtype=np.float32).reshape(1, 1, 101)  # P1 = 1, P99 = 99
    const = np.full((1, 1, 101), 7.0, np.float32)
    out = percentile_stretch(np.concatenate([ramp, const]))
    np.testing.assert_allclose(out[0, 0, [0, 1, 50, 99, 100]], [0, 0, 49 / 98, 1, 1], rtol=1e-6)
    assert not out[1].any()  # constant channel → zeros
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 30.0, size=(1, 32, 32)).astype(np.float32)
    lo, hi = np.percentile(x, [1, 99])
    np.testing.assert_allclose(percentile_stretch(x), np.clip((x - lo) / (hi - lo), 0, 1), rtol=1e-5, atol=1e-6)


def test_tumour_centre_is_bounding_box_middle_not_centroid() -> None:
    m = np.zeros((64, 64), np.uint8)
    m[10:21, 30:42] = 1  # rows 10..20, cols 30..41
    assert tumour_centre(m) == (15, 35)
    m2 = np.zeros((64, 64), np.uint8)
    m2[10:40, 10:13] = 1  # L shape: the centroid leans to the thick arm, the box middle does not
    m2[37:40, 10:50] = 1
    ys, xs = np.nonzero(m2)
    assert tumour_centre(m2) == (24, 29)
    assert (round(ys.mean()), round(xs.mean())) != (24, 29)
    assert tumour_centre(np.zeros((4, 4))) is None


def test_prepare_slice_pads_then_resizes_mask_follows() -> None:
    img = np.zeros((3, 128, 256), np.float32)
    img[:, 40:60, 100:140] = 100.0
    img[:, 0, 0] = 1.0
    mask = np.zeros((128, 256), np.uint8)
    mask[40:60, 100:140] = 1
    s_img, s_mask = prepare_slice(img, mask, size=256)
    assert s_img.shape == (3, 256, 256) and s_mask.shape == (256, 256)
    rows = np.flatnonzero(s_mask.any(axis=1))
    assert (rows.min(), rows.max()) == (40 + 64, 59 + 64)  # padded by 64 rows on top, no resize needed
    assert s_img.max() == pytest.approx(1.0) and s_img.min() == 0.0
    _, small_mask = prepare_slice(img, mask, size=128)  # 256 → 128: everything halves
    rows = np.flatnonzero(small_mask.any(axis=1))
    assert (rows.min(), rows.max()) == (52, 61)
    assert set(np.unique(small_mask)) == {0, 1}


def _volume() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 100, size=(3, 4, 256, 256)).astype(np.float32)
    mask = np.zeros((1, 4, 256, 256), np.uint8)
    mask[0, 1, 90:111, 140:161] = 1  # centre (100, 150)
    mask[0, 2, 5:16, 200:251] = 1  # near the top edge: centre (10, 225)
    return img, mask


def test_patient_patches_centre_mask_channels_and_slices() -> None:
    img, mask = _volume()
    p = patient_patches(img, mask, channels=(1,), size=256, patch=80, context=0)
    np.testing.assert_array_equal(p["slices"], [1, 2])
    np.testing.assert_array_equal(tumour_slices(mask), [1, 2])
    assert p["patches"].shape == (2, 1, 80, 80) and p["plain"].shape == (2, 1, 80, 80)
    stretched = percentile_stretch(img[:, 1])[1]
    # slice 1: patch rows 60..139, cols 110..189 of the stretched FLAIR, masked
    np.testing.assert_allclose(p["plain"][0, 0], stretched[60:140, 110:190], rtol=1e-6)
    np.testing.assert_allclose(p["patches"][0, 0], stretched[60:140, 110:190] * mask[0, 1, 60:140, 110:190])
    assert p["masks"][0].sum() == 21 * 21
    assert (p["patches"][0, 0][p["masks"][0] == 0] == 0).all()
    # slice 2: the window starts at row 10 - 40 = -30: 30 rows of zero padding on top
    assert not p["plain"][1, 0, :30].any() and p["plain"][1, 0, 30:].any()
    three = patient_patches(img, mask, channels=(0, 1, 2), context=40)
    assert three["patches"].shape == (2, 3, 80, 80) and three["context"].shape == (2, 3, 160, 160)
    np.testing.assert_allclose(three["context"][:, :, 40:120, 40:120], three["patches"])


def test_patient_patches_bad_input_names_source() -> None:
    img, mask = _volume()
    with pytest.raises(CadxDataError, match=r"P7.*no slice with tumour") as e:
        patient_patches(img, np.zeros_like(mask), source="P7")
    assert e.value.field == "mask"
    with pytest.raises(CadxDataError, match="channels"):
        patient_patches(img, mask, channels=(3,), source="P7")
    with pytest.raises(CadxDataError, match="do not match"):
        patient_patches(img, mask[:, :2], source="P7")


def test_augment_copies_count_identity_shift_and_seed() -> None:
    img, mask = _volume()
    p = patient_patches(img, mask, context=40)
    out, src = augment_copies(p["context"], 80, np.random.default_rng(0), copies=5)
    assert out.shape == (10, 1, 80, 80)
    np.testing.assert_array_equal(src, [0] * 5 + [1] * 5)
    again, _ = augment_copies(p["context"], 80, np.random.default_rng(0), copies=5)
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out[0], out[1])
    still, _ = augment_copies(p["context"], 80, np.random.default_rng(0), copies=2, max_rotate=0, max_shift=0)
    np.testing.assert_array_equal(still[0], p["patches"][0])
    np.testing.assert_array_equal(still[1], p["patches"][0])
    # pure shifts: each copy equals the context crop at an offset within ±16
    shifted, _ = augment_copies(p["context"][:1], 80, np.random.default_rng(3), copies=5, max_rotate=0)
    for c in shifted:
        hits = [(dy, dx) for dy in range(-16, 17) for dx in range(-16, 17)
                if np.array_equal(c, p["context"][0, :, 40 + dy:120 + dy, 40 + dx:120 + dx])]
        assert hits
    with pytest.raises(ValueError, match="too small"):
        augment_copies(p["context"][:, :, 20:140, 20:140], 80, np.random.default_rng(0))
