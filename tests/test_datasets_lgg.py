"""LGG adapter: numeric slice order, volumes and masks, data.csv labels (synthetic folder + shared data)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cadx.data.datasets import load_dataset
from cadx.data.datasets.lgg import list_slices
from cadx.errors import CadxConfigError, CadxDataError
from conftest import shared_path

CSV = ("Patient,RNASeqCluster,histological_type,neoplasm_histologic_grade,age_at_initial_pathologic\n"
       "TCGA_AA_0001,2,3,1,40\nTCGA_AA_0002,,1,2,61\n")


def _patient(root, name: str, n: int, tumour_slices: set[int]) -> None:
    d = root / name
    d.mkdir(parents=True)
    for z in range(1, n + 1):
        img = np.zeros((16, 16, 3), np.uint8)
        img[..., 0], img[..., 1], img[..., 2] = z, 100 + z, 200  # slice number in channel 0
        mask = np.zeros((16, 16), np.uint8)
        if z in tumour_slices:
            mask[4:8, 4:10] = 255
        tifffile.imwrite(d / f"{name}_{z}.tif", img, compression="zlib")
        tifffile.imwrite(d / f"{name}_{z}_mask.tif", mask)


@pytest.fixture
def lgg(tmp_path):
    root = tmp_path / "kaggle_3m"
    root.mkdir()
    (root / "data.csv").write_text(CSV)
    _patient(root, "TCGA_AA_0001_19990101", 12, {2, 10, 11})
    _patient(root, "TCGA_AA_0002_20000202", 3, set())
    return tmp_path


def test_synthetic_volumes_and_labels(lgg) -> None:
    c = load_dataset("lgg", lgg)  # root above kaggle_3m
    assert c.study_ids == ["TCGA_AA_0001_19990101", "TCGA_AA_0002_20000202"]
    assert c.patient_ids == ["TCGA_AA_0001", "TCGA_AA_0002"]
    assert [s.label for s in c] == ["G2", "G3"] and c.classes == ["G2", "G3"]
    s = c[0]
    assert s.metadata["slices"] == list(range(1, 13)) and s.metadata["age_at_initial_pathologic"] == 40.0
    img, mask = s.image().load(), s.mask().load()
    assert img.array.shape == (3, 12, 16, 16) and img.array.dtype == np.float32 and img.spacing == (1, 1, 1)
    assert img.array[0, :, 0, 0].tolist() == list(range(1, 13))  # numeric, not lexical (1, 10, 11, 12, 2...)
    assert img.array[1, 9, 0, 0] == 110 and img.array[2].max() == 200
    assert mask.array.shape == (1, 12, 16, 16) and mask.array.dtype == np.uint8
    assert mask.array[0].sum(axis=(1, 2)).tolist() == [0, 24, 0, 0, 0, 0, 0, 0, 0, 24, 24, 0]
    h = load_dataset("lgg", lgg / "kaggle_3m", label="histological_type")
    assert [s.label for s in h] == ["oligodendroglioma", "astrocytoma"]
    r = load_dataset("lgg", lgg, label="RNASeqCluster")
    assert [s.label for s in r] == ["2", None] and r.classes == ["2"]
    with pytest.raises(CadxConfigError, match="label"):
        load_dataset("lgg", lgg, label="tumour_size")
    with pytest.raises(CadxConfigError, match="unknown option"):
        load_dataset("lgg", lgg, labels="grade")


def test_missing_mask_is_an_error(lgg) -> None:
    d = lgg / "kaggle_3m" / "TCGA_AA_0002_20000202"
    (d / "TCGA_AA_0002_20000202_2_mask.tif").unlink()
    with pytest.raises(CadxDataError, match=r"\[2\]") as e:
        list_slices(d)
    assert e.value.field == "mask" and str(d) in str(e.value)


@pytest.mark.shared
def test_real_lgg() -> None:
    root = shared_path("lgg")
    c = load_dataset("lgg", root)
    assert len(c) == 28 and len(c.patients) == 28 and c.class_counts() == {"G2": 14, "G3": 14}
    s = c.get("TCGA_CS_4941_19960909")
    assert s.patient_id == "TCGA_CS_4941" and s.label == "G3" and s.metadata["n_slices"] == 23
    img, mask = s.image().load(), s.mask().load()
    assert img.array.shape == (3, 23, 256, 256) and mask.array.shape == (1, 23, 256, 256)
    d = root / "kaggle_3m" / s.study_id
    ref = tifffile.imread(d / f"{s.study_id}_10.tif")
    np.testing.assert_array_equal(img.array[:, 9], np.moveaxis(ref, -1, 0).astype(np.float32))
    direct = sum(int((tifffile.imread(d / f"{s.study_id}_{z}_mask.tif") > 0).sum()) for z in range(1, 24))
    assert int(mask.array.sum()) == direct > 0
    assert load_dataset("lgg", root, label="histological_type").class_counts() == {
        "astrocytoma": 10, "oligoastrocytoma": 5, "oligodendroglioma": 13}


def test_sequences_option_selects_and_orders_channels(lgg) -> None:
    flair = load_dataset("lgg", lgg, sequences=["flair"])[0].image().load().array
    assert flair.shape == (1, 12, 16, 16) and flair[0, 9, 0, 0] == 110          # channel 1 of the TIFF
    two = load_dataset("lgg", lgg, sequences=["post", "pre"])[0].image().load().array
    assert two.shape == (2, 12, 16, 16) and two[0].max() == 200 and two[1, :, 0, 0].tolist() == list(range(1, 13))
    for bad in (["t2"], [], ["flair", "flair"]):
        with pytest.raises(CadxConfigError, match="sequences"):
            load_dataset("lgg", lgg, sequences=bad)
