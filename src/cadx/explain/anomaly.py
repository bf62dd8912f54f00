"""Sliding-window anomaly heatmaps of the A.9 inpainting GAN (Swiecicki et al. 2021, "Methods").

For every window position (top-left ``(y, x)`` on a grid of step ``stride``, windows entirely inside the image — no
padding) the ``fov``-square patch is cut out, its centred ``hole``-square is masked and inpainted, and three
scores are computed (:func:`patch_scores`):

- ``mse``: mean squared error over the hole between the original and the completed patch (intensities in [0, 1]);
- ``critic``: the critic loss of the completed patch, ``softplus(-D)`` with ``D = D_local + D_global`` (the
  thesis says "discriminator loss" without a formula; a WGAN critic's raw output has no sign, so the positive,
  monotone ``-log sigmoid(D)`` is used — higher = looks less like the normal training data; a choice, stated);
- ``dmse``: ``mse * critic``.

Two maps per score (:class:`Heatmaps`): *raw* (the thesis' "non-averaged") writes each window's score into the
``stride``-square cell centred on the window's centre (the cells tile the covered area without overlap);
*averaged* adds the score to every pixel of the window (``average_over="fov"``, the thesis' "each pixel included
within the patch"; ``"hole"``: the masked centre only) and divides by the number of windows that covered the
pixel. Pixels no window reaches are NaN in both (borders are excluded from any evaluation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cadx.models.inpaint import InpaintGAN
from cadx.pipeline.normal_patches import center_mask

__all__ = ["SCORES", "CriticFn", "Heatmaps", "InpaintFn", "anomaly_heatmaps", "model_functions", "patch_scores",
           "window_positions"]

SCORES = ("mse", "critic", "dmse")
#: ``(patches, masks) -> completed``: ``(N,1,F,F)`` float32 in [0, 1] (masks 1 = hole) → ``(N,1,F,F)`` in [0, 1].
InpaintFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: ``(completed, masks) -> D``: the critic's raw output ``(N,)`` (higher = more like training data).
CriticFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Heatmaps:
    """``raw[score]`` and ``averaged[score]``: ``(H,W)`` float64, NaN where no window reached; ``coverage``:
    ``(H,W)`` windows per pixel of the averaged maps; ``positions`` ``(P,2)`` window top-left corners;
    ``scores[score]`` ``(P,)`` per window."""

    raw: dict[str, np.ndarray]
    averaged: dict[str, np.ndarray]
    coverage: np.ndarray
    positions: np.ndarray
    scores: dict[str, np.ndarray]


def window_positions(height: int, width: int, fov: int, stride: int) -> np.ndarray:
    """Top-left corners ``(P,2)`` of every ``fov``-square window inside an ``height × width`` image on a ``stride``
    grid starting at (0, 0). Raises ValueError when the image is smaller than ``fov`` or ``stride < 1``."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if height < fov or width < fov:
        raise ValueError(f"image {height}x{width} is smaller than the field of view {fov}")
    ys, xs = np.arange(0, height - fov + 1, stride), np.arange(0, width - fov + 1, stride)
    return np.array([(y, x) for y in ys for x in xs], dtype=np.int64)


def patch_scores(patches: np.ndarray, completed: np.ndarray, masks: np.ndarray,
                 critic_out: np.ndarray) -> dict[str, np.ndarray]:
    """``mse`` (mean over hole pixels and channels), ``critic`` = ``softplus(-critic_out)``, ``dmse`` = their product;
    each ``(N,)``. Shapes ``(N,C,F,F)``, masks ``(N,1,F,F)``."""
    hole = masks > 0.5
    n = hole.reshape(len(hole), -1).sum(axis=1) * patches.shape[1]
    mse = (((completed - patches) ** 2) * hole).reshape(len(hole), -1).sum(axis=1) / np.maximum(n, 1)
    critic = np.logaddexp(0.0, -np.asarray(critic_out, dtype=np.float64))
    return {"mse": mse.astype(np.float64), "critic": critic, "dmse": mse * critic}


def anomaly_heatmaps(image: np.ndarray, inpaint: InpaintFn, critic: CriticFn, fov: int, hole: int, stride: int,
                     batch_size: int = 64, average_over: Literal["fov", "hole"] = "fov") -> Heatmaps:
    """Heatmaps of ``image`` ``(H,W)`` in [0, 1] (see the module doc). ``batch_size`` windows go to ``inpaint`` and
    ``critic`` at a time."""
    if average_over not in ("fov", "hole"):
        raise ValueError(f"average_over must be fov or hole, got {average_over!r}")
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    pos = window_positions(h, w, fov, stride)
    mask1 = center_mask(fov, hole)
    scores: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}
    for b in range(0, len(pos), batch_size):
        chunk = pos[b:b + batch_size]
        patches = np.stack([img[y:y + fov, x:x + fov] for y, x in chunk])[:, None]
        masks = np.broadcast_to(mask1, patches.shape).copy()
        completed = np.asarray(inpaint(patches, masks), dtype=np.float32)
        completed = patches * (1 - masks) + completed * masks
        s = patch_scores(patches, completed, masks, np.asarray(critic(completed, masks)))
        for k in SCORES:
            scores[k].append(s[k])
    per = {k: np.concatenate(v) for k, v in scores.items()}
    half, o = stride // 2, (fov - hole) // 2
    raw = {k: np.full((h, w), np.nan) for k in SCORES}
    total = {k: np.zeros((h, w)) for k in SCORES}
    count = np.zeros((h, w), dtype=np.int64)
    for i, (y, x) in enumerate(pos):
        cy, cx = y + fov // 2 - half, x + fov // 2 - half
        ay, ax, size = (y, x, fov) if average_over == "fov" else (y + o, x + o, hole)
        count[ay:ay + size, ax:ax + size] += 1
        for k in SCORES:
            raw[k][max(cy, 0):cy + stride, max(cx, 0):cx + stride] = per[k][i]
            total[k][ay:ay + size, ax:ax + size] += per[k][i]
    with np.errstate(invalid="ignore", divide="ignore"):
        averaged = {k: np.where(count > 0, total[k] / count, np.nan) for k in SCORES}
    return Heatmaps(raw, averaged, count, pos, per)


def model_functions(model: InpaintGAN) -> tuple[InpaintFn, CriticFn]:
    """:data:`InpaintFn` and :data:`CriticFn` of a trained :class:`InpaintGAN` (the fine output; eval mode, no
    gradients, [0, 1] ↔ [-1, 1] conversion inside)."""
    model.eval()

    def inpaint(patches: np.ndarray, masks: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x, m = torch.from_numpy(patches) * 2 - 1, torch.from_numpy(masks)
            _, fine = model.generator(x, m)
        return ((fine + 1) / 2).numpy()

    def critic(completed: np.ndarray, masks: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            d = model.critic(torch.from_numpy(completed) * 2 - 1, torch.from_numpy(masks))
        return d.numpy().astype(np.float64)

    return inpaint, critic
