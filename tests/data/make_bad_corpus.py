"""Generate the bad-input corpus in ``tests/data/bad/`` (committed; rerun only to change it).

Run: ``.venv/bin/python tests/data/make_bad_corpus.py``. Content is deterministic (fixed UID seeds, no
randomness; gzip headers carry a timestamp). Every file is tiny (total well under 300 KB).
``tests/test_bad_input.py`` checks each one raises CadxDataError naming the file and the field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from PIL import Image

from cadx.data.dicom_write import write_dicom_series

OUT = Path(__file__).resolve().parent / "bad"


def _vol(z: int, seed: int) -> np.ndarray:
    """A small deterministic (Z, 16, 16) HU ramp."""
    return (np.arange(z * 16 * 16, dtype=np.float64).reshape(z, 16, 16) % 400 - 1000 + 100 * seed)


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    # DICOM: truncated in the pixel data, a folder mixing two series, a file without pixel data
    tmp = OUT / "_tmp"
    (src,) = write_dicom_series(_vol(1, 0), (2.0, 0.5, 0.5), tmp, patient_id="BAD1", uid_seed="bad-trunc")
    data = src.read_bytes()
    (OUT / "truncated.dcm").write_bytes(data[: len(data) - 200])
    write_dicom_series(_vol(2, 1), (2.0, 0.5, 0.5), OUT / "two_series", patient_id="BAD2", uid_seed="bad-a",
                       series_description="A")
    for p in write_dicom_series(_vol(2, 2), (2.0, 0.5, 0.5), tmp / "b", patient_id="BAD2", uid_seed="bad-b",
                                series_description="B"):
        p.rename(OUT / "two_series" / f"b_{p.name}")
    ds = pydicom.dcmread(src)
    del ds.PixelData
    ds.save_as(OUT / "no_pixels.dcm", enforce_file_format=True)
    shutil.rmtree(tmp)

    # NIfTI with NaN voxels
    arr = np.zeros((4, 5, 6), dtype=np.float32)
    arr[1, 2, 3] = np.nan
    arr[2, 2, 2] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(OUT / "nan.nii.gz"))

    # a text file pretending to be a PNG, a truncated PNG
    (OUT / "not_image.png").write_text("study_id,label\nthis is not an image\n")
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8) % 251).save(
        OUT / "_full.png")
    png = (OUT / "_full.png").read_bytes()
    (OUT / "truncated.png").write_bytes(png[: len(png) // 2])
    (OUT / "_full.png").unlink()

    # manifests (images: a good 8x8 PNG, an empty mask, a lesion mask)
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).save(OUT / "ok.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(OUT / "empty_mask.png")
    lesion = np.zeros((8, 8), dtype=np.uint8)
    lesion[2:5, 3:6] = 255
    Image.fromarray(lesion).save(OUT / "lesion_mask.png")
    manifests = {
        "manifest_missing_column.csv": "study_id,path,label\ns1,ok.png,benign\n",
        "manifest_missing_path.csv": "study_id,patient_id,path,label\ns1,p1,ok.png,benign\n"
                                     "s2,p2,images/missing.png,malignant\n",
        "manifest_duplicate_study.csv": "study_id,patient_id,path,label\ns1,p1,ok.png,benign\n"
                                        "s1,p2,ok.png,malignant\n",
        "manifest_two_labels.csv": "study_id,patient_id,path,label\ns1,p1,ok.png,benign\ns2,p1,ok.png,malignant\n",
        "manifest_bad_box.csv": "study_id,patient_id,path,label,box\ns1,p1,ok.png,benign,2 2 1 5\n",
        "manifest_bad_attribute.csv": "study_id,patient_id,path,label,age\ns1,p1,ok.png,benign,54\n"
                                      "s2,p2,ok.png,malignant,fifty\n",
        "manifest_empty_mask.csv": "study_id,patient_id,path,label,mask\ns1,p1,ok.png,benign,lesion_mask.png\n"
                                   "s2,p2,ok.png,normal,empty_mask.png\n",
    }
    for name, text in manifests.items():
        (OUT / name).write_text(text)
    make_cases(OUT / "cases")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for p in OUT.rglob('*') if p.is_file())} files, {total / 1024:.1f} KB, into {OUT}")


# --- the check corpus: one folder per broken case, each with a manifest.csv ---------------------------------
#: case name → the field ``cadx datasets check`` must name (``a|b``: either; the file named is the case's
#: manifest or one of its images).
CASES: dict[str, str] = {}


def _png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _nii(path: Path, arr: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def _case(root: Path, name: str, field: str, files: dict[str, bytes | None], rows: str,
          header: str = "study_id,patient_id,path,label") -> None:
    d = root / name
    d.mkdir(parents=True)
    for rel, data in files.items():
        f = d / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            f.mkdir(exist_ok=True)
        else:
            f.write_bytes(data)
    (d / "manifest.csv").write_text(header + "\n" + rows if rows is not None else "")
    CASES[name] = field


def make_cases(root: Path) -> dict[str, str]:
    """Write every broken case into ``root/<case>/`` (tiny files); return ``case → expected field``."""
    CASES.clear()
    root.mkdir(parents=True)
    tmp = root / "_tmp"
    tmp.mkdir()
    # good building blocks
    ok = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    _png(tmp / "ok.png", ok)
    okpng = (tmp / "ok.png").read_bytes()
    lesion = np.zeros((8, 8), np.uint8)
    lesion[2:5, 3:6] = 255
    _png(tmp / "lesion.png", lesion)
    lesionpng = (tmp / "lesion.png").read_bytes()
    (d1,) = write_dicom_series(_vol(1, 0), (2.0, 0.5, 0.5), tmp / "d1", patient_id="C1", uid_seed="case-1")
    dcm = d1.read_bytes()
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    _nii(tmp / "v.nii", vol)
    nii = (tmp / "v.nii").read_bytes()
    _nii(tmp / "v.nii.gz", vol)
    niigz = (tmp / "v.nii.gz").read_bytes()
    two = "s2,p2,ok.png,malignant\n"
    one = "s1,p1,{},benign\n"

    def img_case(name: str, field: str, fname: str, data: bytes | None, extra: dict[str, bytes | None] | None = None
                 ) -> None:
        _case(root, name, field, {fname: data, "ok.png": okpng, **(extra or {})}, one.format(fname) + two)

    def dicom_edit(edit: Any) -> bytes:
        ds = pydicom.dcmread(d1)
        edit(ds)
        ds.save_as(tmp / "edit.dcm", enforce_file_format=True)
        return (tmp / "edit.dcm").read_bytes()

    # DICOM files
    img_case("dicom_truncated", "pixel data", "a.dcm", dcm[: len(dcm) - 200])
    pix_at = dcm.rfind(b"\xe0\x7f\x10\x00")
    img_case("dicom_header_only", "PixelData", "a.dcm", dcm[:pix_at])
    img_case("dicom_no_pixels", "PixelData", "a.dcm", dicom_edit(lambda ds: delattr(ds, "PixelData")))
    img_case("dicom_rows_too_small", "pixel data", "a.dcm", dicom_edit(lambda ds: setattr(ds, "Rows", 7)))
    img_case("dicom_columns_too_large", "pixel data", "a.dcm", dicom_edit(lambda ds: setattr(ds, "Columns", 40)))
    img_case("dicom_zero_rows", "Rows/Columns", "a.dcm", dicom_edit(lambda ds: setattr(ds, "Rows", 0)))
    img_case("dicom_zero_pixel_spacing", "PixelSpacing|spacing", "a.dcm",
             dicom_edit(lambda ds: setattr(ds, "PixelSpacing", [0, 0])))
    img_case("dicom_negative_pixel_spacing", "PixelSpacing|spacing", "a.dcm",
             dicom_edit(lambda ds: setattr(ds, "PixelSpacing", [-0.5, 0.5])))
    img_case("dicom_text_renamed", "format", "a.dcm", b"patient,notes\nthis is a text file\n")
    img_case("dicom_zero_byte", "format", "a.dcm", b"")
    img_case("dicom_garbage_after_preamble", "PixelData", "a.dcm", b"\0" * 128 + b"DICM" + b"\xff" * 40)
    # DICOM series folders
    img_case("dicom_empty_folder", "path", "series", None)
    ser = write_dicom_series(_vol(3, 1), (2.0, 0.5, 0.5), tmp / "s", patient_id="C2", uid_seed="case-s")
    sers = {f"series/{p.name}": p.read_bytes() for p in ser}
    mixed = dict(sers)
    for p in write_dicom_series(_vol(2, 2), (2.0, 0.5, 0.5), tmp / "s2", patient_id="C2", uid_seed="case-s2"):
        mixed[f"series/b_{p.name}"] = p.read_bytes()
    _case(root, "dicom_mixed_series", "SeriesInstanceUID", {**mixed, "ok.png": okpng}, one.format("series") + two)

    def series_edit(name: str, field: str, k: int, edit: Any) -> None:
        files = dict(sers)
        ds = pydicom.dcmread(ser[k])
        edit(ds)
        ds.save_as(tmp / "e.dcm", enforce_file_format=True)
        files[f"series/{ser[k].name}"] = (tmp / "e.dcm").read_bytes()
        _case(root, name, field, {**files, "ok.png": okpng}, one.format("series") + two)

    series_edit("dicom_duplicate_position", "ImagePositionPatient", 1,
                lambda ds: setattr(ds, "ImagePositionPatient", pydicom.dcmread(ser[0]).ImagePositionPatient))
    series_edit("dicom_irregular_gap", "ImagePositionPatient", 2,
                lambda ds: setattr(ds, "ImagePositionPatient", [0, 0, 9.0]))
    series_edit("dicom_mixed_orientation", "ImageOrientationPatient", 1,
                lambda ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1]))

    def _shrink(ds: Any) -> None:
        a = ds.pixel_array[:8, :8].copy()
        ds.Rows, ds.Columns, ds.PixelData = 8, 8, a.tobytes()
    series_edit("dicom_mixed_shape", "Rows/Columns", 1, _shrink)
    trunc = dict(sers)
    k1 = f"series/{ser[1].name}"
    trunc[k1] = trunc[k1][:-300]
    _case(root, "dicom_series_truncated_slice", "pixel data", {**trunc, "ok.png": okpng},
          one.format("series") + two)
    # NIfTI
    img_case("nifti_zero_byte", "format", "a.nii", b"")
    img_case("nifti_truncated", "pixel data", "a.nii", nii[: 352 + (len(nii) - 352) // 2])
    img_case("nifti_header_only", "pixel data", "a.nii", nii[:352])
    img_case("nifti_gz_truncated", "pixel data", "a.nii.gz", niigz[: len(niigz) - 30])
    arr = vol.copy()
    arr[1, 2, 3] = np.nan
    _nii(tmp / "nan.nii.gz", arr)
    img_case("nifti_nan", "voxels", "a.nii.gz", (tmp / "nan.nii.gz").read_bytes())
    arr = vol.copy()
    arr[0, 0, 0] = np.inf
    _nii(tmp / "inf.nii.gz", arr)
    img_case("nifti_inf", "voxels", "a.nii.gz", (tmp / "inf.nii.gz").read_bytes())
    for name, sp in (("nifti_zero_spacing", (1.0, 0.0, 1.0)), ("nifti_negative_spacing", (1.0, 1.0, -2.0))):
        raw = bytearray(nii)
        # pixdim[1..3] live at byte 80 (float32 x 8, pixdim[0] = qfac)
        raw[80:92] = np.asarray(sp, dtype="<f4").tobytes()
        img_case(name, "spacing", "a.nii", bytes(raw))
    # PNG / TIFF / npy
    img_case("png_truncated", "pixel data|format", "a.png", okpng[: len(okpng) // 2])
    img_case("png_text_renamed", "format", "a.png", b"not a png at all\n")
    img_case("png_zero_byte", "format", "a.png", b"")
    import tifffile
    tifffile.imwrite(tmp / "t.tif", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    tif = (tmp / "t.tif").read_bytes()
    img_case("tiff_truncated", "pixel data", "a.tif", tif[: len(tif) // 2])
    np.save(tmp / "n.npy", np.full((4, 4), np.nan, dtype=np.float32))
    img_case("npy_nan", "voxels", "a.npy", (tmp / "n.npy").read_bytes())
    img_case("unknown_suffix", "format", "a.xyz", b"1234")
    # masks
    mh = "study_id,patient_id,path,label,mask"
    _png(tmp / "m10.png", np.pad(lesion, ((0, 2), (0, 2))))
    _case(root, "mask_shape_mismatch", "mask", {"ok.png": okpng, "m.png": (tmp / "m10.png").read_bytes()},
          "s1,p1,ok.png,benign,m.png\n", mh)
    _png(tmp / "e.png", np.zeros((8, 8)))
    _case(root, "mask_empty", "mask", {"ok.png": okpng, "m.png": (tmp / "e.png").read_bytes()},
          "s1,p1,ok.png,benign,m.png\n", mh)
    three = lesion.copy() // 255
    three[6, 6] = 2
    _png(tmp / "m3.png", three)
    _case(root, "mask_not_binary", "mask", {"ok.png": okpng, "m.png": (tmp / "m3.png").read_bytes()},
          "s1,p1,ok.png,benign,m.png\n", mh)
    _case(root, "mask_missing_file", "mask", {"ok.png": okpng}, "s1,p1,ok.png,benign,nowhere.png\n", mh)
    _case(root, "mask_truncated", "pixel data", {"ok.png": okpng, "m.png": lesionpng[: len(lesionpng) // 2]},
          "s1,p1,ok.png,benign,m.png\n", mh)
    _nii(tmp / "m3d.nii.gz", np.ones((4, 5, 6), np.uint8))
    _case(root, "mask_3d_for_2d_image", "mask", {"ok.png": okpng, "m.nii.gz": (tmp / "m3d.nii.gz").read_bytes()},
          "s1,p1,ok.png,benign,m.nii.gz\n", mh)
    # manifests
    _case(root, "manifest_empty", "studies", {"ok.png": okpng}, "")
    d = root / "manifest_zero_byte"
    d.mkdir()
    (d / "manifest.csv").write_bytes(b"")
    CASES["manifest_zero_byte"] = "study_id"
    d = root / "manifest_not_utf8"
    d.mkdir()
    (d / "manifest.csv").write_bytes(b"study_id,patient_id,path,label\n\xff\xfe\x00bad\n")
    CASES["manifest_not_utf8"] = "format"
    for name, lab in (("label_NaN", "NaN"), ("label_nan", "nan"), ("label_NA", "NA"), ("label_None", "None"),
                      ("label_empty", ""), ("label_null", "null")):
        _case(root, name, "label", {"ok.png": okpng}, f"s1,p1,ok.png,{lab}\n" + two)
    _case(root, "missing_column", "patient_id", {"ok.png": okpng}, "s1,ok.png,benign\n", "study_id,path,label")
    _case(root, "duplicate_study", "study_id", {"ok.png": okpng}, one.format("ok.png") + "s1,p2,ok.png,malignant\n")
    _case(root, "patient_two_labels", "label", {"ok.png": okpng}, one.format("ok.png") + "s2,p1,ok.png,malignant\n")
    _case(root, "image_missing", "path", {"ok.png": okpng}, one.format("nowhere.png") + two)
    _case(root, "empty_path", "path", {"ok.png": okpng}, "s1,p1,,benign\n" + two)
    _case(root, "split_bad", "split", {"ok.png": okpng}, "s1,p1,ok.png,benign,training\n",
          "study_id,patient_id,path,label,split")
    ah = "study_id,patient_id,path,label,age"
    _case(root, "attribute_text", "age", {"ok.png": okpng}, "s1,p1,ok.png,benign,54\ns2,p2,ok.png,malignant,fifty\n",
          ah)
    _case(root, "attribute_inf", "age", {"ok.png": okpng}, "s1,p1,ok.png,benign,54\ns2,p2,ok.png,malignant,inf\n",
          ah)
    # boxes (a 2D 8x8 image: box = y0 x0 y1 x1)
    bh = "study_id,patient_id,path,label,box"
    for name, box in (("box_unordered", "5 2 1 6"), ("box_outside", "2 2 6 12"), ("box_five_values", "1 1 1 4 4"),
                      ("box_not_numbers", "a b c d"), ("box_3d_on_2d_image", "0 1 1 1 4 4")):
        _case(root, name, "box", {"ok.png": okpng}, f"s1,p1,ok.png,benign,{box}\n", bh)
    _case(root, "box_corners_incomplete", "box", {"ok.png": okpng}, "s1,p1,ok.png,benign,1,1,4\n",
          "study_id,patient_id,path,label,x0,y0,x1")
    _case(root, "box_corners_outside", "box", {"ok.png": okpng}, "s1,p1,ok.png,benign,1,1,9,4\n",
          "study_id,patient_id,path,label,x0,y0,x1,y1")
    _case(root, "box_corners_3d_outside", "box", {"ok.png": okpng}, "s1,p1,ok.png,benign,1,1,0,4,4,3\n",
          "study_id,patient_id,path,label,x0,y0,z0,x1,y1,z1")
    _case(root, "box_corners_row_gap", "box", {"ok.png": okpng}, "s1,p1,ok.png,benign,1,,4,4\n",
          "study_id,patient_id,path,label,x0,y0,x1,y1")
    _case(root, "box_corners_minmax_unordered", "box", {"ok.png": okpng}, "s1,p1,ok.png,benign,5,1,2,4\n",
          "study_id,patient_id,path,label,xmin,ymin,xmax,ymax")
    _case(root, "box_column_and_corners", "box", {"ok.png": okpng}, "s1,p1,ok.png,benign,1 1 4 4,1,1,4,4\n",
          "study_id,patient_id,path,label,box,x0,y0,x1,y1")
    shutil.rmtree(tmp)
    (root / "expected_fields.json").write_text(json.dumps(CASES, indent=1, sort_keys=True) + "\n")
    return dict(CASES)


if __name__ == "__main__":
    main()
