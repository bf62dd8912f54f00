"""Tumour shape features of thesis A.3 (Buda et al. 2019): ASD, BEVR and MF — pure functions of one 3D mask.

Every function takes a boolean mask ``(Z, Y, X)`` and its voxel ``spacing`` in mm, array order ``(z, y, x)``;
all geometry is done in mm.

- **ASD** (angular standard deviation, 2D): on the chosen slice (see below), the ordered outer contour of the
  largest 2D component, resampled at equal arc-length steps of one in-plane pixel, gives radial distances from
  the region's centroid; they are normalised to mean 1 and split into 10 equiangular bins of the angle
  ``atan2(y - cy, x - cx)`` (bin ``k`` = ``[-pi + k*2pi/10, -pi + (k+1)*2pi/10)``); ASD = the mean over
  non-empty bins of the within-bin standard deviation (population SD, ``ddof=0``).
- **MF** (margin fluctuation, 2D): the same normalised distance profile along the contour minus its circular
  moving average over 10 % of the perimeter (window = the odd number of contour samples nearest to 10 % of
  them, at least 3); MF = the SD (``ddof=0``) of the difference.
- **BEVR** (bounding ellipsoid volume ratio, 3D): tumour volume (voxel count x voxel volume) / volume of the
  minimum-volume enclosing ellipsoid of the boundary voxel centres in mm (Khachiyan's algorithm on their convex
  hull, scaled afterwards so that every point is inside). Because the voxel volume extends half a voxel beyond
  the centres while the outermost centres lie inside the true surface, BEVR of a digitised sphere is close to
1 (0.997 at radius 20 voxels; measured in tests/test_shape.py). Tables use
  ``1/BEVR`` as the paper did (high = irregular).

**Which slice** (the paper says only "in one slice"; our choice, tested): the axial slice (index along z) with
the largest tumour area, the lowest index on a tie.

**Edge cases**: an empty mask (or a mask not 3D, or bad spacing) raises :class:`~cadx.errors.CadxDataError`
naming the field. A mask too small for a feature gives NaN for that feature (never an exception): the 2D
features need a contour of at least 8 samples (one per pixel of length) on the feature slice; BEVR needs
boundary points spanning three dimensions (a one-slice or one-voxel mask → NaN).
:func:`shape_features` returns all three with the reason for each NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage import measure

from cadx.errors import CadxDataError

__all__ = [
    "ShapeFeatures",
    "angular_standard_deviation",
    "boundary_points",
    "bounding_ellipsoid_volume_ratio",
    "contour_profile",
    "feature_slice",
    "khachiyan_ellipsoid",
    "margin_fluctuation",
    "shape_features",
]

N_BINS = 10
WINDOW_FRACTION = 0.10
MIN_CONTOUR = 8


def _check(mask: ArrayLike, spacing: ArrayLike, name: str = "mask") -> tuple[NDArray[np.bool_], NDArray]:
    m = np.asarray(mask)
    if m.ndim != 3:
        raise CadxDataError(f"expected a 3D mask (Z, Y, X), got shape {m.shape}", path=name, field="mask")
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise CadxDataError(f"spacing must be 3 positive numbers (z, y, x) mm, got {sp.tolist()}", path=name,
                            field="spacing")
    b = m.astype(bool)
    if not b.any():
        raise CadxDataError("empty mask: no shape features", path=name, field="mask")
    return b, sp


def feature_slice(mask: ArrayLike) -> int:
    """Index along z of the slice with the largest tumour area (the lowest index on a tie); mask ``(Z, Y, X)``."""
    m = np.asarray(mask).astype(bool)
    return int(np.argmax(m.reshape(m.shape[0], -1).sum(1)))


def contour_profile(mask2d: NDArray[np.bool_], spacing_yx: NDArray) -> tuple[NDArray, NDArray] | None:
    """Equal-arc-length contour of the largest 2D component of ``mask2d`` ``(Y, X)``: returns ``(points, centroid)``
    in mm (``points`` ``(N, 2)`` as (y, x), ordered along the contour, one sample per in-plane pixel of
    length; ``centroid`` = the component's area centroid) or None when the contour has fewer than 8 samples."""
    lab, n = ndimage.label(mask2d)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    comp = lab == (int(np.argmax(sizes)) + 1)
    padded = np.pad(comp, 1).astype(np.float64)
    contours = measure.find_contours(padded, 0.5)
    if not contours:
        return None
    c = max(contours, key=len)[:-1] - 1.0  # closed: last == first; back to unpadded pixel coordinates
    pts = c * spacing_yx
    seg = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1)
    length = float(seg.sum())
    n_samples = math.ceil(length / float(min(spacing_yx)))
    if len(c) < 3 or n_samples < MIN_CONTOUR:
        return None
    s = np.concatenate([[0.0], np.cumsum(seg)])
    closed = np.vstack([pts, pts[:1]])
    t = np.arange(n_samples) * (length / n_samples)
    res = np.stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])], axis=1)
    yy, xx = np.nonzero(comp)
    centroid = np.array([yy.mean(), xx.mean()]) * spacing_yx
    return res, centroid


