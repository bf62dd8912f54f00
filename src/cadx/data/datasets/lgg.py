"""LGG brain MRI (TCGA-LGG, the public "LGG MRI segmentation" layout): one 3D study per patient.

Layout: ``<root>/kaggle_3m`` or root itself holds ``<patient_dir>/<patient_dir>_<slice>.tif`` (256×256 RGB
= pre-contrast, FLAIR, post-contrast) and ``<patient_dir>_<slice>_mask.tif`` (0/255), plus ``data.csv`` with
one row per patient (``Patient`` = ``TCGA_XX_NNNN``, the folder name without its ``_YYYYMMDD`` date).
Slices are sorted by their number (1, 2, …, 10, not lexically). The public set gives no voxel size, so
spacing is (1, 1, 1) — distances in voxels, not mm.

data.csv is numerically coded. ``neoplasm_histologic_grade`` takes only the values 1 and 2; TCGA-LGG holds
WHO grade II and III tumours coded alphabetically (G2, G3), so 1 → ``G2``, 2 → ``G3``; likewise
``histological_type`` 1/2/3 → astrocytoma / oligoastrocytoma / oligodendroglioma (alphabetical order of the
TCGA terms; this is an inference from the coding, the release documents no code book). Every other column
gives labels ``"1"``, ``"2"``, … (the codes); patients with an empty value are unlabelled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from cadx.data.datasets.base import register_dataset
from cadx.data.image import ImageData, LazyImage
from cadx.data.readers import read_image
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError
from cadx.registry import Options

CODE_NAMES: dict[str, dict[int, str]] = {
    "neoplasm_histologic_grade": {1: "G2", 2: "G3"},
    "histological_type": {1: "astrocytoma", 2: "oligoastrocytoma", 3: "oligodendroglioma"},
}
LABEL_ALIASES = {"grade": "neoplasm_histologic_grade"}
_SLICE = re.compile(r"^(?P<pid>.+)_(?P<z>\d+)(?P<mask>_mask)?$")


def _find_root(root: Path) -> Path:
    if (root / "kaggle_3m").is_dir():
        return root / "kaggle_3m"
    return root


def list_slices(folder: Path) -> tuple[list[Path], list[Path], list[int]]:
    """Image and mask files of one patient folder, sorted by slice number: ``(images, masks, numbers)``.

    Raises :class:`CadxDataError` when a slice lacks its mask (or the reverse), numbers repeat or the folder
    holds no slice.
    """
    imgs: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for p in folder.glob("*.tif"):
        m = _SLICE.match(p.stem)
        if not m or m.group("pid") != folder.name:
            continue
        (masks if m.group("mask") else imgs)[int(m.group("z"))] = p
    if not imgs:
        raise CadxDataError(f"no {folder.name}_<slice>.tif files", path=folder, field="slices")
    if set(imgs) != set(masks):
        odd = sorted(set(imgs) ^ set(masks))
        raise CadxDataError(f"slices without image/mask pair: {odd[:5]}", path=folder, field="mask")
    z = sorted(imgs)
    return [imgs[k] for k in z], [masks[k] for k in z], z


def read_image_volume(images: list[Path]) -> np.ndarray:
    """Slice TIFFs (each RGB, read as ``(3,H,W)``) → ``(3,Z,H,W)`` float32: pre-contrast, FLAIR, post-contrast.

    Raises :class:`CadxDataError` naming the slice when one is not RGB or differs in size from the first.
    """
    slices = [read_image(p).array for p in images]
    shape = slices[0].shape
    for p, a in zip(images, slices, strict=True):
        if a.ndim != 3 or a.shape[0] != 3 or a.shape != shape:
            raise CadxDataError(f"expected an RGB slice {shape}, got {a.shape}", path=p, field="image")
    return np.stack(slices, axis=1).astype(np.float32)


def read_mask_volume(masks: list[Path]) -> np.ndarray:
    """Mask TIFFs (each ``(H,W)`` 0/255, or RGB) → ``(1,Z,H,W)`` uint8 {0,1}."""
    slices = [read_image(p).array for p in masks]
    out = []
    for p, m in zip(masks, slices, strict=True):
        if m.ndim != 3 or m.shape[1:] != slices[0].shape[1:]:
            raise CadxDataError(f"mask shape {m.shape} differs from {slices[0].shape}", path=p, field="mask")
        out.append(m.max(axis=0) > 0)
    return np.stack(out)[None].astype(np.uint8)


def _code(v: Any) -> int | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if np.isfinite(f) and f == int(f) else None


def _label(column: str, value: Any) -> str | None:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    code = _code(value)
    if code is None:
        return str(value)
    return CODE_NAMES.get(column, {}).get(code, str(code))


SEQUENCES = ("pre", "flair", "post")
"""The three channels of a public LGG slice TIFF, in order: pre-contrast, FLAIR, post-contrast."""


class LGGOptions(Options):
    """``label``: ``grade`` (``neoplasm_histologic_grade``) or any other data.csv column. ``sequences``: which of
    ``pre``/``flair``/``post`` become the image channels, in the given order (A.3's FLAIR-only network:
    ``[flair]`` with ``input.channels: 3`` for the neighbouring FLAIR slices as channels 1 and 3)."""

    label: str = "grade"
    sequences: list[str] = Field(default_factory=lambda: list(SEQUENCES))


@register_dataset("lgg", "LGG brain MRI (TCGA): 3-channel volumes, FLAIR tumour masks, grade/genomic labels",
                  options=LGGOptions)
def load(root: Path, *, label: str, sequences: list[str] | None = None) -> Cohort:
    """Load the LGG folder: one study per patient folder.

    Option ``label`` = ``grade`` (default, ``neoplasm_histologic_grade`` → ``G2``/``G3``) or any data.csv
    column (``histological_type``, ``RNASeqCluster``, ``death01``, …). Study: ``study_id`` = folder name,
    ``patient_id`` = ``TCGA_XX_NNNN``, image ``(3,Z,256,256)`` float32, mask ``(1,Z,256,256)`` uint8,
    spacing (1,1,1); ``metadata``: every data.csv field (numbers as float, empty as None), ``folder``,
    ``slices`` (the slice numbers), ``n_slices``. Folders without a data.csv row are unlabelled. ``sequences``
    selects and orders the image channels (default all three).
    """
    seq = list(SEQUENCES) if sequences is None else [str(x).lower() for x in sequences]
    bad = [x for x in seq if x not in SEQUENCES]
    if not seq or bad or len(set(seq)) != len(seq):
        raise CadxConfigError(f"lgg: option sequences must be distinct names out of {list(SEQUENCES)}, got "
                              f"{sequences!r}")
    channels = [SEQUENCES.index(x) for x in seq]
    base = _find_root(Path(root))
    csv = base / "data.csv"
    if not csv.is_file():
        raise CadxDataError("missing data.csv", path=csv, field="root")
    df = pd.read_csv(csv)
    if "Patient" not in df.columns:
        raise CadxDataError(f"no Patient column (has {list(df.columns)})", path=csv, field="Patient")
    if df["Patient"].duplicated().any():
        raise CadxDataError(f"duplicate patient {df['Patient'][df['Patient'].duplicated()].iloc[0]}", path=csv,
                            field="Patient")
    column = LABEL_ALIASES.get(label, label)
    if column not in df.columns or column == "Patient":
        raise CadxConfigError(f"lgg: option label must be grade or a data.csv column, got {column!r} "
                              f"(columns: {[c for c in df.columns if c != 'Patient']})")
    rows = {str(r["Patient"]): r for r in df.to_dict("records")}
    folders = sorted(d for d in base.iterdir() if d.is_dir() and _SLICE.match(d.name + "_0"))
    if not folders:
        raise CadxDataError("no patient folders", path=base, field="root")
    studies = []
    unmatched = []
    for d in folders:
        pid = next((p for p in rows if d.name == p or d.name.startswith(p + "_")), None)
        imgs, masks, z = list_slices(d)
        meta: dict[str, Any] = {"folder": d.name, "slices": z, "n_slices": len(z)}
        lab: str | None = None
        if pid is None:
            unmatched.append(d.name)
            pid = d.name
        else:
            row = rows[pid]
            meta.update({str(k): _meta_value(v) for k, v in row.items() if k != "Patient"})
            lab = _label(column, row[column])
        studies.append(Study(
            study_id=d.name, patient_id=pid, label=lab,
            images={"image": LazyImage(_loader(imgs, masks, 0, channels), str(d))},
            masks={"mask": LazyImage(_loader(imgs, masks, 1), str(d))}, metadata=meta))
    names = CODE_NAMES.get(column)
    present = {s.label for s in studies if s.label is not None}
    classes = ([n for n in names.values() if n in present] if names else
               sorted(present, key=lambda s: (_code(s) is None, _code(s) or 0, s)))
    return Cohort(studies, classes=classes, name=f"lgg:{column}", source=str(base),
                  info={"label_column": column, "unmatched_folders": unmatched, "spacing_known": False})


def _meta_value(v: Any) -> Any:
    if isinstance(v, float | int | np.integer | np.floating):
        f = float(v)
        return f if np.isfinite(f) else None
    return None if v is None or (isinstance(v, str) and not v.strip()) else v


def _loader(images: list[Path], masks: list[Path], which: int, channels: list[int] | None = None
            ) -> Callable[[], ImageData]:
    """``which`` 0 → the image volume (``channels`` of it, all when None), 1 → the mask volume (checked to match
    the image slice count)."""
    def load() -> ImageData:
        if which == 0:
            arr = read_image_volume(images)
            if channels is not None and channels != list(range(arr.shape[0])):
                arr = np.ascontiguousarray(arr[channels])
        else:
            arr = read_mask_volume(masks)
        return ImageData(arr, (1.0, 1.0, 1.0), meta={"folder": str(images[0].parent)})
    return load
