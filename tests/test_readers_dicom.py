"""DICOM readers: series sorting/geometry/HU, multi-frame, compressed transfer syntaxes, writer round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from cadx.data.dicom_write import write_dicom_series, write_multiframe
from cadx.data.readers import list_dicom_series, read_dicom_file, read_dicom_series, read_image
from cadx.data.readers_dicom import naive_read_series
from cadx.data.readers_dicom_pixels import frame_pixels
from cadx.errors import CadxDataError
from conftest import shared_path

BAD = Path(__file__).parent / "data" / "bad"


def pdfile(name: str) -> Path:
    """A pydicom / pydicom-data test file, found locally only (never downloaded)."""
    p = get_testdata_file(name, download=False)
    if p is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(p)


def stored(name: str) -> np.ndarray:
    return pydicom.dcmread(pdfile(name)).pixel_array


def ramp(z: int, y: int, x: int) -> np.ndarray:
    return (np.arange(z * y * x).reshape(z, y, x) % 3000 - 1024).astype(np.float64)


# --- writer + series reader ---------------------------------------------------------------------------------
def test_series_round_trip_shuffled_files(tmp_path):
    vol = ramp(5, 8, 9)
    paths = write_dicom_series(vol, (2.5, 0.7, 0.8), tmp_path / "s", patient_id="P1", origin=(-1234.56789, -5.0, 3.0),
                               uid_seed="t1", shuffle_files=True)
    assert [p.name for p in paths] != sorted(p.name for p in paths)  # file order is not slice order
    img = read_dicom_series(tmp_path / "s")
    assert img.array.shape == (1, 5, 8, 9) and img.array.dtype == np.float32
    np.testing.assert_array_equal(img.array[0], vol)
    assert img.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert img.origin == pytest.approx((-1234.56789, -5.0, 3.0), abs=1e-9)  # full DS precision kept
    assert img.direction == pytest.approx(tuple(np.eye(3).ravel()))
    assert [Path(f).name for f in img.meta["files"]] == [p.name for p in paths]
    assert img.meta["patient_id"] == "P1"
    ds = pydicom.dcmread(paths[0])
    assert ds.RescaleIntercept == -1024 and ds.RescaleSlope == 1 and ds.pixel_array.dtype == np.int16
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_uids_deterministic_from_seed(tmp_path):
    vol = ramp(2, 4, 4)
    a = write_dicom_series(vol, (1, 1, 1), tmp_path / "a", patient_id="P", uid_seed="seed")
    b = write_dicom_series(vol, (1, 1, 1), tmp_path / "b", patient_id="P", uid_seed="seed")
    c = write_dicom_series(vol, (1, 1, 1), tmp_path / "c", patient_id="P", uid_seed="other")
    uid = [pydicom.dcmread(p[1]).SOPInstanceUID for p in (a, b, c)]
    assert uid[0] == uid[1] != uid[2]
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in a}) == 2


def test_fast_reader_equals_naive_loop(tmp_path):
    vol = np.random.default_rng(0).integers(-1024, 2000, (6, 64, 48)).astype(np.float64)
    paths = write_dicom_series(vol, (1.25, 0.5, 0.5), tmp_path, patient_id="P", uid_seed="n", shuffle_files=True)
    fast = read_dicom_series(tmp_path).array[0]
    np.testing.assert_array_equal(fast, naive_read_series(paths))
    np.testing.assert_array_equal(fast, vol)


def test_oblique_descending_positions_sorted_along_normal(tmp_path):
    paths = write_dicom_series(ramp(4, 6, 6), (3.0, 1.0, 1.0), tmp_path, patient_id="P", uid_seed="o")
    for k, p in enumerate(paths):  # reverse the z axis: normal (0, 0, -1) from row x col = (-1,0,0) x (0,1,0)
        ds = pydicom.dcmread(p)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, -3.0 * k]
        ds.save_as(p)
    img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.array[0], ramp(4, 6, 6))  # proj = 3k ascending → file order kept
    assert img.spacing[0] == pytest.approx(3.0)
    d = np.asarray(img.direction).reshape(3, 3)  # array order: z row/col first
    assert d[0, 0] == -1 and d[2, 2] == -1 and d[1, 1] == 1


@pytest.mark.parametrize("zs, msg", [([0, 1, 2, 4], "irregular"), ([0, 1, 1, 2], "irregular"),
                                     ([5, 5, 5, 5], "share a position")])
def test_bad_slice_positions(tmp_path, zs, msg):
    paths = write_dicom_series(ramp(4, 4, 4), (1.0, 1.0, 1.0), tmp_path, patient_id="P", uid_seed="g")
    for p, z in zip(paths, zs, strict=True):
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [0, 0, z]
        ds.save_as(p)
    with pytest.raises(CadxDataError, match=msg) as e:
        read_dicom_series(tmp_path)
    assert e.value.field == "ImagePositionPatient" and e.value.path == str(tmp_path)


def test_two_series_pick_one():
    groups = list_dicom_series(BAD / "two_series")
    assert sorted(len(v) for v in groups.values()) == [2, 2]
    for uid, files in groups.items():
        img = read_dicom_series(BAD / "two_series", series_uid=uid)
        assert img.array.shape == (1, 2, 16, 16) and img.meta["series_uid"] == uid
        desc = pydicom.dcmread(files[0]).SeriesDescription
        assert img.meta["series_description"] == desc
    with pytest.raises(CadxDataError, match="not found") as e:
        read_dicom_series(BAD / "two_series", series_uid="1.2.3")
    assert e.value.field == "SeriesInstanceUID"


def test_multiframe_sorted_by_per_frame_positions(tmp_path):
    vol = ramp(4, 5, 6)
    p = write_multiframe(vol, (2.0, 0.5, 0.6), tmp_path / "mf.dcm", patient_id="P", origin=(7.0, 1.0, 2.0),
                         frame_order=[2, 0, 3, 1])
    img = read_image(p)
    assert img.array.shape == (1, 4, 5, 6)
    np.testing.assert_array_equal(img.array[0], vol)
    assert img.spacing == pytest.approx((2.0, 0.5, 0.6)) and img.origin == pytest.approx((7.0, 1.0, 2.0))
    assert read_image(tmp_path / "mf.dcm").array.shape == read_dicom_series(tmp_path).array.shape
    flat = write_multiframe(vol, (2.0, 0.5, 0.6), tmp_path / "flat.dcm", patient_id="P",
                            per_frame_positions=False, frame_order=[1, 0, 2, 3])
    img = read_dicom_file(flat)  # no positions: file order, z spacing from SliceThickness
    np.testing.assert_array_equal(img.array[0], vol[[1, 0, 2, 3]])
    assert img.spacing[0] == pytest.approx(2.0) and img.meta["positions_sorted"] is False


# --- pydicom / pydicom-data files ---------------------------------------------------------------------------
def test_ct_small_hu_and_geometry():
    img = read_image(pdfile("CT_small.dcm"))
    assert img.array.shape == (1, 128, 128) and img.array.dtype == np.float32
    assert img.array[0, 64, 64] == 1928 - 1024 and img.array[0, 0, 0] == 175 - 1024
    assert img.spacing == pytest.approx((0.661468, 0.661468))
    assert img.origin == pytest.approx((-179.035797, -158.135803))  # (y, x) of ImagePositionPatient


def test_enhanced_ct_per_frame_functional_groups():
    img = read_image(pdfile("eCT_Supplemental.dcm"))
    raw = stored("eCT_Supplemental.dcm")
    assert img.array.shape == (1, 2, 512, 512)
    # frame 1 (z = -149) comes first along the normal (0, 0, -1); values rescaled by the shared intercept -1024
    np.testing.assert_array_equal(img.array[0, 0], raw[1].astype(np.float32) - 1024)
    np.testing.assert_array_equal(img.array[0, 1], raw[0].astype(np.float32) - 1024)
    assert img.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    assert img.origin == pytest.approx((-149.0, -301.5, 99.5))


@pytest.mark.parametrize("twin, ref", [
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("SC_rgb_rle.dcm", "SC_rgb.dcm"),
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),
])
def test_lossless_compressed_equals_uncompressed_twin(twin, ref):
    a, b = read_image(pdfile(twin)), read_image(pdfile(ref))
    assert a.array.shape == b.array.shape
    np.testing.assert_array_equal(a.array, b.array)
    assert a.meta["transfer_syntax"] != b.meta["transfer_syntax"]


def test_multiframe_and_rgb_layouts():
    emri = read_image(pdfile("emri_small.dcm"))
    assert emri.array.shape == (1, 10, 64, 64) and emri.array.dtype == np.uint16
    assert emri.array[0, 0, 0, :4].tolist() == [31, 8, 62, 80]
    rgb = read_image(pdfile("SC_rgb.dcm"))
    assert rgb.array.shape == (3, 100, 100) and rgb.array.dtype == np.uint8
    assert rgb.array[:, 5, 50].tolist() == [255, 0, 0] and rgb.array[:, 45, 50].tolist() == [0, 0, 255]
    assert rgb.array[:, 85, 50].tolist() == [192, 192, 192]


def test_jpeg_lossy_baseline_close_to_original():
    lossy = read_image(pdfile("SC_rgb_jpeg_dcmtk.dcm")).array.astype(int)
    ref = read_image(pdfile("SC_rgb.dcm")).array.astype(int)
    assert lossy.shape == ref.shape == (3, 100, 100)
    assert 0 < np.abs(lossy - ref).max() <= 10


def test_jpeg_lossless_and_deflate():
    jll = read_image(pdfile("JPEG-LL.dcm"))
    assert jll.array.shape == (1, 1024, 256) and jll.array.max() == 278
    assert jll.spacing == pytest.approx((2.26, 2.26))
    dfl = read_image(pdfile("image_dfl.dcm"))
    assert dfl.array.shape == (1, 512, 512) and dfl.array.dtype == np.uint8
    assert dfl.array[0, 0, :4].tolist() == [213, 213, 213, 213]


def test_dicom_errors():
    with pytest.raises(CadxDataError) as e:
        read_image(pdfile("rtplan.dcm"))
    assert e.value.field == "PixelData" and "rtplan.dcm" in str(e.value)
    with pytest.raises(CadxDataError) as e:
        read_image(pdfile("MR_truncated.dcm"))
    assert e.value.field == "pixel data" and "MR_truncated.dcm" in str(e.value)


# --- real CT series -----------------------------------------------------------------------------------------
@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.ci
def test_real_ct_series_matches_naive_and_is_hu():
    folder = shared_path("ct_examples", "example_ct_dicom")
    img = read_image(folder)
    assert img.array.shape == (1, 20, 512, 512)
    # z spacing from positions (2 mm) even though SliceThickness says 3 mm
    assert pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SliceThickness == 3
    assert img.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert img.origin == pytest.approx((-804.5, -437.51171875, -249.51171875))
    first = img.meta["files"][:6]  # the 6 lowest slices, decoded the naive way
    np.testing.assert_array_equal(img.array[0, :6], naive_read_series(first[::-1]))
    assert img.array.min() == -1024
    body = img.array[0, :, 256, 200:312]  # a central line through soft tissue
    assert -200 < float(np.median(body)) < 200
    assert float(np.percentile(img.array, 1)) < -900  # air around the patient


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "rtdose.dcm", "OBXXXX1A.dcm",
                                  "liver.dcm", "MR_small_jp2klossless.dcm", "J2K_pixelrep_mismatch.dcm",
                                  "693_J2KI.dcm", "RG3_J2KI.dcm", "MR_small_bigendian.dcm"])
def test_fast_pixel_paths_equal_pydicom(name):
    """The frombuffer (native) and imagecodecs (JPEG 2000) paths give pydicom's stored values exactly."""
    path = pdfile(name)
    ds = pydicom.dcmread(path)
    ref = ds.pixel_array
    got = frame_pixels(ds, path)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)


