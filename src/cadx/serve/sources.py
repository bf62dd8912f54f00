"""Where the worklist's studies come from: a folder of studies, a cadx manifest CSV, a PACS (DICOMweb) or an
upload; and the one rule for serving files: only from the configured roots.

A study's id is a hash of where it comes from (``folder:<resolved path>``, ``manifest:<csv>#<study_id>``,
``pacs:<url>#<StudyInstanceUID>``, ``upload:<sha1 of the bytes>``), 16 hex digits: stable across restarts, and
never a path, so no URL can name a file.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from cadx.data.datasets.manifest import load_manifest
from cadx.dicom import pacs
from cadx.errors import CadxDataError

__all__ = ["IMAGE_SUFFIXES", "Found", "dicom_upload", "fetch_pacs_study", "folder_studies", "inside",
           "manifest_studies", "pacs_studies", "study_id"]

IMAGE_SUFFIXES = (".dcm", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif",
                  ".tiff", ".bmp", ".npy")
_NOT_IMAGES = ("SEG", "SR", "PR", "KO", "RTSTRUCT", "DOC")


@dataclass
class Found:
    """A study as a source lists it (see :class:`cadx.serve.store.StudyRow` for the fields)."""

    id: str
    source: str
    path: str = ""
    remote: str = ""
    patient: str = ""
    date: str = ""
    mask: str = ""
    box: str = ""
    label: str = ""
    covariates: dict[str, float] = field(default_factory=dict)

    def row_fields(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "path": self.path, "remote": self.remote,
                "patient": self.patient, "date": self.date, "mask": self.mask, "box": self.box,
                "label": self.label, "covariates": json.dumps(self.covariates)}


def study_id(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def inside(path: str | Path, roots: list[Path]) -> bool:
    """True when ``path`` resolves (symlinks followed) to ``roots[i]`` or below one of them."""
    p = Path(path).resolve()
    for r in roots:
        rr = r.resolve()
        if p == rr or rr in p.parents:
            return True
    return False


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    if name.startswith(".") or "_mask" in name:
        return False
    if p.is_dir():
        return any(f.is_file() for f in p.iterdir())
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def _stem(p: Path) -> str:
    name = p.name
    for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def folder_studies(root: Path) -> list[Found]:
    """Every study directly inside ``root``: each non-empty sub-folder (a DICOM series) and each image file
    (:data:`IMAGE_SUFFIXES`; names holding ``_mask`` and hidden names are skipped), sorted by name. The patient
    is the name without suffix (a DICOM folder's PatientID replaces it once read)."""
    out = []
    for p in sorted(root.iterdir()):
        if _is_image(p):
            rp = p.resolve()
            out.append(Found(study_id(f"folder:{rp}"), "folder", str(rp), patient=_stem(p)))
    return out


def manifest_studies(csv: Path) -> list[Found]:
    """The studies of a cadx manifest CSV (read by :func:`cadx.data.datasets.manifest.load_manifest`: a missing
    file or bad row raises its one-line CadxDataError), with their mask, box, label, ``date`` column (metadata)
    and numeric attributes (passed to the run as covariates)."""
    cohort = load_manifest(csv)
    out = []
    key = str(csv.resolve())
    for st in cohort:
        m = st.mask()
        out.append(Found(study_id(f"manifest:{key}#{st.study_id}"), "manifest", str(Path(st.image().source)),
                         patient=st.patient_id, date=str(st.metadata.get("date", "")),
                         mask=str(m.source) if m is not None else "",
                         box=" ".join(str(int(v)) for v in st.boxes[0]) if st.boxes else "",
                         label=st.label or "", covariates={k: float(v) for k, v in st.attributes.items()}))
    return out


def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def pacs_studies(url: str) -> list[Found]:
    """The PACS's studies (QIDO-RS through :func:`cadx.dicom.pacs.list_studies`); a PACS that is down raises its
    one-line CadxDataError. Studies holding only SEG/SR objects are skipped."""
    out = []
    for s in pacs.list_studies(url):
        mods = set(s.get("modalities") or [])
        if mods and mods <= set(_NOT_IMAGES):
            continue
        uid = s["StudyInstanceUID"]
        out.append(Found(study_id(f"pacs:{url.rstrip('/')}#{uid}"), "pacs", remote=uid, patient=s["PatientID"],
                         date=_date(s["StudyDate"])))
    return out


def fetch_pacs_study(url: str, study_uid: str, dest: Path) -> Path:
    """Retrieve the study's first image series (not SEG/SR/...) into ``dest/<series uid>/`` (WADO-RS) and return
    that folder; kept, so a study is fetched once. CadxDataError when the PACS is down or holds no image series."""
    series = [s for s in pacs.list_series(url, study_uid) if s["Modality"] not in _NOT_IMAGES]
    if not series:
        raise CadxDataError("the study holds no image series", path=url, field="series")
    uid = series[0]["SeriesInstanceUID"]
    folder = dest / uid
    if not (folder.is_dir() and any(folder.iterdir())):
        pacs.retrieve_series(url, study_uid, uid, folder)
    return folder


def dicom_upload(data: bytes, name: str, dest: Path) -> tuple[Found, Path]:
    """An uploaded file that must be DICOM: written to ``dest/<sha1>/<name>.dcm`` (a one-file series folder).
    Anything pydicom cannot read as DICOM raises CadxDataError "not a DICOM file" naming the upload."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, TypeError, OSError) as e:
        raise CadxDataError(f"not a DICOM file ({type(e).__name__}); upload one DICOM image",
                            path=Path(name).name or "upload", field="file") from None
    if "SOPInstanceUID" not in ds:
        raise CadxDataError("DICOM file without SOPInstanceUID", path=Path(name).name or "upload", field="file")
    digest = hashlib.sha1(data).hexdigest()
    folder = dest / digest[:16]
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "image.dcm"
    f.write_bytes(data)
    date = _date(str(ds.get("StudyDate", "") or ""))
    found = Found(study_id(f"upload:{digest}"), "upload", str(folder.resolve()),
                  patient=str(ds.get("PatientID", "") or ""), date=date)
    return found, folder
