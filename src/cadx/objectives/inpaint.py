"""Thesis A.9 losses (Swiecicki et al. 2021, Eq. 5, after Yu et al. 2018): tensors in, loss out.

``L_total = a_mask L_mask + a_FOV L_FOV + a_GAN L_WGAN,G + L_WGAN,D + lambda L_GP`` with the paper's weights
``a_mask = a_FOV = 1.2``, ``a_GAN = 0.001``, ``lambda = 10`` (:data:`PAPER_WEIGHTS`). The generator minimises
the first three terms, the critics the last two (alternating steps, :mod:`cadx.training.gan`).

- ``L_mask``: spatially discounted L1 inside the hole, coarse + fine; the weight of a hole pixel is ``gamma**l``,
  ``gamma = 0.99``, ``l`` = Euclidean distance to the nearest known pixel of the same patch (1 for a hole pixel
  next to the border). Yu et al.'s code counts ``l`` from 0 at the border and measures it to the hole's box edges;
  the thesis says "distance to the nearest known pixel", which is what this computes. The sum is divided by the
  number of hole pixels (a mean over the hole; Yu et al. divide by all pixels — a choice, stated here).
- ``L_FOV``: plain L1 over the known pixels (mean over them), coarse + fine.
- WGAN: critic loss ``mean D(fake) - mean D(real)`` per critic (local + global); generator loss
  ``-mean D(fake)``; gradient penalty ``mean (||grad D(x_hat)||_2 - 1)^2`` at random interpolates between real and
  fake (over the critic's whole input; Yu et al. restrict it to the hole — not done here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

__all__ = ["PAPER_WEIGHTS", "InpaintWeights", "discounted_l1", "gradient_penalty", "known_l1",
           "spatial_discount", "wgan_critic_loss", "wgan_generator_loss"]


@dataclass(frozen=True)
class InpaintWeights:
    """Loss weights of Eq. 5 and the discount factor."""

    mask: float = 1.2
    fov: float = 1.2
    gan: float = 0.001
    gp: float = 10.0
    gamma: float = 0.99


PAPER_WEIGHTS = InpaintWeights()


def spatial_discount(mask: np.ndarray | Tensor, gamma: float = 0.99) -> Tensor:
    """Per-pixel weights ``gamma**l`` inside the hole, 0 outside: ``mask`` ``(B,1,H,W)`` (1 = hole) → float32 of the
    same shape. ``l`` = Euclidean distance (px) to the nearest known pixel of the same sample
    (``scipy.ndimage.distance_transform_edt``). Raises ValueError when a sample has no known pixel."""
    m = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if m.ndim != 4 or m.shape[1] != 1:
        raise ValueError(f"spatial_discount: expected a (B,1,H,W) mask, got {m.shape}")
    out = np.zeros(m.shape, dtype=np.float32)
    for i in range(m.shape[0]):
        hole = m[i, 0] > 0.5
        if hole.all():
            raise ValueError("spatial_discount: a mask is all hole (no known pixel to measure distance to)")
        d = ndimage.distance_transform_edt(hole)
        out[i, 0] = np.where(hole, np.power(gamma, d), 0.0)
    return torch.from_numpy(out)


def discounted_l1(pred: Tensor, target: Tensor, mask: Tensor, gamma: float = 0.99,
                  weights: Tensor | None = None) -> Tensor:
    """``sum(w * |pred - target|) / (number of hole pixels * C)`` with ``w`` from :func:`spatial_discount`
    (or ``weights``, precomputed). Shapes ``(B,C,H,W)``, mask ``(B,1,H,W)``. A scalar."""
    w = spatial_discount(mask, gamma).to(pred) if weights is None else weights.to(pred)
    n = (mask > 0.5).sum().clamp_min(1) * pred.shape[1]
    return (w * (pred - target).abs()).sum() / n


def known_l1(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean ``|pred - target|`` over the known (non-hole) pixels. A scalar (0 when there is none)."""
    keep = (mask < 0.5).to(pred)
    n = keep.sum().clamp_min(1) * pred.shape[1]
    return ((pred - target).abs() * keep).sum() / n


def wgan_critic_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """``mean D(fake) - mean D(real)`` (the critic minimises it)."""
    return d_fake.mean() - d_real.mean()


def wgan_generator_loss(d_fake: Tensor) -> Tensor:
    """``-mean D(fake)`` (the generator minimises it)."""
    return -d_fake.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None, alpha: Tensor | None = None) -> Tensor:
    """WGAN-GP term ``mean_i (||grad_x D(x_hat_i)||_2 - 1)^2`` (unweighted: multiply by ``lambda``).

    ``x_hat = alpha * real + (1 - alpha) * fake`` with ``alpha`` ``(B,1,1,1)`` uniform from ``generator`` (or the
    given ``alpha``). ``real``/``fake`` ``(B,C,H,W)``; ``critic`` maps them to ``(B,)``. Differentiable (the critic
    step backpropagates through it)."""
    if alpha is None:
        alpha = torch.rand((real.shape[0], 1, 1, 1), generator=generator, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    d = critic(x_hat)
    (grad,) = torch.autograd.grad(d.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
