"""Seeded batch augmentation of in-memory tensors (2D ``(B,C,H,W)`` or 3D ``(B,C,D,H,W)``).

All random draws come from the ``np.random.Generator`` passed in (the engine seeds it per (seed, epoch, batch)),
so the same batch is augmented the same way in a resumed run. Spatial transforms act in-plane (the last two axes)
and are applied identically to the mask (nearest-neighbour resampling).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cadx.config import AugmentConfig


def _where(flag: np.ndarray, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    m = torch.from_numpy(flag).view(-1, *([1] * (a.ndim - 1)))
    return torch.where(m, a, b)


def _affine(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border" if mode != "nearest" else "zeros",
                         align_corners=False)


def augment_batch(image: torch.Tensor, mask: torch.Tensor | None, cfg: AugmentConfig,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips, quarter turns, rotation/zoom/shift, intensity gain/bias and Gaussian noise.

    Returns new tensors (inputs are not modified). ``rot90`` needs square in-plane axes (skipped otherwise).
    """
    b = image.shape[0]
    nd = image.ndim - 2
    h_ax, w_ax = image.ndim - 2, image.ndim - 1
    x, m = image, mask
    if cfg.flip:
        for ax in range(2, image.ndim):
            flag = rng.random(b) < 0.5
            if flag.any():
                x = _where(flag, x.flip(ax), x)
                m = _where(flag, m.flip(ax), m) if m is not None else None
    if cfg.rot90 and image.shape[h_ax] == image.shape[w_ax]:
        k = rng.integers(0, 4, size=b)
        if k.any():
            x = torch.stack([torch.rot90(x[i], int(k[i]), dims=(h_ax - 1, w_ax - 1)) for i in range(b)])
            if m is not None:
                m = torch.stack([torch.rot90(m[i], int(k[i]), dims=(h_ax - 1, w_ax - 1)) for i in range(b)])
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.translate > 0:
        ang = np.deg2rad(rng.uniform(-cfg.rotate, cfg.rotate, size=b))
        zoom = rng.uniform(1 - cfg.scale, 1 + cfg.scale, size=b)
        shift = rng.uniform(-cfg.translate, cfg.translate, size=(b, 2)) * 2  # grid units span [-1, 1]
        theta = np.zeros((b, nd, nd + 1), dtype=np.float32)
        c, s = np.cos(ang) / zoom, np.sin(ang) / zoom
        # affine_grid's coordinates are (x, y[, z]) = (W, H[, D]); rotate W/H, leave D alone.
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
        if nd == 3:
            theta[:, 2, 2] = 1.0
        theta[:, 0, nd], theta[:, 1, nd] = shift[:, 0], shift[:, 1]
        th = torch.from_numpy(theta)
        x = _affine(x, th, "bilinear")
        if m is not None:
            m = _affine(m, th, "nearest")
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

