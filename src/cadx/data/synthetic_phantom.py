"""Procedural abdominal CT phantom with one adrenal mass, modelled on the five sub-classes of Bi et al. (DMRN).

Classes and their cohort counts follow the paper (229 studies): ACA adrenocortical carcinoma (54), NAA
non-functional adrenal adenoma (35), GN ganglioneuroma (58), AM adrenal myelolipoma (33), PCC
pheochromocytoma (49). Per class, overlapping distributions of size, unenhanced HU, enhancement kinetics
(the patient's contrast phase shifts HU), texture heterogeneity, necrosis/cystic change, macroscopic fat,
calcification and margin shape (round vs lobulated/irregular). No single feature separates the classes.

Everything here is pure numpy/scipy on ``(Z, Y, X)`` arrays with physical spacing ``(sz, sy, sx)`` mm;
randomness only from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

CLASSES: tuple[str, ...] = ("ACA", "NAA", "GN", "AM", "PCC")
CLASS_NAMES: dict[str, str] = {
    "ACA": "adrenocortical carcinoma",
    "NAA": "non-functional adrenal adenoma",
    "GN": "ganglioneuroma",
    "AM": "adrenal myelolipoma",
    "PCC": "pheochromocytoma",
}
#: Studies per class in the paper's cohort (Table 1), the source of the class imbalance.
PAPER_COUNTS: dict[str, int] = {"ACA": 54, "NAA": 35, "GN": 58, "AM": 33, "PCC": 49}
PHASES: tuple[str, ...] = ("unenhanced", "arterial", "portal", "delayed")
PHASE_PROBS: tuple[float, ...] = (0.2, 0.2, 0.4, 0.2)

# Per class: size (median mm, log-sd), unenhanced soft-tissue HU (mean, sd), enhancement peak (mean, sd) and
# kinetics per phase, texture heterogeneity range, necrosis (probability, fraction range), fat fraction
# (beta a, b; 0 = none), calcification probability, lobulation range, roughness range, elongation range.
SPECS: dict[str, dict[str, Any]] = {
    "ACA": dict(size=(36.0, 0.28), hu=(34.0, 10.0), enh=(40.0, 15.0), kin=(0.0, 0.6, 1.0, 0.85),
                het=(0.35, 0.85), nec=(0.75, (0.10, 0.40)), fat=None, calc=0.30, lob=(0.15, 0.45),
                rough=(0.05, 0.20), elong=(1.0, 1.35)),
    "NAA": dict(size=(23.0, 0.30), hu=(10.0, 16.0), enh=(45.0, 15.0), kin=(0.0, 0.7, 1.0, 0.45),
                het=(0.05, 0.30), nec=(0.0, (0.0, 0.0)), fat=None, calc=0.03, lob=(0.0, 0.12),
                rough=(0.0, 0.05), elong=(1.0, 1.3)),
    "GN": dict(size=(32.0, 0.30), hu=(29.0, 9.0), enh=(25.0, 10.0), kin=(0.0, 0.25, 0.6, 1.0),
               het=(0.15, 0.45), nec=(0.05, (0.03, 0.10)), fat=None, calc=0.40, lob=(0.10, 0.35),
               rough=(0.0, 0.08), elong=(1.2, 1.8)),
    "AM": dict(size=(29.0, 0.35), hu=(32.0, 10.0), enh=(30.0, 10.0), kin=(0.0, 0.6, 1.0, 0.7),
               het=(0.15, 0.45), nec=(0.0, (0.0, 0.0)), fat=(1.5, 2.2), calc=0.20, lob=(0.05, 0.25),
               rough=(0.0, 0.08), elong=(1.0, 1.4)),
    "PCC": dict(size=(31.0, 0.30), hu=(37.0, 10.0), enh=(75.0, 25.0), kin=(0.0, 1.0, 0.95, 0.6),
                het=(0.35, 0.80), nec=(0.60, (0.05, 0.30)), fat=None, calc=0.10, lob=(0.0, 0.15),
                rough=(0.0, 0.06), elong=(1.0, 1.3)),
}

# Unenhanced HU and enhancement per phase for the background anatomy.
ORGANS: dict[str, tuple[float, tuple[float, float, float, float]]] = {
    "fat": (-100.0, (0, 0, 0, 0)),
    "muscle": (50.0, (0, 5, 15, 10)),
    "liver": (56.0, (0, 20, 55, 35)),
    "kidney": (32.0, (0, 130, 150, 110)),
    "aorta": (42.0, (0, 260, 130, 70)),
    "bone": (220.0, (0, 0, 0, 0)),
}
FAT_HU, NECROSIS_HU, CALC_HU = -95.0, 16.0, (350.0, 900.0)


@dataclass
class Lesion:
    """Sampled parameters of one lesion (mm, HU, fractions); the stored scores are measured by render_lesion."""

    label: str
    size_mm: float
    elongation: float
    lobulation: float
    roughness: float
    unenhanced_hu: float
    enhancement_peak: float
    heterogeneity: float
    necrosis: float
    fat: float
    n_calcifications: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_quota(n: int, counts: dict[str, int] | None = None) -> dict[str, int]:
    """Split ``n`` patients over the classes in proportion to ``counts`` (largest remainder; ties → order)."""
    counts = counts or PAPER_COUNTS
    total = sum(counts.values())
    exact = {k: n * v / total for k, v in counts.items()}
    out = {k: int(np.floor(v)) for k, v in exact.items()}
    order = sorted(counts, key=lambda k: -(exact[k] - out[k]))
    for k in order[: n - sum(out.values())]:
        out[k] += 1
    return out


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def sample_lesion(label: str, rng: np.random.Generator) -> Lesion:
    """Draw one lesion of class ``label`` (one of :data:`CLASSES`)."""
    s = SPECS[label]
    size = float(np.clip(s["size"][0] * np.exp(rng.normal(0.0, s["size"][1])), 10.0, 50.0))
    p_nec, nec_range = s["nec"]
    necrosis = _uniform(rng, nec_range) if rng.random() < p_nec else 0.0
    fat = float(rng.beta(*s["fat"]) * 0.8 + 0.03) if s["fat"] else 0.0
    n_calc = int(rng.integers(1, 7)) if rng.random() < s["calc"] else 0
    return Lesion(
        label=label, size_mm=size, elongation=_uniform(rng, s["elong"]), lobulation=_uniform(rng, s["lob"]),
        roughness=_uniform(rng, s["rough"]), unenhanced_hu=float(rng.normal(*s["hu"])),
        enhancement_peak=float(max(5.0, rng.normal(*s["enh"]))), heterogeneity=_uniform(rng, s["het"]),
        necrosis=necrosis, fat=fat, n_calcifications=n_calc)


def grf(shape: tuple[int, ...], sigma: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian random field with zero mean and unit std (``sigma`` in voxels per axis)."""
    f = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + np.float32(1e-12))


