"""LIDC-IDRI nodule crops (``crops.npz`` + ``nodules.csv``): one study per nodule, images in HU.

Intensity scale, decided per crop (the npz mixes two scales, see the shared data README): let ``p5`` be the
5th percentile of the crop's values that are not the ``-2000`` out-of-scan padding. ``p5 < -500`` means the
crop is already in HU (lung/air ≈ −900) → ``hu_offset = 0``; otherwise it is stored as HU+1024 →
``hu_offset = -1024``. On the shared release the two populations are far apart: the 148 already-HU crops
(44 patients, never mixed with stored crops within a patient) have ``p5`` in [−1036, −733], the other 2026
crops have ``p5`` in [−24, 744], so any threshold in (−700, −30) gives the same split; −500 sits in the gap.
Padding (value −2000, in 16 crops, all of them HU+1024 crops, 0.1–10 % of their pixels) becomes −1000 HU
(air); its fraction is kept in ``metadata["padding_fraction"]``.

Ratings: ``<attr>_1..4`` per reader (empty = not rated); a nodule's score is the mean (or median, option
``aggregate``) over its readers. One internalstructure rating of 5 (nodule 1363, outside the LIDC 1–4 scale)
is treated as missing; the count of such ratings is ``cohort.info["invalid_ratings"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd

from cadx.data.datasets.base import register_dataset
from cadx.data.image import ImageData, LazyImage
from cadx.data.study import Cohort, Study
from cadx.errors import CadxDataError
from cadx.registry import Lower, NoneText, Options

ATTRIBUTES = ("subtlety", "internalstructure", "calcification", "sphericity", "margin", "lobulation",
              "spiculation", "texture")
#: Rating scale of each LIDC characteristic (inclusive).
RANGES: dict[str, tuple[int, int]] = {a: (1, 5) for a in (*ATTRIBUTES, "malignancy")}
RANGES["calcification"] = (1, 6)
RANGES["internalstructure"] = (1, 4)
PADDING_VALUE = -2000
PADDING_HU = -1000.0
HU_P5_THRESHOLD = -500.0
READERS = 4


def hu_offset(crop: np.ndarray) -> tuple[int, float]:
    """``(offset, padding_fraction)`` for one stored crop ``(Y,X)``: HU = stored + offset (0 or −1024).

    The rule (module docstring): 5th percentile of the non-padding values below −500 → already HU.
    A crop made only of padding is called HU+1024 with padding fraction 1.
    """
    pad = crop == PADDING_VALUE
    vals = crop[~pad]
    if vals.size == 0:
        return -1024, 1.0
    p5 = float(np.percentile(vals, 5))
    return (0 if p5 < HU_P5_THRESHOLD else -1024), float(pad.mean())


def hu_offsets(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`hu_offset` for a stack ``(N,Y,X)`` → ``(offsets (N,) int, padding_fraction (N,))``."""
    flat = images.reshape(len(images), -1)
    pad = flat == PADDING_VALUE
    frac = pad.mean(axis=1)
    p5 = np.percentile(flat, 5, axis=1)
    for i in np.flatnonzero(frac > 0):
        vals = flat[i][~pad[i]]
        p5[i] = np.percentile(vals, 5) if vals.size else 0.0
    return np.where(p5 < HU_P5_THRESHOLD, 0, -1024).astype(np.int64), frac


def to_hu(crop: np.ndarray, offset: int) -> np.ndarray:
    """Stored crop ``(Y,X)`` → float32 HU ``(1,Y,X)``, padding replaced by −1000 HU."""
    out = crop.astype(np.float32) + np.float32(offset)
    out[crop == PADDING_VALUE] = PADDING_HU
    return out[None]


