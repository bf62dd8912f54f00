"""Generate the bad-input corpus in ``tests/data/bad/`` (committed; rerun only to change it).

Run: ``.venv/bin/python tests/data/make_bad_corpus.py``. Content is deterministic (fixed UID seeds, no
randomness; gzip headers carry a timestamp). Every file is tiny (total well under 300 KB).
``tests/test_bad_input.py`` checks each one raises CadxDataError naming the file and the field.
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for p in OUT.rglob('*') if p.is_file())} files, {total / 1024:.1f} KB, into {OUT}")


if __name__ == "__main__":
    main()
