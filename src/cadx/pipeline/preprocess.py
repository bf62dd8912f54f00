"""Study → network-input items, done once per run (intensity, ROI crop, slice extraction, resize).

Each study yields one or more *items* (arrays ``(C, *size)``): every slice of each lesion for ``slices2d``, one ROI
for ``roi2d``/``image2d``/``volume3d``. Intensity normalisation is per image (a fixed window or the image's own
percentiles/statistics), so nothing is fitted on the cohort and a new study is processed exactly like a training one.

The array operations are the arithmetic of MONAI's array transforms, written here with numpy / torch so that this
module (the preprocessing of ``cadx predict`` as of training) does not import MONAI, whose package import loads
every MONAI subpackage and with them SciPy, scikit-learn, pandas and matplotlib (≈ 3.5 s of a predict's start):
``ScaleIntensityRange`` (window, percentile and min-max scaling to [0, 1]: the same float32 torch operations),
``NormalizeIntensity`` (z-score), ``SpatialCrop`` + constant ``BorderPad`` (ROI crop, padded outside the image) and
``Resize`` (``torch.nn.functional.interpolate``: nearest for masks, trilinear for volumes, as MONAI calls it).
``tests/test_predict_imports.py`` checks each against the MONAI transform it replaces, value for value. 2D images
are resized with torch's antialiased bilinear filter: MONAI's ``Resize(anti_aliasing=True)`` is a Gaussian
prefilter instead, which would change every 2D item. The training augmentation (:mod:`cadx.pipeline.augment`)
keeps MONAI.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cadx.config import InputConfig
from cadx.data.image import ImageData
from cadx.data.study import Study
from cadx.errors import CadxConfigError, CadxDataError

#: CT windows as ``name → (center, width)`` in HU (common radiology presets), for ``input.window``.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (50.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
}

#: Intensity statistics (percentiles, min/max, mean/std) come from a strided sample of at most ~10^6 voxels.
_STATS_VOXELS = 1_000_000


@contextmanager
def plain_tensors() -> Iterator[None]:
    """MONAI transforms inside return plain tensors, not MetaTensors: items carry no affine history, and the
    bookkeeping would make each small crop/scale/resize 5–20x slower. The previous setting is restored. (Used by
    the augmenter; this module's own operations are plain torch/numpy.)"""
    from monai.data import get_track_meta, set_track_meta  # MONAI: only the training augmenter needs it

    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def window_bounds(window: str | Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)`` = ``center ∓ width / 2`` of a window given as a :data:`WINDOW_PRESETS` name or
    ``[center, width]`` (lung: −1350 … 150 HU). An unknown preset raises CadxConfigError naming ``input.window``."""
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise CadxConfigError(f"input.window: unknown preset {window!r} (known: {', '.join(WINDOW_PRESETS)})")
        center, width = WINDOW_PRESETS[window]
    else:
        center, width = window
    return float(center) - float(width) / 2, float(center) + float(width) / 2


#: numpy dtypes torch has no tensor type for, and what MONAI's ``convert_to_tensor`` casts them to first.
_TORCH_UNSUPPORTED = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64, np.dtype(np.uint64): np.int64}


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """``a`` as a CPU tensor the way MONAI's ``convert_to_tensor`` makes it (C-contiguous; uint16/32/64 widened to
    a signed type); shares memory with ``a`` when it can (callers never write into it)."""
    arr = np.ascontiguousarray(a)
    if arr.dtype in _TORCH_UNSUPPORTED:
        arr = arr.astype(_TORCH_UNSUPPORTED[arr.dtype])
    return torch.as_tensor(arr)


def scale_to_unit(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``clip((a − lo) / (hi − lo), 0, 1)`` as float32, computed as MONAI's ``ScaleIntensityRange(lo, hi, 0, 1,
    clip=True)`` computes it (torch, in ``a``'s float type, then cast to float32). ``hi == lo``: ``a − lo``
    (MONAI's divide-by-zero branch; cadx's callers never pass it)."""
    return _scale_to_unit(a, lo, hi, inplace=False)


