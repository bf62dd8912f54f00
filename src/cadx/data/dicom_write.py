"""Write CT volumes as DICOM (one file per slice, or one multi-frame file) for tests, benchmarks and cohorts.

Volumes are ``(Z, Y, X)`` in HU, spacing/origin in array order (z, y, x) mm, axial orientation
(row direction +x, column direction +y, slice normal +z). Stored values are int16 with
``RescaleSlope 1`` / ``RescaleIntercept -1024``, so HU outside ``[-31744, 33791]`` is clipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

INTERCEPT = -1024.0


def _uid(seed: str | None, *parts: object) -> str:
    """Deterministic UID from ``seed`` and ``parts`` (random when ``seed`` is None)."""
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[seed, *[str(p) for p in parts]])


def _ds(value: float) -> str:
    """Decimal String with the most precision DICOM's 16 characters allow."""
    return format_number_as_ds(float(value))


def _stored(volume_hu: np.ndarray) -> np.ndarray:
    v = np.asarray(volume_hu, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"volume must be (Z, Y, X), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("volume contains NaN or inf")
    info = np.iinfo(np.int16)
    return np.clip(np.rint(v - INTERCEPT), info.min, info.max).astype(np.int16)


def _base(sop_class: str, sop_uid: str, patient_id: str, study_uid: str, series_uid: str,
          series_description: str, rows: int, cols: int, for_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.SeriesDescription = series_description
    ds.SeriesNumber = 1
    ds.StudyID = "1"
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = 1
    ds.RescaleIntercept = int(INTERCEPT)
    ds.RescaleType = "HU"
    return ds


def write_dicom_series(volume_hu: np.ndarray, spacing: Sequence[float], folder: Path, *, patient_id: str,
                       study_uid: str | None = None, series_uid: str | None = None,
                       series_description: str = "", origin: Sequence[float] = (0.0, 0.0, 0.0),
                       uid_seed: str | None = None, shuffle_files: bool = False) -> list[Path]:
    """Write ``volume_hu`` ``(Z, Y, X)`` as a CT Image Storage series, one file per slice, into ``folder``.

    Slice ``k`` lies at ``origin_z + k * spacing_z``; ImagePositionPatient is (x, y, z). UIDs are derived from
    ``uid_seed`` (deterministic) or random when it is None. Files are ``slice_NNNN.dcm`` in slice order, or,
    with ``shuffle_files``, names whose sorted order is a fixed permutation of slice order (never identity
    for Z > 1). Returns the written paths in slice order.
    """
    stored = _stored(volume_hu)
    nz, ny, nx = stored.shape
    sz, sy, sx = (float(s) for s in spacing)
    oz, oy, ox = (float(o) for o in origin)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or _uid(uid_seed, "study", patient_id)
    series_uid = series_uid or _uid(uid_seed, "series", patient_id, series_description)
    for_uid = _uid(uid_seed, "for", patient_id, study_uid)
    if shuffle_files and nz > 1:
        # reversed-with-rotation permutation: deterministic, never the identity (plain reversal for Z = 2)
        shift = nz // 2 if nz > 2 else 0
        rank = [nz - 1 - ((k + shift) % nz) for k in range(nz)]
        names = [f"IM{r:05d}.dcm" for r in rank]
    else:
        names = [f"slice_{k:04d}.dcm" for k in range(nz)]
    paths = []
    for k in range(nz):
        sop = _uid(uid_seed, "sop", series_uid, k)
        ds = _base(CTImageStorage, sop, patient_id, study_uid, series_uid, series_description, ny, nx,
                   for_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        z = oz + k * sz
        ds.ImagePositionPatient = [_ds(ox), _ds(oy), _ds(z)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = _ds(z)
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.SliceThickness = _ds(sz)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_multiframe(volume_hu: np.ndarray, spacing: Sequence[float], path: Path, *, patient_id: str,
                     origin: Sequence[float] = (0.0, 0.0, 0.0), uid_seed: str | None = None,
                     per_frame_positions: bool = True, frame_order: Sequence[int] | None = None) -> Path:
    """Write ``volume_hu`` ``(Z, Y, X)`` as one Enhanced CT multi-frame file at ``path``.

    With ``per_frame_positions`` each frame carries its ImagePositionPatient in
    PerFrameFunctionalGroupsSequence (plus shared orientation and pixel measures); ``frame_order`` stores the
    slices in that order in the file (default: slice order), to test that readers sort frames by position.
    """
    stored = _stored(volume_hu)
    nz, ny, nx = stored.shape
    sz, sy, sx = (float(s) for s in spacing)
    oz, oy, ox = (float(o) for o in origin)
    order = list(range(nz)) if frame_order is None else [int(i) for i in frame_order]
    if sorted(order) != list(range(nz)):
        raise ValueError(f"frame_order must be a permutation of range({nz})")
    study_uid = _uid(uid_seed, "study", patient_id)
    series_uid = _uid(uid_seed, "mf-series", patient_id)
    ds = _base(EnhancedCTImageStorage, _uid(uid_seed, "mf-sop", patient_id), patient_id, study_uid,
               series_uid, "multiframe", ny, nx, _uid(uid_seed, "for", patient_id, study_uid))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = nz
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [_ds(sy), _ds(sx)]
    pm.SliceThickness = _ds(sz)
    po = Dataset()
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    pvt = Dataset()
    pvt.RescaleSlope = 1
    pvt.RescaleIntercept = int(INTERCEPT)
    pvt.RescaleType = "HU"
    shared.PixelMeasuresSequence = [pm]
    shared.PlaneOrientationSequence = [po]
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    if per_frame_positions:
        frames = []
        for k in order:
            fr = Dataset()
            pp = Dataset()
            pp.ImagePositionPatient = [_ds(ox), _ds(oy), _ds(oz + k * sz)]
            fr.PlanePositionSequence = [pp]
            frames.append(fr)
        ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.ascontiguousarray(stored[order]).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path

