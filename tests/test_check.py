"""``cadx datasets check`` and :func:`cadx.data.check.check_cohort`: every broken case of the corpus
(tests/data/bad/cases, made by tests/data/make_bad_corpus.py) fails in at most 3 lines naming the file and the
field, without a traceback; clean cohorts pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cadx.data.check import check_cohort, first_error
from cadx.data.datasets import DATASETS, load_dataset, register_dataset
from cadx.data.image import LazyImage
from cadx.data.study import Cohort
from cadx.errors import CadxDataError
from cadx.registry import Options
from helpers import tiny_cohort, tiny_config

CASES = Path(__file__).parent / "data" / "bad" / "cases"
EXPECTED: dict[str, str] = json.loads((CASES / "expected_fields.json").read_text())

#: Runs the real entry point (cadx.cli.main) once per case in one interpreter: exit code, stdout, stderr.
DRIVER = """
import contextlib, io, json, sys
from cadx.cli import main
res = {}
root, cases = sys.argv[1], sys.argv[2:]
for case in cases:
    o, e = io.StringIO(), io.StringIO()
    sys.argv = ["cadx", "datasets", "check", "manifest", "--root", f"{root}/{case}/manifest.csv",
                "--workers", "0"]
    code = 0
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            main()
        except SystemExit as x:
            code = x.code if isinstance(x.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc(file=e)
            code = 99
    res[case] = [code, o.getvalue(), e.getvalue()]
print(json.dumps(res))
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from cadx.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=300)


def test_corpus_has_40_cases() -> None:
    assert len(EXPECTED) >= 40
    assert sorted(EXPECTED) == sorted(p.name for p in CASES.iterdir() if p.is_dir())


def test_every_broken_case_fails_in_one_line_naming_file_and_field() -> None:
    names = sorted(EXPECTED)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(CASES), *names], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = []
    for name in names:
        code, out, err = results[name]
        text = out + err
        lines = [ln for ln in text.splitlines() if ln.strip()]
        ok = (code == 2 and 1 <= len(lines) <= 3 and "Traceback" not in text
              and f"cases/{name}/" in lines[0] and any(f": {f}: " in lines[0] for f in EXPECTED[name].split("|"))
              and lines[0].startswith("error: "))
        if not ok:
            bad.append((name, code, lines[:3]))
    assert not bad, bad


def test_real_subprocess_exit_codes() -> None:
    res = _cli("datasets", "check", "manifest", "--root", str(CASES / "dicom_rows_too_small" / "manifest.csv"))
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr
    assert lines[0].startswith(f"error: {CASES / 'dicom_rows_too_small' / 'a.dcm'}: pixel data: pixel data has 512 "
                               "bytes, 224 expected")


