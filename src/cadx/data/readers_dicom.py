"""DICOM readers: series folders, single files and (Enhanced) multi-frame files → :class:`ImageData`.

Geometry follows :mod:`cadx.data.image`: arrays are channel-first, spacing/origin in array order (z, y, x) mm,
``direction`` is the ITK direction matrix (columns = patient-space direction of the x, y, z index axes)
with both axes reversed into array order, ``D_arr = D_itk[::-1, ::-1]``.

Speed (see ``benchmarks/dicom_read.py``): each file is read once (``dcmread`` without decoding) and headers
come from that read; pixels are decoded by :mod:`cadx.data.readers_dicom_pixels` (``np.frombuffer`` for
uncompressed data, imagecodecs for JPEG 2000, pydicom otherwise); reads and decoding run in a thread pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cadx.data.image import ImageData
from cadx.data.readers_dicom_pixels import (
    dcmread,
    dicom_meta,
    floats,
    frame_pixels,
    is_dicom,
    need_floats,
    rescale,
    rescale_of,
    workers,
)
from cadx.errors import CadxDataError

__all__ = ["list_dicom_series", "naive_read_series", "read_dicom_file", "read_dicom_series"]

#: Relative tolerance on slice gaps (fraction of the median gap) before a series counts as irregular.
GAP_RTOL = 0.05
#: Absolute tolerance on slice gaps in mm.
GAP_ATOL = 0.01


def _candidate_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CadxDataError("is not a folder", path=folder, field="path")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.name.upper() != "DICOMDIR")
    return [p for p in files if is_dicom(p)]


def list_dicom_series(folder: str | Path) -> dict[str, list[Path]]:
    """Group the DICOM files under ``folder`` (recursively) by SeriesInstanceUID (headers only).

    Only files with a DICOM preamble and a SeriesInstanceUID are listed; paths keep sorted-name order.
    Empty dict when there are none.
    """
    files = _candidate_files(Path(folder))
    with ThreadPoolExecutor(workers()) as ex:
        headers = list(ex.map(lambda p: dcmread(p, header_only=True), files))
    out: dict[str, list[Path]] = {}
    for p, ds in zip(files, headers, strict=True):
        uid = ds.get("SeriesInstanceUID")
        if uid:
            out.setdefault(str(uid), []).append(p)
    return out


def _z_spacing(proj: np.ndarray, where: Path, fallback: float | None) -> float:
    """Median gap between sorted slice projections ``(N,)``; CadxDataError (field ImagePositionPatient) on
    duplicate positions or gaps deviating by more than ``max(GAP_ATOL, GAP_RTOL * median)``. N < 2 → fallback."""
    if proj.size < 2:
        return float(fallback) if fallback else 1.0
    gaps = np.diff(proj)
    med = float(np.median(gaps))
    if med <= GAP_ATOL:
        raise CadxDataError(f"{proj.size} slices share a position (duplicate slices or several stacks)",
                            path=where, field="ImagePositionPatient")
    if float(np.abs(gaps - med).max()) > max(GAP_ATOL, GAP_RTOL * med):
        raise CadxDataError(f"irregular slice gaps: {gaps.min():.4g}–{gaps.max():.4g} mm (median {med:.4g})",
                            path=where, field="ImagePositionPatient")
    return med


def _stack(pos: np.ndarray, iop: np.ndarray, where: Path, fallback: float | None
           ) -> tuple[np.ndarray, float, tuple[float, ...], tuple[float, ...]]:
    """Sort slice positions ``(N, 3)`` (patient x, y, z) along the normal of ``iop`` ``(6,)``.

    Returns ``(order, z spacing, origin (z, y, x) of the first sorted slice, direction in array order)``.
    """
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 1e-3:
        raise CadxDataError(f"degenerate orientation {iop.tolist()}", path=where, field="ImageOrientationPatient")
    normal = normal / norm
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    sz = _z_spacing(proj[order], where, fallback)
    d_itk = np.stack([row, col, normal], axis=1)  # columns: x, y, z index axes in (x, y, z) patient space
    return order, sz, tuple(pos[order[0]][::-1].tolist()), tuple(d_itk[::-1, ::-1].ravel().tolist())


def _series_orientation(dss: Sequence[Dataset], paths: Sequence[Path]) -> np.ndarray | None:
    """The common ImageOrientationPatient ``(6,)``; None when a slice lacks position or orientation."""
    if not all("ImagePositionPatient" in d and "ImageOrientationPatient" in d for d in dss):
        return None
    iop = need_floats(dss[0], "ImageOrientationPatient", 6, paths[0])
    iop_raw = list(dss[0].ImageOrientationPatient)
    for d, p in zip(dss[1:], paths[1:], strict=True):
        if list(d.ImageOrientationPatient) == iop_raw:
            continue
        other = need_floats(d, "ImageOrientationPatient", 6, p)
        if float(np.abs(other - iop).max()) > 1e-3:
            raise CadxDataError(f"orientation {other.tolist()} differs from the first slice's {iop.tolist()}",
                                path=p, field="ImageOrientationPatient")
    return iop


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> ImageData:
    """Read a DICOM series folder as a ``(1, Z, Y, X)`` float32 volume (HU for CT).

    Files are grouped by SeriesInstanceUID; with several series ``series_uid`` must pick one. Slices are sorted
    by ImagePositionPatient projected on the normal of ImageOrientationPatient; the z spacing comes from the
    positions (not SliceThickness) and irregular gaps or duplicate positions raise CadxDataError (field
    ``ImagePositionPatient``). Without positions, slices follow InstanceNumber and z spacing falls back to
    SpacingBetweenSlices / SliceThickness. Values are ``stored * RescaleSlope + RescaleIntercept`` per slice.
    A one-file series yields Z = 1, or the frames of a multi-frame file. ``meta["files"]`` lists the files in
    slice order.
    """
    folder = Path(folder)
    files = _candidate_files(folder)
    if not files:
        raise CadxDataError("no DICOM files found", path=folder, field="path")
    with ThreadPoolExecutor(workers()) as ex:
        datasets = list(ex.map(dcmread, files))
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
        dss = [datasets[i] for i in groups[series_uid]]
        paths = [files[i] for i in groups[series_uid]]
        if len(dss) == 1 and int(dss[0].get("NumberOfFrames", 1) or 1) > 1:
            return read_dicom_file(paths[0])  # one multi-frame (e.g. Enhanced CT) file is the series
        first = dss[0]
        fallback = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
        fallback = float(fallback) if fallback else None
        iop = _series_orientation(dss, paths)
        origin: tuple[float, ...] | None = None
        direction: tuple[float, ...] | None = None
        if iop is not None:
            pos = np.stack([need_floats(d, "ImagePositionPatient", 3, p) for d, p in zip(dss, paths, strict=True)])
            order, sz, origin, direction = _stack(pos, iop, folder, fallback)
        else:
            order = np.array(sorted(range(len(dss)), key=lambda i: (int(dss[i].get("InstanceNumber", 0) or 0),
                                                                   str(paths[i]))))
            sz = fallback or 1.0
        dss = [dss[i] for i in order]
        paths = [paths[i] for i in order]
        pixels = list(ex.map(lambda dp: frame_pixels(*dp), zip(dss, paths, strict=True)))
    shapes = sorted({p.shape for p in pixels})
    if len(shapes) != 1 or len(shapes[0]) != 3 or shapes[0][0] != 1:
        raise CadxDataError(f"slices differ in shape or are multi-frame/colour: {shapes}", path=folder,
                            field="Rows/Columns")
    vol = np.empty((len(dss), *shapes[0][1:]), dtype=np.float32)
    for k, (ds, px) in enumerate(zip(dss, pixels, strict=True)):
        slope, intercept = rescale_of(ds) or (1.0, 0.0)
        vol[k] = px[0]
        if slope != 1.0:
            vol[k] *= np.float32(slope)
        if intercept != 0.0:
            vol[k] += np.float32(intercept)
    sy, sx = _pixel_spacing(dss[0], paths[0])
    meta = dicom_meta(dss[0], folder, files=[str(p) for p in paths], positions_sorted=iop is not None)
    return ImageData(vol[None], (sz, sy, sx), origin, direction, meta)


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
        pos.append(need_floats(pps[0], "ImagePositionPatient", 3, path))
        pos_seq = fr.get("PlaneOrientationSequence") or shared.get("PlaneOrientationSequence")
        if pos_seq and iop is None:
            iop = floats(pos_seq[0], "ImageOrientationPatient", 6, path)
    if iop is None:
        iop = floats(ds, "ImageOrientationPatient", 6, path)
    if iop is None:
        return None
    return np.stack(pos), iop


def _pixel_spacing(ds: Dataset, path: Path) -> tuple[float, float]:
    sp = floats(ds, "PixelSpacing", 2, path)
    if sp is None:
        shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
        pm = shared.get("PixelMeasuresSequence")
        if pm:
            sp = floats(pm[0], "PixelSpacing", 2, path)
    if sp is None:
        sp = floats(ds, "ImagerPixelSpacing", 2, path)
    if sp is not None and (sp <= 0).any():
        raise CadxDataError(f"spacing {sp.tolist()} must be positive", path=path, field="PixelSpacing")
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
    ds = dcmread(path)
    px = frame_pixels(ds, path)  # (F, Y, X) or (F, Y, X, S)
    resc = rescale_of(ds)
    arr = rescale(px, *resc) if resc is not None else px
    arr = np.moveaxis(arr, -1, 0) if arr.ndim == 4 else arr[None]  # (C, F, Y, X)
    sy, sx = _pixel_spacing(ds, path)
    geo = _per_frame_positions(ds, path)
    frames = arr.shape[1]
    if frames == 1:
        ipp = floats(ds, "ImagePositionPatient", 3, path)
        ipp = geo[0][0] if ipp is None and geo is not None else ipp
        origin2 = (float(ipp[1]), float(ipp[0])) if ipp is not None else None
        return ImageData(np.ascontiguousarray(arr[:, 0]), (sy, sx), origin2, None, dicom_meta(ds, path))
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None
    sz = _slice_thickness(ds) or 1.0
    if geo is not None:
        order, sz, origin, direction = _stack(geo[0], geo[1], path, sz)
        arr = arr[:, order]
    meta = dicom_meta(ds, path, frames=frames, positions_sorted=geo is not None)
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