def _scale_to_unit(a: np.ndarray, lo: float, hi: float, inplace: bool) -> np.ndarray:
    """:func:`scale_to_unit`; ``inplace``: ``a`` is a float32 array the caller owns and may be overwritten (the
    same values, without one more volume-sized array)."""
    t = _as_tensor(a)
    if hi - lo == 0.0:
        return (t - lo + 0.0).numpy()
    # MONAI's "* (b_max - b_min) + b_min" is "* 1 + 0" here: exact no-ops (no -0.0 can arise), so left out;
    # in-place steps give the same values as MONAI's out-of-place ones with fewer passes over a large volume
    t = t.sub_(lo) if inplace and t.dtype == torch.float32 else t - lo
    return t.div_(hi - lo).clamp_(0.0, 1.0).to(torch.float32).numpy()


def normalize_intensity(arr: np.ndarray, cfg: InputConfig) -> np.ndarray:
    """Map intensities per image (float32, same shape; NaN/±inf count as 0): ``input.window`` → [0, 1]; else
    ``input.normalize``: percentile (0.5–99.5 %) → [0, 1], zscore, minmax → [0, 1], or none; with
    ``input.normalize_per_channel`` each channel (axis 0 of ``(C, *spatial)``, C > 1) gets its own statistics.

    Statistics come from a strided sample of at most ~10^6 voxels (every voxel of a smaller image); a constant
    image maps to zeros. The input array is never modified.
    """
    if cfg.normalize_per_channel and cfg.window is None and arr.ndim >= 3 and arr.shape[0] > 1:
        return np.stack([normalize_intensity(arr[c:c + 1], cfg.model_copy(update={"normalize_per_channel": False}))[0]
                         for c in range(arr.shape[0])])
    a = arr.astype(np.float32, copy=False)
    owned = a is not arr and not np.shares_memory(a, arr)   # a fresh float32 copy: may be scaled in place
    if arr.dtype.kind not in "biu" and not np.isfinite(a).all():   # integers are always finite
        a, owned = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), True
    if cfg.window is not None:
        return _scale_to_unit(a, *window_bounds(cfg.window), inplace=owned)
    if cfg.normalize == "none":
        return a
    sample = a.ravel()[:: max(1, a.size // _STATS_VOXELS)]
    if cfg.normalize == "zscore":
        sd = float(sample.std())
        if sd <= 0:
            return np.zeros_like(a)
        # MONAI NormalizeIntensity(subtrahend=mean, divisor=sd): (a - mean) / sd in float32 torch arithmetic
        return ((_as_tensor(a).to(torch.float32) - float(sample.mean())) / sd).numpy()
    if cfg.normalize == "minmax":
        lo, hi = float(sample.min()), float(sample.max())
    else:
        lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if hi <= lo:
        return np.zeros_like(a)
    return _scale_to_unit(a, lo, hi, inplace=owned)


def crop_pad(arr: np.ndarray, starts: Sequence[int], stops: Sequence[int], fill: float) -> np.ndarray:
    """Region ``[starts, stops)`` of the spatial axes of ``arr`` ``(C, *spatial)`` → ``(C, *(stops − starts))``,
    parts outside the image filled with ``fill`` (what MONAI ``SpatialCrop`` then constant ``BorderPad`` give, by
    slicing into a ``fill``-ed array); a region wholly outside the image gives all ``fill``. A new array of
    ``arr``'s dtype (never a view of ``arr``)."""
    st, sp = [int(v) for v in starts], [int(v) for v in stops]
    out_shape = (arr.shape[0], *(b - a for a, b in zip(st, sp, strict=True)))
    lo = [min(max(a, 0), n) for a, n in zip(st, arr.shape[1:], strict=True)]
    hi = [min(max(b, 0), n) for b, n in zip(sp, arr.shape[1:], strict=True)]
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        return np.full(out_shape, fill, dtype=arr.dtype)
    out = np.full(out_shape, fill, dtype=arr.dtype)
    dst = tuple(slice(l0 - a, h0 - a) for a, l0, h0 in zip(st, lo, hi, strict=True))
    out[(slice(None), *dst)] = arr[(slice(None), *(slice(l0, h0) for l0, h0 in zip(lo, hi, strict=True)))]
    return out


def resize(arr: np.ndarray, size: Sequence[int], mask: bool = False) -> np.ndarray:
    """Resize ``(C, *spatial)`` to ``(C, *size)`` float32: nearest for masks, trilinear for volumes (as MONAI
    ``Resize`` does: ``F.interpolate``, ``align_corners=False``), bilinear with torch's antialiasing for 2D images.
    Same size: a float32 view/copy of the input. ``len(size)`` must equal the number of spatial axes."""
    if tuple(arr.shape[1:]) == tuple(size):
        return arr.astype(np.float32, copy=False)
    a = np.ascontiguousarray(arr, dtype=np.float32)
    if len(size) != a.ndim - 1:
        raise ValueError(f"resize: {len(size)} target sizes for an array with {a.ndim - 1} spatial axes")
    t = torch.from_numpy(a)[None]
    if mask:   # MONAI Resize(mode="nearest"): F.interpolate, align_corners None
        return F.interpolate(t, size=tuple(size), mode="nearest")[0].numpy()
    if len(size) != 2:   # MONAI Resize(mode="trilinear", align_corners=False) → linear in 1D, trilinear in 3D
        mode = {1: "linear", 3: "trilinear"}.get(len(size), "bilinear")
        return F.interpolate(t, size=tuple(size), mode=mode, align_corners=False)[0].numpy()
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0].numpy()


def _square(lo: float, hi: float, side: float) -> tuple[int, int]:
    c = (lo + hi) / 2
    return int(np.floor(c - side / 2)), int(np.floor(c - side / 2)) + max(1, round(side))


def study_number(study: Study, key: str | None) -> float | None:
    """A finite number named ``key`` from the study's attributes, else its metadata (e.g. LIDC's ``diameter_mm``,
    ``malignancy_score``); None when absent or not a finite number."""
    if not key:
        return None
    v = study.attributes.get(key, study.metadata.get(key))
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _mask_box(mask: np.ndarray) -> tuple[int, ...] | None:
    idx = np.nonzero(mask)
    if not idx[0].size:
        return None
    return tuple(int(i.min()) for i in idx) + tuple(int(i.max()) + 1 for i in idx)


def _channel_kind(c: int) -> str:
    return {1: "grey", 3: "RGB", 4: "RGBA"}.get(c, "multi-channel")


class StudyPreprocessor:
    """Turns a :class:`Study` (or an image + optional mask/boxes) into items ``(C, *size)`` per ``InputConfig``.

    ``channels_out(c_image)`` is the number of channels items get. ROI inputs without a box or mask fall back to the
    whole image (``roi2d`` of a volume without a box: its central slice; ``slices2d``: every non-blank slice).
    """

    def __init__(self, cfg: InputConfig, with_masks: bool = False) -> None:
        self.cfg = cfg
        self.size = cfg.size_tuple()
        self.with_masks = with_masks
        # the context view is the fixed-FOV crop of the same lesion (the fov_mm branch of _region_axes)
        self._context_cfg = (cfg.model_copy(update={"fov_mm": cfg.context_fov_mm})
                             if cfg.context_fov_mm is not None else None)

    # -- per study ------------------------------------------------------------------------------------------
    def study_items(self, study: Study, diameter: float | None = None) -> tuple[list[np.ndarray], list[Any], list[int]]:
        """``(images, masks, slice_positions)`` of one study (masks are None unless ``with_masks``)."""
        img = study.image().load()
        mimg = study.mask()
        mask = None
        if mimg is not None:
            m = mimg.load().array
            mask = (m[:1] > 0) if m.ndim == img.array.ndim else (m[None] > 0)
            if mask.shape[1:] != img.array.shape[1:]:
                raise CadxDataError(f"mask shape {mask.shape[1:]} differs from image {img.array.shape[1:]}",
                                    path=mimg.source, field="mask")
        if diameter is None:
            diameter = study_number(study, self.cfg.diameter_attribute)
        cov = {n: study_number(study, n) for n in self.cfg.covariate_channels}
        return self.items(img, mask, list(study.boxes), diameter, source=study.study_id, covariates=cov)

    def items(self, img: ImageData, mask: np.ndarray | None, boxes: list[tuple[int, ...]],
              diameter_mm: float | None = None, source: str = "<image>",
              covariates: Mapping[str, float | None] | None = None,
              regions: list[tuple[int, list[int], list[int]]] | None = None) -> tuple[list, list, list[int]]:
        """Items of one image ``(C, *spatial)`` with an optional boolean mask ``(1, *spatial)`` and boxes;
        ``covariates`` {name: value} feed ``input.covariate_channels``. ``regions``, when a list, receives one
        ``(slice z (-1: none), starts, stops)`` per item: the crop (over the resized axes, may extend past the image)
        each item was resized from, so a map at item size can be put back on the image (e.g. Grad-CAM)."""
        cfg = self.cfg
        planes = self._covariate_values(covariates or {}, source)
        arr = normalize_intensity(np.asarray(img.array), cfg)
        nd = arr.ndim - 1
        if nd == 2 and arr.shape[0] != cfg.channels and not cfg.convert_channels:
            raise CadxDataError(f"image has {arr.shape[0]} channel(s) ({_channel_kind(arr.shape[0])}) but "
                                f"input.channels is {cfg.channels}; set input.convert_channels: true to convert",
                                path=img.meta.get("source", source), field="input.channels")
        if cfg.kind == "volume3d" and nd != 3:
            raise CadxDataError(f"input.kind=volume3d needs a 3D image, got shape {arr.shape}", path=source,
                                field="image")
        fill = float(arr.min()) if arr.size else 0.0
        boxes = [tuple(int(v) for v in b) for b in boxes if len(b) == 2 * nd]
        if cfg.roi == "mask" or (not boxes and mask is not None and mask.any()):
            mb = _mask_box(mask[0]) if mask is not None else None
            boxes = [mb] if mb is not None else []
        if cfg.roi == "none" or cfg.kind == "image2d":
            boxes = []
        if cfg.kind in ("roi2d", "volume3d", "image2d"):
            boxes = boxes[:1]
        whole = not boxes
        if whole and cfg.roi == "diameter" and diameter_mm is not None and cfg.kind != "image2d":
            centre = [s // 2 for s in arr.shape[1:]]          # no box: a diameter-sized square at the centre
            boxes, whole = [tuple(centre) + tuple(c + 1 for c in centre)], False
        elif whole:
            boxes = [tuple([0] * nd) + tuple(arr.shape[1:])]
        spacing = img.spacing
        out_img: list[np.ndarray] = []
        out_mask: list[np.ndarray | None] = []
        pos: list[int] = []
        for box in boxes:
            lo, hi = np.array(box[:nd], float), np.array(box[nd:], float)
            if cfg.kind == "volume3d":
                starts, stops = self._region(lo, hi, spacing, diameter_mm, whole, axes=range(3))
                out_img.append(self._with_context(resize(crop_pad(arr, starts, stops, fill), self.size),
                                                  arr, lo, hi, spacing, range(3), fill))
                if self.with_masks:
                    m = mask if mask is not None else np.zeros((1, *arr.shape[1:]), bool)
                    out_mask.append(resize(crop_pad(m.astype(np.float32), starts, stops, 0.0), self.size, True))
                pos.append(0)
                if regions is not None:
                    regions.append((-1, list(starts), list(stops)))
                continue
            ax = range(nd - 2, nd)
            starts, stops = self._region(lo, hi, spacing, diameter_mm, whole, axes=ax)
            zs: list[int | None]
            if nd == 2:
                zs = [None]
            elif cfg.kind == "slices2d":
                if whole:   # no box/mask: every axial slice that is not blank (constant), else the central one
                    flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
                    zs = [int(z) for z in np.nonzero(flat.max(axis=(0, 2)) > flat.min(axis=(0, 2)))[0]]
                    zs = zs or [int((lo[0] + hi[0] - 1) // 2)]
                else:
                    zs = [*range(int(lo[0]), max(int(hi[0]), int(lo[0]) + 1))]
                if cfg.max_slices and len(zs) > cfg.max_slices:
                    zs = [zs[i] for i in np.linspace(0, len(zs) - 1, cfg.max_slices).round().astype(int)]
            elif mask is not None and mask.any() and not whole:
                area = mask[0, int(lo[0]):int(hi[0])].sum(axis=(1, 2))
                zs = [int(lo[0]) + int(np.argmax(area))]
            else:
                zs = [int((lo[0] + hi[0] - 1) // 2)]
            for z in zs:
                sl = self._slab(arr, z)
                out_img.append(self._with_context(resize(crop_pad(sl, starts, stops, fill), self.size),
                                                  sl, lo, hi, spacing, ax, fill))
                if self.with_masks:
                    m = mask if mask is not None else np.zeros((1, *arr.shape[1:]), bool)
                    ms = m if z is None else m[:, z]
                    out_mask.append(resize(crop_pad(ms.astype(np.float32), starts, stops, 0.0), self.size, True))
                pos.append(-1 if z is None else int(z))
                if regions is not None:
                    regions.append((-1 if z is None else int(z), list(starts), list(stops)))
        if planes:
            const = np.stack([np.full(self.size, v, np.float32) for v in planes])   # one plane per covariate
            out_img = [np.concatenate([a, const], axis=0) for a in out_img]
        if not self.with_masks:
            out_mask = [None] * len(out_img)
        return out_img, out_mask, pos

    # -- helpers --------------------------------------------------------------------------------------------
    def _region(self, lo: np.ndarray, hi: np.ndarray, spacing: Sequence[float], diameter_mm: float | None,
                whole: bool, axes: range) -> tuple[list[int], list[int]]:
        """Crop starts/stops over ``axes``: margin-extended box, square in-plane (diameter-adaptive if asked)."""
        cfg = self.cfg
        axes_l = list(axes)
        return self._region_axes(lo, hi, spacing, diameter_mm, whole, axes_l, cfg)

    @staticmethod
    def _region_axes(lo: np.ndarray, hi: np.ndarray, spacing: Sequence[float], diameter_mm: float | None,
                     whole: bool, axes: list[int], cfg: InputConfig) -> tuple[list[int], list[int]]:
        if whole:
            return [int(lo[a]) for a in axes], [int(hi[a]) for a in axes]
        ext = np.array([hi[a] - lo[a] for a in axes])
        if cfg.fov_mm is not None:                       # fixed field of view: the lesion keeps its true size
            side = np.array([cfg.fov_mm / float(spacing[a]) for a in axes])
        elif cfg.roi == "diameter":
            if diameter_mm is not None:
                d_px = max(diameter_mm / float(spacing[a]) for a in axes)
            else:
                d_px = float(ext.max())
            side = np.full(len(axes), cfg.diameter_scale * d_px)
        else:
            side = ext * (1 + 2 * cfg.margin)
            inplane = axes[-2:]
            s = max(side[axes.index(a)] for a in inplane)
            for a in inplane:
                side[axes.index(a)] = s
        starts, stops = [], []
        for j, a in enumerate(axes):
            s0, s1 = _square(lo[a], hi[a], side[j])
            starts.append(s0)
            stops.append(s1)
        return starts, stops

    def _covariate_values(self, covariates: Mapping[str, float | None], source: str) -> list[float]:
        """The constant-channel values of ``input.covariate_channels`` (log when ``covariate_log``)."""
        vals = []
        for name in self.cfg.covariate_channels:
            v = covariates.get(name)
            if v is None or not np.isfinite(v) or (self.cfg.covariate_log and v <= 0):
                kind = "finite positive" if self.cfg.covariate_log else "finite"
                raise CadxDataError(f"input.covariate_channels needs a {kind} number {name!r}, got {v!r}",
                                    path=source, field=name)
            vals.append(float(np.log(v)) if self.cfg.covariate_log else float(v))
        return vals

    def _with_context(self, roi: np.ndarray, src: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                      spacing: Sequence[float], axes: range, fill: float) -> np.ndarray:
        """``roi`` ``(C, *size)``, followed by ``src``'s ``context_fov_mm`` field of view around the box centre
        (``(2C, *size)``); ``roi`` unchanged when no context is asked."""
        if self._context_cfg is None:
            return roi
        starts, stops = self._region_axes(lo, hi, spacing, None, False, list(axes), self._context_cfg)
        return np.concatenate([roi, resize(crop_pad(src, starts, stops, fill), self.size)], axis=0)

    def _slab(self, arr: np.ndarray, z: int | None) -> np.ndarray:
        """Channels of one 2D item: the image's channels (2D) or ``k`` adjacent slices × channels (volume)."""
        cfg = self.cfg
        if z is None:
            c = arr.shape[0]
            if c == cfg.channels:
                return arr
            if cfg.channels == 1:
                return arr[: min(c, 3)].mean(axis=0, keepdims=True)
            if c == 1:
                return np.repeat(arr, cfg.channels, axis=0)
            return arr[: cfg.channels]
        k = cfg.channels
        nz = arr.shape[1]
        zs = np.clip(np.arange(z - k // 2, z - k // 2 + k), 0, nz - 1)
        return arr[:, zs].reshape(-1, *arr.shape[2:])

    def channels_out(self, c_image: int, image_ndim: int) -> int:
        """Item channels for an image with ``c_image`` channels and ``image_ndim`` spatial axes."""
        k = 2 if self.cfg.context_fov_mm is not None else 1
        extra = len(self.cfg.covariate_channels)
        if self.cfg.kind == "volume3d":
            return c_image * k + extra
        if image_ndim == 3:
            return c_image * self.cfg.channels * k + extra
        return self.cfg.channels * k + extra
