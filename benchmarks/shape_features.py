"""Speed of the A.3 shape features on the 28 LGG manual masks, and agreement of the Khachiyan enclosing
ellipsoid (BEVR's denominator) with an independent optimiser on test shapes.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shape_features.py [--lgg ../shared/data/lgg]
Writes benchmarks/results/radiogenomics/shape_speed.json.

Independent solver ("brute force"): the MVEE as a convex programme, minimise -log det M over symmetric M and b with
||M p_i + b|| <= 1 for every convex-hull vertex p_i (scipy SLSQP, started from a bounding sphere), ellipsoid
volume 4/3 pi / det M. Also the best axis-aligned box-fitted ellipsoid (a grid over rotations would be the naive
brute force; SLSQP over all rotated ellipsoids solves the same problem exactly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.spatial import ConvexHull

from cadx.data.datasets import load_dataset
from cadx.evaluation.shape import boundary_points, ellipsoid_volume, khachiyan_ellipsoid, shape_features

OUT = Path(__file__).resolve().parent / "results" / "radiogenomics" / "shape_speed.json"


def slsqp_mvee_volume(points: np.ndarray) -> tuple[float, bool]:
    """Minimum enclosing ellipsoid volume of ``points`` (N, 3) by SLSQP on the hull vertices; (volume, success)."""
    p = points[ConvexHull(points).vertices]
    c0 = p.mean(0)
    p = p - c0
    iu = np.triu_indices(3)

    def unpack(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = np.zeros((3, 3))
        m[iu] = v[:6]
        return m + np.triu(m, 1).T, v[6:]

    def obj(v: np.ndarray) -> float:
        sign, ld = np.linalg.slogdet(unpack(v)[0])
        return -ld if sign > 0 else 1e6

    def cons(v: np.ndarray) -> np.ndarray:
        m, b = unpack(v)
        return 1 - np.sum((p @ m + b) ** 2, axis=1)

    v0 = np.zeros(9)
    v0[[0, 3, 5]] = 1 / (np.linalg.norm(p, axis=1).max() * 1.01)
    res = minimize(obj, v0, constraints=[{"type": "ineq", "fun": cons}], method="SLSQP",
                   options={"maxiter": 1000, "ftol": 1e-12})
    m, _ = unpack(res.x)
    feasible = bool(cons(res.x).min() >= -1e-6)
    return float(4 / 3 * np.pi / np.linalg.det(m)), bool(res.success and feasible)


def test_shapes() -> dict[str, tuple[np.ndarray, tuple[float, float, float]]]:
    g = np.mgrid[-25:26, -25:26, -25:26].astype(float)
    z, y, x = g
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    zr, yr, xr = np.einsum("ij,jklm->iklm", q, g)
    th = np.arctan2(y, x)
    return {
        "sphere_r20": ((z ** 2 + y ** 2 + x ** 2) <= 400, (1.0, 1.0, 1.0)),
        "ellipsoid_10_15_22": ((z / 10) ** 2 + (y / 15) ** 2 + (x / 22) ** 2 <= 1, (1.0, 1.0, 1.0)),
        "rotated_ellipsoid_8_12_20": ((zr / 8) ** 2 + (yr / 12) ** 2 + (xr / 20) ** 2 <= 1, (1.0, 1.0, 1.0)),
        "lobulated_blob": (np.hypot(y, x) <= 15 * (1 + 0.2 * np.cos(8 * th))
                           * np.sqrt(np.clip(1 - (z / 16) ** 2, 0, None)), (1.0, 1.0, 1.0)),
        "cube_20": ((np.abs(z) <= 10) & (np.abs(y) <= 10) & (np.abs(x) <= 10), (1.0, 1.0, 1.0)),
        "sphere_anisotropic_2_1_0.5": ((2 * z) ** 2 + y ** 2 + (0.5 * x) ** 2 <= 400, (2.0, 1.0, 0.5)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lgg", default="../shared/data/lgg")
    args = ap.parse_args()
    cohort = load_dataset("lgg", args.lgg)
    t0 = time.perf_counter()
    masks = [(s.study_id, np.asarray(s.masks["mask"].load().array)[0] > 0) for s in cohort.studies]
    t_load = time.perf_counter() - t0
    per_mask = []
    t0 = time.perf_counter()
    for sid, m in masks:
        t1 = time.perf_counter()
        f = shape_features(m)
        per_mask.append({"study": sid, "seconds": round(time.perf_counter() - t1, 4), "voxels": int(m.sum()),
                         "asd": f.asd, "inv_bevr": f.inv_bevr, "mf": f.mf})
    t_feat = time.perf_counter() - t0
    agreement: list[dict[str, Any]] = []
    shapes = test_shapes()
    lgg_pick = sorted(masks, key=lambda sm: sm[1].sum())
    for sid, m in [lgg_pick[0], lgg_pick[len(lgg_pick) // 2], lgg_pick[-1]]:
        shapes[f"lgg_{sid}"] = (m, (1.0, 1.0, 1.0))
    for name, (m, sp) in shapes.items():
        pts = boundary_points(m, sp)
        t1 = time.perf_counter()
        a, _ = khachiyan_ellipsoid(pts)
        t_k = time.perf_counter() - t1
        vk = ellipsoid_volume(a)
        t1 = time.perf_counter()
        vs, ok = slsqp_mvee_volume(pts)
        t_s = time.perf_counter() - t1
        vol = float(m.sum() * np.prod(sp))
        agreement.append({"shape": name, "voxels": int(m.sum()), "khachiyan_volume": vk, "slsqp_volume": vs,
                          "slsqp_success": ok, "relative_difference": (vk - vs) / vs, "bevr_khachiyan": vol / vk,
                          "bevr_slsqp": vol / vs, "khachiyan_seconds": round(t_k, 4), "slsqp_seconds": round(t_s, 3)})
        print(f"{name:>32}: BEVR Khachiyan {vol / vk:.5f}  SLSQP {vol / vs:.5f}  rel. diff {(vk - vs) / vs:+.2e}")
    res = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shape_features.py",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, shared (2 CPU cores for ~8 engineers); "
                   "one thread",
        "masks": len(masks), "mask_read_seconds": round(t_load, 2), "features_seconds": round(t_feat, 3),
        "masks_per_second_features": round(len(masks) / t_feat, 2),
        "masks_per_second_with_reading": round(len(masks) / (t_feat + t_load), 2),
        "per_mask": per_mask, "bevr_agreement": agreement,
        "max_abs_relative_volume_difference": max(abs(float(r["relative_difference"])) for r in agreement),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1))
    print(f"{len(masks)} masks: {res['masks_per_second_features']} masks/s (features), "
          f"{res['masks_per_second_with_reading']} masks/s with TIFF reading; max |rel. diff| "
          f"{res['max_abs_relative_volume_difference']:.2e} → {OUT}")


if __name__ == "__main__":
    main()