def _clean(tmp: Path, label2: str = "malignant", extra_header: str = "", extra: str = "") -> Path:
    img = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(img).save(tmp / "a.png")
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 3:6] = 255
    Image.fromarray(m).save(tmp / "m.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp / "empty.png")
    (tmp / "manifest.csv").write_text(
        f"study_id,patient_id,path,label,mask,x0,y0,x1,y1,age{extra_header}\n"
        f"s1,p1,a.png,benign,m.png,3,2,6,5,54{extra}\n"
        f"s2,p2,a.png,{label2},m.png,0,0,8,8,61{extra}\n")
    return tmp / "manifest.csv"


def test_clean_cohort_passes_with_a_summary(tmp_path: Path) -> None:
    csv = _clean(tmp_path)
    res = _cli("datasets", "check", "manifest", "--root", str(csv), "--workers", "0")
    assert res.returncode == 0, res.stderr
    assert f"{csv}: 2 studies, 2 images, 2 masks checked: 0 errors, 0 warnings" in res.stdout


def test_corner_columns_are_a_box_not_attributes(tmp_path: Path) -> None:
    cohort = load_dataset("manifest", _clean(tmp_path))
    s1 = cohort.get("s1")
    assert s1.boxes == [(2, 3, 5, 6)]  # y0 x0 y1 x1 in array order
    assert s1.attributes == {"age": 54.0}
    assert check_cohort(cohort, workers=0) == []


@pytest.mark.parametrize("marker", ["NaN", "nan", "NA", "None", "", "null"])
def test_missing_label_markers_never_become_a_class(tmp_path: Path, marker: str) -> None:
    cohort = load_dataset("manifest", _clean(tmp_path, label2=marker))
    assert cohort.classes == ["benign"] and cohort.get("s2").label is None
    (p,) = check_cohort(cohort, workers=0)
    assert (p.field, p.study_id, p.path) == ("label", "s2", str(tmp_path / "manifest.csv"))
    assert check_cohort(cohort, workers=0, allow_unlabelled=True) == []


def test_empty_mask_warning_or_error(tmp_path: Path) -> None:
    csv = _clean(tmp_path)
    csv.write_text(csv.read_text().replace("s2,p2,a.png,malignant,m.png", "s2,p2,a.png,malignant,empty.png"))
    cohort = load_dataset("manifest", csv, allow_empty_masks="true")
    (warn,) = check_cohort(cohort, workers=0)
    assert (warn.severity, warn.field, warn.path) == ("warning", "mask", str(tmp_path / "empty.png"))
    (e,) = check_cohort(cohort, workers=0, need_lesion=True)
    assert e.severity == "error" and "needs a lesion" in e.message
    strict = check_cohort(load_dataset("manifest", csv), workers=0)
    assert first_error(strict) is not None and first_error(strict).path == str(tmp_path / "empty.png")


def test_all_errors_and_worker_processes(tmp_path: Path) -> None:
    csv = _clean(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"nope")
    csv.write_text(csv.read_text() + "s3,p3,bad.png,benign,,,,,,\ns4,p4,a.png,benign,,0,0,9,9,\n"
                   + "".join(f"s{i},p{i},a.png,benign,,,,,,\n" for i in range(5, 12)))
    cohort = load_dataset("manifest", csv)
    recipe = ("manifest", str(csv), {})
    first = check_cohort(cohort, workers=2, recipe=recipe)
    assert [(p.study_id, p.field) for p in first] == [("s3", "format")]
    every = check_cohort(cohort, workers=2, recipe=recipe, all_errors=True)
    assert [(p.study_id, p.field) for p in every] == [("s3", "format"), ("s4", "box")]
    assert check_cohort(cohort, workers=2, all_errors=True) == every  # threads without a recipe: same answer


def test_empty_cohort_is_an_error(tmp_path: Path) -> None:
    csv = tmp_path / "manifest.csv"
    csv.write_text("study_id,patient_id,path,label\n")
    (p,) = check_cohort(load_dataset("manifest", csv), workers=0)
    assert (p.path, p.field, p.message) == (str(csv), "studies", "cohort has no studies")


def test_check_all_prints_every_error(tmp_path: Path) -> None:
    csv = _clean(tmp_path)
    csv.write_text(csv.read_text().replace("0,0,8,8", "0,0,9,8") + "s3,p3,a.png,NA,,,,,,\n")
    res = _cli("datasets", "check", "manifest", "--root", str(csv), "--all", "--workers", "0")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2
    assert lines == [f"error: {csv}: label: study 's3' (row 4): no label (empty/NaN/NA/None); pass "
                     "--allow-unlabelled to keep unlabelled studies",
                     f"error: {tmp_path / 'a.png'}: box: box (0, 0, 8, 9) reaches outside the image of shape (8, 8)"]


def test_require_clean_raises_one_line(tmp_path: Path) -> None:
    from cadx.data.check import require_clean

    csv = _clean(tmp_path, label2="NA")
    with pytest.raises(CadxDataError) as e:
        require_clean(load_dataset("manifest", csv), workers=0)
    assert e.value.field == "label" and "\n" not in str(e.value)


# --- the check before training / inference ------------------------------------------------------------------
class _BadTinyOptions(Options):
    n: int = 8


if "_test_tiny_nan" not in DATASETS:
    @register_dataset("_test_tiny_nan", "test stand-in: tiny cohort whose study S03 has a NaN voxel",
                      options=_BadTinyOptions)
    def _load_bad(root: Path, *, n: int) -> Cohort:
        cohort = tiny_cohort(n)
        s = cohort.get("S03")
        arr = s.image().load().array.astype(np.float32).copy()
        arr[0, 1, 2, 3] = np.nan
        s.images["image"] = LazyImage.from_array(arr, (2.0, 1.0, 1.0), source="S03.nii.gz")
        return cohort


def test_cv_refuses_a_failing_cohort_before_training(tmp_path: Path) -> None:
    from cadx.runs import run_cv

    cfg = tiny_config("data.dataset=_test_tiny_nan")
    with pytest.raises(CadxDataError) as e:
        run_cv(cfg, tmp_path / "run")
    assert str(e.value) == "S03.nii.gz: voxels: 1 voxels are NaN or infinite"
    assert not list((tmp_path / "run").glob("fold_*")) and not (tmp_path / "run" / "fingerprint.json").exists()


def test_check_data_records_the_check_or_its_skip(tmp_path: Path) -> None:
    from cadx.runs.folder import check_data

    rec = check_data(tiny_config(), tiny_cohort(6), tmp_path)
    assert rec["skipped"] is False and rec["studies"] == 6 and rec["warnings"] == []
    assert json.loads((tmp_path / "data_check.json").read_text())["skipped"] is False
    bad = _load_bad(tmp_path, n=6)
    rec = check_data(tiny_config("data.checked=true"), bad, tmp_path)
    assert rec == {"skipped": True, "reason": "data.checked: true (cohort checked before)", "studies": 6}
    assert json.loads((tmp_path / "data_check.json").read_text()) == rec


# --- channels -----------------------------------------------------------------------------------------------
def test_channel_mismatch_is_an_error_unless_converted() -> None:
    from cadx.config import InputConfig
    from cadx.data.image import ImageData
    from cadx.pipeline.preprocess import StudyPreprocessor

    rgb = ImageData(np.random.default_rng(0).integers(0, 255, (3, 12, 12)).astype(np.uint8), (1.0, 1.0),
                    meta={"source": "colour.png"})
    grey_cfg = {"kind": "image2d", "size": 8, "roi": "none", "normalize": "minmax"}
    with pytest.raises(CadxDataError) as e:
        StudyPreprocessor(InputConfig(**grey_cfg, channels=1)).items(rgb, None, [])
    assert str(e.value) == ("colour.png: input.channels: image has 3 channel(s) (RGB) but input.channels is 1; set "
                            "input.convert_channels: true to convert")
    items, _, _ = StudyPreprocessor(InputConfig(**grey_cfg, channels=1, convert_channels=True)).items(rgb, None, [])
    assert items[0].shape == (1, 8, 8)
    items, _, _ = StudyPreprocessor(InputConfig(**grey_cfg, channels=3)).items(rgb, None, [])
    assert items[0].shape == (3, 8, 8)


def test_notes_state_the_check_and_the_conversion(tmp_path: Path) -> None:
    from cadx.report.notes import _data_check_line

    (tmp_path / "data_check.json").write_text(json.dumps({"skipped": True, "reason": "data.checked: true"}))
    assert _data_check_line(tmp_path).startswith("- Data check: SKIPPED (data.checked: true)")
    (tmp_path / "data_check.json").write_text(json.dumps({"skipped": False, "studies": 4, "seconds": 0.1,
                                                          "warnings": []}))
    assert "4 studies opened and checked in full" in _data_check_line(tmp_path)


def test_check_data_runs_once_per_cohort_in_a_process(tmp_path: Path) -> None:
    from cadx.runs.folder import check_data

    cfg, cohort = tiny_config("seed=123"), tiny_cohort(4)
    first = check_data(cfg, cohort, tmp_path / "a")
    again = check_data(cfg, cohort, tmp_path / "b")
    assert "reused_from_this_process" not in first and again == {**first, "reused_from_this_process": True}


def test_cadx_cv_refuses_a_broken_cohort_in_one_line(tmp_path: Path) -> None:
    case = CASES / "dicom_rows_too_small"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: refused\ndata:\n  dataset: manifest\n  root: {case / 'manifest.csv'}\n"
                   "input:\n  kind: image2d\n  size: 8\ntrain:\n  epochs: 1\n  progress: false\n")
    res = _cli("cv", str(cfg), "--out", str(tmp_path / "run"))
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {case / 'a.dcm'}: pixel data: ")
    assert not list((tmp_path / "run").glob("fold_*"))


def test_json_output_and_text_column_warning(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cadx.cli import app

    csv = _clean(tmp_path, extra_header=",site", extra=",north")
    res = CliRunner().invoke(app, ["datasets", "check", "manifest", "--root", str(csv), "--json", "--workers", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["summary"].endswith("2 studies, 2 images, 2 masks checked: 0 errors, 1 warnings")
    assert out["problems"] == [{"path": str(csv), "field": "site", "severity": "warning", "study_id": None,
                                "message": "column has no numeric value: kept as text metadata, not an attribute "
                                           "(list it in metadata_columns to confirm)"}]
    assert check_cohort(load_dataset("manifest", csv, metadata_columns="site"), workers=0) == []
