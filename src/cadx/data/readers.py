"""Read and write medical images in their real formats as :class:`~cadx.data.image.ImageData`.

``read_image`` dispatches on the path: a folder is a DICOM series; ``.dcm`` (or a suffix-less file with the
DICOM preamble) a DICOM file; ``.nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd`` go through SimpleITK; ``.png/.jpg/.jpeg/
.bmp`` through PIL; ``.tif/.tiff`` through tifffile; ``.npy`` through numpy. Arrays come back channel-first with
spacing/origin/direction in array order (z, y, x); see :mod:`cadx.data.image`. Every failure on bad input is a
:class:`~cadx.errors.CadxDataError` naming the file and the field (``format``, ``pixel data``, ``voxels``, ...).
"""

from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from cadx.data.image import ImageData
from cadx.data.readers_dicom import list_dicom_series, read_dicom_file, read_dicom_series
from cadx.data.readers_dicom_pixels import is_dicom
from cadx.errors import CadxDataError

__all__ = ["ITK_SUFFIXES", "PIL_SUFFIXES", "TIFF_SUFFIXES", "list_dicom_series", "read_dicom_file",
           "read_dicom_series", "read_image", "read_medmnist", "write_image"]

ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _check_finite(arr: np.ndarray, path: Path) -> None:
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        n = int(arr.size - np.isfinite(arr).sum())
        raise CadxDataError(f"{n} voxels are NaN or infinite", path=path, field="voxels")


def read_image(path: str | Path) -> ImageData:
    """Read any supported image (see module doc). 2D → ``(C, Y, X)``, 3D → ``(C, Z, Y, X)``.

    Raises CadxDataError: missing path (field ``path``), unknown or non-image file (``format``), truncated or
    corrupt pixel data (``pixel data``), NaN/inf voxels in ITK/npy/TIFF files (``voxels``).
    """
    path = Path(path)
    if not path.exists():
        raise CadxDataError("does not exist", path=path, field="path")
    try:
        img = _read_any(path)
        if 0 in img.array.shape:
            raise CadxDataError(f"no voxels (shape {img.array.shape})", path=path, field="pixel data")
        return img
    except CadxDataError as e:  # keep it one line (codec messages can span several)
        if "\n" not in str(e):
            raise
        raise CadxDataError(" ".join(e.message.split()), path=e.path, field=e.field) from None
    except MemoryError:
        raise CadxDataError("too large to decode (MemoryError)", path=path, field="pixel data") from None
    except Exception as e:  # a library error the format readers did not anticipate (found by fuzzing)
        text = " ".join(str(e).split())[:200]
        raise CadxDataError(f"cannot read it ({type(e).__name__}: {text})", path=path, field="format") from None


def _read_any(path: Path) -> ImageData:
    if path.is_dir():
        return read_dicom_series(path)
    suf = _suffix(path)
    if suf == ".dcm" or (suf not in (*ITK_SUFFIXES, *PIL_SUFFIXES, *TIFF_SUFFIXES, ".npy") and is_dicom(path)):
        return read_dicom_file(path)
    if suf in ITK_SUFFIXES:
        return _read_itk(path)
    if suf in PIL_SUFFIXES:
        return _read_pil(path)
    if suf in TIFF_SUFFIXES:
        return _read_tiff(path)
    if suf == ".npy":
        return _read_npy(path)
    raise CadxDataError(f"unsupported image format {suf or '(no suffix, not DICOM)'!r}", path=path,
                        field="format")


# --- SimpleITK --------------------------------------------------------------------------------------------
def _nifti_voxels(path: Path, size: tuple[int, ...]) -> np.ndarray | None:
    """NIfTI voxels via nibabel, reversed to ITK's array order; None when the layout is not plain scalar.

    ITK's NIfTI reader silently turns NaN voxels into 0, so the voxels come from nibabel (scaling applied)."""
    import nibabel as nib  # heavy: only for NIfTI headers

    try:
        data = np.asanyarray(nib.load(path).dataobj)  # type: ignore[attr-defined]
    except Exception as e:  # ITK would zero-fill a short file: a scalar NIfTI nibabel cannot read is corrupt
        text = " ".join(str(e).split())[:200]
        raise CadxDataError(f"voxel data unreadable ({type(e).__name__}: {text})", path=path,
                            field="pixel data") from None
    if data.shape != size:
        return None
    return np.ascontiguousarray(data.transpose(tuple(range(data.ndim))[::-1]))


