"""A small DICOMweb client (QIDO-RS, WADO-RS, STOW-RS) over ``dicomweb-client``, for one PACS root URL.

``url`` is the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web`` (Orthanc) — a trailing slash is ignored.
Every failure (PACS down, refused connection, timeout, HTTP 4xx/5xx, a STOW that rejects an instance) raises
:class:`cadx.errors.CadxDataError` whose one-line message starts with the URL, e.g.
``http://127.0.0.1:9/dicom-web: QIDO studies: PACS not reachable (ConnectionError)``.
Nothing here logs patient data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from cadx.dicom.identifiers import save_by_sop_uid
from cadx.errors import CadxDataError

__all__ = ["client", "find", "list_series", "list_studies", "retrieve_series", "store"]

T = TypeVar("T")

#: Seconds before a request to the PACS is abandoned.
TIMEOUT = 30.0

_STUDY_FIELDS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyDescription",
                 "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
_SERIES_FIELDS = ("SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
                  "NumberOfSeriesRelatedInstances")
_INSTANCE_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality",
                    "InstanceNumber")


def _root(url: str) -> str:
    return url.rstrip("/")


def client(url: str, timeout: float = TIMEOUT) -> DICOMwebClient:
    """A ``DICOMwebClient`` for the DICOMweb root ``url`` (no authentication), without retries: dicomweb-client's
    default retries every failed request 5 times with exponential back-off, so a PACS that is down took 30 s to
    report; here it fails at once."""
    c = DICOMwebClient(url=_root(url), timeout=timeout)
    c.set_http_retry_params(retry=False)
    return c


def _call(url: str, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; turn transport and HTTP errors into one-line CadxDataErrors naming ``url`` and ``what``."""
    try:
        return fn()
    except requests.exceptions.HTTPError as e:
        code = e.response.status_code if e.response is not None else "?"
        reason = e.response.reason if e.response is not None else str(e)
        raise CadxDataError(f"PACS answered HTTP {code} {reason}", path=_root(url), field=what) from e
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise CadxDataError(f"PACS not reachable ({type(e).__name__})", path=_root(url), field=what) from e
    except requests.exceptions.RequestException as e:
        raise CadxDataError(f"request failed ({type(e).__name__}: {e})", path=_root(url), field=what) from e


