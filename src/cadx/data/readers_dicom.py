"""DICOM readers: series folders, single files and (Enhanced) multi-frame files → :class:`ImageData`.

Geometry follows :mod:`cadx.data.image`: arrays are channel-first, spacing/origin in array order (z, y, x) mm,
``direction`` is the ITK direction matrix (columns = patient-space direction of the x, y, z index axes)
with both axes reversed into array order, ``D_arr = D_itk[::-1, ::-1]``.

Speed: each file is read once (``dcmread`` without decoding), headers come from that read, and
uncompressed little-endian grayscale frames are viewed with ``np.frombuffer`` instead of pydicom's pixel
handlers; compressed frames go through pydicom (pylibjpeg / openjpeg / RLE / deflate). File reads and
decoding run in a small thread pool (the codecs and file I/O release the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless

from cadx.data.image import ImageData
from cadx.errors import CadxDataError

#: Relative tolerance on slice gaps (fraction of the median gap) before a series counts as irregular.
GAP_RTOL = 0.05
#: Absolute tolerance on slice gaps in mm.
GAP_ATOL = 0.01
_HEADER_TAGS = ["SeriesInstanceUID", "SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                "InstanceNumber"]
_NATIVE_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_J2K = (JPEG2000, JPEG2000Lossless)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _dcmread(path: Path, header_only: bool = False) -> Dataset:
    """``pydicom.dcmread`` with its errors turned into :class:`CadxDataError` naming ``path``."""
    try:
        if header_only:
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        return pydicom.dcmread(path)
    except InvalidDicomError as e:
        raise CadxDataError(f"not a DICOM file ({e})", path=path, field="format") from None
    except Exception as e:  # truncated headers surface as EOFError, struct.error, OSError, ...
        raise CadxDataError(f"unreadable DICOM header ({type(e).__name__}: {e})", path=path,
                            field="header") from None


def _is_dicom(path: Path) -> bool:
    """True for files with the ``DICM`` preamble marker (cheap check used when scanning folders)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _candidate_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CadxDataError("is not a folder", path=folder, field="path")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.name.upper() != "DICOMDIR")
    return [p for p in files if _is_dicom(p)]


def list_dicom_series(folder: str | Path) -> dict[str, list[Path]]:
    """Group the DICOM files under ``folder`` (recursively) by SeriesInstanceUID.

    Only files with a DICOM preamble and a SeriesInstanceUID are listed; paths keep sorted-name order.
    Empty dict when there are none.
    """
    files = _candidate_files(Path(folder))
    with ThreadPoolExecutor(_workers()) as ex:
        headers = list(ex.map(lambda p: _dcmread(p, header_only=True), files))
    out: dict[str, list[Path]] = {}
    for p, ds in zip(files, headers, strict=True):
        uid = ds.get("SeriesInstanceUID")
        if uid:
            out.setdefault(str(uid), []).append(p)
    return out


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray | None:
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


