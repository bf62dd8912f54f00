"""The ultrasound preprocessing of thesis A.5 (Buda et al. 2020): 1st–99th percentile contrast stretch, threshold
at 2 % of the maximum, bounding box of the largest connected component (drops the text/metadata overlay around
the B-mode sector), crop image and masks together, zero-pad to a square, resize, then a z-score whose mean and
standard deviation come from the training set only.

Arrays are ``(H, W)`` (grey; colour frames are averaged over channels first by the caller or by
:func:`ultrasound_roi`, which accepts ``(C, H, W)``); boxes are ``(y0, x0, y1, x1)``, stop exclusive.
Choices the paper leaves open (stated here, tested in tests/test_calipers.py): the threshold is applied to the
*stretched* image (values in [0, 1], so "2 % of max" = 0.02 unless the stretched image is all zero);
connectivity is 8-neighbour; the square padding is split evenly (the extra pixel of an odd difference goes to the
bottom/right); images are resized with bilinear interpolation (order 1, anti-aliased) and masks with nearest
neighbour (order 0) so they stay binary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from skimage.measure import label
from skimage.transform import resize

__all__ = ["UltrasoundROI", "crop_pad_square", "fit_zscore", "largest_component_box", "percentile_stretch",
           "ultrasound_roi"]


def percentile_stretch(image: ArrayLike, lo: float = 1.0, hi: float = 99.0) -> NDArray[np.float64]:
    """Linear stretch mapping the ``lo``-th percentile to 0 and the ``hi``-th to 1, clipped to [0, 1]:
    ``(H, W)`` float. A constant image (both percentiles equal) maps to all zeros."""
    a = np.asarray(image, dtype=np.float64)
    p_lo, p_hi = np.percentile(a, [lo, hi])
    if p_hi <= p_lo:
        return np.zeros_like(a)
    return np.clip((a - p_lo) / (p_hi - p_lo), 0.0, 1.0)


def largest_component_box(image: ArrayLike, fraction: float = 0.02) -> tuple[int, int, int, int]:
    """Bounding box ``(y0, x0, y1, x1)`` (stop exclusive) of the largest 8-connected component of
    ``image > fraction · max(image)``; the whole image when nothing exceeds the threshold."""
    a = np.asarray(image, dtype=np.float64)
    h, w = a.shape
    mx = float(a.max()) if a.size else 0.0
    fg = a > fraction * mx if mx > 0 else np.zeros_like(a, bool)
    if not fg.any():
        return 0, 0, h, w
    lab = label(fg, connectivity=2)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    ys, xs = np.nonzero(lab == int(np.argmax(sizes)))
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def crop_pad_square(array: ArrayLike, box: tuple[int, int, int, int]) -> tuple[NDArray, tuple[int, int]]:
    """Crop ``(H, W)`` to ``box`` then zero-pad to a square (even split, extra pixel bottom/right). Returns the
    square and the ``(top, left)`` padding, so a point ``(x, y)`` of the original maps to
    ``(x − x0 + left, y − y0 + top)``."""
    a = np.asarray(array)
    y0, x0, y1, x1 = box
    c = a[y0:y1, x0:x1]
    h, w = c.shape
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    out = np.zeros((s, s), dtype=c.dtype)
    out[top:top + h, left:left + w] = c
    return out, (top, left)


@dataclass(frozen=True)
class UltrasoundROI:
    """Result of :func:`ultrasound_roi`: ``image`` ``(S, S)`` float in [0, 1] (stretched, before z-score),
    ``masks`` ``(S, S)`` uint8 {0, 1} in input order, ``box`` (y0, x0, y1, x1) in the original, ``pad``
    (top, left), ``scale`` = S / padded side, and ``points`` mapped to the output grid ((N, 2) x, y) when given."""

    image: NDArray[np.float64]
    masks: list[NDArray[np.uint8]]
    box: tuple[int, int, int, int]
    pad: tuple[int, int]
    scale: float
    points: NDArray[np.float64] | None = None


def ultrasound_roi(image: ArrayLike, masks: Sequence[ArrayLike] = (), size: int = 320, fraction: float = 0.02,
                   points: ArrayLike | None = None, lo: float = 1.0, hi: float = 99.0) -> UltrasoundROI:
    """A.5 preprocessing of one frame up to (not including) the z-score: ``image`` ``(H, W)`` or ``(C, H, W)``
    (channel mean), ``masks`` ``(H, W)`` or ``(1, H, W)`` of the same size, optional caliper ``points`` (x, y) in
    the original; ``size`` = output side (the paper: 320). A mask whose size differs raises ValueError."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a.mean(axis=0)
    stretched = percentile_stretch(a, lo, hi)
    box = largest_component_box(stretched, fraction)
    sq, pad = crop_pad_square(stretched, box)
    side = sq.shape[0]
    img = resize(sq, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    out_masks = []
    for m in masks:
        mm = np.asarray(m)
        mm = mm[0] if mm.ndim == 3 else mm
        if mm.shape != a.shape:
            raise ValueError(f"ultrasound_roi: mask shape {mm.shape} differs from image shape {a.shape}")
        msq, _ = crop_pad_square((mm > 0).astype(np.uint8), box)
        out_masks.append(resize(msq, (size, size), order=0, anti_aliasing=False, preserve_range=True)
                         .astype(np.uint8))
    scale = size / side
    pts = None
    if points is not None:
        p = np.asarray(points, float).reshape(-1, 2)
        # pixel centres: original centre x → padded x' = x − x0 + left; resize maps centre c to (c + 0.5)·s − 0.5
        pts = np.stack([(p[:, 0] - box[1] + pad[1] + 0.5) * scale - 0.5,
                        (p[:, 1] - box[0] + pad[0] + 0.5) * scale - 0.5], axis=1)
    return UltrasoundROI(img, out_masks, box, pad, scale, pts)


def fit_zscore(images: Sequence[ArrayLike]) -> tuple[float, float]:
    """Mean and standard deviation over every pixel of the **training** images (``(H, W)`` each); apply as
    ``(x − mean) / std``. A constant training set gives std 1.0 (no scaling) instead of a division by zero."""
    if len(images) == 0:
        raise ValueError("fit_zscore: no training images")
    flat = np.concatenate([np.asarray(i, dtype=np.float64).ravel() for i in images])
    sd = float(flat.std())
    return float(flat.mean()), sd if sd > 0 else 1.0