def _read(root: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, Path, Path]:
    npz, csv = root / "crops.npz", root / "nodules.csv"
    for p in (npz, csv):
        if not p.is_file():
            raise CadxDataError("missing (expected crops.npz and nodules.csv)", path=p, field="root")
    with np.load(npz) as z:
        for key in ("images", "nodule_id"):
            if key not in z.files:
                raise CadxDataError(f"no array {key!r} (has {z.files})", path=npz, field=key)
        images, ids = z["images"], z["nodule_id"]
    if images.ndim != 3 or len(images) != len(ids):
        raise CadxDataError(f"images {images.shape} do not match nodule_id {ids.shape}", path=npz,
                            field="images")
    df = pd.read_csv(csv)
    need = ["nodule_id", "patient_id", "pixel_spacing_mm", "equiv_diameter_px"]
    need += [f"{a}_{r}" for a in (*ATTRIBUTES, "malignancy") for r in range(1, READERS + 1)]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise CadxDataError(f"missing columns {missing}", path=csv, field=missing[0])
    return images, ids, df, npz, csv


class LIDCOptions(Options):
    """``labelling`` (``mtmr`` | ``none``), ``aggregate`` (``mean`` | ``median`` over readers),
    ``rescale_attributes`` (None = true with mtmr, false with none) and ``attribute_aggregate`` (None = as
    ``aggregate``; ``median`` with ``aggregate: mean`` keeps the MTMR label rule and gives median attributes)."""

    labelling: Annotated[Literal["mtmr", "none"], Lower] = "mtmr"
    aggregate: Annotated[Literal["mean", "median"], Lower] = "mean"
    rescale_attributes: Annotated[bool | None, NoneText] = None
    attribute_aggregate: Annotated[Literal["mean", "median"] | None, Lower, NoneText] = None


@register_dataset("lidc", "LIDC-IDRI nodule crops (71×71 HU, malignancy + 8 attributes from up to 4 readers)",
                  options=LIDCOptions)
