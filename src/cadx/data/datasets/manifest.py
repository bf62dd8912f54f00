"""The ``manifest`` dataset: any cohort described by a CSV file (the format :mod:`cadx.data.manifest_io` writes).

Columns: ``study_id, patient_id, path, label`` required (``label`` empty or a missing-value marker ``NaN``,
``NA``, ``N/A``, ``None``, ``null`` = unlabelled, never a class); optional ``mask`` (path), ``box``
(``"z0 y0 x0 z1 y1 x1"`` or ``"y0 x0 y1 x1"``, voxel indices, stop exclusive) or instead separate corner columns
(``x0,y0,z0,x1,y1,z1`` / ``x0,y0,x1,y1`` or ``xmin..zmax``, any column order; a partial set is an error) and
``split`` (train/val/test), ``calipers`` (``"x1 y1; x2 y2; ..."`` ultrasound caliper centres in image pixels,
x = column, kept as ``metadata["calipers"]`` = ``[[x, y], ...]``; see :mod:`cadx.data.calipers`). Every other
column whose non-empty values are all numbers is an attribute
(empty / ``nan`` = missing); a column with no numeric value goes to ``metadata`` (``cadx datasets check`` warns
unless it is listed in ``metadata_columns``); a column mixing numbers and text is an error. Relative paths are
relative to the CSV's folder. Everything is validated up front; errors name the CSV, the field and the row (CSV
line number). Images and masks are opened only by :mod:`cadx.data.check`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from cadx.data.calipers import parse_calipers
from cadx.data.datasets.base import DATASETS, register_dataset
from cadx.data.image import ImageData, LazyImage
from cadx.data.readers import read_image
from cadx.data.study import Cohort, Study
from cadx.errors import CadxDataError
from cadx.registry import Options, TextList

REQUIRED = ("study_id", "patient_id", "path", "label")
OPTIONAL = ("mask", "box", "split", "calipers")
MISSING = ("", "nan", "na", "n/a", "none", "null")


class ManifestOptions(Options):
    """``allow_empty_masks`` (default false: loading an all-zero mask raises, field ``mask``), ``classes`` (label
    order), ``metadata_columns`` (extra columns kept as text), ``check_patient_labels`` (default true: one patient
    with two labels is an error)."""

    allow_empty_masks: bool = False
    classes: TextList = None
    metadata_columns: TextList = None
    check_patient_labels: bool = True


def _image(path: Path) -> LazyImage:
    return LazyImage(lambda: read_image(path), str(path))


def _mask(path: Path, allow_empty: bool) -> LazyImage:
    def load() -> ImageData:
        img = read_image(path)
        if not allow_empty and not np.any(img.array):
            raise CadxDataError("mask is empty (all zero); pass allow_empty_masks=true to accept it",
                                path=path, field="mask")
        return img

    return LazyImage(load, str(path))


def _number(text: str) -> float | None:
    """Float value, ``nan`` for missing markers, None when not a number."""
    t = text.strip()
    if t.lower() in MISSING:
        return math.nan
    try:
        return float(t)
    except ValueError:
        return None


def _parse_box(text: str, where: str, csv_path: Path) -> tuple[int, ...]:
    parts = text.replace(",", " ").split()
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise CadxDataError(f"{where}: box {text!r} is not numbers", path=csv_path, field="box") from None
    if len(vals) not in (4, 6) or any(v != int(v) for v in vals):
        raise CadxDataError(f"{where}: box {text!r} must be 4 or 6 integers (starts then stops)", path=csv_path,
                            field="box")
    box = tuple(int(v) for v in vals)
    n = len(box) // 2
    if any(b < 0 for b in box) or any(box[i] >= box[i + n] for i in range(n)):
        raise CadxDataError(f"{where}: box {text!r} needs 0 <= start < stop on every axis", path=csv_path,
                            field="box")
    return box


#: Box corner column sets (array order of the Study box: starts then stops, z/y/x), 3D first.
_CORNERS = ({"z0": 0, "y0": 1, "x0": 2, "z1": 3, "y1": 4, "x1": 5},
            {"zmin": 0, "ymin": 1, "xmin": 2, "zmax": 3, "ymax": 4, "xmax": 5},
            {"y0": 0, "x0": 1, "y1": 2, "x1": 3},
            {"ymin": 0, "xmin": 1, "ymax": 2, "xmax": 3})


def _box_columns(header: list[str], csv_path: Path) -> tuple[str, ...]:
    """The corner columns in Study box order (``z0 y0 x0 z1 y1 x1`` or ``y0 x0 y1 x1``, or ``*min/*max``), in any
    column order; ``()`` when there are none. Some but not all corners of a set is an error (field ``box``)."""
    low = {h.lower(): h for h in header}
    for names in _CORNERS:
        if all(n in low for n in names):
            return tuple(low[n] for n in sorted(names, key=names.__getitem__))
    for names in _CORNERS[:2]:
        have = [n for n in names if n in low]
        two_d = {"y0", "x0", "y1", "x1"} if "y0" in names else {"ymin", "xmin", "ymax", "xmax"}
        if have and not set(have) <= two_d:
            missing = [n for n in names if n not in low]
            raise CadxDataError(f"box corner columns incomplete: missing {missing}", path=csv_path, field="box")
    for names in _CORNERS[2:]:
        have = [n for n in names if n in low]
        if have:
            missing = [n for n in names if n not in low]
            raise CadxDataError(f"box corner columns incomplete: missing {missing}", path=csv_path, field="box")
    return ()


def _corner_box(r: dict[str, str], cols: tuple[str, ...], where: str, csv_path: Path) -> tuple[int, ...] | None:
    if not cols:
        return None
    values = [(r.get(c) or "").strip() for c in cols]
    if all(v.lower() in MISSING for v in values):
        return None
    missing = [c for c, v in zip(cols, values, strict=True) if v.lower() in MISSING]
    if missing:
        raise CadxDataError(f"{where}: box incomplete, no value in {missing}", path=csv_path, field="box")
    return _parse_box(" ".join(values), where, csv_path)


def _column_kinds(rows: list[dict[str, str]], extra: list[str], forced_meta: set[str],
                  csv_path: Path) -> dict[str, str]:
    """``column → "attribute" | "metadata"``; errors on a column mixing numbers and text."""
    kinds = {}
    for col in extra:
        if col in forced_meta:
            kinds[col] = "metadata"
            continue
        numeric, text_row = False, None
        for i, r in enumerate(rows):
            v = _number(r.get(col) or "")
            if v is None:
                text_row = text_row if text_row is not None else i
            elif not math.isnan(v):
                numeric = True
        if not numeric:
            kinds[col] = "metadata"
        elif text_row is not None:
            r = rows[text_row]
            raise CadxDataError(f"row {text_row + 2} (study_id {r.get('study_id')!r}): non-numeric value "
                                f"{r[col]!r} in attribute column (list it in metadata_columns if it is text)",
                                path=csv_path, field=col)
        else:
            kinds[col] = "attribute"
    return kinds


def load_manifest(path: Path, **options: Any) -> Cohort:
    """Read a manifest CSV (or a folder holding ``manifest.csv``) into a :class:`Cohort`.

    Options: :class:`ManifestOptions` (validated here, so a direct call checks them like ``load_dataset``).
    """
    opts = DATASETS.options("manifest", options)
    assert isinstance(opts, ManifestOptions)
    path = Path(path)
    csv_path = path / "manifest.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise CadxDataError("manifest CSV not found", path=csv_path, field="path")
    allow_empty, check_labels, classes = opts.allow_empty_masks, opts.check_patient_labels, opts.classes
    forced_meta = set(opts.metadata_columns or [])
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise CadxDataError(f"not a readable CSV ({e})", path=csv_path, field="format") from None
    for col in REQUIRED:
        if col not in header:
            raise CadxDataError(f"missing required column (has {header})", path=csv_path, field=col)
    if len(set(header)) != len(header):
        raise CadxDataError(f"duplicate column names in {header}", path=csv_path, field="header")
    box_cols = _box_columns(header, csv_path)
    if box_cols and "box" in header:
        raise CadxDataError(f"both a 'box' column and corner columns {list(box_cols)}; keep one", path=csv_path,
                            field="box")
    extra = [c for c in header if c not in REQUIRED and c not in OPTIONAL and c and c not in box_cols]
    kinds = _column_kinds(rows, extra, forced_meta, csv_path)
    base = csv_path.parent
    studies: list[Study] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        line = i + 2
        sid = (r.get("study_id") or "").strip()
        pid = (r.get("patient_id") or "").strip()
        where = f"row {line} (study_id {sid!r})"
        if not sid:
            raise CadxDataError(f"row {line}: empty study_id", path=csv_path, field="study_id")
        if sid in seen:
            raise CadxDataError(f"{where}: duplicate study_id (first on row {seen[sid]})", path=csv_path,
                                field="study_id")
        seen[sid] = line
        if not pid:
            raise CadxDataError(f"{where}: empty patient_id", path=csv_path, field="patient_id")
        studies.append(_study(r, sid, pid, line, base, csv_path, kinds, allow_empty, box_cols))
    if classes is not None:
        unknown_labels = sorted({s.label for s in studies if s.label is not None} - set(classes))
        if unknown_labels:
            raise CadxDataError(f"labels {unknown_labels} are not among classes {classes}", path=csv_path,
                                field="label")
    cohort = Cohort(studies, classes=classes, name=csv_path.stem, source=str(csv_path),
                    info={"manifest": str(csv_path), "allow_empty_masks": allow_empty,
                          "text_columns": [c for c, k in kinds.items() if k == "metadata" and c not in forced_meta]})
    if check_labels:
        cohort.check_patient_labels()
    return cohort


def _resolve(value: str, base: Path, where: str, csv_path: Path, field: str) -> Path:
    p = Path(value.strip()).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise CadxDataError(f"{where}: file not found: {value.strip()!r} (resolved to {p})", path=csv_path,
                            field=field)
    return p


def _study(r: dict[str, str], sid: str, pid: str, line: int, base: Path, csv_path: Path,
           kinds: dict[str, str], allow_empty: bool, box_cols: tuple[str, ...]) -> Study:
    where = f"row {line} (study_id {sid!r})"
    raw_path = (r.get("path") or "").strip()
    if not raw_path:
        raise CadxDataError(f"{where}: empty path", path=csv_path, field="path")
    img_path = _resolve(raw_path, base, where, csv_path, "path")
    masks: dict[str, LazyImage] = {}
    if (r.get("mask") or "").strip():
        masks["mask"] = _mask(_resolve(r["mask"], base, where, csv_path, "mask"), allow_empty)
    boxes = [_parse_box(r["box"], where, csv_path)] if (r.get("box") or "").strip() else []
    corner_box = _corner_box(r, box_cols, where, csv_path)
    if corner_box is not None:
        boxes.append(corner_box)
    metadata: dict[str, Any] = {"row": line}
    split = (r.get("split") or "").strip().lower()
    if split:
        if split not in ("train", "val", "test"):
            raise CadxDataError(f"{where}: split {split!r} must be train, val or test", path=csv_path,
                                field="split")
        metadata["split"] = split
    if (r.get("calipers") or "").strip():  # thesis A.5: "x1 y1; x2 y2; ..." caliper centres in image pixels
        metadata["calipers"] = parse_calipers(r["calipers"], csv_path, where).tolist()
    attributes: dict[str, float] = {}
    for col, kind in kinds.items():
        value = (r.get(col) or "").strip()
        if kind == "metadata":
            if value:
                metadata[col] = value
            continue
        num = _number(value)
        if num is None or math.isinf(num):
            raise CadxDataError(f"{where}: attribute value {value!r} is not a finite number", path=csv_path,
                                field=col)
        if not math.isnan(num):
            attributes[col] = num
    label_text = (r.get("label") or "").strip()
    label = None if label_text.lower() in MISSING else label_text  # NaN / NA / None never become a class
    return Study(sid, pid, images={"image": _image(img_path)}, label=label, attributes=attributes,
                 masks=masks, boxes=boxes, metadata=metadata)


@register_dataset("manifest", "any cohort described by a manifest CSV (study_id, patient_id, path, label, ...)",
                  options=ManifestOptions)
def load(root: Path, **options: Any) -> Cohort:
    """Registry entry: ``root`` is the CSV file or a folder holding ``manifest.csv``; see :func:`load_manifest`."""
    return load_manifest(Path(root), **options)

