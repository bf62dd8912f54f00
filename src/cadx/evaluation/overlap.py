"""Segmentation metrics and post-processing: Dice per volume (thesis A.3/A.5) and largest component.

Empty-mask rule (used everywhere in cadx): both prediction and ground truth empty → ``empty_value``
(default 1.0, a correct "no lesion"); exactly one of them empty → 0.0 (the usual formula gives 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["dice", "dice_per_volume", "largest_connected_component"]


def _binary(a: ArrayLike, name: str) -> NDArray[np.bool_]:
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a binary mask, got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be binary (0/1 or bool); threshold probabilities first")
    return arr.astype(bool)


def dice(pred: ArrayLike, gt: ArrayLike, empty_value: float = 1.0) -> float:
    """Dice coefficient ``2|P∩G| / (|P|+|G|)`` of one volume or image.

    ``pred``, ``gt``: binary masks (bool or 0/1) of the same shape, any number of dimensions; no channel
    axis is removed. Both empty → ``empty_value``; one empty → 0.0. Shape mismatch raises ValueError.
    """
    p = _binary(pred, "pred")
    g = _binary(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    denom = int(p.sum()) + int(g.sum())
    if denom == 0:
        return float(empty_value)
    return 2.0 * int(np.logical_and(p, g).sum()) / denom


def dice_per_volume(preds: Sequence[ArrayLike], gts: Sequence[ArrayLike], empty_value: float = 1.0
                    ) -> dict[str, float | list[float] | int]:
    """Dice of each (pred, gt) pair (volumes may differ in shape) and their mean and median (A.3).

    Returns ``{"per_volume": [...], "mean": float, "median": float, "n": int, "n_empty_gt": int}``;
    both-empty pairs score ``empty_value`` (see module doc). Empty input gives NaN mean/median.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths")
    vals = [dice(p, g, empty_value) for p, g in zip(preds, gts, strict=True)]
    n_empty = sum(int(not np.asarray(g).any()) for g in gts)
    arr = np.asarray(vals, dtype=np.float64)
    return {
        "per_volume": vals,
        "mean": float(arr.mean()) if arr.size else float("nan"),
        "median": float(np.median(arr)) if arr.size else float("nan"),
        "n": len(vals),
        "n_empty_gt": n_empty,
    }


def largest_connected_component(mask: ArrayLike, connectivity: int = 1) -> NDArray[np.bool_]:
    """Keep only the largest connected foreground component of a binary mask (A.3 post-processing).

    ``mask``: bool/0-1 array, 2-D or 3-D (no channel axis). ``connectivity`` = 1 joins voxels along the
    primary axes only (6-neighbourhood in 3-D, as in A.3); ``mask.ndim`` = full (26 in 3-D). Same as
    MONAI ``KeepLargestConnectedComponent(connectivity=...)`` on a channel-first copy. Empty mask →
    empty mask. Ties between equally large components keep the first in scan (C) order.
    """
    m = _binary(mask, "mask")
    if m.ndim < 1:
        raise ValueError("mask must have at least one dimension")
    if not 1 <= connectivity <= m.ndim:
        raise ValueError(f"connectivity must be in [1, {m.ndim}], got {connectivity}")
    from scipy import ndimage  # SciPy: deferred so that loading cadx.evaluation (cadx predict) does not import it

    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, connectivity))
    if n <= 1:
        return m.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)
