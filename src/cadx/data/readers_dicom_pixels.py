"""Low-level DICOM access for the readers: safe ``dcmread``, numeric tags, fast pixel decoding, rescale.

Uncompressed little-endian grayscale frames are viewed with ``np.frombuffer`` instead of pydicom's pixel
handlers; grayscale JPEG 2000 frames are decoded with imagecodecs (which releases the GIL, so a thread pool
overlaps them); everything else (JPEG baseline/lossless, JPEG-LS, RLE, deflate, big endian, colour) goes
through ``Dataset.pixel_array`` (pydicom + pylibjpeg). Decoding errors become CadxDataError naming the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from cadx.errors import CadxDataError

_HEADER_TAGS = ["SeriesInstanceUID", "SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                "InstanceNumber"]
_NATIVE_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_J2K = (JPEG2000, JPEG2000Lossless)


def workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _read_legacy(path: Path, header_only: bool) -> Dataset | None:
    """A file without preamble / file meta (old ACR-NEMA style), or None when it does not parse as DICOM.

    The transfer syntax is set from the encoding pydicom detected, so pixel decoding works."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=header_only)
    except Exception:
        return None
    if "SOPClassUID" not in ds and "PixelData" not in ds:
        return None
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def dcmread(path: Path, header_only: bool = False) -> Dataset:
    """``pydicom.dcmread`` with its errors turned into :class:`CadxDataError` naming ``path``.

    Files lacking the ``DICM`` preamble are read with ``force=True`` when they carry a SOPClassUID or pixel
    data; anything else is CadxDataError field ``format``."""
    try:
        with warnings.catch_warnings():  # pydicom warns on damaged files; the damage is reported as an error
            warnings.simplefilter("ignore")
            if header_only:
                return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            return pydicom.dcmread(path)
    except InvalidDicomError:
        legacy = _read_legacy(path, header_only)
        if legacy is None:
            raise CadxDataError("not a DICOM file (no 'DICM' preamble and no DICOM dataset)", path=path,
                                field="format") from None
        return legacy
    except Exception as e:  # truncated headers surface as EOFError, struct.error, OSError, ...
        raise CadxDataError(f"unreadable DICOM header ({type(e).__name__}: {e})", path=path,
                            field="header") from None


def is_dicom(path: Path) -> bool:
    """True for files with the ``DICM`` preamble marker (cheap check used when scanning folders)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False

def floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray | None:
    """Tag ``keyword`` as ``n`` finite float64 values, None when absent; CadxDataError (field = keyword) if bad."""
    v = ds.get(keyword)
    if v is None:
        return None
    try:
        arr = np.asarray([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        raise CadxDataError(f"not numeric: {v!r}", path=path, field=keyword) from None
    if arr.size != n or not np.isfinite(arr).all():
        raise CadxDataError(f"expected {n} finite numbers, got {v!r}", path=path, field=keyword)
    return arr


def need_floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    """Like :func:`floats` but the tag must be present."""
    arr = floats(ds, keyword, n, path)
    if arr is None:
        raise CadxDataError("missing", path=path, field=keyword)
    return arr


def frame_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values ``(F, Y, X)`` or ``(F, Y, X, S)`` (one frame → F = 1), before rescaling."""
    if "PixelData" not in ds:
        what = ds.get("SOPClassUID")
        raise CadxDataError(f"no pixel data (SOP class {getattr(what, 'name', what)})", path=path,
                            field="PixelData")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.get("BitsAllocated", 0))
    if int(ds.get("Rows", 0) or 0) < 1 or int(ds.get("Columns", 0) or 0) < 1:
        raise CadxDataError(f"empty image: {ds.get('Rows')} x {ds.get('Columns')}", path=path,
                            field="Rows/Columns")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts in _NATIVE_LE and spp == 1 and bits in (8, 16, 32) and "PixelRepresentation" in ds:
        dtype = np.dtype(f"{'i' if int(ds.PixelRepresentation) else 'u'}{bits // 8}").newbyteorder("<")
        n = frames * int(ds.Rows) * int(ds.Columns)
        buf = ds.PixelData
        want = n * dtype.itemsize
        if len(buf) not in (want, want + 1):  # +1: the pad byte of an odd length
            why = "truncated?" if len(buf) < want else "Rows/Columns/NumberOfFrames disagree with it"
            raise CadxDataError(f"pixel data has {len(buf)} bytes, {want} expected for {frames} frame(s) of "
                                f"{int(ds.Rows)}x{int(ds.Columns)} ({why})", path=path, field="pixel data")
        arr = np.frombuffer(buf, dtype=dtype, count=n).reshape(frames, int(ds.Rows), int(ds.Columns))
        stored = int(ds.get("BitsStored", bits))
        if bits == 16 and stored < 16:  # mask unused high bits (overlays), sign-extend signed data
            wide = arr.astype(np.int32) & ((1 << stored) - 1)
            if dtype.kind == "i":
                wide = (wide ^ (1 << (stored - 1))) - (1 << (stored - 1))
            arr = wide.astype(np.int16 if dtype.kind == "i" else np.uint16)
        return arr
    if ts in _J2K and spp == 1 and bits in (8, 16):
        j2k = _j2k_frames(ds, frames, bits)
        if j2k is not None:
            return j2k
    try:
        decoded = np.asarray(ds.pixel_array)
    except Exception as e:  # codec missing, truncated or corrupt stream
        raise CadxDataError(f"cannot decode pixel data ({type(e).__name__}: {e})", path=path,
                            field="pixel data") from None
    return decoded[None] if frames == 1 else decoded


