"""The input stack's array operations (cadx.pipeline.preprocess, cadx.pipeline.augment), on MONAI array transforms:
hand-computed windows, percentile/min-max/z-score scaling, crops with padding, resizes, and the seeded batch
augmenter's flips, quarter turns, rotation, zoom, shift and intensity changes."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor, get_track_meta
from monai.transforms import ScaleIntensityRangePercentiles

from cadx.config import AugmentConfig, InputConfig
from cadx.errors import CadxConfigError
from cadx.pipeline.augment import augment_batch
from cadx.pipeline.preprocess import (
    WINDOW_PRESETS,
    crop_pad,
    normalize_intensity,
    plain_tensors,
    resize,
    window_bounds,
)


def test_window_known_hu_values() -> None:
    assert window_bounds("lung") == (-1350.0, 150.0) and window_bounds([40, 400]) == (-160.0, 240.0)
    assert WINDOW_PRESETS["mediastinum"] == (50.0, 350.0)
    hu = np.array([[[-2000.0, -1350.0, -600.0, 150.0, 500.0]]])
    lung = normalize_intensity(hu, InputConfig(window="lung"))
    assert lung.dtype == np.float32 and lung.shape == hu.shape
    np.testing.assert_allclose(lung, [[[0, 0, 0.5, 1, 1]]])
    soft = normalize_intensity(np.array([[[-160, 40, 140, 240]]], np.int16), InputConfig(window=[40, 400]))
    np.testing.assert_allclose(soft, [[[0, 0.5, 0.75, 1]]])
    # NaN/inf count as 0 HU: (0 + 160) / 400 = 0.4 in the abdomen window (40/400)
    np.testing.assert_allclose(normalize_intensity(np.array([[np.nan, np.inf]]), InputConfig(window="abdomen")),
                               [[0.4, 0.4]])
    with pytest.raises(CadxConfigError, match=r"input\.window: unknown preset 'elbow'"):
        normalize_intensity(hu, InputConfig(window="elbow"))


def test_percentile_minmax_zscore_hand_values() -> None:
    a = np.arange(201, dtype=np.float32)[None, None]          # 0.5 % → 1, 99.5 % → 199 (linear interpolation)
    p = normalize_intensity(a, InputConfig(normalize="percentile"))
    np.testing.assert_allclose(p[0, 0, [0, 1, 100, 199, 200]], [0, 0, 99 / 198, 1, 1], rtol=1e-6)
    # on an image under 2·10^6 voxels every voxel counts: MONAI's own percentile transform, up to the float32
    # round-off of its torch.quantile (cadx takes numpy's percentiles, as before the move to MONAI)
    img = np.random.default_rng(0).normal(50, 20, size=(2, 30, 40)).astype(np.float32)
    monai_p = ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(img)
    np.testing.assert_allclose(normalize_intensity(img, InputConfig()), np.asarray(monai_p), atol=1e-5)
    np.testing.assert_allclose(normalize_intensity(np.array([[2.0, 4, 6, 10]]), InputConfig(normalize="minmax")),
                               [[0, 0.25, 0.5, 1]])
    z = normalize_intensity(np.array([[1.0, 2, 3, 4]]), InputConfig(normalize="zscore"))
    np.testing.assert_allclose(z, [(np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25)], rtol=1e-6)
    raw = np.array([[3.0, -1.0]], np.float32)
    assert normalize_intensity(raw, InputConfig(normalize="none")).tolist() == [[3.0, -1.0]]
    for how in ("percentile", "zscore", "minmax"):                # constant image → zeros, no division by zero
        assert (normalize_intensity(np.full((1, 4, 4), 7.0), InputConfig(normalize=how)) == 0).all()
    before = img.copy()
    normalize_intensity(img, InputConfig(normalize="zscore"))
    np.testing.assert_array_equal(img, before)                    # the input is never modified


def test_statistics_come_from_a_strided_sample_of_large_images() -> None:
    big = np.full(2_000_000, 5.0, np.float32)                    # ≥ 2·10^6 voxels: every 2nd voxel is sampled
    big[::2] = np.linspace(0.0, 1.0, 1_000_000, dtype=np.float32)
    out = normalize_intensity(big[None], InputConfig(normalize="minmax")).ravel()
    assert out[1] == 1.0 and out[-1] == 1.0                       # 5.0 lies outside the sample's [0, 1]: clipped
    assert out[0] == 0.0 and out[-2] == 1.0 and abs(out[1_000_000] - 0.5) < 1e-6


def test_crop_pad_inside_outside_and_dtype() -> None:
    a = np.arange(16).reshape(1, 4, 4)
    inner = crop_pad(a, (1, 1), (3, 3), fill=0)
    assert inner.dtype == a.dtype and inner[0].tolist() == [[5, 6], [9, 10]]
    inner[0, 0, 0] = -1                                          # a new array, not a view of the image
    assert a[0, 1, 1] == 5
    assert crop_pad(a, (2, 2), (5, 5), fill=99)[0].tolist() == [[10, 11, 99], [14, 15, 99], [99, 99, 99]]
    assert crop_pad(a, (-1, -1), (1, 1), fill=-1)[0].tolist() == [[-1, -1], [-1, 0]]
    assert crop_pad(a, (-1, 2), (2, 6), fill=-5)[0].tolist() == [[-5] * 4, [2, 3, -5, -5], [6, 7, -5, -5]]
    assert crop_pad(a, (10, 10), (12, 12), fill=7)[0].tolist() == [[7, 7], [7, 7]]   # wholly outside
    np.testing.assert_array_equal(crop_pad(a, (0, 0), (4, 4), fill=0), a)
    vol = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    v = crop_pad(vol, (1, -1, 3), (4, 2, 6), fill=-1.0)
    assert v.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(v[:, :2, 1:, :2], vol[:, 1:, :2, 3:])                 # the part inside
    assert (v[:, 2] == -1).all() and (v[:, :, 0] == -1).all() and (v[..., 2] == -1).all()


def test_resize_modes_hand_values() -> None:
    a = np.array([[[0, 1], [2, 3]]], np.float32)
    up = resize(a, (4, 4), mask=True)                             # nearest: each pixel becomes a 2 × 2 block
    assert up.dtype == np.float32 and up[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    # 2D images: bilinear with torch's antialiasing (a triangle filter as wide as the zoom). Halving [0, 1, 2, 3]:
    # output 0 weighs inputs 0, 1, 2 by .75, .75, .25 → 5/7; output 1 weighs inputs 1, 2, 3 by .25, .75, .75 → 16/7
    down = resize(np.arange(16, dtype=np.float32).reshape(1, 4, 4), (2, 2))
    r = np.array([5 / 7, 16 / 7])
    np.testing.assert_allclose(down[0], 4 * r[:, None] + r[None, :], rtol=1e-6)
    # volumes: trilinear, align_corners=False: [0, 10] along z → samples at −.25, .25, .75, 1.25 (clamped)
    vol = np.broadcast_to(np.array([0.0, 10.0], np.float32)[:, None, None], (2, 3, 3))[None]
    np.testing.assert_allclose(resize(vol, (4, 3, 3))[0, :, 1, 1], [0, 2.5, 7.5, 10])
    rng = np.random.default_rng(1)
    v = rng.random((2, 5, 9, 7)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(v)[None], size=(8, 4, 4), mode="trilinear", align_corners=False)[0]
    np.testing.assert_array_equal(resize(v, (8, 4, 4)), ref.numpy())
    m = (rng.random((1, 5, 9, 7)) > 0.5).astype(np.float32)
    np.testing.assert_array_equal(resize(m, (3, 4, 4), mask=True),
                                  F.interpolate(torch.from_numpy(m)[None], size=(3, 4, 4), mode="nearest")[0].numpy())
    assert resize(a, (2, 2)) is a                                 # already the size: no copy
    assert isinstance(resize(v, (8, 4, 4)), np.ndarray) and get_track_meta()  # plain arrays, setting restored


class _Draws:
    """Stand-in for the augmenter's ``np.random.Generator``: ``uniform``/``random``/``integers`` return the queued
    arrays in order, so a test chooses each draw."""

    def __init__(self, *draws: Any) -> None:
        self.draws = [np.asarray(d) for d in draws]

    def _next(self, *_: Any, **__: Any) -> np.ndarray:
        return self.draws.pop(0)

    uniform = random = integers = _next


def _aug(x: torch.Tensor, m: torch.Tensor | None, cfg: AugmentConfig, *draws: Any
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    return augment_batch(x, m, cfg, cast(np.random.Generator, _Draws(*draws)))


def test_augment_flips_and_quarter_turns_per_item() -> None:
    x = torch.arange(3 * 2 * 4 * 4, dtype=torch.float32).reshape(3, 2, 4, 4)
    m = (x[:, :1] % 3 == 0).float()
    # H flip for items 0 and 2, W flip for item 2 (a draw < 0.5 flips)
    a, am = _aug(x, m, AugmentConfig(enabled=True, flip=True), [0.1, 0.9, 0.2], [0.7, 0.6, 0.3])
    assert torch.equal(a[0], x[0].flip(1)) and torch.equal(a[1], x[1]) and torch.equal(a[2], x[2].flip(1).flip(2))
    assert am is not None and torch.equal(am[2], m[2].flip(1).flip(2)) and torch.equal(am[1], m[1])
    # k = 0, 1, 3 quarter turns (counter-clockwise in the (H, W) plane)
    r, rm = _aug(x, m, AugmentConfig(enabled=True, flip=False, rot90=True), [0, 1, 3])
    assert torch.equal(r[0], x[0]) and torch.equal(r[1], torch.rot90(x[1], 1, (1, 2)))
    assert torch.equal(r[2], torch.rot90(x[2], 3, (1, 2))) and rm is not None
    assert torch.equal(rm[1], torch.rot90(m[1], 1, (1, 2)))
    assert r[1, 0, 0].tolist() == [35, 39, 43, 47]                # first row = last column of item 1's channel 0
    v = torch.arange(2 * 1 * 2 * 3 * 3, dtype=torch.float32).reshape(2, 1, 2, 3, 3)
    f3, _ = _aug(v, None, AugmentConfig(enabled=True, flip=True), [0.0, 1.0], [1.0, 1.0], [1.0, 0.0])
    assert torch.equal(f3[0], v[0].flip(1)) and torch.equal(f3[1], v[1].flip(3))   # depth flips too
    assert torch.equal(x, torch.arange(96, dtype=torch.float32).reshape(3, 2, 4, 4))  # input untouched


def test_augment_rotation_zoom_shift_hand_values() -> None:
    n = 8
    x = torch.arange(n * n, dtype=torch.float32).reshape(1, 1, n, n)
    m = (x > 20).float()
    cfg = AugmentConfig(enabled=True, flip=False, rotate=90, scale=0.5, translate=0.5)
    zero = np.zeros((1, 2))
    # +90°, zoom 1, no shift ≡ a quarter turn (the mask too, nearest)
    a, am = _aug(x, m, cfg, [90.0], [1.0], zero)
    np.testing.assert_allclose(a.numpy(), torch.rot90(x, 1, (2, 3)).numpy(), atol=1e-4)
    assert am is not None and torch.equal(am, torch.rot90(m, 1, (2, 3)))
    # shift by 0.25 of the field (2 px of 8) to the left: out[:, j] = in[:, j + 2]; the image repeats its border,
    # the mask is zero where it comes from outside
    s, sm = _aug(x, m, cfg, [0.0], [1.0], [[0.25, 0.0]])
    np.testing.assert_allclose(s[0, 0, :, :6].numpy(), x[0, 0, :, 2:].numpy(), atol=1e-4)
    np.testing.assert_allclose(s[0, 0, :, 6:].numpy(), x[0, 0, :, 7:].expand(n, 2).numpy(), atol=1e-4)
    assert sm is not None and (sm[0, 0, :, 6:] == 0).all() and torch.equal(sm[0, 0, :, :6], m[0, 0, :, 2:])
    # zoom 2 about the centre: a ramp of slope 1 along W becomes slope 1/2 (inside, away from the border)
    ramp = torch.arange(n, dtype=torch.float32).expand(1, 1, n, n)
    z, _ = _aug(ramp, None, cfg, [0.0], [2.0], zero)
    np.testing.assert_allclose(np.diff(z[0, 0, 4, 2:6].numpy()), [0.5, 0.5, 0.5], atol=1e-5)
    np.testing.assert_allclose(z[0, 0, 4, 3:5].numpy(), [3.25, 3.75], atol=1e-5)   # centre 3.5 stays put
    # 3D: the same in-plane turn on every depth slice, depth untouched
    v = torch.rand(1, 1, 3, n, n)
    r3, _ = _aug(v, None, cfg, [90.0], [1.0], zero)
    np.testing.assert_allclose(r3.numpy(), torch.rot90(v, 1, (3, 4)).numpy(), atol=1e-5)


def test_augment_intensity_noise_and_plain_tensors() -> None:
    x = torch.ones(2, 1, 3, 3)
    g, _ = _aug(x, None, AugmentConfig(enabled=True, flip=False, intensity=0.5), [1.2, 0.8], [0.1, -0.3])
    assert torch.allclose(g[0], torch.full((1, 3, 3), 1.3)) and torch.allclose(g[1], torch.full((1, 3, 3), 0.5))
    n1, _ = augment_batch(x, None, AugmentConfig(enabled=True, flip=False, noise=0.1), np.random.default_rng(3))
    n2, _ = augment_batch(x, None, AugmentConfig(enabled=True, flip=False, noise=0.1), np.random.default_rng(3))
    assert torch.equal(n1, n2) and 0.05 < float((n1 - 1).std()) < 0.15
    cfg = AugmentConfig(enabled=True, flip=True, rot90=True, rotate=10, scale=0.1)
    out, om = augment_batch(torch.rand(4, 1, 6, 6), torch.zeros(4, 1, 6, 6), cfg, np.random.default_rng(0))
    assert not isinstance(out, MetaTensor) and not isinstance(om, MetaTensor)   # training sees plain tensors
    with plain_tensors():
        assert not get_track_meta()
    assert get_track_meta()


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (2, 1, 4, 8, 8)])
def test_augmentation_reproducible_and_mask_follows(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape)
    m = (x > 0.5).float()
    cfg = AugmentConfig(enabled=True, flip=True, rot90=True, rotate=20, scale=0.1, translate=0.1)
    a1, m1 = augment_batch(x, m, cfg, np.random.default_rng([1, 2, 3]))
    a2, m2 = augment_batch(x, m, cfg, np.random.default_rng([1, 2, 3]))
    assert torch.equal(a1, a2) and torch.equal(m1, m2)
    a3, _ = augment_batch(x, m, cfg, np.random.default_rng([1, 2, 4]))
    assert not torch.equal(a1, a3)
    assert set(torch.unique(m1).tolist()) <= {0.0, 1.0}
    # flips/turns only: the mask moves exactly with the image
    flip = AugmentConfig(enabled=True, flip=True, rot90=True)
    a, mm = augment_batch(x, m, flip, np.random.default_rng(0))
    assert torch.equal((a > 0.5).float(), mm)


def test_per_channel_normalisation_gives_each_sequence_its_own_range() -> None:
    a = np.stack([np.arange(201, dtype=np.float32), 10 * np.arange(201, dtype=np.float32)])[:, None]
    joint = normalize_intensity(a, InputConfig(normalize="minmax"))
    np.testing.assert_allclose(joint[0, 0, [0, 200]], [0, 200 / 2000])           # one range over both channels
    own = normalize_intensity(a, InputConfig(normalize="minmax", normalize_per_channel=True))
    np.testing.assert_allclose(own[:, 0, [0, 100, 200]], [[0, 0.5, 1], [0, 0.5, 1]])
    for c in range(2):                                                           # = each channel alone
        np.testing.assert_allclose(own[c:c + 1], normalize_intensity(a[c:c + 1], InputConfig(normalize="minmax")))
    one = normalize_intensity(a[:1], InputConfig(normalize_per_channel=True))    # one channel: unchanged rule
    np.testing.assert_allclose(one, normalize_intensity(a[:1], InputConfig()))