def test_signed_12_bit_with_high_bit_garbage(tmp_path):
    """BitsStored 12, signed: bits above 12 are masked and the sign is extended from bit 11."""
    (p,) = write_dicom_series(np.zeros((1, 2, 2)), (1, 1, 1), tmp_path, patient_id="P", uid_seed="b")
    ds = pydicom.dcmread(p)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = np.array([[0x0FFF, 0x07FF], [0x7800, 0x1001]], dtype="<u2").tobytes()  # -1, 2047, -2048, 1
    ds.save_as(p)
    assert frame_pixels(pydicom.dcmread(p), p)[0].tolist() == [[-1, 2047], [-2048, 1]]
    np.testing.assert_array_equal(read_image(p).array[0], np.array([[-1, 2047], [-2048, 1]]) - 1024.0)


def test_legacy_file_without_preamble_and_non_dicom(tmp_path):
    """A dataset written without preamble/file meta (ACR-NEMA style) reads like the original; text does not."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = pydicom.dcmread(pdfile("CT_small.dcm"))
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    (tmp_path / "legacy.dcm").write_bytes(fp.getvalue())
    img = read_image(tmp_path / "legacy.dcm")
    np.testing.assert_array_equal(img.array, read_image(pdfile("CT_small.dcm")).array)
    (tmp_path / "text.dcm").write_text("patient,label\nnot dicom at all\n")
    with pytest.raises(CadxDataError) as e:
        read_image(tmp_path / "text.dcm")
    assert e.value.field == "format" and "text.dcm" in str(e.value)
