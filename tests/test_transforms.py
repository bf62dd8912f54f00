"""Transforms: hand-computed windows, normalisation, resampling, crops with padding, slices, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.data.image import ImageData
from cadx.data.transforms import (
    WINDOW_PRESETS,
    PaddedRandomCrop,
    center_crop,
    clip_percentiles,
    crop_box,
    crop_diameter,
    crop_mask_bbox,
    extract_slices,
    make_augmentation,
    make_paired_augmentation,
    mask_bbox,
    minmax,
    random_crop,
    resample,
    resize,
    window,
    zscore,
)
from cadx.errors import CadxDataError

pytest.importorskip("monai")  # imported once at collection (several seconds), not inside a timed test


def test_window_known_hu_values() -> None:
    hu = np.array([[[-2000.0, -1350.0, -600.0, 150.0, 500.0]]])
    assert np.allclose(window(hu, "lung"), [[[0, 0, 0.5, 1, 1]]])
    assert np.allclose(window(np.array([[[-160.0, 40.0, 140.0, 240.0]]]), 40, 400), [[[0, 0.5, 0.75, 1]]])
    assert np.allclose(window(hu, -600, 1500, out=(-1, 1)), [[[-1, -1, 0, 1, 1]]])
    assert WINDOW_PRESETS["mediastinum"] == (50.0, 350.0) and window(hu, "bone").dtype == np.float32
    with pytest.raises(CadxDataError, match="unknown window"):
        window(hu, "elbow")


def test_clip_zscore_minmax() -> None:
    a = np.arange(101, dtype=float).reshape(1, 1, 101)
    c = clip_percentiles(a, 10, 90)
    assert c.min() == 10 and c.max() == 90 and c[0, 0, 50] == 50
    z = zscore(np.array([[[1.0, 2.0, 3.0, 4.0]]]))
    assert np.allclose(z, (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25))
    zm = zscore(np.array([[[0.0, 0.0, 2.0, 4.0]]]), mask=np.array([[0, 0, 1, 1]]))  # stats: mean 3, std 1
    assert np.allclose(zm, [[[-3, -3, -1, 1]]])
    two = np.stack([np.full((2, 2), 5.0), np.array([[0.0, 1.0], [2.0, 4.0]])])
    assert np.allclose(minmax(two)[0], 0) and np.allclose(minmax(two)[1], [[0, 0.25], [0.5, 1]])
    assert np.allclose(zscore(two)[0], 0)  # constant channel → zeros, no division by zero


def test_resample_linear_hand_values_and_geometry() -> None:
    vol = np.broadcast_to(np.array([0.0, 10, 20, 30])[:, None, None], (4, 3, 3))[None].copy()
    img = ImageData(vol, (2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    out = resample(img, (1.0, None, None))
    assert out.array.shape == (1, 8, 3, 3) and out.spacing == (1.0, 1.0, 1.0)
    # grid-aligned sampling at z = -0.25, 0.25, ..., 3.25 (input index), borders replicated
    assert np.allclose(out.array[0, :, 1, 1], [0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30])
    assert np.allclose(out.origin, (-0.5, 0.0, 0.0))  # first voxel centre moves by (1 − 2) / 2 mm
    mask = ImageData((vol > 15).astype(np.uint8), (2.0, 1.0, 1.0))
    m2 = resample(mask, (1.0, 1.0, 1.0), order=0)
    assert m2.array.dtype == np.uint8 and set(np.unique(m2.array)) == {0, 1}
    assert m2.array[0, :, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    down = resample(ImageData(np.ones((1, 5, 5)), (1.0, 1.0)), (2.0, 2.0))
    assert down.array.shape == (1, 2, 2) and down.spacing == (2.5, 2.5)  # effective spacing reported


def test_resize_nearest_and_area() -> None:
    a = np.array([[[0, 1], [2, 3]]], dtype=np.int16)
    up = resize(a, 4, mode="nearest")
    assert up.dtype == np.int16 and up[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    down = resize(np.arange(16, dtype=np.float32).reshape(1, 4, 4), (2, 2), mode="area")
    assert np.allclose(down, [[[2.5, 4.5], [10.5, 12.5]]])
    assert resize(np.zeros((2, 4, 6, 6)), (8, 3, 3)).shape == (2, 8, 3, 3)


def test_crop_box_inside_margin_and_padding() -> None:
    a = np.arange(16).reshape(1, 4, 4)
    assert crop_box(a, (1, 1, 3, 3))[0].tolist() == [[5, 6], [9, 10]]
    assert np.array_equal(crop_box(a, (1, 1, 3, 3), margin=1), a)
    assert crop_box(a, (2, 2, 5, 5), pad_value=99)[0].tolist() == [[10, 11, 99], [14, 15, 99], [99, 99, 99]]
    assert crop_box(a, (2, 2, 5, 5), pad_mode="edge")[0].tolist() == [[10, 11, 11], [14, 15, 15], [14, 15, 15]]
    assert crop_box(a, (-1, -1, 1, 1), pad_value=-1)[0].tolist() == [[-1, -1], [-1, 0]]
    assert crop_box(a, (10, 10, 12, 12), pad_value=7)[0].tolist() == [[7, 7], [7, 7]]
    with pytest.raises(CadxDataError, match="empty box"):
        crop_box(a, (2, 2, 2, 3))
    with pytest.raises(CadxDataError, match="needs 4 values"):
        crop_box(a, (0, 0, 0, 2, 2, 2))


def test_mask_bbox_crop() -> None:
    img = np.arange(36).reshape(1, 6, 6)
    m = np.zeros((6, 6), np.uint8)
    m[2:4, 1:4] = 1
    assert mask_bbox(m[None]) == (2, 1, 4, 4)
    assert crop_mask_bbox(img, m)[0].tolist() == [[13, 14, 15], [19, 20, 21]]
    assert crop_mask_bbox(img, m, margin=1).shape == (1, 4, 5)
    with pytest.raises(CadxDataError, match="empty"):
        crop_mask_bbox(img, np.zeros((6, 6)))


def test_crop_diameter_adaptive_side() -> None:
    img = np.arange(400, dtype=np.float32).reshape(1, 20, 20)
    c = crop_diameter(img, (10, 10), diameter_px=3, factor=2.0, min_size=4)  # side = max(4, 6) = 6
    assert c.shape == (1, 6, 6) and c[0, 0, 0] == 8 * 20 + 8 and c[0, 5, 5] == 13 * 20 + 13
    small = crop_diameter(img, (10, 10), diameter_px=1, min_size=5)  # side 5, centred exactly on (10, 10)
    assert small[0, 2, 2] == 210 and small[0, 0, 0] == 8 * 20 + 8
    edge = crop_diameter(img, (0, 0), diameter_px=4, factor=2.0, min_size=1, pad_value=-5)
    assert edge.shape == (1, 8, 8) and edge[0, 0, 0] == -5 and edge[0, 4, 4] == 21  # start −3 → (1, 1)
    assert crop_diameter(img, (10, 10), 5, out_size=16).shape == (1, 16, 16)


def test_extract_slices_box_and_mask() -> None:
    vol = np.broadcast_to(np.arange(6.0)[:, None, None], (6, 5, 5))[None].copy()  # value = z index
    s, z = extract_slices(vol, box=(1, 1, 1, 4, 3, 3))
    assert s.shape == (3, 1, 2, 2) and z.tolist() == [1, 2, 3] and np.array_equal(s[:, 0, 0, 0], [1, 2, 3])
    mask = np.zeros((6, 5, 5), np.uint8)
    mask[1, 1:3, 1:3] = 1  # area 4
    mask[3, 2, 2] = 1      # area 1; z = 2 has no lesion
    assert extract_slices(vol, mask=mask)[1].tolist() == [1, 2, 3]
    s1, z1 = extract_slices(vol, mask=mask, min_area=1)
    assert z1.tolist() == [1, 3] and s1.shape == (2, 1, 2, 2) and np.array_equal(s1[:, 0, 0, 0], [1, 3])
    assert extract_slices(vol, mask=mask, min_area=3)[1].tolist() == [1]
    sm, _ = extract_slices(vol, box=(1, 1, 1, 4, 3, 3), margin=1)
    assert sm.shape == (3, 1, 4, 4)
    sy, zy = extract_slices(vol, box=(0, 2, 0, 6, 4, 5), axis=1)  # slices along y: (N=2, C, Z=6, X=5)
    assert sy.shape == (2, 1, 6, 5) and zy.tolist() == [2, 3] and np.array_equal(sy[0, 0, :, 0], np.arange(6))
    assert extract_slices(vol, box=(4, 0, 0, 9, 5, 5))[1].tolist() == [4, 5]  # clipped to the volume


def test_center_and_random_crop() -> None:
    a = np.arange(64).reshape(1, 8, 8)
    assert np.array_equal(center_crop(a, 4), a[:, 2:6, 2:6])
    assert center_crop(a, 10).shape == (1, 10, 10) and center_crop(a, 10)[0, 0, 0] == 0  # padded
    r1 = random_crop(a, (6, 6), np.random.default_rng(4))
    r2 = random_crop(a, (6, 6), np.random.default_rng(4))
    assert np.array_equal(r1, r2)
    oy, ox = divmod(int(r1[0, 0, 0]), 8)
    assert np.array_equal(r1, a[:, oy:oy + 6, ox:ox + 6]) and 0 <= oy <= 2 and 0 <= ox <= 2
    starts = {int(random_crop(a, 6, np.random.default_rng(s))[0, 0, 0]) for s in range(40)}
    assert starts == {y * 8 + x for y in range(3) for x in range(3)}  # all 9 offsets reachable
    pc = PaddedRandomCrop(8, padding=2, pad_value=-1, seed=0)
    outs = [pc(a) for _ in range(20)]
    assert all(o.shape == (1, 8, 8) for o in outs) and any((o == -1).any() for o in outs)


def test_augmentation_flip_exact_and_deterministic() -> None:
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    flip = make_augmentation(2, flips=True, rotate_deg=0, scale=0, intensity=0, prob=1.0)
    assert np.array_equal(flip(a), a[:, ::-1, ::-1])
    assert np.array_equal(make_augmentation(2, prob=0.0)(a), a)
    img = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    aug1, aug2 = make_augmentation(2, seed=5), make_augmentation(2, seed=5)
    seq1 = [aug1(img) for _ in range(4)]
    seq2 = [aug2(img) for _ in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(seq1, seq2, strict=True))
    assert any(not np.array_equal(seq1[0], x) for x in seq1[1:]) and seq1[0].shape == img.shape
    aug1.reseed(5)
    assert np.array_equal(aug1(img), seq1[0])
    v = np.random.default_rng(1).random((1, 6, 8, 8)).astype(np.float32)
    assert make_augmentation(3, seed=0)(v).shape == v.shape


def test_paired_augmentation_mask_binary_and_aligned() -> None:
    yy, xx = np.mgrid[:48, :48]
    mask = (((yy - 20) ** 2 + (xx - 28) ** 2) < 100).astype(np.uint8)
    image = mask[None].astype(np.float32)
    aug = make_paired_augmentation(2, rotate_deg=40, scale=0.2, intensity=0, prob=1.0, seed=3)
    for _ in range(3):
        im2, m2 = aug(image, mask)
        assert m2.dtype == np.uint8 and m2.shape == mask.shape and set(np.unique(m2)) <= {0, 1}
        disagree = ((im2[0] > 0.5) != (m2 == 1)).mean()
        assert disagree < 0.01 and m2.sum() > 0.6 * mask.sum()
    f = make_paired_augmentation(2, flips=True, rotate_deg=0, scale=0, intensity=0, prob=1.0)
    im3, m3 = f(image * 7, mask[None])
    assert np.array_equal(m3, mask[None, ::-1, ::-1]) and np.array_equal(im3, 7 * image[:, ::-1, ::-1])


def test_mtmr_chain_keeps_nodule_inside_random_224_crop() -> None:
    yy, xx = np.mgrid[:71, :71]
    d = 30.0  # the largest LIDC-like nodule in a 71×71 crop
    nodule = ((yy - 35) ** 2 + (xx - 35) ** 2 <= (d / 2) ** 2).astype(np.float32)[None]
    patch = crop_diameter(nodule, (35, 35), d, factor=2.0, out_size=256)  # side 60 → 256
    rows, cols = np.nonzero(patch[0] > 0.5)
    # every 224 crop of 256 covers [32, 224): the nodule must lie inside it
    assert rows.min() >= 32 and rows.max() < 224 and cols.min() >= 32 and cols.max() < 224
    assert np.isclose(rows.min(), 256 / 4, atol=6) and np.isclose(rows.max(), 3 * 256 / 4, atol=6)
    assert random_crop(patch, 224, np.random.default_rng(0)).shape == (1, 224, 224)


def test_paired_augmentation_3d_shapes() -> None:
    m = np.zeros((1, 6, 10, 10), np.uint8)
    m[0, 2:4, 3:7, 3:7] = 1
    im2, m2 = make_paired_augmentation(3, prob=1.0, seed=0)(m.astype(np.float32), m)
    assert im2.shape == m.shape and m2.shape == m.shape and set(np.unique(m2)) <= {0, 1}