def _check_nifti_spacing(path: Path) -> None:
    """The raw NIfTI pixdim of the spatial axes must be positive: ITK and nibabel silently read 0 as 1 mm (and
    ITK a negative one as its absolute value). Parsed from the header bytes (NIfTI-1 and NIfTI-2)."""
    try:
        with (gzip.open(path, "rb") if _suffix(path) == ".nii.gz" else open(path, "rb")) as fh:
            raw = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return  # an unreadable file is reported by the reader itself
    for order in "<>":
        if len(raw) >= 348 and int(np.frombuffer(raw, f"{order}i4", 1, 0)[0]) == 348:
            dim = np.frombuffer(raw, f"{order}i2", 8, 40)
            pixdim = np.frombuffer(raw, f"{order}f4", 8, 76)
            break
        if len(raw) >= 540 and int(np.frombuffer(raw, f"{order}i4", 1, 0)[0]) == 540:
            dim = np.frombuffer(raw, f"{order}i8", 8, 16)
            pixdim = np.frombuffer(raw, f"{order}f8", 8, 104)
            break
    else:
        return
    n = int(min(max(int(dim[0]), 1), 3))
    pix = pixdim[1:1 + n].astype(float)
    if not np.isfinite(pix).all() or (pix <= 0).any():
        raise CadxDataError(f"voxel spacing (pixdim) {pix.tolist()} must be finite and positive", path=path,
                            field="spacing")


def _check_nifti_size(path: Path) -> None:
    """The file must hold the voxel bytes its header promises: ITK zero-fills a short NIfTI (a dim edited up, a
    multi-component datatype, a zero axis read as 1). A .nii.gz is measured by its gzip size trailer."""
    import nibabel as nib  # heavy: only for NIfTI headers

    try:
        hdr: Any = nib.load(path).header  # type: ignore[attr-defined]
        shape = [int(s) for s in hdr.get_data_shape()]
        need = int(hdr.get_data_offset()) + int(np.prod(shape, dtype=np.int64)) * hdr.get_data_dtype().itemsize
    except Exception:
        return  # an unreadable header is reported by the reader itself
    if 0 in shape:
        raise CadxDataError(f"header dim {shape} has an empty axis", path=path, field="dim")
    if _suffix(path) == ".nii.gz":
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            have = struct.unpack("<I", fh.read(4))[0]  # uncompressed size mod 2**32
        if need >= 2**32:
            return
    else:
        have = path.stat().st_size
    if have < need:
        raise CadxDataError(f"file holds {have} bytes, {need} expected for dim {shape} of "
                            f"{hdr.get_data_dtype()} (truncated or wrong header)", path=path, field="pixel data")