def load(root: Path, *, labelling: str, aggregate: str, rescale_attributes: bool | None,
         attribute_aggregate: str | None = None) -> Cohort:
    """Load ``<root>/crops.npz`` + ``<root>/nodules.csv`` (or root = either file's folder).

    Options: ``labelling`` = ``mtmr`` (default: reader-mean malignancy < 3 → ``benign``, > 3 →
    ``malignant``, = 3 dropped) or ``none`` (label None, all 2174 nodules kept); ``aggregate`` = ``mean``
    (default) | ``median``; ``rescale_attributes`` (default true with mtmr, false with none): attributes to
    [0, 1] by their rating ranges, ranges in ``cohort.info["attribute_ranges"]``.
    Each study: image ``(1,71,71)`` float32 HU with spacing (pixel_spacing, pixel_spacing); metadata
    ``malignancy`` (aggregate 1–5), ``malignancy_score`` ((m−1)/4 ∈ [0,1], MTMR-Net ranking target),
    ``attributes_raw``, ``ratings`` ({attr: [r1..r4] with None = not rated}), ``n_readers``,
    ``hu_offset``, ``padding_fraction``, ``diameter_px``, ``diameter_mm``, ``pixel_spacing_mm``, ``slice_z_mm``,
    ``study_uid``, ``series_uid``, ``source_index``.
    """
    rescale = labelling == "mtmr" if rescale_attributes is None else rescale_attributes

    root = Path(root)
    if root.is_file():
        root = root.parent
    images, ids, df, npz, csv = _read(root)
    df = df.set_index("nodule_id", drop=False)
    if df.index.has_duplicates:
        raise CadxDataError("duplicate nodule_id", path=csv, field="nodule_id")
    absent = sorted(set(ids.tolist()) - set(df.index))
    if absent:
        raise CadxDataError(f"{len(absent)} nodule ids of the npz are not in the CSV (e.g. {absent[0]})",
                            path=csv, field="nodule_id")

    # Ratings → (N, 4) per attribute, out-of-range values set to NaN.
    rows = df.loc[ids]
    ratings: dict[str, np.ndarray] = {}
    invalid = 0
    for a in (*ATTRIBUTES, "malignancy"):
        r = rows[[f"{a}_{k}" for k in range(1, READERS + 1)]].to_numpy(dtype=float)
        lo, hi = RANGES[a]
        bad = np.isfinite(r) & ((r < lo) | (r > hi))
        invalid += int(bad.sum())
        r[bad] = np.nan
        ratings[a] = r
    n_readers = np.isfinite(ratings["malignancy"]).sum(axis=1)
    reduce = np.nanmean if aggregate == "mean" else np.nanmedian
    with warnings.catch_warnings():  # nodules without any rating of an attribute → NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        agg = {a: reduce(r, axis=1) for a, r in ratings.items()}
        if attribute_aggregate is not None and attribute_aggregate != aggregate:  # attributes only (A.6 heads)
            reduce_a = np.nanmean if attribute_aggregate == "mean" else np.nanmedian
            agg.update({a: reduce_a(ratings[a], axis=1) for a in ATTRIBUTES})

    offsets, pad_fracs = hu_offsets(images)
    cols = {c: rows[c].tolist() for c in ("patient_id", "pixel_spacing_mm", "equiv_diameter_px", "slice_z_mm",
                                          "study_uid", "series_uid") if c in rows.columns}
    studies = []
    for i, nid in enumerate(ids.tolist()):
        row = {c: v[i] for c, v in cols.items()}
        m = float(agg["malignancy"][i])
        if n_readers[i] == 0 or not np.isfinite(m):
            continue
        if labelling == "mtmr":
            if m == 3.0:
                continue
            label: str | None = "benign" if m < 3.0 else "malignant"
        else:
            label = None
        raw = {a: float(agg[a][i]) for a in ATTRIBUTES}
        attrs = {a: _rescale(v, *RANGES[a]) for a, v in raw.items()} if rescale else dict(raw)
        offset, pad_frac = int(offsets[i]), float(pad_fracs[i])
        sp = float(row["pixel_spacing_mm"])
        diam = float(row["equiv_diameter_px"])
        studies.append(Study(
            study_id=str(nid), patient_id=str(row["patient_id"]),
            images={"image": LazyImage(_crop_loader(images, i, offset, sp), f"{npz}[{i}]")},
            label=label, attributes=attrs,
            metadata={
                "malignancy": m, "malignancy_score": _rescale(m, 1, 5), "attributes_raw": raw,
                "ratings": {a: [None if not np.isfinite(v) else float(v) for v in ratings[a][i]]
                            for a in ratings},
                "n_readers": int(n_readers[i]), "hu_offset": offset, "padding_fraction": pad_frac,
                "diameter_px": diam, "diameter_mm": diam * sp, "pixel_spacing_mm": sp,
                "slice_z_mm": _float(row.get("slice_z_mm")), "study_uid": str(row.get("study_uid", "")),
                "series_uid": str(row.get("series_uid", "")), "source_index": i,
            }))
    info: dict[str, Any] = {"labelling": labelling, "aggregate": aggregate, "invalid_ratings": invalid,
                            "hu_crops": int(sum(s.metadata["hu_offset"] == 0 for s in studies))}
    if attribute_aggregate is not None:
        info["attribute_aggregate"] = attribute_aggregate
    if rescale:
        info["attribute_ranges"] = {a: list(RANGES[a]) for a in ATTRIBUTES}
    classes = ["benign", "malignant"] if labelling == "mtmr" else []
    return Cohort(studies, classes=classes, name="lidc" if labelling == "mtmr" else "lidc-all",
                  source=str(root), info=info)


def _crop_loader(images: np.ndarray, i: int, offset: int, spacing: float) -> Callable[[], ImageData]:
    def load() -> ImageData:
        return ImageData(to_hu(images[i], offset), (spacing, spacing), meta={"hu_offset": offset})
    return load


def _rescale(v: float, lo: float, hi: float) -> float:
    return (v - lo) / (hi - lo) if np.isfinite(v) else float("nan")


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None
