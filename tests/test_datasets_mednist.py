"""MedNIST adapter: folder labels, study ids, near-duplicate groups (synthetic folder + shared data)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cadx.data.datasets import load_dataset
from cadx.errors import CadxConfigError, CadxDataError
from conftest import shared_path


def test_synthetic_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CADX_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "mednist"
    rng = np.random.default_rng(0)
    base = [np.kron(rng.integers(0, 255, (8, 8)), np.ones((8, 8))).astype(np.uint8) for _ in range(3)]
    files = {"Hand": [("000000", base[0]), ("000001", base[1]), ("000002", base[0])],
             "CXR": [("000000", base[2])]}
    for cls, items in files.items():
        (root / cls).mkdir(parents=True)
        for stem, a in items:
            Image.fromarray(a).save(root / cls / f"{stem}.png")
    c = load_dataset("mednist", root)
    assert c.classes == ["CXR", "Hand"] and c.class_counts() == {"CXR": 1, "Hand": 3}
    assert c.study_ids == ["CXR/000000", "Hand/000000", "Hand/000001", "Hand/000002"]
    assert c.patient_ids == ["g00000", "g00001", "g00002", "g00001"]  # Hand 0 and 2 are the same picture
    img = c.get("Hand/000001").image().load()
    assert img.array.shape == (1, 64, 64) and np.array_equal(img.array[0], base[1])
    assert c.get("Hand/000002").metadata["file"] == "000002.png"
    per_image = load_dataset("mednist", root, group="image", dedup_threshold="0")
    assert per_image.patient_ids == per_image.study_ids
    hash_only = load_dataset("mednist", root, dedup_threshold="0", dedup_min_ncc="none")
    assert hash_only.patient_ids[1] == hash_only.patient_ids[3] and hash_only.info["dedup_min_ncc"] is None
    with pytest.raises(CadxConfigError, match="group"):
        load_dataset("mednist", root, group="patient")
    with pytest.raises(CadxConfigError, match="dedup_threshold"):
        load_dataset("mednist", root, dedup_threshold="ten")
    with pytest.raises(CadxDataError, match="no "):
        load_dataset("mednist", tmp_path / "cache")


@pytest.mark.shared
@pytest.mark.slow
def test_real_mednist(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CADX_CACHE_DIR", str(tmp_path / "cache"))
    root = shared_path("mednist")
    c = load_dataset("mednist", root)
    assert len(c) == 12000 and c.class_counts() == dict.fromkeys(
        ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"], 2000)
    assert c.info["mixed_label_groups"] == 0 and len(c.patients) == c.info["dedup_groups"]
    assert 2000 < len(c.patients) < 12000  # repeats and adjacent slices are grouped, not everything
    c.check_patient_labels()
    img = c.get("CXR/000000").image().load()
    assert img.array.shape == (1, 64, 64)
    assert np.array_equal(img.array[0], np.asarray(Image.open(root / "CXR" / "000000.jpeg")))
    assert len(load_dataset("mednist", root, group="image").patients) == 12000
