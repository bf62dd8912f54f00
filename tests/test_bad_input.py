"""Every file of the bad-input corpus (tests/data/bad, made by tests/data/make_bad_corpus.py) raises
CadxDataError whose message names the offending file and field — never a raw library traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadx.data.datasets import load_dataset
from cadx.data.readers import read_image
from cadx.errors import CadxDataError

BAD = Path(__file__).parent / "data" / "bad"


@pytest.mark.parametrize("name, field", [
    ("truncated.dcm", "pixel data"),
    ("two_series", "SeriesInstanceUID"),
    ("no_pixels.dcm", "PixelData"),
    ("nan.nii.gz", "voxels"),
    ("not_image.png", "format"),
    ("truncated.png", "pixel data"),
])
def test_bad_images(name, field):
    with pytest.raises(CadxDataError) as e:
        read_image(BAD / name)
    assert e.value.field == field and e.value.path == str(BAD / name)
    assert str(e.value).startswith(f"{BAD / name}: {field}: ")


@pytest.mark.parametrize("name, field, detail", [
    ("manifest_missing_column.csv", "patient_id", "missing required column"),
    ("manifest_missing_path.csv", "path", "row 3 (study_id 's2')"),
    ("manifest_duplicate_study.csv", "study_id", "row 3 (study_id 's1')"),
    ("manifest_two_labels.csv", "label", "'p1'"),
    ("manifest_bad_box.csv", "box", "row 2"),
    ("manifest_bad_attribute.csv", "age", "'fifty'"),
])
def test_bad_manifests(name, field, detail):
    with pytest.raises(CadxDataError) as e:
        load_dataset("manifest", BAD / name)
    assert e.value.field == field and e.value.path == str(BAD / name)
    assert detail in str(e.value) and str(e.value).startswith(f"{BAD / name}: {field}: ")


def test_empty_mask_named_when_loaded():
    cohort = load_dataset("manifest", BAD / "manifest_empty_mask.csv")
    assert int(cohort.get("s1").mask().load().array.max()) == 255  # the lesion mask is fine
    with pytest.raises(CadxDataError) as e:
        cohort.get("s2").mask().load()
    assert e.value.field == "mask" and e.value.path == str(BAD / "empty_mask.png")
    allowed = load_dataset("manifest", BAD / "manifest_empty_mask.csv", allow_empty_masks="1")
    assert int(allowed.get("s2").mask().load().array.max()) == 0


def test_corpus_is_small():
    files = [p for p in BAD.rglob("*") if p.is_file()]
    assert len(files) >= 15 and sum(p.stat().st_size for p in files) < 300_000
