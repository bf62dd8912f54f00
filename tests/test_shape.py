"""Shape features (thesis A.3) on synthetic shapes with known values: sphere, ellipsoid, lobulated blob, a
cosine-perturbed disc (ASD = MF = a/sqrt(2) by hand), anisotropic spacing, Khachiyan vs an analytic ellipsoid and
vs a scipy SLSQP solution, and the empty / one-voxel / one-slice edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from cadx.errors import CadxDataError
from cadx.evaluation.shape import (
    angular_standard_deviation,
    boundary_points,
    bounding_ellipsoid_volume_ratio,
    ellipsoid_volume,
    feature_slice,
    khachiyan_ellipsoid,
    margin_fluctuation,
    shape_features,
)

G = np.mgrid[-25:26, -25:26, -25:26].astype(float)


def _ellipsoid(cz: float, cy: float, cx: float) -> np.ndarray:
    z, y, x = G
    return (z / cz) ** 2 + (y / cy) ** 2 + (x / cx) ** 2 <= 1


def _analytic_ellipse_asd(a: float, b: float, bins: int = 10, n: int = 200_000) -> float:
    """ASD of the ellipse x = a cos t, y = b sin t, sampled uniformly in arc length, binned as the module does."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    xy = np.stack([b * np.sin(t), a * np.cos(t)], 1)
    seg = np.linalg.norm(np.diff(np.vstack([xy, xy[:1]]), axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    u = np.linspace(0, s[-1], n, endpoint=False)
    closed = np.vstack([xy, xy[:1]])
    yy, xx = np.interp(u, s, closed[:, 0]), np.interp(u, s, closed[:, 1])
    r = np.hypot(yy, xx)
    r /= r.mean()
    k = np.clip(((np.arctan2(yy, xx) + np.pi) / (2 * np.pi) * bins).astype(int), 0, bins - 1)
    return float(np.mean([r[k == i].std() for i in range(bins)]))


def test_sphere_is_regular() -> None:
    f = shape_features(_ellipsoid(20, 20, 20))
    assert f.asd < 0.02 and f.mf < 0.02
    assert f.bevr == pytest.approx(1.0, abs=0.01)
    assert f.slice_index == 25 and f.volume_mm3 == _ellipsoid(20, 20, 20).sum()
    assert f.reasons == {}


def test_ellipsoid_bevr_one_and_asd_matches_analytic_profile() -> None:
    m = _ellipsoid(10, 15, 22)
    assert bounding_ellipsoid_volume_ratio(m) == pytest.approx(1.0, abs=0.02)
    expected = _analytic_ellipse_asd(22, 15)  # largest slice = z 0: semi-axes x 22, y 15
    assert expected > 0.04
    assert angular_standard_deviation(m) == pytest.approx(expected, rel=0.1)
    assert margin_fluctuation(m) < 0.02  # smooth margin


def test_cosine_disc_hand_values() -> None:
    """r(θ) = R(1 + a cos 10θ): a 36° bin holds one period, so the in-bin SD of r/mean(r) is a/√2; the moving
    average over 10 % of the contour (≈ one period) removes the cosine, so MF = a/√2 too."""
    r_, a = 150, 0.03
    y, x = np.mgrid[-200:201, -200:201]
    th, rho = np.arctan2(y, x), np.hypot(y, x)
    s = rho <= r_ * (1 + a * np.cos(10 * th))
    m = np.stack([s & (rho < 50), s, s & (rho < 100)])
    assert feature_slice(m) == 1
    assert angular_standard_deviation(m) == pytest.approx(a / np.sqrt(2), rel=0.03)
    assert margin_fluctuation(m) == pytest.approx(a / np.sqrt(2), rel=0.03)


def test_lobulated_blob_is_irregular() -> None:
    z, y, x = G
    taper = np.sqrt(np.clip(1 - (z / 16) ** 2, 0, None))
    blob = np.hypot(y, x) <= 15 * (1 + 0.2 * np.cos(8 * np.arctan2(y, x))) * taper
    b, s = shape_features(blob), shape_features(_ellipsoid(20, 20, 20))
    assert b.asd > 5 * s.asd and b.mf > 5 * s.mf
    assert b.bevr < 0.6 and b.inv_bevr == pytest.approx(1 / b.bevr)


def test_anisotropic_spacing_is_measured_in_mm() -> None:
    sp = (2.0, 1.0, 0.5)
    z, y, x = np.mgrid[-12:13, -24:25, -48:49].astype(float)
    m = (z * sp[0]) ** 2 + (y * sp[1]) ** 2 + (x * sp[2]) ** 2 <= 20 ** 2  # a 20 mm sphere
    f = shape_features(m, sp)
    assert f.asd < 0.02 and f.mf < 0.02
    assert f.bevr == pytest.approx(1.0, abs=0.02)
    assert f.volume_mm3 == pytest.approx(4 / 3 * np.pi * 20 ** 3, rel=0.02)
    # in voxel units the slice is a 2:1 ellipse (x 40, y 20 voxels)
    assert angular_standard_deviation(m) == pytest.approx(_analytic_ellipse_asd(40, 20), rel=0.1)


def test_feature_slice_largest_area_lowest_on_tie() -> None:
    m = np.zeros((5, 30, 30), bool)
    m[1, 5:25, 5:25] = True  # 400 px
    m[3, 5:25, 5:25] = True  # 400 px: tie → slice 1
    m[2, 10:20, 10:20] = True
    assert feature_slice(m) == 1
    assert angular_standard_deviation(m) == angular_standard_deviation(m, slice_index=1)
    assert angular_standard_deviation(m, slice_index=2) != angular_standard_deviation(m)  # smaller square
    with pytest.raises(CadxDataError, match="slice_index"):
        angular_standard_deviation(m, slice_index=7)


def test_khachiyan_recovers_a_rotated_ellipsoid() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    axes = np.array([3.0, 5.0, 9.0])
    a_true = q @ np.diag(1 / axes ** 2) @ q.T
    c_true = np.array([1.0, -2.0, 4.0])
    u = rng.normal(size=(400, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pts = c_true + (u * axes) @ q.T  # on the surface
    inner = c_true + 0.5 * (rng.normal(size=(200, 3)) * axes / 3) @ q.T
    a, c = khachiyan_ellipsoid(np.vstack([pts, inner]))
    np.testing.assert_allclose(c, c_true, atol=1e-3)
    np.testing.assert_allclose(a, a_true, atol=1e-4)
    assert ellipsoid_volume(a) == pytest.approx(4 / 3 * np.pi * axes.prod(), rel=1e-4)


def test_khachiyan_matches_slsqp_on_random_points() -> None:
    """Independent solver: minimise −log det M s.t. ‖M p + b‖ ≤ 1 (M symmetric) with scipy SLSQP."""
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(25, 3)) * [1, 2, 3]
    a, c = khachiyan_ellipsoid(pts)
    iu = np.triu_indices(3)

    def unpack(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = np.zeros((3, 3))
        m[iu] = v[:6]
        return m + np.triu(m, 1).T, v[6:]

    def cons(v: np.ndarray) -> np.ndarray:
        m, b = unpack(v)
        return 1 - np.sum((pts @ m + b) ** 2, axis=1)

    def obj(v: np.ndarray) -> float:
        sign, ld = np.linalg.slogdet(unpack(v)[0])
        return -ld if sign > 0 else 1e6

    v0 = np.zeros(9)
    v0[[0, 3, 5]] = 1 / (np.abs(pts).max() * 2)
    res = minimize(obj, v0, constraints=[{"type": "ineq", "fun": cons}], method="SLSQP",
                   options={"maxiter": 500, "ftol": 1e-12})
    m, _ = unpack(res.x)
    assert res.success
    assert ellipsoid_volume(a) == pytest.approx(ellipsoid_volume(m @ m), rel=1e-3)
    d = pts - c
    assert np.einsum("ij,jk,ik->i", d, a, d).max() <= 1 + 1e-9  # every point inside


def test_empty_one_voxel_and_one_slice_masks() -> None:
    with pytest.raises(CadxDataError, match="empty mask"):
        shape_features(np.zeros((3, 4, 4), bool), name="patient_X")
    with pytest.raises(CadxDataError, match="spacing"):
        shape_features(np.ones((3, 4, 4), bool), spacing=(1, 0, 1))
    with pytest.raises(CadxDataError, match="3D mask"):
        shape_features(np.ones((4, 4), bool))
    one = np.zeros((3, 5, 5), bool)
    one[1, 2, 2] = True
    f = shape_features(one)
    assert np.isnan(f.asd) and np.isnan(f.mf) and np.isnan(f.bevr) and np.isnan(f.inv_bevr)
    assert set(f.reasons) == {"asd", "mf", "bevr"}
    flat = np.zeros((3, 30, 30), bool)
    flat[1] = _ellipsoid(20, 10, 10)[25, 15:45, 15:45]
    g = shape_features(flat)
    assert np.isnan(g.bevr) and g.reasons == {"bevr": "boundary voxels do not span 3 dimensions"}
    assert g.asd < 0.03


def test_boundary_points_of_a_cube() -> None:
    m = np.zeros((5, 5, 5), bool)
    m[1:4, 1:4, 1:4] = True
    p = boundary_points(m, (2.0, 1.0, 1.0))
    assert len(p) == 26  # 27 voxels minus the centre
    assert p[:, 0].min() == 2.0 and p[:, 0].max() == 6.0
