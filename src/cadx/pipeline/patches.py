"""Tumour-centred patch pipeline of thesis A.4 (Buda et al., Radiology: AI 2020, "deep radiogenomics of LGG").

Per slice, in the paper's order: pad to a square (zeros, centred), resize to 256 × 256, stretch intensities
between the 1st and 99th percentile of the slice (per channel, → [0, 1]), multiply by the tumour mask, crop
80 × 80 centred in the middle of the tumour; only slices with some tumour are used. Training patches are then
repeated five times with a random rotation (±10°) and shift (±16 px), and the classes are made uniform by
random minority oversampling (:func:`cadx.pipeline.samplers.oversample_indices`).

Choices where the paper is silent (each tested in ``tests/test_patches.py``):

* "middle of the tumour" = the centre of the mask's bounding box on the slice (not the centroid), rounded
  down to a pixel: rows ``y0..y1`` → ``(y0 + y1) // 2``.
* the percentiles are computed per slice and per channel over all pixels (background included), before the
  mask is applied; a constant channel maps to zeros.
* odd padding puts the extra row/column at the bottom/right; the mask follows the image exactly (nearest
  resize, so it stays binary).
* the five copies are five *augmented* copies (1648 patches → 8240 examples in the paper), the unaugmented
  patch is not kept beside them. Rotation is about the tumour centre and the shift moves the crop window, both
  applied to the masked 256 × 256 slice before cropping (no artificial corners inside the 80 × 80 patch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from cadx.errors import CadxDataError
from cadx.pipeline.preprocess import crop_pad, resize

__all__ = [
    "augment_copies", "pad_to_square", "patient_patches", "percentile_stretch", "prepare_slice",
    "tumour_centre", "tumour_slices",
]


def pad_to_square(arr: NDArray, fill: float = 0.0) -> NDArray:
    """``(C, H, W)`` → ``(C, S, S)`` with ``S = max(H, W)``, zero-padded evenly on both sides of the short axis
    (an odd remainder goes to the bottom/right). A square input is returned unchanged (a copy)."""
    if arr.ndim != 3:
        raise ValueError(f"pad_to_square expects (C, H, W), got shape {arr.shape}")
    _, h, w = arr.shape
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    return crop_pad(arr, (-top, -left), (s - top, s - left), fill)


def percentile_stretch(arr: NDArray, lo: float = 1.0, hi: float = 99.0) -> NDArray[np.float32]:
    """Per channel of ``(C, H, W)``: ``clip((x − P_lo) / (P_hi − P_lo), 0, 1)`` with the ``lo``/``hi``
    percentiles (numpy's linear interpolation) of that channel's pixels. A channel with ``P_hi <= P_lo``
    (constant, or nearly so) maps to zeros. Returns float32, same shape."""
    a = np.asarray(arr, dtype=np.float32)
    out = np.zeros_like(a)
    for c in range(a.shape[0]):
        p_lo, p_hi = np.percentile(a[c], [lo, hi])
        if p_hi > p_lo:
            out[c] = np.clip((a[c] - p_lo) / (p_hi - p_lo), 0.0, 1.0)
    return out


def tumour_centre(mask: NDArray) -> tuple[int, int] | None:
    """Centre of the bounding box of the nonzero pixels of a ``(H, W)`` mask, ``((y0 + y1) // 2,
    (x0 + x1) // 2)`` with inclusive bounds; ``None`` for an empty mask."""
    ys, xs = np.nonzero(np.asarray(mask))
    if ys.size == 0:
        return None
    return (int(ys.min() + ys.max()) // 2, int(xs.min() + xs.max()) // 2)


def prepare_slice(image: NDArray, mask: NDArray, size: int = 256) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """One slice: ``image (C, H, W)``, ``mask (H, W)`` → pad to square, resize to ``size`` (image bilinear,
    mask nearest), percentile stretch (1–99 %). Returns ``(image (C, size, size) float32 in [0, 1],
    mask (size, size) uint8 {0, 1})``; the mask is *not* applied yet (the in-domain U-Net sees the plain slice)."""
    if image.ndim != 3 or mask.shape != image.shape[1:]:
        raise ValueError(f"prepare_slice: image (C,H,W) and mask (H,W) must match, got {image.shape}, {mask.shape}")
    img = resize(pad_to_square(np.asarray(image, dtype=np.float32)), (size, size))
    m = resize(pad_to_square((np.asarray(mask) > 0).astype(np.float32)[None]), (size, size), mask=True)[0]
    return percentile_stretch(img), (m > 0.5).astype(np.uint8)


def tumour_slices(mask: NDArray) -> NDArray[np.int64]:
    """Indices ``z`` of the slices of a ``(Z, H, W)`` (or ``(1, Z, H, W)``) mask that hold some tumour."""
    m = np.asarray(mask)
    if m.ndim == 4:
        m = m[0]
    return np.flatnonzero(m.reshape(m.shape[0], -1).max(axis=1) > 0).astype(np.int64)


def _crop(arr: NDArray, centre: tuple[float, float], patch: int) -> NDArray:
    y0 = round(centre[0]) - patch // 2
    x0 = round(centre[1]) - patch // 2
    return crop_pad(arr, (y0, x0), (y0 + patch, x0 + patch), 0.0)


def patient_patches(image: NDArray, mask: NDArray, *, channels: Sequence[int] = (1,), size: int = 256,
                    patch: int = 80, apply_mask: bool = True, context: int = 0, source: str = "<patient>"
                    ) -> dict[str, NDArray]:
    """Patches of one patient volume: ``image (C, Z, H, W)``, ``mask (1, Z, H, W)`` or ``(Z, H, W)``.

    For every tumour slice ``z`` (in order): :func:`prepare_slice`, keep ``channels`` (default ``(1,)`` =
    FLAIR of the LGG volumes, the paper's only sequence), and crop around :func:`tumour_centre`. Returns
    ``{"patches": (N, C', patch, patch) float32`` (masked when ``apply_mask``), ``"plain": (N, C', patch,
    patch)`` (unmasked, for segmentation pretraining), ``"masks": (N, patch, patch) uint8``, ``"context":
    (N, C', patch + 2·context, patch + 2·context)`` (the masked slice around the centre, the margin that
    :func:`augment_copies` rotates and shifts in; empty when ``context == 0``), ``"slices": (N,)`` z
    indices}``. A volume without any tumour slice raises :class:`CadxDataError` naming ``source`` and field
    ``mask`` (callers report and exclude the patient).
    """
    img = np.asarray(image)
    m = np.asarray(mask)
    if m.ndim == 4:
        m = m[0]
    if img.ndim != 4 or m.shape != img.shape[1:]:
        raise CadxDataError(f"image {img.shape} and mask {np.asarray(mask).shape} do not match", path=source,
                            field="mask")
    bad = [c for c in channels if not 0 <= c < img.shape[0]]
    if bad:
        raise CadxDataError(f"channels {bad} not in 0..{img.shape[0] - 1}", path=source, field="channels")
    zs = tumour_slices(m)
    if zs.size == 0:
        raise CadxDataError("no slice with tumour in the mask", path=source, field="mask")
    ch = list(channels)
    out: dict[str, list[NDArray]] = {"patches": [], "plain": [], "masks": [], "context": []}
    for z in zs:
        s_img, s_mask = prepare_slice(img[:, z], m[z], size)
        s_img = s_img[ch]
        centre = tumour_centre(s_mask)
        if centre is None:  # the tumour vanished in the resize (a speck on a large slice): centre of the original
            y, x = tumour_centre(m[z]) or (0, 0)
            scale = size / max(m.shape[1:])
            pad_y, pad_x = (max(m.shape[1:]) - m.shape[1]) // 2, (max(m.shape[1:]) - m.shape[2]) // 2
            centre = (int((y + pad_y) * scale), int((x + pad_x) * scale))
        masked = s_img * s_mask[None] if apply_mask else s_img
        out["patches"].append(_crop(masked, centre, patch))
        out["plain"].append(_crop(s_img, centre, patch))
        out["masks"].append(_crop(s_mask[None], centre, patch)[0])
        if context:
            out["context"].append(_crop(masked, centre, patch + 2 * context))
    res = {k: np.stack(v).astype(np.uint8 if k == "masks" else np.float32) for k, v in out.items() if v}
    if not context:
        res["context"] = np.zeros((zs.size, len(ch), 0, 0), np.float32)
    res["slices"] = zs
    return res


def augment_copies(context: NDArray, patch: int, rng: np.random.Generator, copies: int = 5,
                   max_rotate: float = 10.0, max_shift: int = 16) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The paper's offline augmentation: each of the ``N`` context crops ``(N, C, P + 2m, P + 2m)`` (centred on
    the tumour, from :func:`patient_patches` with ``context = m``) gives ``copies`` patches ``(C, P, P)``,
    each rotated by a uniform angle in ``[-max_rotate, max_rotate]`` degrees about the tumour centre (bilinear,
    zeros outside) and cropped with its centre shifted by uniform integers in ``[-max_shift, max_shift]`` rows
    and columns. Needs ``m ≥ ceil((P/2 + max_shift)·√2) − P/2`` so no corner leaves the context.

    Returns ``(patches (N·copies, C, P, P) float32, source index (N·copies,))``, copies of item ``i`` at rows
    ``i·copies … i·copies + copies − 1``. Same ``rng`` state ⇒ same output.
    """
    if context.ndim != 4:
        raise ValueError(f"augment_copies expects (N, C, S, S), got {context.shape}")
    n, c, s, _ = context.shape
    need = int(np.ceil((patch / 2 + max_shift) * np.sqrt(2))) * 2
    if s < need:
        raise ValueError(f"context {s} px is too small for patch {patch} ± shift {max_shift} and rotation "
                         f"(need {need})")
    out = np.empty((n * copies, c, patch, patch), np.float32)
    src = np.repeat(np.arange(n, dtype=np.int64), copies)
    half = s // 2
    for i in range(n):
        for j in range(copies):
            angle = float(rng.uniform(-max_rotate, max_rotate))
            dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
            rot = ndimage.rotate(context[i], angle, axes=(1, 2), reshape=False, order=1, mode="constant",
                                 cval=0.0) if angle else context[i]
            out[i * copies + j] = _crop(rot, (half + dy, half + dx), patch)
    return out, src