def _profile(mask: NDArray[np.bool_], sp: NDArray, slice_index: int | None
             ) -> tuple[NDArray, NDArray] | None:
    z = feature_slice(mask) if slice_index is None else int(slice_index)
    if not 0 <= z < mask.shape[0]:
        raise CadxDataError(f"slice_index {z} outside 0..{mask.shape[0] - 1}", path="mask", field="slice_index")
    prof = contour_profile(mask[z], sp[1:])
    if prof is None:
        return None
    pts, cen = prof
    d = pts - cen
    r = np.hypot(d[:, 0], d[:, 1])
    if r.mean() <= 0:
        return None
    return r / r.mean(), np.arctan2(d[:, 0], d[:, 1])


def angular_standard_deviation(mask: ArrayLike, spacing: ArrayLike = (1.0, 1.0, 1.0),
                               slice_index: int | None = None, bins: int = N_BINS) -> float:
    """ASD: mean over ``bins`` equiangular bins of the SD of the normalised (mean 1) radial distances on the
    feature slice (default: the largest-area slice). 0 for a circle; NaN when the slice's contour is too short."""
    m, sp = _check(mask, spacing)
    prof = _profile(m, sp, slice_index)
    if prof is None:
        return float("nan")
    r, theta = prof
    k = np.clip(((theta + np.pi) / (2 * np.pi) * bins).astype(int), 0, bins - 1)
    sds = [float(r[k == b].std()) for b in range(bins) if np.any(k == b)]
    return float(np.mean(sds))


def margin_fluctuation(mask: ArrayLike, spacing: ArrayLike = (1.0, 1.0, 1.0), slice_index: int | None = None,
                       window_fraction: float = WINDOW_FRACTION) -> float:
    """MF: SD of (normalised radial profile − its circular moving average over ``window_fraction`` of the
    contour samples), on the feature slice. 0 for a circle; NaN when the contour is too short."""
    m, sp = _check(mask, spacing)
    prof = _profile(m, sp, slice_index)
    if prof is None:
        return float("nan")
    r = prof[0]
    w = max(3, 2 * round(window_fraction * r.size / 2) + 1)
    smooth = ndimage.uniform_filter1d(r, size=w, mode="wrap")
    return float(np.std(r - smooth))


def boundary_points(mask: ArrayLike, spacing: ArrayLike = (1.0, 1.0, 1.0)) -> NDArray[np.float64]:
    """Centres in mm ``(N, 3)`` (z, y, x) of the boundary voxels: mask voxels with a 6-neighbour outside it
    (the volume's edge counts as outside)."""
    m, sp = _check(mask, spacing)
    inner = ndimage.binary_erosion(np.pad(m, 1), structure=ndimage.generate_binary_structure(3, 1))[1:-1, 1:-1, 1:-1]
    return np.argwhere(m & ~inner).astype(np.float64) * sp


