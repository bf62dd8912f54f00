"""The ``synthetic`` cohort: a small, deterministic CT cohort of adrenal masses written as real DICOM series.

One patient = one study = one axial CT series (``images/<patient>/slice_NNNN.dcm``, int16, intercept −1024)
with one lesion, its mask (``masks/<patient>.nii.gz``, same geometry), its 3D box and numeric attribute
scores. Classes and their imbalance follow Bi et al. (DMRN): see :mod:`cadx.data.synthetic_phantom`.

Layout of ``out_dir``: ``synthetic.json`` (parameters + one record per study; written last, marks the cohort
complete), ``manifest.csv`` (:func:`cadx.data.manifest_io.write_manifest`), ``images/``, ``masks/``.
Same parameters ⇒ byte-identical pixel data, masks, UIDs, manifest and ``synthetic.json``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from cadx.data.dicom_write import write_dicom_series
from cadx.data.image import LazyImage
from cadx.data.manifest_io import write_manifest
from cadx.data.readers import read_dicom_series, read_image
from cadx.data.study import Box, Cohort, Study
from cadx.data.synthetic_phantom import CLASS_NAMES, CLASSES, PAPER_COUNTS, class_quota, render_case
from cadx.errors import CadxConfigError, CadxDataError
from cadx.utils import atomic_write_json, read_json

#: Bump when the generator changes what it writes: cohorts of another version are regenerated.
GENERATOR_VERSION = 3
DEFAULT_SHAPE: tuple[int, int, int] = (28, 64, 64)
META_FILE, MANIFEST_FILE = "synthetic.json", "manifest.csv"
ATTRIBUTES = ("size_mm", "heterogeneity", "fat", "calcification", "necrosis", "margin_irregularity",
              "enhancement_hu", "unenhanced_hu")


def cohort_params(n_patients: int = 100, seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE,
                  box_margin: int = 3, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Validated generation parameters (what ``synthetic.json`` records and idempotence compares).

    ``classes``: a subset of :data:`CLASSES` (≥ 2, no repeats; order kept) to generate instead of all five,
    split in the paper's proportions; recorded only when it differs from all five (so the default cohort's
    parameters, and files, are those of every earlier version).
    """
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or shp[0] < 8 or min(shp[1:]) < 32:
        raise CadxConfigError(f"synthetic: shape must be (Z≥8, Y≥32, X≥32), got {shape!r}")
    if int(n_patients) < 1:
        raise CadxConfigError(f"synthetic: n_patients must be ≥ 1, got {n_patients!r}")
    if int(box_margin) < 0:
        raise CadxConfigError(f"synthetic: box_margin must be ≥ 0, got {box_margin!r}")
    params: dict[str, Any] = {"version": GENERATOR_VERSION, "n_patients": int(n_patients), "seed": int(seed),
                              "shape": list(shp), "box_margin": int(box_margin)}
    if classes is not None:
        cls = [str(c) for c in classes]
        unknown = sorted(set(cls) - set(CLASSES))
        if unknown or len(cls) < 2 or len(set(cls)) != len(cls):
            raise CadxConfigError(f"synthetic: classes must be ≥ 2 distinct of {list(CLASSES)}, got {list(classes)!r}")
        if tuple(cls) != CLASSES:
            params["classes"] = cls
    return params


def _classes(params: dict[str, Any]) -> tuple[str, ...]:
    return tuple(params.get("classes", CLASSES))


def mask_box(mask: np.ndarray, margin: int = 0) -> Box:
    """Bounding box ``(z0, y0, x0, z1, y1, x1)`` (stop-exclusive) of a non-empty ``(Z, Y, X)`` mask, padded
    in-plane (y, x) by ``margin`` voxels and clipped to the volume; z is tight (every box slice has lesion)."""
    idx = np.nonzero(mask)
    if not idx[0].size:
        raise CadxDataError("empty lesion mask", field="mask")
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    for a in (1, 2):
        lo[a], hi[a] = max(0, lo[a] - margin), min(mask.shape[a], hi[a] + margin)
    return (*lo, *hi)