def _frame_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values ``(F, Y, X)`` or ``(F, Y, X, S)`` (one frame → F = 1), before rescaling."""
    if "PixelData" not in ds:
        what = ds.get("SOPClassUID")
        raise CadxDataError(f"no pixel data (SOP class {getattr(what, 'name', what)})", path=path,
                            field="PixelData")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.get("BitsAllocated", 0))
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts in _NATIVE_LE and spp == 1 and bits in (8, 16, 32) and "PixelRepresentation" in ds:
        dtype = np.dtype(f"{'i' if int(ds.PixelRepresentation) else 'u'}{bits // 8}").newbyteorder("<")
        n = frames * int(ds.Rows) * int(ds.Columns)
        buf = ds.PixelData
        if len(buf) < n * dtype.itemsize:
            raise CadxDataError(f"pixel data has {len(buf)} bytes, {n * dtype.itemsize} expected (truncated?)",
                                path=path, field="pixel data")
        arr = np.frombuffer(buf, dtype=dtype, count=n).reshape(frames, int(ds.Rows), int(ds.Columns))
        if bits == 16 and int(ds.get("BitsStored", 16)) < 16:  # mask unused high bits, sign-extend
            stored = int(ds.BitsStored)
            arr = arr.astype(np.int32 if dtype.kind == "i" else np.uint16)
            if dtype.kind == "i":
                arr = ((arr & ((1 << stored) - 1)) ^ (1 << (stored - 1))) - (1 << (stored - 1))
            else:
                arr = arr & ((1 << stored) - 1)
        return arr
    if ts in _J2K and spp == 1 and bits in (8, 16):
        arr = _j2k_frames(ds, frames, bits)
        if arr is not None:
            return arr
    try:
        arr = ds.pixel_array
    except Exception as e:  # codec missing, truncated or corrupt stream
        raise CadxDataError(f"cannot decode pixel data ({type(e).__name__}: {e})", path=path,
                            field="pixel data") from None
    if frames == 1:
        arr = arr[None]
    return np.asarray(arr)


def _j2k_frames(ds: Dataset, frames: int, bits: int) -> np.ndarray | None:
    """Grayscale JPEG 2000 frames decoded with imagecodecs (releases the GIL, so threads overlap), stored
    dtype per PixelRepresentation and sign-extended from BitsStored; None to fall back to pydicom."""
    try:
        import imagecodecs

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


def _rescale(arr: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    out = arr.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def _rescale_of(ds: Dataset) -> tuple[float, float] | None:
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(seq)
        if groups and "PixelValueTransformationSequence" in groups[0]:
            pvt = groups[0].PixelValueTransformationSequence[0]
            return float(pvt.get("RescaleSlope", 1) or 1), float(pvt.get("RescaleIntercept", 0) or 0)
    return None


def _direction(row: np.ndarray, col: np.ndarray, normal: np.ndarray) -> tuple[float, ...]:
    d_itk = np.stack([row, col, normal], axis=1)  # columns: x, y, z index axes in (x, y, z) patient space
    return tuple(d_itk[::-1, ::-1].ravel().tolist())


def _z_spacing(proj: np.ndarray, where: Path, fallback: float | None) -> float:
    """Gap between sorted slice projections; errors on duplicates or irregular gaps (field IPP)."""
    if proj.size < 2:
        return float(fallback) if fallback else 1.0
    gaps = np.diff(proj)
    med = float(np.median(gaps))
    if med <= GAP_ATOL:
        raise CadxDataError(f"{proj.size} slices share a position (duplicate slices or several stacks)",
                            path=where, field="ImagePositionPatient")
    dev = float(np.abs(gaps - med).max())
    if dev > max(GAP_ATOL, GAP_RTOL * med):
        raise CadxDataError(f"irregular slice gaps: {gaps.min():.4g}–{gaps.max():.4g} mm (median {med:.4g})",
                            path=where, field="ImagePositionPatient")
    return med


def _meta(ds: Dataset, source: Path, **extra: Any) -> dict[str, Any]:
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


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> ImageData:
    """Read a DICOM series folder as a ``(1, Z, Y, X)`` float32 volume (HU for CT).

    Files are grouped by SeriesInstanceUID; with several series ``series_uid`` must pick one. Slices are sorted
    by ImagePositionPatient projected on the normal of ImageOrientationPatient; the z spacing comes from the
    positions (not SliceThickness) and irregular gaps or duplicate positions raise CadxDataError (field
    ``ImagePositionPatient``). Without positions, slices follow InstanceNumber and z spacing falls back to
    SpacingBetweenSlices / SliceThickness. Values are ``stored * RescaleSlope + RescaleIntercept`` per slice.
    A one-file series yields Z = 1.
    """
    folder = Path(folder)
    files = _candidate_files(folder)
    if not files:
        raise CadxDataError("no DICOM files found", path=folder, field="path")
    with ThreadPoolExecutor(_workers()) as ex:
        datasets = list(ex.map(_dcmread, files))
        groups: dict[str, list[int]] = {}
        for i, ds in enumerate(datasets):
            groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(i)
        if series_uid is None:
            if len(groups) > 1:
                listing = ", ".join(f"{u or '<none>'} ({len(v)} files)" for u, v in groups.items())
                raise CadxDataError(f"{len(groups)} series in the folder; pick one with series_uid: {listing}",
                                    path=folder, field="SeriesInstanceUID")
            series_uid = next(iter(groups))
        elif series_uid not in groups:
            raise CadxDataError(f"series {series_uid!r} not found (have {sorted(groups)})", path=folder,
                                field="SeriesInstanceUID")
        idx = groups[series_uid]
        dss = [datasets[i] for i in idx]
        paths = [files[i] for i in idx]
        order, proj, normal, row, col = _sort_slices(dss, paths)
        dss = [dss[i] for i in order]
        paths = [paths[i] for i in order]
        pixels = list(ex.map(lambda dp: _frame_pixels(*dp), zip(dss, paths, strict=True)))
    first = dss[0]
    shapes = {p.shape for p in pixels}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[0] != 1:
        raise CadxDataError(f"slices differ in shape or are multi-frame/colour: {sorted(shapes)}", path=folder,
                            field="Rows/Columns")
    vol = np.empty((len(dss), *pixels[0].shape[1:]), dtype=np.float32)
    for k, (ds, px) in enumerate(zip(dss, pixels, strict=True)):
        slope, intercept = _rescale_of(ds) or (1.0, 0.0)
        vol[k] = px[0]
        if slope != 1.0:
            vol[k] *= np.float32(slope)
        if intercept != 0.0:
            vol[k] += np.float32(intercept)
    sp = _floats(first, "PixelSpacing", 2, paths[0])
    sy, sx = (float(sp[0]), float(sp[1])) if sp is not None else (1.0, 1.0)
    fallback = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    if proj is not None:
        sz = _z_spacing(proj, folder, float(fallback) if fallback else None)
        ipp = _floats(first, "ImagePositionPatient", 3, paths[0])
        origin = tuple(float(v) for v in ipp[::-1])  # type: ignore[index]
        direction = _direction(row, col, normal)  # type: ignore[arg-type]
    else:
        sz = float(fallback) if fallback else 1.0
        origin, direction = None, None
    meta = _meta(first, folder, files=[str(p) for p in paths], positions_sorted=proj is not None)
    return ImageData(vol[None], (sz, sy, sx), origin, direction, meta)


def _sort_slices(dss: Sequence[Dataset], paths: Sequence[Path]) -> tuple[
        list[int], np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Order of slices, sorted projections on the normal, and normal / row / column cosines (None if absent)."""
    have = all("ImagePositionPatient" in d and "ImageOrientationPatient" in d for d in dss)
    if not have:
        order = sorted(range(len(dss)), key=lambda i: (int(dss[i].get("InstanceNumber", 0) or 0), str(paths[i])))
        return order, None, None, None, None
    iop = _floats(dss[0], "ImageOrientationPatient", 6, paths[0])
    row, col = iop[:3], iop[3:]  # type: ignore[index]
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 1e-3:
        raise CadxDataError(f"degenerate orientation {iop.tolist()}", path=paths[0],  # type: ignore[union-attr]
                            field="ImageOrientationPatient")
    normal = normal / np.linalg.norm(normal)
    iop_raw = list(dss[0].ImageOrientationPatient)
    for d, p in zip(dss[1:], paths[1:], strict=True):
        if list(d.ImageOrientationPatient) == iop_raw:
            continue
        other = _floats(d, "ImageOrientationPatient", 6, p)
        if float(np.abs(other - iop).max()) > 1e-3:  # type: ignore[operator]
            raise CadxDataError(f"orientation {other.tolist()} differs from the first slice's "  # type: ignore[union-attr]
                                f"{iop.tolist()}", path=p, field="ImageOrientationPatient")  # type: ignore[union-attr]
    pos = np.stack([_floats(d, "ImagePositionPatient", 3, p) for d, p in zip(dss, paths, strict=True)])
    proj = pos @ normal
    order = list(np.argsort(proj, kind="stable"))
    return [int(i) for i in order], proj[order], normal, row, col