def _threshold_fraction(field: np.ndarray, region: np.ndarray, fraction: float) -> np.ndarray:
    """Voxels of ``region`` whose ``field`` value is in its top ``fraction`` (empty when fraction ≤ 0)."""
    if fraction <= 0 or not region.any():
        return np.zeros_like(region)
    thr = np.quantile(field[region], 1.0 - fraction)
    return region & (field >= thr)


def body_grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Physical coordinates (z, y, x) in mm, centred on the volume, as an open (sparse) grid: shapes
    ``(Z,1,1)``, ``(1,Y,1)``, ``(1,1,X)`` that broadcast to ``shape``."""
    axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing, strict=True)]
    return tuple(np.meshgrid(*axes, indexing="ij", sparse=True))


def _ellipsoid(z: np.ndarray, y: np.ndarray, x: np.ndarray, c: tuple[float, float, float],
               r: tuple[float, float, float]) -> np.ndarray:
    return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2


def render_anatomy(shape: tuple[int, int, int], spacing: tuple[float, float, float], phase: int,
                   side: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Noise-free body: air, subcutaneous fat, muscle wall, visceral fat, liver, kidneys, aorta, vertebra.

    ``side`` is −1 (patient right, image left) or +1: the side of the adrenal lesion. Returns the HU volume
    ``(Z, Y, X)`` float32 and the layout: body semi-axes and the adrenal position in mm, and ``core``, the
    ``(Z, Y, X)`` bool region inside the muscle wall (where a lesion may grow).
    """
    z, y, x = body_grid(shape, spacing)
    fov_y, fov_x = shape[1] * spacing[1], shape[2] * spacing[2]
    ax, ay = fov_x * rng.uniform(0.43, 0.48), fov_y * rng.uniform(0.37, 0.42)
    taper = 1.0 + 0.04 * z / max(1.0, float(np.abs(z).max()))  # body slightly wider cranially
    rho = (x / (ax * taper)) ** 2 + (y / (ay * taper)) ** 2
    fat_t, musc_t = rng.uniform(4.0, 8.0), rng.uniform(2.5, 4.5)
    inner = ((np.abs(x) / (ax * taper - fat_t)) ** 2 + (np.abs(y) / (ay * taper - fat_t)) ** 2)
    core = ((np.abs(x) / (ax * taper - fat_t - musc_t)) ** 2 + (np.abs(y) / (ay * taper - fat_t - musc_t)) ** 2)

    def hu(organ: str) -> float:
        base, enh = ORGANS[organ]
        return base + enh[phase] + rng.normal(0.0, 4.0)

    vol = np.full(shape, -1000.0, dtype=np.float32)
    vol[rho <= 1] = hu("fat")
    vol[inner <= 1] = hu("muscle")
    vol[core <= 1] = hu("fat")
    tex = grf(shape, (1.0, 2.5, 2.5), rng)
    vol[core <= 1] += 6.0 * tex[core <= 1]  # fat stranding
    zc = float(z.max())
    # liver: patient right (x < 0), anterior-lateral, cranial half
    liver = _ellipsoid(z, y, x, (0.5 * zc, -0.22 * ay, -0.5 * ax), (1.3 * zc, 0.62 * ay, 0.42 * ax)) <= 1
    liver &= core <= 1
    vol[liver] = hu("liver") + 5.0 * tex[liver]
    spleen = (_ellipsoid(z, y, x, (0.4 * zc, 0.2 * ay, 0.62 * ax), (0.8 * zc, 0.35 * ay, 0.2 * ax)) <= 1) & (core <= 1)
    vol[spleen] = hu("liver") - 6.0 + 5.0 * tex[spleen]
    for _ in range(int(rng.integers(2, 5))):  # bowel loops: wall with fluid or gas content
        c = (rng.uniform(-zc, zc), rng.uniform(-0.7, -0.2) * ay, rng.uniform(-0.1, 0.5) * ax)
        rad = rng.uniform(5.0, 9.0)
        loop = (_ellipsoid(z, y, x, c, (2.5 * rad, rad, rad)) <= 1) & (core <= 1) & ~liver
        vol[loop] = hu("muscle")
        lumen = loop & (_ellipsoid(z, y, x, c, (2.0 * rad, 0.6 * rad, 0.6 * rad)) <= 1)
        vol[lumen] = -900.0 if rng.random() < 0.4 else 10.0 + rng.normal(0, 5)
    # kidneys: posterior, caudal; upper pole near the volume centre
    kz = -0.55 * zc + rng.normal(0, 2.0)
    for sx in (-1, 1):
        kc = (kz, 0.38 * ay, sx * 0.52 * ax)
        kid = (_ellipsoid(z, y, x, kc, (0.75 * zc, 0.22 * ay, 0.2 * ax)) <= 1) & (core <= 1)
        cortex = kid & (_ellipsoid(z, y, x, kc, (0.55 * zc, 0.13 * ay, 0.12 * ax)) > 1)
        h = hu("kidney")
        vol[kid] = h - (0.35 * ORGANS["kidney"][1][phase] if phase == 1 else 0.0)  # corticomedullary phase
        vol[cortex] = h
    # vertebra and aorta
    vy = 0.62 * ay
    vr = 0.17 * ay
    d2 = ((y - vy) / vr) ** 2 + (x / vr) ** 2
    bone = np.broadcast_to(d2 <= 1, shape)
    vol[bone] = hu("bone") + 30.0 * tex[bone]
    vol[np.broadcast_to((d2 <= 1) & (d2 > 0.7), shape)] = 650.0
    ar = 0.09 * ay
    aorta = ((y - 0.25 * ay) / ar) ** 2 + ((x - 0.12 * ax) / ar) ** 2 <= 1
    vol[np.broadcast_to(aorta, shape)] = hu("aorta")
    adrenal = (0.15 * zc + rng.normal(0, 2.0), 0.18 * ay + rng.normal(0, 2.0), side * 0.3 * ax)
    return vol, {"ax": float(ax), "ay": float(ay), "az": float(zc), "adrenal_z": adrenal[0],
                 "adrenal_y": adrenal[1], "adrenal_x": adrenal[2], "core": core <= 1}


