"""MedMNIST adapter on synthetic npz files (2D grey, 2D RGB, 3D) and the three shared files."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.data.datasets import load_dataset
from cadx.errors import CadxConfigError, CadxDataError
from conftest import shared_path


def _npz(path, shape, labels_per_split) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, labels in labels_per_split.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.uint8)[:, None]
    np.savez(path, **arrays)
    return arrays


def test_synthetic_flags(tmp_path) -> None:
    arrays = _npz(tmp_path / "breastmnist.npz", (28, 28), {"train": [0, 1, 1], "val": [1], "test": [0, 1]})
    c = load_dataset("medmnist:breastmnist", tmp_path)
    assert c.classes == ["malignant", "normal_benign"]  # label 0 is malignant
    assert [s.label for s in c] == ["malignant", "normal_benign", "normal_benign", "normal_benign", "malignant",
                                    "normal_benign"]
    assert c.official_split() == {"train_0": "train", "train_1": "train", "train_2": "train", "val_0": "val",
                                  "test_0": "test", "test_1": "test"}
    assert c.patient_ids == c.study_ids
    img = c.get("test_1").image().load()
    assert img.array.shape == (1, 28, 28) and np.array_equal(img.array[0], arrays["test_images"][1])

    rgb = _npz(tmp_path / "pathmnist.npz", (28, 28, 3), {"train": [0, 3, 8], "val": [1], "test": [2]})
    c = load_dataset("medmnist", tmp_path / "pathmnist.npz")  # root = the file, flag from its name
    assert c.classes == [str(k) for k in range(9)] and c.get("train_1").label == "3"
    a = c.get("train_2").image().load().array
    assert a.shape == (3, 28, 28) and np.array_equal(a[1], rgb["train_images"][2][..., 1])

    vol = _npz(tmp_path / "nodulemnist3d_64.npz", (8, 8, 8), {"train": [0, 1], "val": [1], "test": [0]})
    c = load_dataset("medmnist", tmp_path, flag="nodulemnist3d_64")
    assert c.classes == ["benign", "malignant"] and c.info["spatial_dims"] == 3
    v = c.get("val_0").image().load()
    assert v.array.shape == (1, 8, 8, 8) and v.spacing == (1.0, 1.0, 1.0)
    assert np.array_equal(v.array[0], vol["val_images"][0])


def test_splits_option_keeps_official_splits(tmp_path) -> None:
    """``splits=train,val`` (an inner CV that never sees test): test studies are gone, classes unchanged."""
    _npz(tmp_path / "breastmnist.npz", (28, 28), {"train": [1, 1], "val": [1], "test": [0, 1]})
    c = load_dataset("medmnist:breastmnist", tmp_path, splits="val,train")
    assert c.study_ids == ["train_0", "train_1", "val_0"] and c.info["splits"] == ["train", "val"]
    assert c.classes == ["malignant", "normal_benign"]  # malignant exists only in test, still class 0
    assert c.official_split() == {"train_0": "train", "train_1": "train", "val_0": "val"}
    assert load_dataset("medmnist:breastmnist", tmp_path, splits=["test"]).study_ids == ["test_0", "test_1"]
    for bad in ("train,holdout", "train,train", ""):
        with pytest.raises(CadxConfigError, match="splits"):
            load_dataset("medmnist:breastmnist", tmp_path, splits=bad)


def test_errors(tmp_path) -> None:
    _npz(tmp_path / "breastmnist.npz", (28, 28), {"train": [0, 1], "val": [0], "test": [1]})
    with pytest.raises(CadxConfigError, match="flag"):
        load_dataset("medmnist", tmp_path)
    with pytest.raises(CadxDataError, match=r"no chestmnist\.npz"):
        load_dataset("medmnist:chestmnist", tmp_path)
    with pytest.raises(CadxConfigError, match="unknown option"):
        load_dataset("medmnist:breastmnist", tmp_path, size=64)
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 4, 4), np.uint8), train_labels=np.zeros((2, 1)),
             val_images=np.zeros((1, 4, 4), np.uint8), val_labels=np.zeros((1, 1)),
             test_images=np.zeros((1, 4, 4), np.uint8), test_labels=np.zeros((1, 1)))
    with pytest.raises(CadxDataError, match="train_labels") as e:
        load_dataset("medmnist:bad", tmp_path)
    assert e.value.field == "train_labels"


@pytest.mark.shared
def test_real_files() -> None:
    root = shared_path("medmnist")
    b = load_dataset("medmnist:breastmnist", root)
    assert b.class_counts() == {"malignant": 210, "normal_benign": 570}
    assert b.describe()["official_split"] == {"train": 546, "val": 78, "test": 156}
    with np.load(root / "breastmnist.npz") as z:
        ref, lab = z["test_images"][5], int(z["test_labels"][5, 0])
    s = b.get("test_5")
    assert np.array_equal(s.image().load().array[0], ref) and s.metadata["label_index"] == lab
    for flag, side in (("adrenalmnist3d", 28), ("adrenalmnist3d_64", 64)):
        a = load_dataset(f"medmnist:{flag}", root)
        assert len(a) == 1584 and a.class_counts() == {"normal": 1234, "adrenal_mass": 350}
        assert a.describe()["official_split"] == {"train": 1188, "val": 98, "test": 298}
        img = a.get("train_0").image().load()
        assert img.array.shape == (1, side, side, side) and img.array.dtype == np.uint8