def _per_frame_positions(ds: Dataset, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(positions (F, 3), orientation (6,))`` from the functional groups, or None when absent."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    if not per:
        return None
    pos, iop = [], None
    for fr in per:
        pps = fr.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
        if not pps:
            return None
        pos.append(_floats(pps[0], "ImagePositionPatient", 3, path))
        pos_seq = fr.get("PlaneOrientationSequence") or shared.get("PlaneOrientationSequence")
        if pos_seq and iop is None:
            iop = _floats(pos_seq[0], "ImageOrientationPatient", 6, path)
    if iop is None:
        iop = _floats(ds, "ImageOrientationPatient", 6, path)
    if iop is None:
        return None
    return np.stack(pos), iop


def _pixel_spacing(ds: Dataset, path: Path) -> tuple[float, float]:
    sp = _floats(ds, "PixelSpacing", 2, path)
    if sp is None:
        shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
        pm = shared.get("PixelMeasuresSequence")
        if pm:
            sp = _floats(pm[0], "PixelSpacing", 2, path)
    if sp is None:
        sp = _floats(ds, "ImagerPixelSpacing", 2, path)
    return (float(sp[0]), float(sp[1])) if sp is not None else (1.0, 1.0)


def _slice_thickness(ds: Dataset) -> float | None:
    v = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    if not v:
        shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
        pm = shared.get("PixelMeasuresSequence")
        if pm:
            v = pm[0].get("SpacingBetweenSlices") or pm[0].get("SliceThickness")
    return float(v) if v else None


def read_dicom_file(path: str | Path) -> ImageData:
    """Read one DICOM file: one frame (even with NumberOfFrames = 1) → ``(C, Y, X)``; several → ``(C, F, Y, X)``.

    Grayscale gives C = 1, colour (SamplesPerPixel 3, converted to RGB by pydicom) C = 3. With a rescale
    (RescaleSlope/Intercept, or the Enhanced PixelValueTransformationSequence) values are float32
    ``stored * slope + intercept``; otherwise the stored dtype is kept. Multi-frame files with per-frame
    ImagePositionPatient are sorted along the slice normal and z spacing comes from the positions; otherwise
    frames stay in file order with z spacing from SpacingBetweenSlices / SliceThickness (1.0 if absent).
    """
    path = Path(path)
    ds = _dcmread(path)
    px = _frame_pixels(ds, path)  # (F, Y, X) or (F, Y, X, S)
    resc = _rescale_of(ds)
    arr = _rescale(px, *resc) if resc is not None else px
    arr = np.moveaxis(arr, -1, 0) if arr.ndim == 4 else arr[None]  # (C, F, Y, X)
    sy, sx = _pixel_spacing(ds, path)
    frames = arr.shape[1]
    if frames == 1:
        ipp = _floats(ds, "ImagePositionPatient", 3, path)
        geo1 = None if ipp is not None else _per_frame_positions(ds, path)
        ipp = geo1[0][0] if geo1 is not None else ipp
        origin = (float(ipp[1]), float(ipp[0])) if ipp is not None else None
        return ImageData(np.ascontiguousarray(arr[:, 0]), (sy, sx), origin, None, _meta(ds, path))
    geo = _per_frame_positions(ds, path)
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None
    sz = _slice_thickness(ds) or 1.0
    if geo is not None and frames > 1:
        pos, iop = geo
        normal = np.cross(iop[:3], iop[3:])
        normal = normal / max(float(np.linalg.norm(normal)), 1e-12)
        proj = pos @ normal
        order = np.argsort(proj, kind="stable")
        arr = arr[:, order]
        sz = _z_spacing(proj[order], path, sz)
        origin = tuple(float(v) for v in pos[order[0]][::-1])
        direction = _direction(iop[:3], iop[3:], normal)
    meta = _meta(ds, path, frames=frames, positions_sorted=geo is not None and frames > 1)
    return ImageData(np.ascontiguousarray(arr), (sz, sy, sx), origin, direction, meta)


def naive_read_series(files: Iterable[str | Path]) -> np.ndarray:
    """Reference reader (slow; for tests and the benchmark): ``dcmread(f).pixel_array`` per file, sorted along
    the slice normal, rescaled. Returns float32 ``(Z, Y, X)``."""
    dss = [pydicom.dcmread(f) for f in files]
    iop = np.asarray([float(v) for v in dss[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot([float(v) for v in d.ImagePositionPatient], normal)))
    return np.stack([d.pixel_array.astype(np.float32) * np.float32(d.get("RescaleSlope", 1))
                     + np.float32(d.get("RescaleIntercept", 0)) for d in dss])
