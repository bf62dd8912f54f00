"""Ultrasound caliper ("+") detector (thesis A.5 used a Faster R-CNN; here a hand-built cross filter), matching of
detections to annotated points, and cross-validated choice of the detection threshold.

**Cross contrast filter.** A caliper is a thin (1–3 px), bright, saturated "+" with four equal arms of 4–11 px
(BUSI frames at their stored size). For an arm length ``a`` and each pixel, :func:`cross_score` takes

    min(mean of each of the 4 arms, pixels 2..a from the centre on the axis lines)
    − max(mean of each of the 4 quadrant squares between the arms, ``gap``..a px off both axes)

and keeps the largest value over ``arms``. All four arms must be brighter than all four quadrants, which rejects
the things that fool plain normalised cross-correlation with a "+" template on these images: text (letters have
at most three arms at a point, e.g. T, E, L, 1 or the "2" labels beside the calipers), the dotted measuring
lines (two arms), tissue edges and speckle (no arm structure). We measured that on ``malignant (10).png`` plain NCC
(``skimage.feature.match_template``, 18 templates, max) ranked the "RT5" text at 0.77 above all four calipers
(0.67–0.75), whereas the contrast score gives 0.34–0.47 on the calipers and ≤ 0.16 elsewhere. Box means come from
one summed-area table, so a 600×500 frame takes ~0.1 s.

Detections are the local maxima (:func:`skimage.feature.peak_local_max`, ``min_distance`` px apart) whose score
is ≥ ``threshold``; the threshold is the one tuned parameter (:func:`cv_threshold`: chosen on the other folds'
images, applied to the held-out fold, so the reported precision/recall are out of fold).

Points are ``(x, y)`` = (column, row) pixel coordinates of the cross centre, arrays ``(N, 2)`` float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from skimage.feature import peak_local_max

__all__ = ["DEFAULT_ARMS", "CVDetection", "MatchCounts", "candidates", "cross_score", "cv_threshold", "detect_calipers",
           "match_points", "select", "to_grey", "usable"]

#: arm half-lengths (px) scanned by :func:`cross_score`
DEFAULT_ARMS: tuple[int, ...] = (4, 5, 6, 7, 9, 11)


def to_grey(image: ArrayLike) -> NDArray[np.float64]:
    """``(H, W)``, ``(C, H, W)`` (C ≤ 4, channel-first as cadx images) or ``(H, W, C)`` (C = 3/4) → ``(H, W)``
    float in [0, 1] (channel mean; uint8 divided by 255, other dtypes by their max when it exceeds 1)."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a.mean(axis=0) if a.shape[0] <= 4 and a.shape[-1] > 4 else a[..., :3].mean(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"caliper detector: expected a 2D image, got shape {np.shape(image)}")
    a = a.astype(np.float64)
    if np.asarray(image).dtype == np.uint8:
        return a / 255.0
    mx = float(a.max()) if a.size else 0.0
    return a / mx if mx > 1.0 else a


def _box_means(sat: NDArray[np.float64], pad: int, h: int, w: int, y0: int, y1: int, x0: int,
               x1: int) -> NDArray[np.float64]:
    """Mean of ``g[y+y0 : y+y1+1, x+x0 : x+x1+1]`` for every pixel (edge-replicated), from the summed-area
    table ``sat`` of the image padded by ``pad``."""
    ys = np.arange(h) + pad
    xs = np.arange(w) + pad
    a0, a1 = (ys + y0)[:, None], (ys + y1 + 1)[:, None]
    b0, b1 = (xs + x0)[None, :], (xs + x1 + 1)[None, :]
    total = sat[a1, b1] - sat[a0, b1] - sat[a1, b0] + sat[a0, b0]
    return total / float((y1 - y0 + 1) * (x1 - x0 + 1))


def cross_score(image: ArrayLike, arms: Sequence[int] = DEFAULT_ARMS, gap: int = 3) -> NDArray[np.float64]:
    """Cross contrast ``(H, W)`` in [−1, 1] (see the module docstring) of a grey or colour image; 1-px arms on
    the axis lines, quadrants starting ``gap`` px off the axes (so arms up to 2·gap−1 px thick do not leak into
    them). Arms shorter than ``gap`` raise ValueError."""
    g = to_grey(image)
    if min(arms) < gap:
        raise ValueError(f"cross_score: arm lengths {list(arms)} must be >= gap {gap}")
    h, w = g.shape
    pad = max(arms) + 1
    gp = np.pad(g, pad, mode="edge")
    sat = np.zeros((gp.shape[0] + 1, gp.shape[1] + 1))
    sat[1:, 1:] = gp.cumsum(0).cumsum(1)
    best = np.full((h, w), -1.0)
    for a in arms:
        arm = np.minimum.reduce([_box_means(sat, pad, h, w, -a, -2, 0, 0), _box_means(sat, pad, h, w, 2, a, 0, 0),
                                 _box_means(sat, pad, h, w, 0, 0, -a, -2), _box_means(sat, pad, h, w, 0, 0, 2, a)])
        quad = np.maximum.reduce([_box_means(sat, pad, h, w, -a, -gap, -a, -gap),
                                  _box_means(sat, pad, h, w, -a, -gap, gap, a),
                                  _box_means(sat, pad, h, w, gap, a, -a, -gap),
                                  _box_means(sat, pad, h, w, gap, a, gap, a)])
        np.maximum(best, arm - quad, out=best)
    return best