def _value(item: dict[str, Any], keyword: str) -> Any:
    """The first value of ``keyword`` in a DICOM JSON object (PersonName → its Alphabetic string); None if absent."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    el = item.get(f"{tag:08X}")
    if not el or not el.get("Value"):
        return None
    v = el["Value"][0]
    if isinstance(v, dict):
        return v.get("Alphabetic")
    return v


def _values(item: dict[str, Any], keyword: str) -> list[Any]:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    el = item.get(f"{tag:08X}") if tag is not None else None
    return list(el.get("Value", [])) if el else []


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def list_studies(url: str, *, limit: int | None = None, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """QIDO-RS ``/studies``: every study of the PACS (up to ``limit``), sorted by StudyDate then UID.

    Returns one dict per study: ``{"StudyInstanceUID": str, "PatientID": str, "PatientName": str,
    "StudyDate": str ("YYYYMMDD", "" when absent), "StudyDescription": str, "modalities": list[str] (sorted,
    e.g. ["CT", "SEG", "SR"]), "n_series": int | None, "n_instances": int | None}`` (None when the PACS does not
    report the count). Empty PACS → ``[]``.
    """
    c = client(url, timeout)
    rows = _call(url, "QIDO studies", lambda: c.search_for_studies(fields=list(_STUDY_FIELDS), limit=limit,
                                                                     get_remaining=limit is None))
    out = []
    for r in rows:
        out.append({"StudyInstanceUID": str(_value(r, "StudyInstanceUID")),
                    "PatientID": str(_value(r, "PatientID") or ""),
                    "PatientName": str(_value(r, "PatientName") or ""),
                    "StudyDate": str(_value(r, "StudyDate") or ""),
                    "StudyDescription": str(_value(r, "StudyDescription") or ""),
                    "modalities": sorted({str(m) for m in _values(r, "ModalitiesInStudy")}),
                    "n_series": _int(_value(r, "NumberOfStudyRelatedSeries")),
                    "n_instances": _int(_value(r, "NumberOfStudyRelatedInstances"))})
    return sorted(out, key=lambda d: (d["StudyDate"], d["StudyInstanceUID"]))


def list_series(url: str, study_uid: str, *, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """QIDO-RS ``/studies/{study}/series``: ``[{"SeriesInstanceUID": str, "Modality": str, "SeriesDescription": str,
    "SeriesNumber": int | None, "n_instances": int | None}]`` sorted by SeriesNumber then UID; ``[]`` for an
    unknown study."""
    c = client(url, timeout)
    rows = _call(url, "QIDO series", lambda: c.search_for_series(study_instance_uid=study_uid,
                                                                   fields=list(_SERIES_FIELDS),
                                                                   get_remaining=True))
    out = [{"SeriesInstanceUID": str(_value(r, "SeriesInstanceUID")),
            "Modality": str(_value(r, "Modality") or ""),
            "SeriesDescription": str(_value(r, "SeriesDescription") or ""),
            "SeriesNumber": _int(_value(r, "SeriesNumber")),
            "n_instances": _int(_value(r, "NumberOfSeriesRelatedInstances"))} for r in rows]
    return sorted(out, key=lambda d: (d["SeriesNumber"] is None, d["SeriesNumber"] or 0, d["SeriesInstanceUID"]))


def find(url: str, study_uid: str, *, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """QIDO-RS ``/studies/{study}/instances``: every instance of the study as ``{"StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "InstanceNumber" (int | None)}``, sorted by
    (Modality, SeriesInstanceUID, InstanceNumber, SOPInstanceUID). Unknown study → ``[]``."""
    c = client(url, timeout)
    rows = _call(url, "QIDO instances", lambda: c.search_for_instances(study_instance_uid=study_uid,
                                                                        fields=list(_INSTANCE_FIELDS),
                                                                        get_remaining=True))
    out = [{"StudyInstanceUID": str(_value(r, "StudyInstanceUID") or study_uid),
            "SeriesInstanceUID": str(_value(r, "SeriesInstanceUID")),
            "SOPInstanceUID": str(_value(r, "SOPInstanceUID")),
            "SOPClassUID": str(_value(r, "SOPClassUID") or ""),
            "Modality": str(_value(r, "Modality") or ""),
            "InstanceNumber": _int(_value(r, "InstanceNumber"))} for r in rows]
    return sorted(out, key=lambda d: (d["Modality"], d["SeriesInstanceUID"], d["InstanceNumber"] or 0,
                                      d["SOPInstanceUID"]))


def retrieve_series(url: str, study_uid: str, series_uid: str, dest: str | Path, *,
                    timeout: float = TIMEOUT) -> list[Path]:
    """WADO-RS ``/studies/{study}/series/{series}``: write every instance to ``dest/<SOPInstanceUID>.dcm`` (as
    received: the PACS's stored transfer syntax, with a file meta header) and return the paths sorted by
    (InstanceNumber, SOPInstanceUID). ``dest`` is created. A series the PACS does not hold → CadxDataError
    (HTTP 404, or "no instances")."""
    c = client(url, timeout)
    what = f"WADO series {series_uid}"
    # transfer-syntax=* : as stored (the default asks for Explicit VR Little Endian, and a PACS that cannot
    # transcode, e.g. Debian's Orthanc with JPEG 2000, answers 500)
    datasets = _call(url, what, lambda: c.retrieve_series(study_uid, series_uid,
                                                          media_types=(("application/dicom", "*"),)))
    if not datasets:
        raise CadxDataError("no instances", path=_root(url), field=what)
    datasets = sorted(datasets, key=lambda d: (int(d.get("InstanceNumber", 0) or 0), str(d.SOPInstanceUID)))
    return save_by_sop_uid(datasets, dest)


def _as_datasets(datasets: Iterable[Dataset | str | Path]) -> list[Dataset]:
    out = []
    for d in datasets:
        if isinstance(d, Dataset):
            out.append(d)
        else:
            try:
                out.append(pydicom.dcmread(d))
            except (OSError, pydicom.errors.InvalidDicomError) as e:
                raise CadxDataError(f"not a readable DICOM file ({type(e).__name__})", path=d,
                                    field="store") from e
    return out


def store(url: str, datasets: Sequence[Dataset | str | Path], *, timeout: float = TIMEOUT) -> list[str]:
    """STOW-RS ``/studies``: send ``datasets`` (pydicom Datasets or DICOM file paths) in one request and return the
    SOPInstanceUIDs the PACS accepted (its ReferencedSOPSequence). An instance it rejects (FailedSOPSequence, or
    fewer accepted than sent) or a refused request → CadxDataError naming the URL; an empty ``datasets`` → ``[]``
    without a request."""
    dss = _as_datasets(datasets)
    if not dss:
        return []
    c = client(url, timeout)
    resp = _call(url, "STOW", lambda: c.store_instances(dss))
    failed = [str(f.get("ReferencedSOPInstanceUID", "?")) for f in (resp.get("FailedSOPSequence") or [])]
    if failed:
        raise CadxDataError(f"PACS rejected {len(failed)} of {len(dss)} instances (first {failed[0]})",
                            path=_root(url), field="STOW")
    accepted = [str(r.ReferencedSOPInstanceUID) for r in (resp.get("ReferencedSOPSequence") or [])]
    if len(accepted) < len(dss):
        # Orthanc answers 200 with empty sequences for a file it cannot index (e.g. blank UIDs): never a silent drop
        raise CadxDataError(f"PACS accepted {len(accepted)} of {len(dss)} instances (blank UIDs? see "
                            "cadx.dicom.identifiers)", path=_root(url), field="STOW")
    return accepted