def _read_itk(path: Path) -> ImageData:
    import SimpleITK as sitk  # heavy: only for volume formats

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warnings are C++ stderr noise, not one-line errors
    if _suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_spacing(path)
        _check_nifti_size(path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        arr = None
        if _suffix(path) in (".nii", ".nii.gz") and reader.GetNumberOfComponents() == 1:
            arr = _nifti_voxels(path, tuple(reader.GetSize()))
        if arr is None:
            arr = sitk.GetArrayFromImage(reader.Execute())  # (Z,Y,X[,C]) / (Y,X[,C]) / (T,Z,Y,X)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CadxDataError(f"SimpleITK cannot read it ({msg})", path=path, field="format") from None
    dim = reader.GetDimension()
    ncomp = reader.GetNumberOfComponents()
    spacing = np.asarray(reader.GetSpacing())
    origin = np.asarray(reader.GetOrigin())
    direction = np.asarray(reader.GetDirection()).reshape(dim, dim)
    if ncomp > 1:
        arr = np.moveaxis(arr, -1, 0)
    elif dim == 4:  # (T, Z, Y, X): time / echoes become channels
        pass
    else:
        arr = arr[None]
    nsp = min(dim, 3)
    if not (np.isfinite(spacing[:nsp]).all() and (spacing[:nsp] > 0).all()):
        raise CadxDataError(f"spacing {spacing[:nsp].tolist()} must be finite and positive", path=path,
                            field="spacing")
    if dim == 4:
        spacing, origin, direction = spacing[:3], origin[:3], direction[:3, :3]
    if arr.ndim - 1 != nsp or nsp < 2:  # a 1-D image (NIfTI dim[0] = 1) is no image either
        raise CadxDataError(f"unsupported image dimension {dim} with {ncomp} components", path=path,
                            field="format")
    _check_finite(arr, path)
    meta: dict[str, Any] = {"source": str(path), "format": _suffix(path).lstrip(".")}
    return ImageData(np.ascontiguousarray(arr), tuple(spacing[::-1].tolist()), tuple(origin[::-1].tolist()),
                     tuple(direction[::-1, ::-1].ravel().tolist()), meta)


# --- PIL ----------------------------------------------------------------------------------------------------
_PIL_KEEP = {"L": np.uint8, "RGB": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I": np.int32,
             "F": np.float32}


def _png_short(path: Path) -> str | None:
    """Why a non-interlaced PNG's IDAT stream is shorter than its IHDR promises (PIL zero-fills the missing
    rows when the zlib stream itself is complete), or None."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if interlace or channels is None:
        return None
    idat, pos = [], 8
    while pos + 8 <= len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        if typ == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + n])
        pos += 12 + n
    expect = h * (1 + (w * channels * depth + 7) // 8)
    try:
        got = len(zlib.decompressobj().decompress(b"".join(idat), expect))
    except zlib.error:
        return None  # PIL reports a corrupt stream itself
    return f"pixel data holds {got} bytes, {expect} expected for {w} x {h}" if got < expect else None


def _read_pil(path: Path) -> ImageData:
    from PIL import Image, UnidentifiedImageError  # only for 2D image files

    short = _png_short(path) if _suffix(path) == ".png" else None
    if short:
        raise CadxDataError(f"{short} (truncated or wrong IHDR size)", path=path, field="pixel data")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in _PIL_KEEP:
                arr = np.asarray(im)
            else:  # bilevel / gray+alpha → L; palette, RGBA, CMYK, YCbCr → RGB
                arr = np.asarray(im.convert("L" if mode in ("1", "LA", "La") else "RGB"))
    except Image.DecompressionBombError as e:
        raise CadxDataError(f"image size exceeds the decompression-bomb limit ({e})", path=path,
                            field="size") from None
    except UnidentifiedImageError:
        raise CadxDataError("not a readable image (content does not match the suffix?)", path=path,
                            field="format") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated / corrupt streams
        raise CadxDataError(f"corrupt or truncated image ({e})", path=path, field="pixel data") from None
    arr = np.moveaxis(arr, -1, 0) if arr.ndim == 3 else arr[None]
    return ImageData(np.ascontiguousarray(arr), (1.0, 1.0), meta={"source": str(path), "format": "pil",
                                                                   "mode": mode})


# --- TIFF ---------------------------------------------------------------------------------------------------
def _read_tiff(path: Path) -> ImageData:
    """Channel axes are tifffile's ``S`` (samples) / ``C``; 2 remaining axes → 2D, 3 (pages) → 3D."""
    import tifffile  # optional: only for TIFF files

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            arr = series.asarray()
    except tifffile.TiffFileError as e:
        raise CadxDataError(f"not a readable TIFF ({e})", path=path, field="format") from None
    except Exception as e:  # truncated strips, codec errors
        raise CadxDataError(f"corrupt or truncated TIFF ({type(e).__name__}: {e})", path=path,
                            field="pixel data") from None
    chan = [i for i, a in enumerate(axes) if a in "SC"]
    if len(chan) > 1:
        raise CadxDataError(f"unsupported TIFF axes {axes!r}", path=path, field="format")
    arr = np.moveaxis(arr, chan[0], 0) if chan else arr[None]
    if arr.ndim - 1 > 3:  # drop singleton axes (e.g. T = 1 in ImageJ hyperstacks)
        arr = arr.reshape(arr.shape[0], *[s for s in arr.shape[1:] if s != 1])
    if arr.ndim - 1 not in (2, 3):
        raise CadxDataError(f"unsupported TIFF axes {axes!r} (shape {series.shape})", path=path, field="format")
    _check_finite(arr, path)
    return ImageData(np.ascontiguousarray(arr), (1.0,) * (arr.ndim - 1),
                     meta={"source": str(path), "format": "tiff", "axes": axes})


# --- numpy --------------------------------------------------------------------------------------------------
def _read_npy(path: Path) -> ImageData:
    """``(Y, X)`` → ``(1, Y, X)``; ``(Z, Y, X)`` → ``(1, Z, Y, X)`` (3D arrays are volumes); 4D kept as is."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CadxDataError(f"not a readable .npy array ({e})", path=path, field="format") from None
    if arr.ndim in (2, 3):
        arr = arr[None]
    if arr.ndim not in (3, 4):
        raise CadxDataError(f"expected a 2D/3D/4D array, got shape {arr.shape}", path=path, field="shape")
    _check_finite(arr, path)
    return ImageData(arr, (1.0,) * (arr.ndim - 1), meta={"source": str(path), "format": "npy"})


# --- writing ------------------------------------------------------------------------------------------------
def write_image(img: ImageData, path: str | Path) -> Path:
    """Write ``img`` to ``path``: NIfTI/NRRD/MHA via SimpleITK (geometry converted to ITK order; several
    channels become a vector image), PNG via PIL (2D, uint8 or uint16, 1/3/4 channels). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suf = _suffix(path)
    arr = np.asarray(img.array)
    if suf in ITK_SUFFIXES:
        import SimpleITK as sitk  # heavy: only for volume formats

        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        vec = arr.shape[0] > 1
        data = np.moveaxis(arr, 0, -1) if vec else arr[0]
        out = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=vec)
        n = img.spatial_ndim
        out.SetSpacing([float(s) for s in img.spacing[::-1]])
        out.SetOrigin([float(o) for o in (img.origin or (0.0,) * n)[::-1]])
        d = np.asarray(img.direction if img.direction is not None else np.eye(n).ravel()).reshape(n, n)
        out.SetDirection([float(v) for v in d[::-1, ::-1].ravel()])
        sitk.WriteImage(out, str(path), useCompression=suf in (".nii.gz", ".nrrd", ".mha"))
        return path
    if suf == ".png":
        from PIL import Image  # only for 2D image files

        if img.spatial_ndim != 2 or arr.shape[0] not in (1, 3, 4):
            raise CadxDataError(f"PNG needs a 2D image with 1, 3 or 4 channels, got {arr.shape}", path=path,
                                field="shape")
        if arr.dtype not in (np.uint8, np.uint16) or (arr.dtype == np.uint16 and arr.shape[0] != 1):
            raise CadxDataError(f"PNG needs uint8 (or single-channel uint16), got {arr.dtype}", path=path,
                                field="dtype")
        data = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
        Image.fromarray(np.ascontiguousarray(data)).save(path)
        return path
    raise CadxDataError(f"cannot write {suf!r} (use .nii/.nii.gz/.nrrd/.mha/.png)", path=path, field="format")