def _write_mask(mask: np.ndarray, spacing: Sequence[float], origin: Sequence[float], path: Path) -> None:
    """NIfTI mask, array (z, y, x) ↔ ITK (x, y, z): spacing/origin reversed, identity direction."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing([float(s) for s in reversed(spacing)])
    img.SetOrigin([float(o) for o in reversed(origin)])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def _is_complete(out_dir: Path, params: dict[str, Any]) -> bool:
    meta_path = out_dir / META_FILE
    if not meta_path.is_file() or not (out_dir / MANIFEST_FILE).is_file():
        return False
    try:
        meta = read_json(meta_path)
    except (OSError, ValueError):
        return False
    if meta.get("params") != params or not meta.get("complete"):
        return False
    return all((out_dir / r["image"]).is_dir() and (out_dir / r["mask"]).is_file() for r in meta["studies"])


def _generate_into(tmp: Path, params: dict[str, Any]) -> None:
    seed, n = params["seed"], params["n_patients"]
    shape = tuple(params["shape"])
    classes = _classes(params)
    quota = class_quota(n, {c: PAPER_COUNTS[c] for c in classes})
    labels = np.repeat(np.array(classes), [quota[c] for c in classes])
    labels = labels[np.random.default_rng(seed).permutation(n)]
    records, studies = [], []
    for i, label in enumerate(labels.tolist()):
        pid = f"SYN{i + 1:04d}"
        case = render_case(label, shape, np.random.default_rng([seed, i]))  # type: ignore[arg-type]
        img_rel, mask_rel = f"images/{pid}", f"masks/{pid}.nii.gz"
        write_dicom_series(case["volume"], case["spacing"], tmp / img_rel, patient_id=pid,
                           series_description=f"synthetic adrenal CT, {case['metadata']['phase']} phase",
                           origin=case["origin"], uid_seed=f"cadx-synthetic-v{GENERATOR_VERSION}-{seed}-{pid}")
        _write_mask(case["mask"], case["spacing"], case["origin"], tmp / mask_rel)
        box = mask_box(case["mask"], params["box_margin"])
        meta = {**case["metadata"], "spacing": list(case["spacing"]), "origin": list(case["origin"])}
        rec = {"study_id": f"{pid}-CT", "patient_id": pid, "label": label, "image": img_rel, "mask": mask_rel,
               "box": list(box), "attributes": {a: case["attributes"][a] for a in ATTRIBUTES}, "metadata": meta}
        records.append(rec)
        studies.append(_study(tmp, rec))
    write_manifest(Cohort(studies, classes=classes, name="synthetic"), tmp / MANIFEST_FILE)
    atomic_write_json(tmp / META_FILE, {
        "generator": "cadx.data.synthetic", "params": params, "complete": True, "classes": list(classes),
        "class_names": {c: CLASS_NAMES[c] for c in classes}, "paper_counts": {c: PAPER_COUNTS[c] for c in classes},
        "class_counts": quota, "studies": records})


def generate_cohort(out_dir: str | Path, n_patients: int = 100, seed: int = 0,
                    shape: Sequence[int] = DEFAULT_SHAPE, box_margin: int = 3,
                    classes: Sequence[str] | None = None) -> Path:
    """Generate the cohort into ``out_dir`` and return its ``manifest.csv``.

    ``shape`` is (Z, Y, X) voxels per volume (spacing is drawn per patient: 1.5–2.0 mm in-plane, 2.5 or
    3.0 mm slices); ``classes`` a subset of the five (default all, see :func:`cohort_params`). Idempotent:
    when ``out_dir`` already holds a complete cohort with the same parameters it is returned untouched. The
    cohort is built in a temporary sibling folder and renamed into place, so an interrupted run never leaves half
    a cohort; a synthetic cohort with other parameters is replaced. Raises :class:`CadxDataError` when
    ``out_dir`` is a non-empty folder that is not a synthetic cohort.
    """
    out_dir = Path(out_dir)
    params = cohort_params(n_patients, seed, shape, box_margin, classes)
    if _is_complete(out_dir, params):
        return out_dir / MANIFEST_FILE
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / META_FILE).exists())):
        raise CadxDataError("exists and is not a synthetic cohort; give an empty or new folder", path=out_dir,
                            field="root")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _generate_into(tmp, params)
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "cohort")
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not _is_complete(out_dir, params):  # a concurrent run may have just put the same cohort there
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / MANIFEST_FILE


def _study(root: Path, rec: dict[str, Any]) -> Study:
    image_path, mask_path = root / rec["image"], root / rec["mask"]
    return Study(
        study_id=rec["study_id"], patient_id=rec["patient_id"], label=rec["label"],
        images={"image": LazyImage(partial(read_dicom_series, image_path), str(image_path))},
        masks={"mask": LazyImage(partial(read_image, mask_path), str(mask_path))},
        boxes=[tuple(int(b) for b in rec["box"])], attributes={k: float(v) for k, v in rec["attributes"].items()},
        metadata=dict(rec["metadata"]))


def load_cohort(root: str | Path) -> Cohort:
    """The cohort in ``root`` (written by :func:`generate_cohort`): lazy DICOM images, NIfTI masks, boxes."""
    root = Path(root)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise CadxDataError(f"no {META_FILE}: not a synthetic cohort", path=root, field="root")
    meta = read_json(meta_path)
    if not meta.get("complete"):
        raise CadxDataError("incomplete synthetic cohort", path=meta_path, field="complete")
    p = meta["params"]
    info = {"generator": "synthetic", "version": p["version"], "n_patients": p["n_patients"], "seed": p["seed"],
            "shape": "x".join(str(s) for s in p["shape"]), "class_names": meta["class_names"],
            "paper_counts": meta["paper_counts"]}
    return Cohort([_study(root, r) for r in meta["studies"]], classes=meta["classes"], name="synthetic",
                  source=str(root), info=info)
