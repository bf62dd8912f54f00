"""Identifiers a DICOM object needs before it can go to a PACS or be referenced by a SEG/SR.

Some de-identified data (e.g. ``shared/data/ct_examples/example_ct_dicom``, TotalSegmentator's test CT) blank
SOPClassUID, SOPInstanceUID, StudyInstanceUID and SeriesInstanceUID. A PACS refuses such files ("missing
StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID") and a SEG cannot reference them.
:func:`complete_identifiers` fills only the blank ones: SOP class/instance from the file meta header
(MediaStorageSOPClassUID/MediaStorageSOPInstanceUID), study/series UIDs derived deterministically from ``seed``
(the same seed gives the same UIDs, so a test is reproducible), PatientID from ``patient_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cadx.errors import CadxDataError

__all__ = ["REQUIRED_UIDS", "complete_identifiers", "missing_identifiers", "save_by_sop_uid", "write_completed_series"]

#: The identifiers a referenced source image must carry.
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def missing_identifiers(ds: Dataset) -> list[str]:
    """Keywords of :data:`REQUIRED_UIDS` that are absent or blank in ``ds``."""
    return [k for k in REQUIRED_UIDS if not str(ds.get(k, "") or "").strip()]


def complete_identifiers(datasets: Sequence[Dataset], *, seed: str, patient_id: str | None = None) -> list[Dataset]:
    """Fill blank identifiers of one series in place (see the module docstring) and return ``datasets``.

    All datasets get the same study and series UID (those of the first non-blank one, else derived from
    ``seed``); PatientID is set to ``patient_id`` where blank (left blank when None). A blank SOP instance/class
    UID with no file meta value to copy → CadxDataError naming the field.
    """
    study = next((str(d.StudyInstanceUID) for d in datasets if str(d.get("StudyInstanceUID", "") or "")), None)
    series = next((str(d.SeriesInstanceUID) for d in datasets if str(d.get("SeriesInstanceUID", "") or "")), None)
    study = study or generate_uid(entropy_srcs=[seed, "study"])
    series = series or generate_uid(entropy_srcs=[seed, "series"])
    for i, ds in enumerate(datasets):
        meta = getattr(ds, "file_meta", None) or Dataset()
        for key, src in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(ds.get(key, "") or "").strip():
                value = str(meta.get(src, "") or "").strip()
                if not value:
                    raise CadxDataError(f"blank and no {src} in the file meta header to copy", path=f"dataset {i}",
                                        field=key)
                setattr(ds, key, value)
        if not str(ds.get("StudyInstanceUID", "") or "").strip():
            ds.StudyInstanceUID = study
        if not str(ds.get("SeriesInstanceUID", "") or "").strip():
            ds.SeriesInstanceUID = series
        if patient_id is not None and not str(ds.get("PatientID", "") or "").strip():
            ds.PatientID = patient_id
    return list(datasets)


def write_completed_series(files: Sequence[str | Path], dest: str | Path, *, seed: str,
                           patient_id: str | None = None) -> list[Path]:
    """Copy the DICOM ``files`` of one series into ``dest`` with :func:`complete_identifiers` applied (pixel data
    untouched, same transfer syntax); returns the new paths (``<SOPInstanceUID>.dcm``) in input order."""
    dss = []
    for f in files:
        try:
            dss.append(pydicom.dcmread(f))
        except (OSError, pydicom.errors.InvalidDicomError) as e:
            raise CadxDataError(f"not a readable DICOM file ({type(e).__name__})", path=f, field="file") from e
    complete_identifiers(dss, seed=seed, patient_id=patient_id)
    return save_by_sop_uid(dss, dest)


def save_by_sop_uid(datasets: Sequence[Dataset], dest: str | Path) -> list[Path]:
    """Write each dataset as ``dest/<SOPInstanceUID>.dcm`` (a DICOM file with its meta header), in the given order;
    returns the paths. ``dest`` is created."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for ds in datasets:
        p = dest / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out
