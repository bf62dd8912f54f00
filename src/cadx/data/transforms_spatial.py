"""Spatial transforms on channel-first numpy arrays ``(C,Y,X)`` / ``(C,Z,Y,X)``: resampling to a spacing,
resizing, ROI crops (box, mask bounding box, diameter-adaptive), 2D slices of a 3D ROI, random/centre crops.

Boxes follow the contract: ``(start_0, ..., start_n, stop_0, ..., stop_n)``, voxel indices of the spatial
axes in array order, stop exclusive. Crops that reach outside the array are padded (``pad_mode`` of
``np.pad``; ``"constant"`` uses ``pad_value``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from cadx.data.image import ImageData
from cadx.errors import CadxDataError

Size = int | Sequence[int]


def _per_axis(value: Size, n: int, what: str) -> tuple[int, ...]:
    vals = (int(value),) * n if isinstance(value, int | np.integer) else tuple(int(v) for v in value)
    if len(vals) != n:
        raise CadxDataError(f"{what} {value!r} needs {n} values (one per spatial axis)", field=what)
    return vals


def _spatial(arr: np.ndarray) -> int:
    a = np.asarray(arr)
    if a.ndim not in (3, 4):
        raise CadxDataError(f"expected a channel-first (C,Y,X) or (C,Z,Y,X) array, got shape {a.shape}",
                            field="image")
    return a.ndim - 1


# --- resampling and resizing -----------------------------------------------------------------------------

def resample(img: ImageData, spacing: Sequence[float | None], order: int = 1) -> ImageData:
    """Resample to ``spacing`` (mm, array order; ``None`` keeps an axis) with ``scipy.ndimage.zoom``.

    New size per axis is ``max(1, round(n × old / new))``; the physical extent is kept exactly
    (``grid_mode``), so the returned spacing is the effective ``old × n / new_n`` (equal to the request
    when it divides evenly) and the origin moves by half the spacing change. ``order=0`` (masks,
    labels) keeps the dtype and values; ``order ≥ 1`` returns float32. Edges replicate the border.
    """
    nsp = img.spatial_ndim
    if len(spacing) != nsp:
        raise CadxDataError(f"spacing {tuple(spacing)} needs {nsp} values", field="spacing")
    target = tuple(o if s is None else float(s) for o, s in zip(img.spacing, spacing, strict=True))
    if any(t <= 0 for t in target):
        raise CadxDataError(f"spacing must be > 0, got {target}", field="spacing")
    shape = img.spatial_shape
    new_shape = tuple(max(1, round(n * o / t)) for n, o, t in zip(shape, img.spacing, target, strict=True))
    eff = tuple(o * n / m for o, n, m in zip(img.spacing, shape, new_shape, strict=True))
    src = img.array if order == 0 else np.asarray(img.array, dtype=np.float32)
    if new_shape == shape:
        out = src.copy()
    else:
        zoom = [m / n for m, n in zip(new_shape, shape, strict=True)]
        out = np.stack([ndimage.zoom(ch, zoom, order=order, mode="nearest", grid_mode=True,
                                     prefilter=order > 1) for ch in src])
    d = np.asarray(img.direction, dtype=float).reshape(nsp, nsp)
    shift = d @ ((np.asarray(eff) - np.asarray(img.spacing)) / 2)
    origin = tuple((np.asarray(img.origin, dtype=float) + shift).tolist())
    return ImageData(out, eff, origin, img.direction, dict(img.meta))


def resize(arr: np.ndarray, size: Size, mode: str = "linear", anti_aliasing: bool = False) -> np.ndarray:
    """Resize the spatial axes to ``size`` with MONAI ``Resize``.

    ``mode``: ``"linear"`` (bilinear/trilinear by dimension), ``"nearest"`` (torch ``nearest-exact``:
    symmetric, for masks; keeps the input dtype), ``"area"``, ``"bicubic"``. ``-1`` in ``size`` keeps that
    axis. Returns float32 except for nearest.
    """
    from monai.transforms import Resize
    from monai.utils import convert_to_numpy

    nsp = _spatial(arr)
    sz = _per_axis(size, nsp, "size")
    m = {"linear": "bilinear" if nsp == 2 else "trilinear", "nearest": "nearest-exact"}.get(mode, mode)
    a = np.asarray(arr)
    out = convert_to_numpy(Resize(sz, mode=m, anti_aliasing=anti_aliasing)(a.astype(np.float32)))  # type: ignore[arg-type]
    return out.astype(a.dtype) if m == "nearest-exact" else out.astype(np.float32)


# --- ROI crops ------------------------------------------------------------------------------------------

def crop_box(arr: np.ndarray, box: Sequence[int], margin: Size = 0, pad_value: float = 0.0,
             pad_mode: str = "constant") -> np.ndarray:
    """Crop ``box`` grown by ``margin`` voxels on each side (per axis or one int). Shape
    ``(C, *(stop − start + 2·margin))``; parts outside the array are padded. A box entirely outside the
    array can only be padded with a constant."""
    a = np.asarray(arr)
    nsp = _spatial(a)
    if len(box) != 2 * nsp:
        raise CadxDataError(f"box {tuple(box)} needs {2 * nsp} values (starts then stops)", field="box")
    mg = np.array(_per_axis(margin, nsp, "margin"))
    start = np.array([int(b) for b in box[:nsp]]) - mg
    stop = np.array([int(b) for b in box[nsp:]]) + mg
    if (stop <= start).any():
        raise CadxDataError(f"empty box {tuple(box)} (stop must exceed start)", field="box")
    shape = np.array(a.shape[1:])
    s0, s1 = np.clip(start, 0, shape), np.clip(stop, 0, shape)
    pad = [(0, 0)] + [(int(b), int(e)) for b, e in zip(s0 - start, stop - s1, strict=True)]
    if (s1 <= s0).any():
        if pad_mode != "constant":
            raise CadxDataError(f"box {tuple(box)} lies outside the image {tuple(shape)}", field="box")
        return np.full((a.shape[0], *(stop - start)), pad_value, dtype=a.dtype)
    inner = a[(slice(None), *(slice(int(b), int(e)) for b, e in zip(s0, s1, strict=True)))]
    if not any(p != (0, 0) for p in pad):
        return inner.copy()
    if pad_mode == "constant":
        return np.pad(inner, pad, mode="constant", constant_values=pad_value)
    return np.pad(inner, pad, mode=pad_mode)  # type: ignore[call-overload]


def mask_bbox(mask: np.ndarray) -> tuple[int, ...]:
    """Bounding box of the nonzero voxels of a channel-first mask ``(C,*spatial)`` (union of channels),
    as ``(starts..., stops...)``. An empty mask raises CadxDataError."""
    m = np.asarray(mask)
    _spatial(m)
    nz = np.nonzero(m.any(axis=0))
    if nz[0].size == 0:
        raise CadxDataError("mask is empty: no lesion to crop", field="mask")
    return tuple(int(i.min()) for i in nz) + tuple(int(i.max()) + 1 for i in nz)


def _as_cf_mask(arr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape == arr.shape[1:]:
        m = m[None]
    if m.shape[1:] != arr.shape[1:]:
        raise CadxDataError(f"mask shape {np.asarray(mask).shape} does not match image {arr.shape}", field="mask")
    return m


def crop_mask_bbox(arr: np.ndarray, mask: np.ndarray, margin: Size = 0, pad_value: float = 0.0,
                   pad_mode: str = "constant") -> np.ndarray:
    """Crop ``arr`` to the bounding box of ``mask`` (spatial shape or ``(C,*spatial)``) plus ``margin``."""
    a = np.asarray(arr)
    _spatial(a)
    return crop_box(a, mask_bbox(_as_cf_mask(a, mask)), margin, pad_value, pad_mode)


def crop_diameter(arr2d: np.ndarray, center_yx: Sequence[float], diameter_px: float, factor: float = 2.0,
                  min_size: int = 32, out_size: int | None = None, pad_value: float = 0.0,
                  pad_mode: str = "constant") -> np.ndarray:
    """MTMR-Net's nodule patch: a square of side ``max(min_size, ceil(factor × diameter_px))`` centred on
    ``center_yx`` (padded where it leaves the image), optionally resized (bilinear) to ``out_size``.

    The paper only says the patch is "adaptive … according to the diameter" and then resized to 256. We
    choose ``factor=2``: the nodule fills the central half of the patch, leaving one radius of context on
    each side, and after the resize to 256 and the random 224 crop (≤ 32 px lost, at most 32 on one side)
    the nodule (central 128 px, from 64 to 192) is never cut. ``min_size`` keeps tiny (3 mm) nodules from
    being blown up from a handful of pixels. Input ``(C,Y,X)``; output ``(C, side, side)`` or
    ``(C, out_size, out_size)``.
    """
    a = np.asarray(arr2d)
    if _spatial(a) != 2:
        raise CadxDataError(f"crop_diameter needs a 2D (C,Y,X) image, got shape {a.shape}", field="image")
    if not diameter_px > 0 or factor <= 0:
        raise CadxDataError(f"diameter ({diameter_px}) and factor ({factor}) must be > 0", field="diameter")
    side = max(int(min_size), math.ceil(factor * diameter_px - 1e-9))
    start = [math.floor(c - (side - 1) / 2 + 0.5) for c in center_yx]  # patch centre nearest to c
    crop = crop_box(a, (*start, *(s + side for s in start)), 0, pad_value, pad_mode)
    return resize(crop, out_size) if out_size else crop


def extract_slices(volume: np.ndarray, box: Sequence[int] | None = None, mask: np.ndarray | None = None,
                   axis: int = 0, min_area: int = 0, margin: int = 0, pad_value: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Every 2D slice of a 3D ROI along spatial ``axis`` (0 = z), each with its index on that axis.

    ``volume`` ``(C,Z,Y,X)``. The ROI is ``box`` (6 values), else the bounding box of ``mask``
    (``(Z,Y,X)`` or ``(1,Z,Y,X)``), else the whole volume; it grows by ``margin`` in-plane only (padded
    outside the image) and is clipped to the volume along ``axis``. With a mask, ``min_area > 0`` keeps
    only slices with at least that many mask voxels (``min_area=1``: slices that contain lesion).
    Returns ``(slices (N,C,H,W), indices (N,) int64)``; H, W are the two other axes in array order.
    """
    v = np.asarray(volume)
    if v.ndim != 4:
        raise CadxDataError(f"extract_slices needs a (C,Z,Y,X) volume, got shape {v.shape}", field="image")
    if axis not in (0, 1, 2):
        raise CadxDataError(f"axis must be 0, 1 or 2, got {axis}", field="axis")
    m = _as_cf_mask(v, mask) if mask is not None else None
    if box is None:
        box = mask_bbox(m) if m is not None else (0, 0, 0, *v.shape[1:])
    if len(box) != 6:
        raise CadxDataError(f"box {tuple(box)} needs 6 values for a 3D volume", field="box")
    lo, hi = max(0, int(box[axis])), min(v.shape[1 + axis], int(box[3 + axis]))
    if hi <= lo:
        raise CadxDataError(f"box {tuple(box)} has no slice inside the volume along axis {axis}", field="box")
    b = [int(x) for x in box]
    b[axis], b[3 + axis] = lo, hi
    mg = [margin] * 3
    mg[axis] = 0
    crop = crop_box(v, b, mg, pad_value)
    idx = np.arange(lo, hi, dtype=np.int64)
    slices = np.moveaxis(crop, axis + 1, 0)
    if m is not None and min_area > 0:
        other = tuple(i for i in range(3) if i != axis)
        area = (m.any(axis=0)).sum(axis=other)[lo:hi]
        keep = area >= min_area
        slices, idx = slices[keep], idx[keep]
    return np.ascontiguousarray(slices), idx


