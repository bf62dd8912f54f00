"""``write_seg``: a predicted lesion mask as a DICOM Segmentation (BINARY) referencing its source CT/MR series.

The mask is in the *source geometry*: ``(Z, Y, X)`` with ``Z`` = number of source images and ``(Y, X)`` =
(Rows, Columns), slice ``k`` being the ``k``-th source image in the order cadx's reader stacks a series
(:func:`cadx.data.readers_dicom.read_dicom_series`: ImagePositionPatient projected on the normal of
ImageOrientationPatient, ascending; InstanceNumber when positions are missing) — so a mask predicted on
``read_dicom_series(folder)`` goes straight in. :func:`source_order` gives that order.

The SEG (built by highdicom) shares the source's StudyInstanceUID, FrameOfReferenceUID and patient module, gets a
new SeriesInstanceUID/SOPInstanceUID, references the source series (ReferencedSeriesSequence) and, per frame, the
source image's SOPInstanceUID (DerivationImageSequence/SourceImageSequence). Frames of slices without lesion are
omitted (highdicom's ``omit_empty_frames``); an all-empty mask keeps every frame, so "no lesion" is still a valid
SEG with one segment. Single-frame source series only (a multi-frame source is refused with a readable error).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from cadx.dicom.identifiers import missing_identifiers
from cadx.errors import CadxDataError

__all__ = ["MANUFACTURER", "TYPE2_KEYWORDS", "check_sources", "prepared_sources", "source_order", "write_seg"]

#: Manufacturer written into SEG and SR objects.
MANUFACTURER = "cadx"
#: Patient/study attributes (DICOM type 2: present, may be empty) a derived object copies from its source.
TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _uid(seed: str | None, *parts: str) -> str:
    return generate_uid() if seed is None else generate_uid(entropy_srcs=[seed, *parts])


def _floats(ds: Dataset, keyword: str, n: int) -> np.ndarray | None:
    v = ds.get(keyword)
    if v is None or len(v) != n:
        return None
    return np.asarray([float(x) for x in v], dtype=np.float64)


def source_order(datasets: Sequence[Dataset]) -> list[int]:
    """Indices of ``datasets`` in cadx's stacking order: ascending ImagePositionPatient · normal (normal =
    row × column direction of ImageOrientationPatient), stable; InstanceNumber order when any image lacks position
    or orientation."""
    pos = [_floats(d, "ImagePositionPatient", 3) for d in datasets]
    iop = [_floats(d, "ImageOrientationPatient", 6) for d in datasets]
    if any(p is None for p in pos) or any(o is None for o in iop):
        return sorted(range(len(datasets)), key=lambda i: int(datasets[i].get("InstanceNumber", 0) or 0))
    o = iop[0]
    assert o is not None
    normal = np.cross(o[:3], o[3:])
    proj = np.array([float(p @ normal) for p in pos if p is not None])
    return [int(i) for i in np.argsort(proj, kind="stable")]


def check_sources(datasets: Sequence[Dataset], where: str = "source") -> None:
    """Refuse sources a SEG/SR cannot reference: none, blank UIDs, multi-frame images, several series/studies or
    frames of reference. CadxDataError names ``where`` (e.g. the series folder) and the field."""
    if not datasets:
        raise CadxDataError("no source images", path=where, field="source_datasets")
    for i, ds in enumerate(datasets):
        missing = missing_identifiers(ds)
        if missing:
            raise CadxDataError(f"image {i} has blank {', '.join(missing)} (see cadx.dicom.identifiers)",
                                path=where, field=missing[0])
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise CadxDataError("multi-frame source images are not supported; give a single-frame series",
                                path=where, field="NumberOfFrames")
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(d.get(key, "")) for d in datasets}
        if len(values) != 1:
            raise CadxDataError(f"source images disagree ({len(values)} values); give one series", path=where,
                                field=key)


def prepared_sources(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Copies of ``datasets`` with every absent :data:`TYPE2_KEYWORDS` attribute added empty (type 2 = "known to
    be unknown"), which highdicom needs to copy the patient and study modules; the caller's datasets are left
    untouched."""
    out = []
    for ds in datasets:
        c = copy.deepcopy(ds)
        for key in TYPE2_KEYWORDS:
            if key not in c:
                setattr(c, key, "")
        out.append(c)
    return out


def write_seg(source_datasets: Sequence[Dataset], mask: np.ndarray, *, algorithm_name: str,
              algorithm_version: str, label: str = "lesion", series_number: int = 901,
              uid_seed: str | None = None, where: str = "source") -> Dataset:
    """Build a BINARY DICOM SEG of ``mask`` over ``source_datasets`` (one single-frame series, any order).

    ``mask``: ``(Z, Y, X)`` bool or integer 0/1 in the source geometry (see the module docstring for the slice
    order); a wrong shape or other values → CadxDataError (field ``mask``). One segment, number 1, labelled
    ``label``: category "Morphologically abnormal structure", type "Lesion" (SNOMED CT), algorithm type AUTOMATIC
    with ``algorithm_name``/``algorithm_version`` (family "Artificial Intelligence"). ``uid_seed`` makes the new
    Series/SOP Instance UIDs deterministic (default: random). Returns the highdicom Segmentation (a pydicom
    Dataset; ``.save_as(path)`` writes it).
    """
    check_sources(source_datasets, where)
    order = source_order(source_datasets)
    sources = prepared_sources([source_datasets[i] for i in order])
    m = np.asarray(mask)
    want = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if m.shape != want:
        raise CadxDataError(f"shape {m.shape} is not the source geometry (slices, Rows, Columns) = {want}",
                            path=where, field="mask")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.integer) or not np.isin(m, (0, 1)).all():
            raise CadxDataError(f"values must be 0/1 (bool or integer), got dtype {m.dtype} with values "
                                f"{np.unique(m)[:5].tolist()}", path=where, field="mask")
        m = m.astype(bool)
    algo = hd.AlgorithmIdentificationSequence(name=algorithm_name, version=algorithm_version,
                                              family=codes.cid7162.ArtificialIntelligence)
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
        tracking_uid=_uid(uid_seed, "tracking"), tracking_id=f"{label} 1")
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=m.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=_uid(uid_seed, "seg-series"), series_number=series_number,
        sop_instance_uid=_uid(uid_seed, "seg-sop"), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm_name, software_versions=algorithm_version, device_serial_number="0",
        series_description=f"cadx {label} segmentation ({algorithm_name} {algorithm_version})"[:64],
        omit_empty_frames=bool(m.any()))
    seg.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names and labels outside Latin-1 survive
    return seg