def khachiyan_ellipsoid(points: ArrayLike, tol: float = 1e-7, max_iter: int = 100_000
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Minimum-volume enclosing ellipsoid of ``points`` ``(N, d)`` by Khachiyan's algorithm with Todd &
    Yildirim's away steps, run on the convex-hull vertices. Returns ``(A, c)`` with the ellipsoid
    ``{x: (x-c)^T A (x-c) <= 1}``; ``A`` is scaled after convergence so that every point lies inside. Stops when
    every point's Mahalanobis value is within ``(1 + tol)(d+1)`` and every weighted point's above
    ``(1 - tol)(d+1)`` (the volume is then within a factor ``(1 + tol)^(d/2)`` of the minimum).
    Volume = ``V_d / sqrt(det A)``. Raises ValueError when the points do not span ``d``
    dimensions (no finite-volume ellipsoid)."""
    p = np.asarray(points, dtype=np.float64)
    n, d = p.shape
    if n <= d:
        raise ValueError(f"{n} points cannot span {d} dimensions")
    try:
        p = p[ConvexHull(p).vertices]
    except QhullError as e:
        raise ValueError(f"points do not span {d} dimensions") from e
    n = len(p)
    q = np.vstack([p.T, np.ones(n)])
    u = np.full(n, 1.0 / n)
    k = d + 1
    for _ in range(max_iter):
        mdist = np.einsum("ki,ki->i", q, np.linalg.solve((q * u) @ q.T, q))
        j_up = int(np.argmax(mdist))
        live = np.flatnonzero(u > 0)
        j_down = int(live[np.argmin(mdist[live])])
        eps_up, eps_down = mdist[j_up] / k - 1.0, 1.0 - mdist[j_down] / k
        if max(eps_up, eps_down) <= tol:
            break
        if eps_up >= eps_down:  # Khachiyan step towards the farthest point
            j, step = j_up, (mdist[j_up] - k) / (k * (mdist[j_up] - 1))
        else:  # away step (Todd & Yildirim): move weight off the nearest supporting point
            j = j_down
            step = max((mdist[j] - k) / (k * (mdist[j] - 1)), -u[j] / (1 - u[j]))
        u = (1 - step) * u
        u[j] += step
        u[u < 1e-300] = 0.0
    c = p.T @ u
    cov = (p.T * u) @ p - np.outer(c, c)
    a = np.linalg.inv(cov) / d
    diff = p - c
    worst = float(np.max(np.einsum("ij,jk,ik->i", diff, a, diff)))
    return a / max(worst, 1e-300) if worst > 1 else a, c


def ellipsoid_volume(a: NDArray[np.float64]) -> float:
    """Volume of ``{x: x^T A x <= 1}`` in 3D: ``4/3 pi / sqrt(det A)``."""
    return float(4.0 / 3.0 * np.pi / np.sqrt(np.linalg.det(a)))


def bounding_ellipsoid_volume_ratio(mask: ArrayLike, spacing: ArrayLike = (1.0, 1.0, 1.0),
                                    tol: float = 1e-7) -> float:
    """BEVR = voxel count x voxel volume / volume of the minimum enclosing ellipsoid of the boundary voxel
    centres (mm). About 1 for a digitised ellipsoid (voxels extend half a voxel beyond their centres, the
    outermost centres lie inside the surface), lower for irregular shapes; NaN when the boundary does not
    span 3D (e.g. one slice, one voxel)."""
    m, sp = _check(mask, spacing)
    pts = boundary_points(m, sp)
    try:
        a, _ = khachiyan_ellipsoid(pts, tol=tol)
    except ValueError:
        return float("nan")
    return float(m.sum() * np.prod(sp) / ellipsoid_volume(a))


@dataclass
class ShapeFeatures:
    """The three features of one mask (``inv_bevr`` = 1/BEVR, the tables' variable), the feature slice, the
    volume in mm³, and ``reasons``: feature name → why it is NaN."""

    asd: float
    bevr: float
    mf: float
    slice_index: int
    volume_mm3: float
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def inv_bevr(self) -> float:
        return 1.0 / self.bevr if np.isfinite(self.bevr) and self.bevr > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"asd": self.asd, "bevr": self.bevr, "inv_bevr": self.inv_bevr, "mf": self.mf,
                "slice_index": self.slice_index, "volume_mm3": self.volume_mm3,
                "nan_reasons": "; ".join(f"{k}: {v}" for k, v in self.reasons.items())}


def shape_features(mask: ArrayLike, spacing: ArrayLike = (1.0, 1.0, 1.0), name: str = "mask") -> ShapeFeatures:
    """ASD, BEVR and MF of ``mask`` ``(Z, Y, X)`` (spacing mm, z/y/x) on the largest-area slice. An empty mask
    raises CadxDataError naming ``name``; a feature the mask is too small for is NaN with its reason."""
    m, sp = _check(mask, spacing, name)
    z = feature_slice(m)
    asd = angular_standard_deviation(m, sp, z)
    mf = margin_fluctuation(m, sp, z)
    bevr = bounding_ellipsoid_volume_ratio(m, sp)
    reasons = {}
    if not np.isfinite(asd):
        reasons["asd"] = reasons["mf"] = f"slice {z}: contour shorter than {MIN_CONTOUR} pixels"
    if not np.isfinite(bevr):
        reasons["bevr"] = "boundary voxels do not span 3 dimensions"
    return ShapeFeatures(asd, bevr, mf, z, float(m.sum() * np.prod(sp)), reasons)
