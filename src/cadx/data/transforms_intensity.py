"""Intensity transforms on channel-first numpy arrays ``(C,Y,X)`` / ``(C,Z,Y,X)``: CT windows, percentile
clipping, z-score and min-max normalisation. All return float32 arrays of the input's shape."""

from __future__ import annotations

import numpy as np

from cadx.errors import CadxDataError

#: CT windows as ``name → (center, width)`` in HU (common radiology presets).
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


def window(arr: np.ndarray, center: float | str, width: float | None = None,
           out: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Clip to ``[center − width/2, center + width/2]`` and map that range linearly onto ``out``.

    ``center`` may be a preset name from :data:`WINDOW_PRESETS` (then ``width`` is taken from it).
    Example: lung (−600/1500) maps −1350 HU → 0, −600 → 0.5, 150 → 1; values outside are clipped.
    """
    if isinstance(center, str):
        if center not in WINDOW_PRESETS:
            raise CadxDataError(f"unknown window {center!r} (known: {', '.join(WINDOW_PRESETS)})",
                                field="window")
        center, width = WINDOW_PRESETS[center]
    if width is None or width <= 0:
        raise CadxDataError(f"window width must be > 0, got {width}", field="window")
    lo = float(center) - float(width) / 2
    a = (np.asarray(arr, dtype=np.float32) - np.float32(lo)) / np.float32(width)
    a = np.clip(a, 0.0, 1.0)
    return (a * np.float32(out[1] - out[0]) + np.float32(out[0])).astype(np.float32)


def _channel_stats_axes(arr: np.ndarray, per_channel: bool) -> tuple[int, ...] | None:
    return tuple(range(1, arr.ndim)) if per_channel else None


def clip_percentiles(arr: np.ndarray, lo: float = 0.5, hi: float = 99.5, per_channel: bool = True,
                     mask: np.ndarray | None = None) -> np.ndarray:
    """Clip values to the ``[lo, hi]`` percentiles (per channel by default; over ``mask`` voxels when given,
    mask shape = spatial or ``(1,*spatial)``). Values are not rescaled."""
    if not 0 <= lo < hi <= 100:
        raise CadxDataError(f"need 0 ≤ lo < hi ≤ 100, got {lo}, {hi}", field="percentiles")
    a = np.asarray(arr, dtype=np.float32)
    m = _mask(a, mask)
    groups = [slice(c, c + 1) for c in range(a.shape[0])] if per_channel else [slice(None)]
    out = np.empty_like(a)
    for g in groups:
        sel = a[g]
        vals = sel[np.broadcast_to(m, sel.shape)] if m is not None else sel
        if vals.size == 0:
            raise CadxDataError("mask selects no voxel", field="mask")
        p_lo, p_hi = np.percentile(vals, [lo, hi])
        out[g] = np.clip(sel, p_lo, p_hi)
    return out


def _mask(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Mask as a boolean ``(1,*spatial)`` array (or None)."""
    if mask is None:
        return None
    m = np.asarray(mask) > 0
    if m.shape == a.shape[1:]:
        m = m[None]
    if m.shape != (1, *a.shape[1:]):
        raise CadxDataError(f"mask shape {np.asarray(mask).shape} does not match image {a.shape}", field="mask")
    return m


def zscore(arr: np.ndarray, mask: np.ndarray | None = None, per_channel: bool = True,
           eps: float = 1e-8) -> np.ndarray:
    """``(x − mean) / std`` with statistics over all voxels or only ``mask`` voxels (all voxels are
    transformed). Per channel by default. A constant region (std < eps) is only centred (gives zeros)."""
    a = np.asarray(arr, dtype=np.float32)
    m = _mask(a, mask)
    if m is not None and not m.any():
        raise CadxDataError("mask selects no voxel", field="mask")
    out = np.empty_like(a)
    groups = [(slice(c, c + 1)) for c in range(a.shape[0])] if per_channel else [slice(None)]
    for g in groups:
        sel = a[g]
        vals = sel[np.broadcast_to(m, sel.shape)] if m is not None else sel
        mu, sd = float(vals.mean()), float(vals.std())
        out[g] = (sel - mu) / (sd if sd >= eps else 1.0)
    return out


def minmax(arr: np.ndarray, per_channel: bool = True, out: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Rescale linearly so min → ``out[0]`` and max → ``out[1]`` (per channel by default); a constant
    array maps to ``out[0]``."""
    a = np.asarray(arr, dtype=np.float32)
    axes = _channel_stats_axes(a, per_channel)
    lo = a.min(axis=axes, keepdims=True)
    hi = a.max(axis=axes, keepdims=True)
    span = hi - lo
    scaled = np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.0)
    return (scaled * (out[1] - out[0]) + out[0]).astype(np.float32)
