"""Caliper points → approximate lesion mask (thesis A.5, Buda et al. 2020), and the manifest ``calipers`` cell.

Points are ``(x, y)`` pixel coordinates (x = column, y = row) of the caliper cross centres in the image the mask
is drawn on; arrays of points are ``(N, 2)`` float, masks ``(H, W)`` bool.

- 3 or more points (the paper: 4): a closed cubic periodic spline (``scipy.interpolate.splprep(per=1, s=0)``)
  through the points taken in angular order around their centroid, sampled densely and filled
  (``skimage.draw.polygon``). The spline passes through every point; with 3 points it is the same periodic
  cubic through 3 knots (the paper only has 2 or 4; 3 is allowed and tested, not claimed from the paper).
- 2 points: a circle with the segment as its diameter. If that circle leaves the image, an ellipse whose major
  axis is the segment and whose minor axis is the **largest** (≤ the segment's length) that keeps the ellipse
  inside the image. The paper only says "an elliptical nodule shape was used"; this minor-axis rule is our
  choice. When even a 1 px minor semi-axis does not fit (points on the image border) the minor semi-axis is
  clamped to 1 px and the mask is clipped to the image.
- 0 or 1 point: no mask (:class:`~cadx.errors.CadxDataError`, field ``calipers``).

:func:`simulated_calipers` derives the 4 points a sonographer would place (ends of the longest diameter along
the mask's principal axis and of the perpendicular diameter through the centroid) from an expert mask; the
calipers study uses it for lesion images without usable real calipers and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.interpolate import splev, splprep
from skimage.draw import ellipse as draw_ellipse
from skimage.draw import polygon as draw_polygon

from cadx.errors import CadxDataError

__all__ = ["angular_order", "ellipse_minor_semi_axis", "format_calipers", "parse_calipers", "points_to_mask",
           "simulated_calipers", "spline_contour", "two_point_mask"]


def parse_calipers(text: str, path: str | Path | None = None, where: str = "",
                   field: str = "calipers") -> NDArray[np.float64]:
    """``"x1 y1; x2 y2; ..."`` (``,`` also separates x from y) → ``(N, 2)`` float; an empty cell → ``(0, 2)``.

    Bad cells (a pair without two numbers, non-finite or negative coordinates) raise one-line
    :class:`CadxDataError` naming ``path`` and ``field`` and, when given, ``where`` (e.g. ``"row 3"``)."""
    pre = f"{where}: " if where else ""
    text = (text or "").strip()
    if not text:
        return np.zeros((0, 2))
    pts = []
    for k, chunk in enumerate(text.split(";")):
        parts = chunk.replace(",", " ").split()
        if len(parts) != 2:
            raise CadxDataError(f"{pre}caliper {k + 1} {chunk.strip()!r}: expected 'x y'", path=path, field=field)
        try:
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise CadxDataError(f"{pre}caliper {k + 1} {chunk.strip()!r}: not two numbers", path=path,
                                field=field) from None
        if not (np.isfinite(x) and np.isfinite(y)) or x < 0 or y < 0:
            raise CadxDataError(f"{pre}caliper {k + 1} {chunk.strip()!r}: coordinates must be finite and >= 0",
                                path=path, field=field)
        pts.append((x, y))
    return np.asarray(pts, float)


def format_calipers(points: ArrayLike) -> str:
    """``(N, 2)`` points → ``"x1 y1; x2 y2"`` (``%g``), the inverse of :func:`parse_calipers`."""
    return "; ".join(f"{x:g} {y:g}" for x, y in np.asarray(points, float).reshape(-1, 2))


def angular_order(points: ArrayLike) -> NDArray[np.float64]:
    """Points sorted by angle around their centroid (counter-clockwise in (x, y); ties keep input order)."""
    p = np.asarray(points, float).reshape(-1, 2)
    c = p.mean(axis=0)
    return p[np.argsort(np.arctan2(p[:, 1] - c[1], p[:, 0] - c[0]), kind="stable")]


def spline_contour(points: ArrayLike, n: int = 256) -> NDArray[np.float64]:
    """Closed cubic periodic spline through ≥ 3 points in angular order, sampled at ``n`` evenly spaced parameter values
    plus the points' own parameters: ``(≈n + N, 2)`` (x, y), so the contour contains every input point (``s=0``)."""
    p = angular_order(points)
    if len(p) < 3:
        raise CadxDataError(f"a closed spline needs >= 3 calipers, got {len(p)}", field="calipers")
    closed = np.vstack([p, p[:1]])  # splprep(per=1) ignores the last value but needs it as the period's end
    tck, u_pts = splprep([closed[:, 0], closed[:, 1]], s=0, per=1, k=3)
    u = np.union1d(np.linspace(0.0, 1.0, n, endpoint=False), np.asarray(u_pts)[:-1])
    x, y = splev(u, tck)
    return np.stack([np.asarray(x), np.asarray(y)], axis=1)


