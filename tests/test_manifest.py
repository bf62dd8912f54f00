"""The manifest dataset adapter: parsing, validation, lazy mask checks, round trip with write_manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cadx.data.datasets import load_dataset
from cadx.data.datasets.manifest import load_manifest
from cadx.data.image import ImageData
from cadx.data.manifest_io import write_manifest
from cadx.data.readers import write_image
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError

HEADER = "study_id,patient_id,path,label,mask,box,split,age,score,site\n"


def _png(path: Path, value: int, lesion: bool = True) -> None:
    arr = np.full((1, 8, 8), value, dtype=np.uint8)
    if not lesion:
        arr[:] = 0
    write_image(ImageData(arr, (1.0, 1.0)), path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A manifest with 4 studies / 3 patients, masks, boxes, splits, numeric and text extra columns."""
    img = tmp_path / "images"
    for i in range(4):
        _png(img / f"s{i}.png", 10 * (i + 1))
    m = np.zeros((1, 8, 8), np.uint8)
    m[0, 2:4, 3:6] = 1
    write_image(ImageData(m, (1.0, 1.0)), img / "m0.png")
    _png(img / "empty.png", 0, lesion=False)
    (tmp_path / "manifest.csv").write_text(
        HEADER
        + "s0,p0,images/s0.png,malignant,images/m0.png,2 3 4 6,train,61,0.5,north\n"
        + "s1,p0,images/s1.png,malignant,,,train,61,,north\n"
        + f"s2,p1,{img / 's2.png'},benign,images/empty.png,,test,47.5,1e-1,south\n"
        + "s3,p2,images/s3.png,,,,val,nan,2,\n")
    return tmp_path


def test_load_fields(tree):
    c = load_manifest(tree / "manifest.csv")
    assert isinstance(c, Cohort) and c.study_ids == ["s0", "s1", "s2", "s3"]
    assert c.patients == ["p0", "p1", "p2"] and c.classes == ["benign", "malignant"]
    assert c.y().tolist() == [1, 1, 0, -1]
    s0, s1, s2, s3 = c
    assert s0.attributes == {"age": 61.0, "score": 0.5} and s1.attributes == {"age": 61.0}
    assert s2.attributes == pytest.approx({"age": 47.5, "score": 0.1}) and s3.attributes == {"score": 2.0}
    assert s0.metadata["site"] == "north" and "site" not in s3.metadata
    assert s0.boxes == [(2, 3, 4, 6)] and s1.boxes == []
    assert c.official_split() == {"s0": "train", "s1": "train", "s2": "test", "s3": "val"}
    assert s0.image().load().array[0, 0, 0] == 10 and s2.image().load().array[0, 0, 0] == 30  # absolute path
    assert s0.image().source == str(tree / "images" / "s0.png")
    assert int(s0.mask().load().array.sum()) == 6 and s1.mask() is None


def test_empty_mask_checked_when_loaded(tree):
    c = load_manifest(tree / "manifest.csv")  # loading the cohort itself succeeds
    with pytest.raises(CadxDataError) as e:
        c.get("s2").mask().load()
    assert e.value.field == "mask" and e.value.path == str(tree / "images" / "empty.png")
    ok = load_manifest(tree / "manifest.csv", allow_empty_masks="true")
    assert int(ok.get("s2").mask().load().array.max()) == 0


def test_registry_folder_root_and_options(tree):
    c = load_dataset("manifest", tree, classes="malignant,benign")
    assert c.classes == ["malignant", "benign"] and c.y().tolist() == [0, 0, 1, -1]
    c = load_dataset("manifest", tree / "manifest.csv", metadata_columns="age")
    assert c.get("s0").metadata["age"] == "61" and "age" not in c.get("s0").attributes
    with pytest.raises(CadxConfigError):
        load_manifest(tree, colour="red")
    with pytest.raises(CadxDataError) as e:
        load_manifest(tree, classes="benign")
    assert e.value.field == "label"


def test_round_trip_with_write_manifest(tree, tmp_path):
    c = load_manifest(tree / "manifest.csv", allow_empty_masks=True)
    out = tmp_path / "elsewhere" / "copy.csv"
    write_manifest(c, out)
    back = load_manifest(out, allow_empty_masks=True)
    assert back.study_ids == c.study_ids and back.patient_ids == c.patient_ids
    assert [s.label for s in back] == [s.label for s in c]
    assert [s.attributes for s in back] == [s.attributes for s in c]
    assert [s.boxes for s in back] == [s.boxes for s in c]
    assert back.official_split() == c.official_split()
    for a, b in zip(c, back, strict=True):
        np.testing.assert_array_equal(a.image().load().array, b.image().load().array)
        assert (a.mask() is None) == (b.mask() is None)
    assert "../" in out.read_text()  # paths were rewritten relative to the new CSV


@pytest.mark.parametrize("row, field", [
    ("s9,p9,images/s0.png,benign,,1 2 3,,,,\n", "box"),
    ("s9,p9,images/s0.png,benign,,a b c d,,,,\n", "box"),
    ("s9,p9,images/s0.png,benign,,,holdout,,,\n", "split"),
    ("s9,p9,images/s0.png,benign,images/nope.png,,,,,\n", "mask"),
    ("s9,,images/s0.png,benign,,,,,,\n", "patient_id"),
    (",p9,images/s0.png,benign,,,,,,\n", "study_id"),
    ("s9,p9,,benign,,,,,,\n", "path"),
    ("s9,p9,images/s0.png,benign,,,,inf,,\n", "age"),
])
def test_row_errors_name_field_and_row(tree, row, field):
    csv = tree / "manifest.csv"
    csv.write_text(csv.read_text() + row)
    with pytest.raises(CadxDataError) as e:
        load_manifest(csv)
    assert e.value.field == field and e.value.path == str(csv)
    if field != "study_id":
        assert "row 6" in str(e.value)


def test_one_patient_two_labels_can_be_allowed(tree):
    csv = tree / "manifest.csv"
    csv.write_text(csv.read_text() + "s9,p0,images/s0.png,benign,,,,,,\n")
    with pytest.raises(CadxDataError) as e:
        load_manifest(csv)
    assert e.value.field == "label" and "'p0'" in str(e.value)
    assert len(load_manifest(csv, check_patient_labels="false")) == 5
