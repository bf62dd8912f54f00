"""Seeded batch augmentation of in-memory tensors (2D ``(B,C,H,W)`` or 3D ``(B,C,D,H,W)``).

All random draws come from the ``np.random.Generator`` passed in (the engine seeds it per (seed, epoch, batch)),
so the same batch is augmented the same way in a resumed run; MONAI's own random transforms (one random state per
transform) are not used for that reason. The deterministic operations are MONAI's: ``Flip`` and ``Rotate90`` on
the chosen items, and the batched ``AffineTransform`` (rotation/zoom/shift in normalised coordinates). Spatial
transforms act in-plane (the last two axes) and are applied identically to the mask (nearest-neighbour).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.layers import AffineTransform
from monai.transforms import Flip, Rotate90
from monai.utils import convert_to_tensor

from cadx.config import AugmentConfig
from cadx.pipeline.preprocess import plain_tensors

# pull-back warps on [-1, 1] coordinates (theta in array axis order); the image keeps its border values, the mask
# stays binary and is zero outside
_WARP_IMAGE = AffineTransform(normalized=True, mode="bilinear", padding_mode="border", align_corners=False)
_WARP_MASK = AffineTransform(normalized=True, mode="nearest", padding_mode="zeros", align_corners=False)


def _on_items(x: torch.Tensor, chosen: np.ndarray, transform: Flip | Rotate90) -> torch.Tensor:
    """A copy of batch ``x`` with the MONAI array ``transform`` applied to the items at ``chosen`` (their channels
    stacked as one channel-first array, so every chosen item gets the same operation)."""
    out = x.clone()
    if chosen.size:
        idx = torch.from_numpy(chosen)
        sel = x[idx]
        with plain_tensors():
            done = convert_to_tensor(transform(sel.reshape(-1, *sel.shape[2:])), track_meta=False)
        out[idx] = done.reshape(sel.shape)
    return out


def augment_batch(image: torch.Tensor, mask: torch.Tensor | None, cfg: AugmentConfig,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips (each spatial axis, p = 0.5), quarter turns, rotation/zoom/shift, intensity gain/bias and
    Gaussian noise, drawn per item from ``rng`` in that order.

    Returns new tensors of the input shapes (inputs are not modified). ``rot90`` needs square in-plane axes
    (skipped otherwise). The mask ``(B, 1, *spatial)`` follows every spatial transform, never the intensity ones.
    """
    b = image.shape[0]
    nd = image.ndim - 2
    h_sp, w_sp = nd - 2, nd - 1                       # the in-plane axes, counted among the spatial axes
    x, m = image, mask
    if cfg.flip:
        for axis in range(nd):
            chosen = np.flatnonzero(rng.random(b) < 0.5)
            if chosen.size:
                x = _on_items(x, chosen, Flip(spatial_axis=axis))
                m = _on_items(m, chosen, Flip(spatial_axis=axis)) if m is not None else None
    if cfg.rot90 and image.shape[-2] == image.shape[-1]:
        k = rng.integers(0, 4, size=b)
        for turns in (1, 2, 3):
            chosen = np.flatnonzero(k == turns)
            if chosen.size:
                x = _on_items(x, chosen, Rotate90(k=turns, spatial_axes=(h_sp, w_sp)))
                m = _on_items(m, chosen, Rotate90(k=turns, spatial_axes=(h_sp, w_sp))) if m is not None else None
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.translate > 0:
        ang = np.deg2rad(rng.uniform(-cfg.rotate, cfg.rotate, size=b))
        zoom = rng.uniform(1 - cfg.scale, 1 + cfg.scale, size=b)
        shift = rng.uniform(-cfg.translate, cfg.translate, size=(b, 2)) * 2  # [-1, 1] coordinates: width 2
        c, s = np.cos(ang) / zoom, np.sin(ang) / zoom
        theta = np.zeros((b, nd, nd + 1), dtype=np.float32)   # rows/columns: (D,) H, W, then the shift
        if nd == 3:
            theta[:, 0, 0] = 1.0                              # depth is left alone
        theta[:, h_sp, h_sp], theta[:, h_sp, w_sp], theta[:, w_sp, h_sp], theta[:, w_sp, w_sp] = c, s, -s, c
        theta[:, h_sp, nd], theta[:, w_sp, nd] = shift[:, 1], shift[:, 0]
        th = torch.from_numpy(theta)
        x = _WARP_IMAGE(x, th)
        if m is not None:
            m = _WARP_MASK(m, th)
    if cfg.intensity > 0:
        gain = rng.uniform(1 - cfg.intensity, 1 + cfg.intensity, size=b).astype(np.float32)
        bias = rng.uniform(-cfg.intensity, cfg.intensity, size=b).astype(np.float32)
        shape = (-1, *([1] * (x.ndim - 1)))
        x = x * torch.from_numpy(gain).view(shape) + torch.from_numpy(bias).view(shape)
    if cfg.noise > 0:
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x = x + cfg.noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
    if x is image:
        x = image.clone()
    return x, m
