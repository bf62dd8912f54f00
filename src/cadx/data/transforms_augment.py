"""Random augmentation built from MONAI transforms, deterministic through ``set_random_state(seed)``.

Inputs are channel-first numpy arrays ``(C,Y,X)`` / ``(C,Z,Y,X)``, normalised intensities (the intensity
scale/shift amounts are absolute: ``intensity=0.1`` means ×(1±0.1) and ±0.1). In 3D the rotation is
in-plane (about the first spatial axis, z), since CT/MR slices are often much thicker than their pixels.
Each DataLoader worker holds a copy of the same random state: call ``reseed(seed + worker_id)`` in a
``worker_init_fn`` so workers do not repeat one another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cadx.errors import CadxConfigError


def _check(spatial_dims: int, prob: float) -> None:
    if spatial_dims not in (2, 3):
        raise CadxConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if not 0.0 <= prob <= 1.0:
        raise CadxConfigError(f"prob must be in [0, 1], got {prob}")


class Augmentation:
    """Callable ``(C,*spatial) array → float32 array of the same shape`` wrapping a MONAI ``Compose``."""

    def __init__(self, compose: Any, seed: int = 0) -> None:
        self.compose = compose
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream (same seed → same sequence of augmentations)."""
        self.compose.set_random_state(seed=int(seed) % (2**32))

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        from monai.utils import convert_to_numpy

        return convert_to_numpy(self.compose(np.asarray(arr, dtype=np.float32))).astype(np.float32)


class PairedAugmentation(Augmentation):
    """Callable ``(image, mask) → (image, mask)``: one spatial draw for both (linear for the image, nearest
    for the mask, so a binary mask stays binary and aligned); intensity changes touch the image only.
    The mask keeps its dtype and shape (spatial or channel-first)."""

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        from monai.utils import convert_to_numpy

        img = np.asarray(image, dtype=np.float32)
        m = np.asarray(mask)
        squeeze = m.ndim == img.ndim - 1
        mk = (m[None] if squeeze else m).astype(np.float32)
        out = self.compose({"image": img, "mask": mk})
        im2 = convert_to_numpy(out["image"]).astype(np.float32)
        m2 = convert_to_numpy(out["mask"])
        m2 = np.rint(m2).astype(m.dtype) if np.issubdtype(m.dtype, np.integer) or m.dtype == bool else \
            m2.astype(m.dtype)
        return im2, (m2[0] if squeeze else m2)


def _axes(spatial_dims: int, flip_axes: Sequence[int] | None) -> list[int]:
    axes = list(range(spatial_dims)) if flip_axes is None else [int(a) for a in flip_axes]
    if any(a < 0 or a >= spatial_dims for a in axes):
        raise CadxConfigError(f"flip axes {axes} outside 0..{spatial_dims - 1}")
    return axes


def make_augmentation(spatial_dims: int = 2, flips: bool = True, rotate_deg: float = 15.0, scale: float = 0.1,
                      intensity: float = 0.1, prob: float = 0.5, seed: int = 0,
                      flip_axes: Sequence[int] | None = None) -> Augmentation:
    """Random flips (each spatial axis, or ``flip_axes``, independently), rotation within ±``rotate_deg``,
    zoom within 1±``scale``, intensity scale ×(1±``intensity``) and shift ±``intensity``; each applied
    with probability ``prob``. A zero amount drops that transform. Output keeps the input shape."""
    from monai.transforms import (
        Compose,
        RandFlip,
        RandRotate,
        RandScaleIntensity,
        RandShiftIntensity,
        RandZoom,
    )

    _check(spatial_dims, prob)
    interp = "bilinear" if spatial_dims == 2 else "trilinear"
    ts: list[Any] = []
    if flips:
        ts += [RandFlip(prob=prob, spatial_axis=a) for a in _axes(spatial_dims, flip_axes)]
    if rotate_deg:
        ts.append(RandRotate(range_x=math.radians(rotate_deg), prob=prob, keep_size=True, mode="bilinear",
                             padding_mode="border"))
    if scale:
        ts.append(RandZoom(prob=prob, min_zoom=1 - scale, max_zoom=1 + scale, mode=interp,
                           padding_mode="edge", keep_size=True))
    if intensity:
        ts += [RandScaleIntensity(factors=intensity, prob=prob), RandShiftIntensity(offsets=intensity, prob=prob)]
    return Augmentation(Compose(ts), seed)


def make_paired_augmentation(spatial_dims: int = 2, flips: bool = True, rotate_deg: float = 15.0,
                             scale: float = 0.1, intensity: float = 0.1, prob: float = 0.5, seed: int = 0,
                             flip_axes: Sequence[int] | None = None) -> PairedAugmentation:
    """Like :func:`make_augmentation` for an image and its mask (MONAI dictionary transforms on keys
    ``image``/``mask``): identical flips/rotation/zoom, nearest interpolation (``nearest-exact`` for the zoom:
    torch's plain ``nearest`` is shifted by half a pixel against bilinear) and zero padding for the
    mask, intensity changes on the image only."""
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandZoomd,
    )

    _check(spatial_dims, prob)
    interp = "bilinear" if spatial_dims == 2 else "trilinear"
    keys = ["image", "mask"]
    ts: list[Any] = []
    if flips:
        ts += [RandFlipd(keys, prob=prob, spatial_axis=a) for a in _axes(spatial_dims, flip_axes)]
    if rotate_deg:
        ts.append(RandRotated(keys, range_x=math.radians(rotate_deg), prob=prob, keep_size=True,
                              mode=("bilinear", "nearest"), padding_mode=("border", "zeros")))
    if scale:
        ts.append(RandZoomd(keys, prob=prob, min_zoom=1 - scale, max_zoom=1 + scale, mode=(interp, "nearest-exact"),
                            padding_mode=("edge", "constant"), keep_size=True))
    if intensity:
        ts += [RandScaleIntensityd("image", factors=intensity, prob=prob),
               RandShiftIntensityd("image", offsets=intensity, prob=prob)]
    return PairedAugmentation(Compose(ts), seed)
