"""Evaluation of anomaly heatmaps (thesis A.9, Swiecicki et al. 2021 Table 2), pure functions of arrays.

- :func:`lesion_boxes`: one box per 8-connected lesion component of a mask (the thesis uses radiologists' boxes).
- :func:`box_ratio`: mean heatmap inside the lesion box(es) ÷ mean outside, over *foreground* pixels that the
  heatmap covers (finite values) only — the thesis' "breast pixels (intensity > 0), excluding non-covered borders".
  NaN when either side has no pixel or the outside mean is not positive.
- :func:`pixel_auroc`: AUROC of the heatmap value against the lesion *mask* (pixel level, foreground and covered
  pixels only; the Mann–Whitney statistic with mid-ranks for ties). NaN when one class is absent.
- :func:`ratio_table`: mean and SD (``ddof=1``; the paper does not say which) of the ratio over images per score
  and map, the layout of the paper's Table 2; images with a NaN ratio are counted in ``excluded``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import rankdata

__all__ = ["box_ratio", "box_region", "lesion_boxes", "pixel_auroc", "ratio_table"]

Box = tuple[int, int, int, int]


def lesion_boxes(mask: np.ndarray) -> list[Box]:
    """Bounding boxes ``(y0, x0, y1, x1)`` (stop-exclusive) of the 8-connected components of ``mask`` ``(H,W)``,
    in label order; ``[]`` for an empty mask."""
    lab, _ = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), dtype=bool))
    return [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndimage.find_objects(lab) if s is not None]


def box_region(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """``(H,W)`` bool: the union of ``boxes``."""
    region = np.zeros(shape, dtype=bool)
    for y0, x0, y1, x1 in boxes:
        region[y0:y1, x0:x1] = True
    return region


def box_ratio(heatmap: np.ndarray, boxes: Sequence[Box], foreground: np.ndarray | None = None) -> float:
    """Mean of ``heatmap`` ``(H,W)`` inside the union of ``boxes`` ÷ mean outside it, over pixels that are finite
    and in ``foreground`` (``(H,W)`` bool; None = every pixel). See the module doc for NaN cases."""
    hm = np.asarray(heatmap, dtype=np.float64)
    valid = np.isfinite(hm) & (np.ones(hm.shape, bool) if foreground is None else np.asarray(foreground, bool))
    inside = box_region(hm.shape, boxes)
    a, b = hm[valid & inside], hm[valid & ~inside]
    if a.size == 0 or b.size == 0 or b.mean() <= 0:
        return float("nan")
    return float(a.mean() / b.mean())


def pixel_auroc(heatmap: np.ndarray, lesion: np.ndarray, foreground: np.ndarray | None = None) -> float:
    """Pixel-level AUROC of ``heatmap`` against ``lesion`` (both ``(H,W)``, or stacks of images for a pooled value)
    over finite, foreground pixels; NaN when only one class remains."""
    hm = np.asarray(heatmap, dtype=np.float64)
    valid = np.isfinite(hm) & (np.ones(hm.shape, bool) if foreground is None else np.asarray(foreground, bool))
    s, y = hm[valid], np.asarray(lesion, bool)[valid]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ratio_table(per_image: pd.DataFrame, value: str = "ratio") -> pd.DataFrame:
    """Mean and SD over images of ``per_image[value]`` for each ``(score, map)``: columns ``score, map, images,
    excluded, mean, sd`` (``images`` = finite values used, ``excluded`` = NaN ones)."""
    rows = []
    for (score, kind), g in per_image.groupby(["score", "map"], sort=False):
        v = g[value].to_numpy(dtype=np.float64)
        ok = v[np.isfinite(v)]
        rows.append({"score": score, "map": kind, "images": int(ok.size), "excluded": int(v.size - ok.size),
                     "mean": float(ok.mean()) if ok.size else float("nan"),
                     "sd": float(ok.std(ddof=1)) if ok.size > 1 else float("nan")})
    return pd.DataFrame(rows, columns=["score", "map", "images", "excluded", "mean", "sd"])
