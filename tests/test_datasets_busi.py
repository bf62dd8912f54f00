"""BUSI adapter: merged masks, channel handling, near-duplicate groups (synthetic folder + shared data)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cadx.data.datasets import load_dataset
from cadx.errors import CadxConfigError, CadxDataError
from conftest import shared_path


def _save(path, arr, mode=None) -> None:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)


@pytest.fixture
def busi(tmp_path, monkeypatch):
    monkeypatch.setenv("CADX_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "busi"
    rng = np.random.default_rng(0)
    for c in ("benign", "malignant"):
        (root / c).mkdir(parents=True)
    grey = rng.integers(0, 255, (40, 50), dtype=np.uint8)
    _save(root / "benign" / "benign (1).png", np.stack([grey] * 3, axis=-1))  # RGB-saved greyscale
    m1 = np.zeros((40, 50), np.uint8)
    m1[5:10, 5:15] = 255
    m2 = np.zeros((40, 50), np.uint8)
    m2[8:20, 10:20] = 255  # overlaps m1 on rows 8-9, cols 10-14
    _save(root / "benign" / "benign (1)_mask.png", m1)
    _save(root / "benign" / "benign (1)_mask_1.png", np.stack([m2] * 3 + [np.full_like(m2, 255)], -1))
    colour = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    _save(root / "malignant" / "malignant (1).png", colour)
    _save(root / "malignant" / "malignant (1)_mask.png", np.zeros((30, 30), np.uint8))
    _save(root / "malignant" / "malignant (2).png", colour)  # exact repeat → same group
    _save(root / "malignant" / "malignant (2)_mask.png", np.zeros((30, 30), np.uint8))
    _save(root / "malignant" / "malignant (2)_mask_1.png", np.zeros((12, 30), np.uint8))  # wrong size
    (root / "malignant" / "test.txt").write_text("\n")
    return root, grey, colour, m1, m2


def test_synthetic_masks_channels_groups(busi) -> None:
    root, grey, colour, m1, m2 = busi
    c = load_dataset("busi", root)
    assert c.study_ids == ["benign/benign (1)", "malignant/malignant (1)", "malignant/malignant (2)"]
    assert c.classes == ["benign", "malignant"] and c.info["skipped_masks"] == ["malignant/malignant (2)_mask_1.png"]
    s = c.get("benign/benign (1)")
    img, mask = s.image().load(), s.mask().load()
    assert img.array.shape == (1, 40, 50) and np.array_equal(img.array[0], grey)
    assert mask.array.shape == (1, 40, 50) and mask.array.dtype == np.uint8
    assert mask.array.sum() == ((m1 > 0) | (m2 > 0)).sum() == 50 + 120 - 2 * 5
    assert s.metadata["mask_files"] == ["benign (1)_mask.png", "benign (1)_mask_1.png"]
    col = c.get("malignant/malignant (1)").image().load().array
    assert col.shape == (3, 30, 30) and np.array_equal(np.moveaxis(col, 0, -1), colour)
    assert load_dataset("busi", root, channels="1").get("malignant/malignant (1)").image().load().array.shape \
        == (1, 30, 30)
    assert c.patient_ids == ["g0000", "g0001", "g0001"] and c.info["dedup_groups"] == 2
    assert load_dataset("busi", root, group="image").patient_ids == c.study_ids
    with pytest.raises(CadxDataError, match="differs") as e:
        load_dataset("busi", root, strict="true")
    assert e.value.field == "mask" and "malignant (2)_mask_1.png" in str(e.value)
    with pytest.raises(CadxConfigError):
        load_dataset("busi", root, channels="2")
    with pytest.raises(CadxConfigError, match="unknown option"):
        load_dataset("busi", root, grouping="image")
    (root / "benign" / "benign (1)_mask.png").unlink()
    (root / "benign" / "benign (1)_mask_1.png").unlink()
    with pytest.raises(CadxDataError, match=r"no <name>_mask\.png"):
        load_dataset("busi", root)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.ci
def test_real_busi(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CADX_CACHE_DIR", str(tmp_path / "cache"))
    root = shared_path("busi")
    c = load_dataset("busi", root)
    assert c.class_counts() == {"benign": 49, "malignant": 50, "normal": 50}
    assert c.info["skipped_masks"] == ["benign/benign (4)_mask_1.png"]  # 555×465 mask for a 416×416 image
    # frames of one lesion fall in one group
    frames = {c.get(f"malignant/malignant ({k})").patient_id for k in range(3, 10)}
    assert len(frames) == 1
    assert c.info["mixed_label_groups"] == 0
    assert len(c.patients) == c.info["dedup_groups"] < 149
    # masks: two outlines OR-ed (counted directly from the PNGs)
    m = c.get("benign/benign (25)").mask().load().array
    direct = [(np.asarray(Image.open(root / "benign" / f)) > 0) for f in
              ("benign (25)_mask.png", "benign (25)_mask_1.png")]
    assert m.sum() == (direct[0] | direct[1]).sum() == 5824
    assert c.get("benign/benign (13)").image().load().array.shape[0] == 3  # a truly colour frame
    assert c.get("benign/benign (1)").image().load().array.shape[0] == 1  # RGB-saved greyscale
    assert c.get("normal/normal (1)").mask().load().array.sum() == 0