def ellipse_minor_semi_axis(p1: ArrayLike, p2: ArrayLike, shape: tuple[int, int]) -> float:
    """Minor semi-axis of the 2-point shape: ``a = |p1 p2| / 2`` (a circle) when the circle fits in the image
    ``(H, W)`` (pixel centres 0..W−1, 0..H−1), else the largest ``b < a`` for which the ellipse with major axis
    p1–p2 fits (its half-extents are ``sqrt(a²cos²θ + b²sin²θ)`` in x and ``sqrt(a²sin²θ + b²cos²θ)`` in y),
    at least 1 px."""
    a1, a2 = np.asarray(p1, float), np.asarray(p2, float)
    h, w = shape
    c = (a1 + a2) / 2
    a = float(np.linalg.norm(a2 - a1)) / 2
    room_x = min(c[0], (w - 1) - c[0])
    room_y = min(c[1], (h - 1) - c[1])
    if a <= room_x + 1e-9 and a <= room_y + 1e-9:
        return a
    theta = np.arctan2(a2[1] - a1[1], a2[0] - a1[0])
    cs, sn = np.cos(theta) ** 2, np.sin(theta) ** 2
    b2 = a * a
    if sn > 1e-12:
        b2 = min(b2, (room_x ** 2 - a * a * cs) / sn)
    if cs > 1e-12:
        b2 = min(b2, (room_y ** 2 - a * a * sn) / cs)
    return float(max(1.0, np.sqrt(b2))) if b2 > 0 else 1.0


def two_point_mask(p1: ArrayLike, p2: ArrayLike, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Circle on the segment p1–p2 as diameter, or the fitting ellipse of :func:`ellipse_minor_semi_axis`:
    ``(H, W)`` bool."""
    a1, a2 = np.asarray(p1, float), np.asarray(p2, float)
    c = (a1 + a2) / 2
    a = float(np.linalg.norm(a2 - a1)) / 2
    if a < 0.5:
        raise CadxDataError("two calipers at the same point", field="calipers")
    b = ellipse_minor_semi_axis(a1, a2, shape)
    theta = float(np.arctan2(a2[1] - a1[1], a2[0] - a1[0]))
    # skimage: rotation is counter-clockwise from the row axis for r_radius; give the major axis as c_radius
    # (along columns = x) and rotate by −θ (rows grow downwards).
    rr, cc = draw_ellipse(c[1], c[0], b, a, shape=shape, rotation=-theta)
    m = np.zeros(shape, bool)
    m[rr, cc] = True
    return m


def points_to_mask(points: ArrayLike, shape: tuple[int, int], n: int = 256) -> NDArray[np.bool_]:
    """Approximate mask ``(H, W)`` bool from caliper points: 2 → :func:`two_point_mask`, ≥ 3 → filled
    :func:`spline_contour`; fewer than 2 raise :class:`CadxDataError` (field ``calipers``)."""
    p = np.asarray(points, float).reshape(-1, 2)
    if len(p) < 2:
        raise CadxDataError(f"an approximate mask needs 2 or more calipers, got {len(p)}", field="calipers")
    if len(p) == 2:
        return two_point_mask(p[0], p[1], shape)
    cont = spline_contour(p, n)
    rr, cc = draw_polygon(cont[:, 1], cont[:, 0], shape=shape)
    m = np.zeros(shape, bool)
    m[rr, cc] = True
    return m


def simulated_calipers(mask: ArrayLike) -> NDArray[np.float64]:
    """Four caliper points ``(4, 2)`` (x, y) from a binary mask ``(H, W)``: the extreme mask pixels along the
    principal axis and along the perpendicular axis, each among pixels within 1 px of the axis line through the
    centroid (a sonographer's longest diameter and its perpendicular). An empty mask raises CadxDataError."""
    m = np.asarray(mask).astype(bool)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        raise CadxDataError("cannot place calipers on an empty mask", field="mask")
    pts = np.stack([xs, ys], axis=1).astype(float)
    c = pts.mean(axis=0)
    d = pts - c
    if len(pts) < 2:
        return np.repeat(pts, 4, axis=0)
    _, vecs = np.linalg.eigh(np.cov(d.T) + 1e-9 * np.eye(2))
    out = []
    for axis in (vecs[:, 1], vecs[:, 0]):  # principal (largest variance) then perpendicular
        along = d @ axis
        across = np.abs(d @ np.array([-axis[1], axis[0]]))
        near = across <= 1.0
        if not near.any():
            near = across <= across.min() + 1e-9
        idx = np.nonzero(near)[0]
        out += [pts[idx[np.argmin(along[idx])]], pts[idx[np.argmax(along[idx])]]]
    return np.asarray(out)
