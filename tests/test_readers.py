"""Non-DICOM readers (SimpleITK, PIL, TIFF, npy), write_image round trips, MedMNIST, real shared files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from cadx.data.image import ImageData
from cadx.data.readers import read_image, read_medmnist, write_image
from cadx.errors import CadxDataError
from conftest import shared_path

# a rotation about the array z axis, in array order (z, y, x)
DIRECTION = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_itk_round_trip_3d(tmp_path, suffix):
    arr = np.arange(3 * 4 * 5, dtype=np.float32).reshape(1, 3, 4, 5) - 7.5
    img = ImageData(arr, (2.5, 0.8, 0.6), (10.0, -20.0, 30.0), DIRECTION)
    back = read_image(write_image(img, tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(back.array, arr)
    assert back.spacing == pytest.approx(img.spacing) and back.origin == pytest.approx(img.origin)
    assert back.direction == pytest.approx(DIRECTION)


def test_itk_geometry_in_array_order(tmp_path):
    """An ITK image with x-spacing 0.5, z-spacing 3 reads back as spacing (3, ., 0.5), origin reversed."""
    im = sitk.GetImageFromArray(np.zeros((2, 3, 4), dtype=np.int16))
    im.SetSpacing((0.5, 0.7, 3.0))
    im.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(im, str(tmp_path / "g.mha"))
    img = read_image(tmp_path / "g.mha")
    assert img.array.shape == (1, 2, 3, 4) and img.array.dtype == np.int16
    assert img.spacing == (3.0, 0.7, 0.5) and img.origin == (3.0, 2.0, 1.0)


def test_vector_mha_and_2d_nifti(tmp_path):
    rgb = np.arange(3 * 6 * 7, dtype=np.uint8).reshape(3, 6, 7)
    back = read_image(write_image(ImageData(rgb, (0.3, 0.4)), tmp_path / "rgb.mha"))
    np.testing.assert_array_equal(back.array, rgb)
    assert back.spacing == pytest.approx((0.3, 0.4))
    gray = np.arange(12, dtype=np.int16).reshape(1, 3, 4)
    back = read_image(write_image(ImageData(gray, (1.5, 2.0), (4.0, 5.0)), tmp_path / "g.nii.gz"))
    np.testing.assert_array_equal(back.array, gray)
    assert back.spacing == pytest.approx((1.5, 2.0)) and back.origin == pytest.approx((4.0, 5.0))


@pytest.mark.parametrize("arr", [
    np.arange(30, dtype=np.uint8).reshape(1, 5, 6),
    (np.arange(90, dtype=np.uint8) * 2).reshape(3, 5, 6),
    (np.arange(30, dtype=np.uint16) * 2000).reshape(1, 5, 6),
], ids=["gray8", "rgb8", "gray16"])
def test_png_round_trip(tmp_path, arr):
    back = read_image(write_image(ImageData(arr, (1.0, 1.0)), tmp_path / "x.png"))
    assert back.array.dtype == arr.dtype
    np.testing.assert_array_equal(back.array, arr)


def test_png_write_rejects_float_and_3d(tmp_path):
    with pytest.raises(CadxDataError) as e:
        write_image(ImageData(np.zeros((1, 4, 4), np.float32), (1, 1)), tmp_path / "f.png")
    assert e.value.field == "dtype"
    with pytest.raises(CadxDataError) as e:
        write_image(ImageData(np.zeros((1, 2, 4, 4), np.uint8), (1, 1, 1)), tmp_path / "v.png")
    assert e.value.field == "shape"
    with pytest.raises(CadxDataError) as e:
        write_image(ImageData(np.zeros((1, 4, 4), np.uint8), (1, 1)), tmp_path / "v.gif")
    assert e.value.field == "format"


def test_pil_palette_and_jpeg(tmp_path):
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    pal.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * 759)
    pal.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.array.shape == (3, 2, 2) and img.array[:, 1, 0].tolist() == [70, 80, 90]
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "j.jpg", quality=95)
    j = read_image(tmp_path / "j.jpg")
    assert j.array.shape == (1, 8, 8) and abs(int(j.array[0, 4, 4]) - 100) <= 1


def test_tiff_rgb_deflate_and_multipage(tmp_path):
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", compression="zlib")
    img = read_image(tmp_path / "rgb.tif")
    assert img.array.shape == (3, 4, 5)
    np.testing.assert_array_equal(img.array, np.moveaxis(rgb, -1, 0))
    stack = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    tifffile.imwrite(tmp_path / "stack.tiff", stack, photometric="minisblack")
    vol = read_image(tmp_path / "stack.tiff")
    assert vol.array.shape == (1, 3, 4, 5) and vol.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(vol.array[0], stack)


def test_npy_and_bad_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.save(tmp_path / "v.npy", np.zeros((2, 3, 4), np.int16))
    assert read_image(tmp_path / "a.npy").array.shape == (1, 2, 3)
    assert read_image(tmp_path / "v.npy").array.shape == (1, 2, 3, 4)
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    with pytest.raises(CadxDataError) as e:
        read_image(tmp_path / "nan.npy")
    assert e.value.field == "voxels"
    np.save(tmp_path / "1d.npy", np.zeros(5))
    with pytest.raises(CadxDataError) as e:
        read_image(tmp_path / "1d.npy")
    assert e.value.field == "shape"


def test_missing_and_unknown(tmp_path):
    with pytest.raises(CadxDataError) as e:
        read_image(tmp_path / "nope.nii.gz")
    assert e.value.field == "path"
    (tmp_path / "x.xyz").write_text("hello")
    with pytest.raises(CadxDataError) as e:
        read_image(tmp_path / "x.xyz")
    assert e.value.field == "format" and "x.xyz" in str(e.value)


def test_read_medmnist_synthetic_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    parts = {}
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        parts[f"{split}_images"] = rng.integers(0, 255, (n, 8, 8, 8), dtype=np.uint8)
        parts[f"{split}_labels"] = np.arange(n, dtype=np.uint8)[:, None] % 2
    np.savez(tmp_path / "m.npz", **parts)
    out = read_medmnist(tmp_path / "m.npz")
    assert {k: v[0].shape for k, v in out.items()} == {"train": (5, 8, 8, 8), "val": (2, 8, 8, 8),
                                                        "test": (3, 8, 8, 8)}
    assert out["train"][1].tolist() == [0, 1, 0, 1, 0] and out["train"][1].dtype == np.int64
    del parts["val_labels"]
    np.savez(tmp_path / "bad.npz", **parts)
    with pytest.raises(CadxDataError) as e:
        read_medmnist(tmp_path / "bad.npz")
    assert e.value.field == "val_labels" and "bad.npz" in str(e.value)
    (tmp_path / "txt.npz").write_text("no zip")
    with pytest.raises(CadxDataError) as e:
        read_medmnist(tmp_path / "txt.npz")
    assert e.value.field == "format"


# --- real shared data ---------------------------------------------------------------------------------------
@pytest.mark.shared
def test_real_medmnist_files():
    root = shared_path("medmnist")
    breast = read_medmnist(root / "breastmnist.npz")
    assert {k: len(v[1]) for k, v in breast.items()} == {"train": 546, "val": 78, "test": 156}
    assert breast["train"][0].shape == (546, 28, 28)
    assert np.bincount(read_medmnist(root / "adrenalmnist3d.npz")["train"][1]).tolist() == [929, 259]


@pytest.mark.shared
@pytest.mark.slow
def test_real_medmnist_64():
    adrenal = read_medmnist(shared_path("medmnist", "adrenalmnist3d_64.npz"))
    assert adrenal["train"][0].shape == (1188, 64, 64, 64) and adrenal["test"][0].shape == (298, 64, 64, 64)


@pytest.mark.shared
def test_real_lgg_tiff_and_busi_png():
    case = shared_path("lgg", "kaggle_3m", "TCGA_CS_4941_19960909")
    img = read_image(case / "TCGA_CS_4941_19960909_12.tif")
    assert img.array.shape == (3, 256, 256) and img.array.dtype == np.uint8 and img.array.max() > 0
    mask = read_image(case / "TCGA_CS_4941_19960909_12_mask.tif")
    assert mask.array.shape == (1, 256, 256) and set(np.unique(mask.array).tolist()) <= {0, 255}
    busi = read_image(shared_path("busi", "benign", "benign (1).png"))
    assert busi.array.shape == (3, 416, 416) and busi.array.dtype == np.uint8


@pytest.mark.shared
def test_real_ct_nifti_hu():
    img = read_image(shared_path("ct_examples", "example_ct.nii.gz"))
    assert img.array.shape == (1, 112, 101, 122) and img.spacing == (3.0, 3.0, 3.0)
    assert img.origin == pytest.approx((94.3017578125, -11.319000244140625, 177.95632934570312))
    # LPS x and y axes flipped (RAS-stored NIfTI), in array order
    assert img.direction == pytest.approx((1, 0, 0, 0, -1, 0, 0, 0, -1))
    lo = float(np.percentile(img.array, 1))
    assert -1100 < lo < -900 and img.array.min() >= -1300 and img.array.max() < 4000
    seg = read_image(shared_path("ct_examples", "example_seg.nii.gz"))
    assert seg.array.shape == (1, 30, 101, 122) and seg.array.dtype == np.uint8
    assert len(np.unique(seg.array)) == 42 and seg.array.max() == 117  # background + 41 organ labels