def candidates(image: ArrayLike, floor: float = 0.05, min_distance: int = 6, max_points: int = 50,
               arms: Sequence[int] = DEFAULT_ARMS) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Local maxima of :func:`cross_score` at or above ``floor``: points ``(N, 2)`` (x, y) and their scores
    ``(N,)``, best first (at most ``max_points``)."""
    s = cross_score(image, arms)
    pk = peak_local_max(s, min_distance=min_distance, threshold_abs=floor, num_peaks=max_points,
                        exclude_border=False)
    pts = pk[:, ::-1].astype(float)
    return pts, s[pk[:, 0], pk[:, 1]] if len(pk) else np.zeros(0)


def select(points: NDArray[np.float64], scores: NDArray[np.float64], threshold: float,
           max_points: int = 8) -> NDArray[np.float64]:
    """The candidates scoring ≥ ``threshold`` (best ``max_points``): ``(M, 2)``."""
    keep = np.nonzero(scores >= threshold)[0][:max_points]
    return points[keep].reshape(-1, 2)


def detect_calipers(image: ArrayLike, threshold: float = 0.2, min_distance: int = 6, max_points: int = 8,
                    arms: Sequence[int] = DEFAULT_ARMS) -> NDArray[np.float64]:
    """Caliper centres ``(N, 2)`` (x, y) of one B-mode image: maxima of :func:`cross_score` ≥ ``threshold``,
    at least ``min_distance`` px apart, best ``max_points`` (an image without calipers gives ``(0, 2)``).
    The default threshold is the one chosen on all the annotated BUSI images (see benchmarks/results/calipers_busi);
    tune it on your own data with :func:`cv_threshold`."""
    pts, sc = candidates(image, floor=min(threshold, 0.05), min_distance=min_distance, max_points=50, arms=arms)
    return select(pts, sc, threshold, max_points)


def usable(points: ArrayLike) -> bool:
    """True when a point set gives an approximate mask the paper's way: exactly 2 or 4 calipers."""
    return len(np.asarray(points).reshape(-1, 2)) in (2, 4)


@dataclass(frozen=True)
class MatchCounts:
    """True positives, false positives and false negatives of point matching; precision/recall/F1 with the
    conventions 0/0 → 1.0 for precision and recall (nothing to find, nothing claimed) and F1 = 0 when both are 0."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_points(pred: ArrayLike, truth: ArrayLike, tol: float) -> MatchCounts:
    """One-to-one matching of predicted to annotated points (Hungarian assignment on Euclidean distance,
    ``scipy.optimize.linear_sum_assignment``); a pair counts as a true positive when its distance ≤ ``tol`` px."""
    p = np.asarray(pred, float).reshape(-1, 2)
    t = np.asarray(truth, float).reshape(-1, 2)
    if len(p) == 0 or len(t) == 0:
        return MatchCounts(0, len(p), len(t))
    d = np.linalg.norm(p[:, None, :] - t[None, :, :], axis=2)
    big = tol * 10 + d.max() + 1
    r, c = linear_sum_assignment(np.where(d <= tol, d, big))
    tp = int((d[r, c] <= tol).sum())
    return MatchCounts(tp, len(p) - tp, len(t) - tp)


def _counts_at(cands: Sequence[tuple[NDArray[np.float64], NDArray[np.float64]]],
               truths: Sequence[NDArray[np.float64]], idx: NDArray[np.intp], thr: float, tol: float,
               max_points: int) -> MatchCounts:
    total = MatchCounts(0, 0, 0)
    for i in idx.tolist():
        total = total + match_points(select(cands[i][0], cands[i][1], thr, max_points), truths[i], tol)
    return total


@dataclass(frozen=True)
class CVDetection:
    """Result of :func:`cv_threshold`: the threshold chosen per fold, the out-of-fold detections per image
    (``(N, 2)`` each), the pooled counts and the per-image counts."""

    thresholds: dict[int, float]
    predictions: list[NDArray[np.float64]]
    counts: MatchCounts
    per_image: list[MatchCounts]


def cv_threshold(cands: Sequence[tuple[NDArray[np.float64], NDArray[np.float64]]],
                 truths: Sequence[NDArray[np.float64]], folds: Sequence[int] | NDArray[np.int64], tol: float,
                 grid: Sequence[float] | None = None, max_points: int = 8) -> CVDetection:
    """Out-of-fold detection: for each fold, the threshold in ``grid`` with the best F1 (ties → the higher
    threshold) on the **other** folds' images is applied to this fold's images.

    ``cands[i]`` = :func:`candidates` of image i (points, scores), ``truths[i]`` its annotated ``(M, 2)`` points,
    ``folds[i]`` its fold id (give near-duplicates the same fold). Returns a :class:`CVDetection`."""
    grid = list(grid) if grid is not None else [round(float(v), 3) for v in np.arange(0.05, 0.6001, 0.01)]
    f = np.asarray(folds)
    preds: list[NDArray[np.float64]] = [np.zeros((0, 2))] * len(cands)
    chosen: dict[int, float] = {}
    for k in sorted(set(f.tolist())):
        train = np.nonzero(f != k)[0]
        best_f1, best_thr = -1.0, grid[0]
        for thr in grid:
            f1 = _counts_at(cands, truths, train, thr, tol, max_points).f1
            if f1 >= best_f1 - 1e-12:
                best_f1, best_thr = f1, thr
        chosen[int(k)] = best_thr
        for i in np.nonzero(f == k)[0].tolist():
            preds[i] = select(cands[i][0], cands[i][1], best_thr, max_points)
    per_image = [match_points(preds[i], truths[i], tol) for i in range(len(cands))]
    total = MatchCounts(0, 0, 0)
    for m in per_image:
        total = total + m
    return CVDetection(chosen, preds, total, per_image)