def _j2k_frames(ds: Dataset, frames: int, bits: int) -> np.ndarray | None:
    """Grayscale JPEG 2000 frames decoded with imagecodecs (releases the GIL, so threads overlap), stored
    dtype per PixelRepresentation and sign-extended from BitsStored; None to fall back to pydicom."""
    try:
        import imagecodecs  # optional: compressed DICOM transfer syntaxes

        out = [imagecodecs.jpeg2k_decode(f) for f in generate_frames(ds.PixelData, number_of_frames=frames)]
    except Exception:
        return None
    if len(out) != frames or any(o.shape != (int(ds.Rows), int(ds.Columns)) or o.itemsize * 8 != bits
                                 for o in out):
        return None
    arr = np.stack(out)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored = int(ds.get("BitsStored", bits))
    if signed and arr.dtype.kind == "u":
        arr = arr.view(f"i{bits // 8}")
        if stored < bits:
            wide = arr.astype(np.int32) & ((1 << stored) - 1)
            arr = ((wide ^ (1 << (stored - 1))) - (1 << (stored - 1))).astype(arr.dtype)
    elif not signed and arr.dtype.kind == "i":
        return None  # unusual: let pydicom apply its corrections
    return arr


def rescale(arr: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    out = arr.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def rescale_of(ds: Dataset) -> tuple[float, float] | None:
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(seq)
        if groups and "PixelValueTransformationSequence" in groups[0]:
            pvt = groups[0].PixelValueTransformationSequence[0]
            return float(pvt.get("RescaleSlope", 1) or 1), float(pvt.get("RescaleIntercept", 0) or 0)
    return None


def dicom_meta(ds: Dataset, source: Path, **extra: Any) -> dict[str, Any]:
    meta = {"source": str(source), "format": "dicom"}
    for key, kw in (("modality", "Modality"), ("patient_id", "PatientID"), ("study_uid", "StudyInstanceUID"),
                    ("series_uid", "SeriesInstanceUID"), ("series_description", "SeriesDescription"),
                    ("photometric", "PhotometricInterpretation")):
        v = ds.get(kw)
        if v not in (None, ""):
            meta[key] = str(v)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None:
        meta["transfer_syntax"] = str(ts)
    meta.update(extra)
    return meta
