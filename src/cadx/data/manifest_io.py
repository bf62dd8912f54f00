"""Write a cohort as a manifest CSV (the reader is :mod:`cadx.data.datasets.manifest`)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from cadx.data.study import Cohort
from cadx.errors import CadxDataError
from cadx.utils import atomic_write_text

RESERVED = ("study_id", "patient_id", "path", "label", "mask", "box", "split")


def _rel(source: str, base: Path) -> str:
    p = Path(source)
    if not p.exists():
        raise CadxDataError("image is not a file on disk; only file-backed studies can be written",
                            path=source, field="path")
    try:
        return os.path.relpath(p.resolve(), base.resolve())
    except ValueError:  # different drive
        return str(p.resolve())


def write_manifest(cohort: Cohort, path: Path) -> Path:
    """Write ``study_id, patient_id, path, label, mask, box, split, <attributes...>``; paths relative to the CSV."""
    base = path.parent
    attrs = cohort.attribute_names()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*RESERVED, *attrs])
    for s in cohort:
        mask = s.mask()
        box = " ".join(str(int(v)) for v in s.boxes[0]) if s.boxes else ""
        w.writerow([s.study_id, s.patient_id, _rel(s.image().source, base), s.label or "",
                    _rel(mask.source, base) if mask is not None else "", box, s.metadata.get("split", ""),
                    *[("" if a not in s.attributes else repr(float(s.attributes[a]))) for a in attrs]])
    return atomic_write_text(path, buf.getvalue())