# --- random / centre crops (MTMR-Net: 256 → 224) --------------------------------------------------------

def center_crop(arr: np.ndarray, size: Size, pad_value: float = 0.0) -> np.ndarray:
    """Central crop of ``size`` (per axis or one int); axes smaller than ``size`` are padded centrally."""
    a = np.asarray(arr)
    nsp = _spatial(a)
    sz = _per_axis(size, nsp, "size")
    start = [(n - s) // 2 for n, s in zip(a.shape[1:], sz, strict=True)]
    return crop_box(a, (*start, *(b + s for b, s in zip(start, sz, strict=True))), 0, pad_value)


def random_crop(arr: np.ndarray, size: Size, rng: np.random.Generator, pad_value: float = 0.0) -> np.ndarray:
    """Random crop of ``size`` with offsets uniform over all positions (``rng.integers``); an axis smaller
    than ``size`` is padded centrally instead."""
    a = np.asarray(arr)
    nsp = _spatial(a)
    sz = _per_axis(size, nsp, "size")
    start = [int(rng.integers(0, n - s + 1)) if n >= s else (n - s) // 2
             for n, s in zip(a.shape[1:], sz, strict=True)]
    return crop_box(a, (*start, *(b + s for b, s in zip(start, sz, strict=True))), 0, pad_value)


class PaddedRandomCrop:
    """Pad every spatial side by ``padding`` then take a random crop of ``size`` (torchvision-style).

    Holds its own ``np.random.default_rng(seed)``; ``reseed(seed)`` restarts it, and a generator passed
    to ``__call__`` overrides it for that call. ``(C,*spatial)`` → ``(C,*size)``.
    """

    def __init__(self, size: Size, padding: int = 0, pad_value: float = 0.0, pad_mode: str = "constant",
                 seed: int = 0) -> None:
        self.size, self.padding, self.pad_value, self.pad_mode = size, int(padding), pad_value, pad_mode
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, arr: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        a = np.asarray(arr)
        nsp = _spatial(a)
        if self.padding:
            a = crop_box(a, (*([0] * nsp), *a.shape[1:]), self.padding, self.pad_value, self.pad_mode)
        return random_crop(a, self.size, rng if rng is not None else self.rng, self.pad_value)