def _lesion_axes(les: Lesion, rng: np.random.Generator, z_room: float) -> tuple[tuple[float, float, float], float]:
    """Semi-axes (z, u, v) mm of a volume-preserving ellipsoid of diameter ``size_mm``, and its in-plane angle.

    The long axis is craniocaudal half of the time when it fits in ``z_room`` mm, else in-plane.
    """
    r, e = les.size_mm / 2.0, les.elongation
    long_, short = r * e ** (2 / 3), r * e ** (-1 / 3)
    if rng.random() < 0.5 and long_ * (1 + les.lobulation) < z_room:
        axes = (long_, short, short)
    else:
        axes = (short, long_, short)
    return axes, float(rng.uniform(0, np.pi))


def render_lesion(vol: np.ndarray, grid: tuple[np.ndarray, ...], spacing: tuple[float, float, float],
                  les: Lesion, phase: int, center: tuple[float, float, float],
                  rng: np.random.Generator, inside: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Paint ``les`` into the noise-free HU volume ``vol`` (in place) at ``center`` (mm, z/y/x), restricted to
    the ``inside`` region ``(Z, Y, X)`` bool when given (a mass abutting the body wall is flattened against it).

    Returns the lesion mask ``(Z, Y, X)`` bool (never empty: at least the centre voxel) and measured scores:
    ``size_mm`` (equivalent-sphere diameter of the mask), ``fat``, ``calcification``, ``necrosis`` (voxel
    fractions), ``heterogeneity`` (std of non-fat, non-calcified noise-free HU / 50, ≤ 1),
    ``margin_irregularity`` (lobulation + 2·roughness, ≤ 1), ``enhancement_hu`` and ``unenhanced_hu``.
    """
    vox = tuple(float(s) for s in spacing)
    axes, theta = _lesion_axes(les, rng, z_room=0.42 * vol.shape[0] * vox[0])
    reach = max(axes) * (1.0 + 0.5 * les.lobulation) + 3.0 * les.roughness * max(axes) + 2.0
    sl = []
    for a in range(3):  # render only inside the lesion's reach (speed); grid axis a varies along axis a
        coord = grid[a][tuple(slice(None) if b == a else 0 for b in range(3))]
        lo, hi = np.searchsorted(coord, [center[a] - reach - vox[a], center[a] + reach + vox[a]])
        sl.append(slice(int(max(0, lo - 1)), int(min(len(coord), hi + 1))))
    crop = tuple(sl)
    z, y, x = (g[tuple(sl[b] if g.shape[b] > 1 else slice(None) for b in range(3))] for g in grid)
    shape = tuple(s.stop - s.start for s in sl)
    full = vol
    vol = full[crop]
    dz, dy, dx = z - center[0], y - center[1], x - center[2]
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    rho = np.sqrt((dz / axes[0]) ** 2 + (u / axes[1]) ** 2 + (v / axes[2]) ** 2)
    az = np.arctan2(v / axes[2], u / axes[1])
    el = np.arctan2(dz / axes[0], np.hypot(u / axes[1], v / axes[2]))
    lob = np.zeros(shape, dtype=np.float32)
    for k in range(2, 6):
        lob += rng.normal(0, 1.0 / k) * np.cos(k * az + rng.uniform(0, 2 * np.pi)) * np.cos(el)
    lob += rng.normal(0, 0.4) * np.sin(2 * el + rng.uniform(0, 2 * np.pi))
    lob /= np.abs(lob).max() + 1e-12
    rough = grf(shape, (0.6, 1.0, 1.0), rng)
    boundary = 1.0 + 0.5 * les.lobulation * lob + les.roughness * rough
    t = rho / np.maximum(boundary, 0.3)
    mask = t <= 1.0
    if inside is not None:
        mask &= inside[crop]
    lab, n_comp = ndi.label(mask)
    if n_comp > 1:  # roughness can detach specks: keep the main body only
        mask = lab == 1 + int(np.argmax(ndi.sum_labels(mask, lab, index=np.arange(1, n_comp + 1))))
    if not mask.any():
        mask[np.unravel_index(int(np.argmin(t)), shape)] = True
    spec = SPECS[les.label]
    kin = spec["kin"][phase]
    enh = les.enhancement_peak * kin
    fine = grf(shape, (0.7, 1.1, 1.1), rng)
    coarse = grf(shape, (1.0, 2.0, 2.0), rng)
    hu = (les.unenhanced_hu + enh * (1.0 + 0.35 * les.heterogeneity * coarse)
          + les.heterogeneity * (18.0 * fine + 12.0 * coarse))
    # necrosis / cystic change: central and irregular (ACA), eccentric blobs (PCC, GN)
    bias = 2.0 if les.label == "ACA" else 0.6
    nec = _threshold_fraction(-bias * t + grf(shape, (1.0, 1.6, 1.6), rng), mask, les.necrosis)
    hu[nec] = NECROSIS_HU + rng.normal(0, 4.0) + 0.1 * enh + 4.0 * fine[nec]
    # macroscopic fat (myelolipoma): large confluent islands between myeloid soft-tissue strands
    grain = rng.uniform(0.8, 2.2)  # fine-grained fat mixes with myeloid tissue by partial volume
    fat = _threshold_fraction(grf(shape, (0.6 * grain, grain, grain), rng) - 0.3 * t, mask, les.fat)
    hu[fat] = FAT_HU + 8.0 * fine[fat]
    calc = np.zeros(shape, dtype=bool)
    cand = np.flatnonzero(mask & ~fat)
    if les.n_calcifications and cand.size:
        picks = rng.choice(cand, size=min(les.n_calcifications, cand.size), replace=False)
        for p in picks:
            c = np.unravel_index(p, shape)
            rad = rng.uniform(0.8, 2.0)
            speck = (((z - z[c[0], 0, 0]) / max(rad, vox[0] / 2)) ** 2 + ((y - y[0, c[1], 0]) / rad) ** 2
                     + ((x - x[0, 0, c[2]]) / rad) ** 2) <= 1.0
            speck[c] = True
            speck &= mask
            calc |= speck
            hu[speck] = rng.uniform(*CALC_HU)
    vol[mask] = hu[mask]
    out = np.zeros(full.shape, dtype=bool)
    out[crop] = mask
    n = int(mask.sum())
    soft = mask & ~fat & ~calc
    het = float(np.std(hu[soft]) / 50.0) if soft.sum() > 1 else 0.0
    return out, {
        "size_mm": float((6.0 * n * np.prod(vox) / np.pi) ** (1 / 3)),
        "fat": float(fat.sum() / n),
        "calcification": float(calc.sum() / n),
        "necrosis": float(nec.sum() / n),
        "heterogeneity": min(1.0, het),
        "margin_irregularity": min(1.0, les.lobulation + 2.0 * les.roughness),
        "enhancement_hu": float(enh),
        "unenhanced_hu": float(les.unenhanced_hu),
    }


def annotate(lesion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A manual-annotation-like mask of the true lesion support ``(Z, Y, X)`` bool: exact (60%), one voxel
    wider in-plane (30%, takes in peri-lesional fat) or one voxel tighter in-plane (10%, when ≥ 50 voxels
    remain). Never empty."""
    u = rng.random()
    plane = np.zeros((1, 3, 3), dtype=bool)
    plane[0, 1, :] = plane[0, :, 1] = True
    if u < 0.30:
        return ndi.binary_dilation(lesion, plane)
    if u < 0.40:
        er = ndi.binary_erosion(lesion, plane)
        return er if er.sum() >= 50 else lesion
    return lesion


def render_case(label: str, shape: tuple[int, int, int], rng: np.random.Generator,
                inplane_mm: tuple[float, float] = (1.5, 2.0),
                slice_mm: tuple[float, ...] = (2.5, 3.0)) -> dict[str, Any]:
    """One patient: noisy CT ``volume`` (Z,Y,X) float32 HU, lesion ``mask`` (Z,Y,X) bool, ``spacing`` and
    ``origin`` (z,y,x mm), lesion ``attributes`` and ``metadata`` (phase, side, noise, sampled parameters).
    """
    s_xy = round(float(rng.uniform(*inplane_mm)), 3)
    spacing = (float(rng.choice(slice_mm)), s_xy, s_xy)
    phase = int(rng.choice(len(PHASES), p=PHASE_PROBS))
    side = int(rng.choice([-1, 1]))
    vol, layout = render_anatomy(shape, spacing, phase, side, rng)
    grid = body_grid(shape, spacing)
    les = sample_lesion(label, rng)
    r = les.size_mm / 2.0
    center = [layout["adrenal_z"], layout["adrenal_y"] - 0.3 * r, layout["adrenal_x"] + side * 0.25 * r]
    for a in range(3):  # keep the lesion inside the volume (with a 2-voxel rim) when it fits
        half = (shape[a] - 1) / 2.0 * spacing[a]
        ext = r * (1.0 + les.lobulation) * les.elongation ** (2 / 3) + 2 * spacing[a]
        center[a] = float(np.clip(center[a], -half + ext, half - ext)) if ext < half else 0.0
    lesion, attrs = render_lesion(vol, grid, spacing, les, phase, (center[0], center[1], center[2]), rng,
                                  inside=layout.pop("core"))
    mask = annotate(lesion, rng)
    # partial volume (scanner PSF), then correlated quantum noise
    vol = ndi.gaussian_filter(vol, (0.35, 0.6, 0.6))
    noise_sd = float(rng.uniform(10.0, 22.0))
    vol = vol + noise_sd * grf(shape, (0.3, 0.7, 0.7), rng)
    origin = (-round(float(rng.uniform(50.0, 150.0)), 1), -(shape[1] // 2) * s_xy, -(shape[2] // 2) * s_xy)
    meta = {"phase": PHASES[phase], "side": "left" if side > 0 else "right", "noise_sd": noise_sd,
            "lesion_center_mm": center, "lesion": les.to_dict(), "class_name": CLASS_NAMES[label]}
    return {"volume": vol.astype(np.float32), "mask": mask, "spacing": spacing, "origin": origin,
            "attributes": attrs, "metadata": meta}
