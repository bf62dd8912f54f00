"""Server-side rendering for the viewer: a study's volume, window presets, slice PNGs and RGBA overlay PNGs.

Windows (centre/width, HU): lung −600/1500, soft tissue 40/400, brain 40/80, bone 400/1800 (the issue's values),
plus ``auto`` = the 0.5–99.5th percentiles of the whole volume (per volume, not per slice, so scrolling does not
flicker). An image counts as HU when its DICOM modality is CT, or, lacking a modality, when it is single-channel
and its minimum is ≤ −500 (air in HU is −1000; no PNG/ultrasound/MR intensity goes there) — a heuristic, stated in
docs/serve.md. It only chooses the default window (HU: soft tissue; otherwise auto); every window can be asked for
(a HU preset applied to a non-HU image does what it says: clips those values).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from cadx.data.readers import read_image
from cadx.errors import CadxDataError

__all__ = ["HU_WINDOWS", "LRU", "Volume", "box_png", "gradcam_png", "load_volume", "mask_png", "png_bytes",
           "slice_png", "window_bounds"]

HU_WINDOWS: dict[str, tuple[float, float]] = {"lung": (-600.0, 1500.0), "soft_tissue": (40.0, 400.0),
                                              "brain": (40.0, 80.0), "bone": (400.0, 1800.0)}

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A thread-safe least-recently-used cache of at most ``size`` entries."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._d: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The cached value of ``key``, else ``make()`` (called outside the lock) stored and returned."""
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                self.hits += 1
                return self._d[key]
            self.misses += 1
        value = make()
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


@dataclass
class Volume:
    """A study's pixels for display: ``array`` ``(C, Z, Y, X)`` float32 (a 2D image has Z = 1), ``hu`` whether the
    HU windows apply, ``auto`` the (lo, hi) of the auto window, ``meta`` the reader's metadata."""

    array: np.ndarray
    hu: bool
    auto: tuple[float, float]
    meta: dict[str, Any]

    @property
    def n_slices(self) -> int:
        return int(self.array.shape[1])

    @property
    def windows(self) -> list[str]:
        return [*HU_WINDOWS, "auto"]

    @property
    def default_window(self) -> str:
        return "soft_tissue" if self.hu else "auto"


def load_volume(path: str | Path) -> Volume:
    """Read a study (DICOM folder, volume, image) for display (:func:`cadx.data.readers.read_image`)."""
    img = read_image(path)
    arr = np.asarray(img.array, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.size == 0:
        raise CadxDataError(f"cannot display an image of shape {tuple(img.array.shape)}", path=path, field="image")
    meta = dict(img.meta or {})
    modality = str(meta.get("modality", "")).upper()
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        raise CadxDataError("image has no finite pixel", path=path, field="image")
    hu = modality == "CT" or (not modality and arr.shape[0] == 1 and float(finite.min()) <= -500.0)
    sample = finite[:: max(1, finite.size // 1_000_000)]
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    return Volume(arr, hu, (lo, hi if hi > lo else lo + 1.0), meta)


def window_bounds(vol: Volume, window: str) -> tuple[float, float]:
    """(lo, hi) of ``window`` for ``vol``; unknown names raise ValueError."""
    if window == "auto":
        return vol.auto
    if window not in HU_WINDOWS:
        raise ValueError(f"unknown window {window!r} (known: {', '.join([*HU_WINDOWS, 'auto'])})")
    c, w = HU_WINDOWS[window]
    return c - w / 2.0, c + w / 2.0


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def slice_png(vol: Volume, k: int, window: str) -> bytes:
    """Slice ``k`` windowed to 8 bits: grey for one channel, RGB for three (other counts: the first channel).
    ``k`` outside ``0..n_slices-1`` raises IndexError."""
    if not 0 <= k < vol.n_slices:
        raise IndexError(f"slice {k} outside 0..{vol.n_slices - 1}")
    lo, hi = window_bounds(vol, window)
    sl = vol.array[:, k]
    u8 = (np.clip((np.nan_to_num(sl, nan=lo) - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if u8.shape[0] == 3:
        return png_bytes(Image.fromarray(np.moveaxis(u8, 0, -1), "RGB"))
    return png_bytes(Image.fromarray(u8[0], "L"))


def _slice_of(arr: np.ndarray, k: int) -> np.ndarray:
    """Slice ``k`` of a ``(Z, Y, X)`` map or the ``(Y, X)`` map itself; IndexError outside."""
    if arr.ndim == 2:
        if k != 0:
            raise IndexError(f"slice {k} outside 0..0")
        return arr
    if not 0 <= k < arr.shape[0]:
        raise IndexError(f"slice {k} outside 0..{arr.shape[0] - 1}")
    return arr[k]


def mask_png(mask: np.ndarray, k: int, rgb: tuple[int, int, int] = (255, 48, 48)) -> bytes:
    """RGBA PNG of slice ``k`` of a label map ``(Z, Y, X)`` or ``(Y, X)``: ``rgb`` opaque where > 0, transparent
    elsewhere."""
    m = _slice_of(mask, k) > 0
    out = np.zeros((*m.shape, 4), np.uint8)
    out[m] = (*rgb, 255)
    return png_bytes(Image.fromarray(out, "RGBA"))


def gradcam_png(heat: np.ndarray, k: int, floor: float = 0.05) -> bytes:
    """RGBA PNG of slice ``k`` of a heatmap in [0, 1] (NaN = not computed): jet colours, alpha = the heat, fully
    transparent below ``floor`` and where NaN."""
    h = _slice_of(heat, k).astype(np.float64)
    valid = np.isfinite(h) & (h >= floor)
    hv = np.clip(np.nan_to_num(h, nan=0.0), 0.0, 1.0)
    rgba = (colormaps["jet"](hv) * 255.0).astype(np.uint8)
    rgba[..., 3] = np.where(valid, (hv * 255.0).astype(np.uint8), 0)
    return png_bytes(Image.fromarray(rgba, "RGBA"))


def box_png(shape: tuple[int, int], boxes: Sequence[dict[str, float]], k: int,
            rgb: tuple[int, int, int] = (255, 215, 0)) -> bytes:
    """RGBA PNG ``shape`` = (Y, X) with the outlines of the ``boxes`` whose ``slice`` is ``k`` (keys x0, y0, x1,
    y1 in pixels, stop-exclusive), transparent elsewhere."""
    img = Image.new("RGBA", (shape[1], shape[0]), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for b in boxes:
        if int(b["slice"]) == k:
            draw.rectangle([b["x0"], b["y0"], max(b["x0"], b["x1"] - 1), max(b["y0"], b["y1"] - 1)],
                           outline=(*rgb, 255), width=1)
    return png_bytes(img)