# --- MedMNIST -----------------------------------------------------------------------------------------------
def read_medmnist(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a MedMNIST ``.npz`` (2D or 3D, any size) → ``{"train"|"val"|"test": (images, labels)}``.

    ``images`` as stored: ``(N, H, W)``, ``(N, H, W, 3)`` or ``(N, D, H, W)``; ``labels`` int64 ``(N,)`` when the
    file stores one label column, else ``(N, K)`` (multi-label). Missing keys or mismatched lengths raise
    CadxDataError naming the file and the key.
    """
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise CadxDataError(f"not a readable .npz archive ({e})", path=path, field="format") from None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with npz:
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CadxDataError("expected an .npz archive, found a single array", path=path, field="format")
        for split in ("train", "val", "test"):
            keys = (f"{split}_images", f"{split}_labels")
            for k in keys:
                if k not in npz.files:
                    raise CadxDataError(f"missing key (has {sorted(npz.files)})", path=path, field=k)
            images, labels = npz[keys[0]], npz[keys[1]]
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if len(images) != len(labels):
                raise CadxDataError(f"{len(images)} images but {len(labels)} labels", path=path, field=keys[1])
            if images.ndim not in (3, 4):
                raise CadxDataError(f"unexpected images shape {images.shape}", path=path, field=keys[0])
            out[split] = (images, labels.astype(np.int64))
    return out
