"""LIDC adapter: per-crop HU detection, reader aggregation, MTMR labelling (synthetic files + real data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cadx.data.datasets import load_dataset
from cadx.data.datasets.lidc import ATTRIBUTES, hu_offset, hu_offsets
from cadx.errors import CadxConfigError, CadxDataError
from conftest import shared_path


def _write(tmp_path, crops: np.ndarray, mal: list[list[float]]) -> None:
    n = len(crops)
    np.savez(tmp_path / "crops.npz", images=crops.astype(np.int16), nodule_id=np.arange(1, n + 1))
    rows = []
    for k in range(n):
        row = {"nodule_id": k + 1, "patient_id": f"P{k // 2}", "pixel_spacing_mm": 0.5, "slice_z_mm": -10.0,
               "equiv_diameter_px": 10.0 + k, "study_uid": "1.2", "series_uid": "1.2.3"}
        for a in (*ATTRIBUTES, "malignancy"):
            for r in range(4):
                v = mal[k][r]
                row[f"{a}_{r + 1}"] = v if a == "malignancy" else (np.nan if np.isnan(v) else 2.0 + r)
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "nodules.csv", index=False)


def test_synthetic_hu_rule_padding_and_mtmr(tmp_path) -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(80, 140, (71, 71))  # HU+1024 lung (≈ −910 HU)
    hu = stored - 1024  # already HU
    padded = stored.copy()
    padded[:, :7] = -2000  # out-of-scan strip, 7/71 of the pixels
    nan = np.nan
    _write(tmp_path, np.stack([stored, hu, padded, stored]),
           [[4, 5, nan, nan], [1, 2, 2, nan], [3, 3, 3, 3], [2, 3, 4, 5]])
    assert hu_offset(stored.astype(np.int16)) == (-1024, 0.0)
    assert hu_offset(hu.astype(np.int16)) == (0, 0.0)
    off, frac = hu_offset(padded.astype(np.int16))
    assert off == -1024 and frac == pytest.approx(7 / 71)
    offs, fracs = hu_offsets(np.stack([stored, hu, padded]).astype(np.int16))
    assert offs.tolist() == [-1024, 0, -1024] and fracs[2] == pytest.approx(7 / 71)

    c = load_dataset("lidc", tmp_path)  # mtmr: means 4.5, 1.667, 3 (dropped), 3.5
    assert c.study_ids == ["1", "2", "4"] and [s.label for s in c] == ["malignant", "benign", "malignant"]
    assert c.classes == ["benign", "malignant"]
    s1, s2 = c.get("1"), c.get("2")
    assert s1.metadata["malignancy"] == 4.5 and s1.metadata["malignancy_score"] == pytest.approx(3.5 / 4)
    assert s2.metadata["malignancy"] == pytest.approx(5 / 3) and s2.metadata["n_readers"] == 3
    assert s1.metadata["attributes_raw"]["margin"] == 2.5  # readers 1, 2 rate 2 and 3
    assert s1.attributes["calcification"] == pytest.approx((2.5 - 1) / 5)
    assert s1.attributes["internalstructure"] == pytest.approx((2.5 - 1) / 3)
    assert s1.metadata["ratings"]["malignancy"] == [4.0, 5.0, None, None]
    a1, a2 = s1.image().load(), s2.image().load()
    assert a1.array.shape == (1, 71, 71) and a1.array.dtype == np.float32 and a1.spacing == (0.5, 0.5)
    np.testing.assert_array_equal(a1.array[0], a2.array[0])  # both scales give the same HU
    assert a1.array.mean() == pytest.approx(stored.mean() - 1024)

    allc = load_dataset("lidc", tmp_path, labelling="none", aggregate="median")
    assert len(allc) == 4 and allc.classes == [] and all(s.label is None for s in allc)
    sp = allc.get("3")
    img = sp.image().load().array[0]
    assert (img[:, :7] == -1000).all() and np.array_equal(img[:, 7:], padded[:, 7:] - 1024.0)
    assert sp.metadata["padding_fraction"] == pytest.approx(7 / 71)
    assert allc.get("4").metadata["malignancy"] == 3.5  # median of 2, 3, 4, 5
    assert allc.get("1").attributes["margin"] == 2.5  # rescale off by default with labelling=none


def test_synthetic_errors(tmp_path) -> None:
    with pytest.raises(CadxDataError, match=r"crops\.npz"):
        load_dataset("lidc", tmp_path)
    _write(tmp_path, np.zeros((2, 71, 71)), [[1, 1, 1, 1], [5, 5, 5, 5]])
    with pytest.raises(CadxConfigError, match="unknown option"):
        load_dataset("lidc", tmp_path, labeling="none")
    with pytest.raises(CadxConfigError, match="labelling"):
        load_dataset("lidc", tmp_path, labelling="median")
    with pytest.raises(CadxConfigError, match="rescale_attributes"):
        load_dataset("lidc", tmp_path, rescale_attributes="maybe")
    df = pd.read_csv(tmp_path / "nodules.csv").drop(columns=["texture_3"])
    df.to_csv(tmp_path / "nodules.csv", index=False)
    with pytest.raises(CadxDataError, match="texture_3") as e:
        load_dataset("lidc", tmp_path)
    assert e.value.field == "texture_3"


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.ci
def test_real_counts_hu_and_labels() -> None:
    root = shared_path("lidc")
    allc = load_dataset("lidc", root, labelling="none")
    assert len(allc) == 2174 and len(allc.patients) == 691
    hu = [s for s in allc if s.metadata["hu_offset"] == 0]
    assert len(hu) == 148 and len({s.patient_id for s in hu}) == 44
    padded = [s for s in allc if s.metadata["padding_fraction"] > 0]
    assert len(padded) == 16 and all(s.metadata["hu_offset"] == -1024 for s in padded)
    assert allc.info["invalid_ratings"] == 1  # the internalstructure rating of 5 (scale 1–4)
    # whatever the stored scale, lung parenchyma ends up near −900 HU
    for s in (hu[0], allc[0], padded[0]):
        assert -1050 < np.percentile(s.image().load().array, 5) < -700

    c = load_dataset("lidc", root)
    assert c.class_counts() == {"benign": 1093, "malignant": 569} and len(c.patients) == 632
    assert c.info["attribute_ranges"]["calcification"] == [1, 6]
    df = pd.read_csv(root / "nodules.csv")
    row = df[df.nodule_id == 1].iloc[0]
    s = c.get("1")
    mal = [row[f"malignancy_{r}"] for r in range(1, 5)]
    assert mal == [5, 5, 5, 4] and s.metadata["malignancy"] == 4.75 and s.label == "malignant"
    assert s.metadata["attributes_raw"]["sphericity"] == 3.75  # readers: 3, 4, 3, 5
    assert s.attributes["sphericity"] == pytest.approx(0.6875)
    assert s.metadata["diameter_px"] == pytest.approx(37.3218978877049)
    img = s.image().load()
    stored = np.load(root / "crops.npz")["images"][0].astype(np.float32)
    assert img.spacing == (0.703125, 0.703125)
    assert img.array.mean() == pytest.approx(stored.mean() - 1024, abs=1e-3)
    assert c.get("2").metadata["n_readers"] == 2 and c.get("2").metadata["malignancy"] == 4.5
    med = load_dataset("lidc", root, aggregate="median")
    assert med.class_counts() == {"benign": 924, "malignant": 486}
