"""`cadx evaluate` is external: the cohort's patients against the scoring models' training patients (image content,
and ids when the cohort is the run's own load). Full overlap refused; partial overlap reported first."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cadx.data.image import LazyImage
from cadx.data.study import Cohort, Study
from cadx.errors import CadxDataError
from cadx.runs import evaluate_run, run_cv
from cadx.runs.evaluate import study_hashes
from helpers import tiny_cohort, tiny_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny CV run on ``_test_tiny`` (12 patients P00..P11, 2 folds x 2 epochs)."""
    run = tmp_path_factory.mktemp("overlap") / "run"
    run_cv(tiny_config(), run)
    return run


def test_study_hashes_follow_pixels_not_ids() -> None:
    a = tiny_cohort(4, seed=0)
    b = tiny_cohort(4, seed=0)
    c = tiny_cohort(4, seed=1)
    assert study_hashes(a) == study_hashes(b)  # same pixels, same hashes
    assert not set(study_hashes(a).values()) & set(study_hashes(c).values())  # same ids P00.., other pixels
    arr = np.zeros((1, 2, 4, 4), np.float32)
    renamed = Cohort([Study("x", "someone", images={"image": LazyImage.from_array(arr, (1.0, 1.0, 1.0))})])
    again = Cohort([Study("y", "else", images={"image": LazyImage.from_array(arr.copy(), (2.0, 1.0, 1.0))})])
    assert study_hashes(renamed) == study_hashes(again)
    assert study_hashes(renamed, [0])[0] == study_hashes(again)[0]


def test_own_cohort_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CadxDataError, match=r"patients: all 12 patients of this cohort were training or validation "
                                            r"patients of the model\(s\) scoring them"):
        evaluate_run(tiny_run, "_test_tiny", tmp_path)
    assert not (tiny_run / "external").exists()  # refused before anything is scored or written


def test_cli_refusal_is_one_line(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from cadx.cli import main

    monkeypatch.setattr(sys, "argv", ["cadx", "evaluate", str(tiny_run), "--dataset", "_test_tiny", "--root",
                                      str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert err.endswith("patients: all 12 patients of this cohort were training or validation patients of the "
                        "model(s) scoring them (same image content (SHA-1 of the image arrays) as a training study): "
                        "this is not an external validation (--fold own re-scores the run's held-out patients)")


def test_half_overlap_is_reported_first(tiny_run: Path, tmp_path: Path) -> None:
    # 24 patients with seed 0: P00..P11 are pixel for pixel the run's patients, P12..P23 are new
    lines: list[str] = []
    evaluate_run(tiny_run, "_test_tiny", tmp_path, {"n": 24}, log=lines.append)
    assert lines == ["Partial overlap: 12 of 24 patients (50 %) were seen in training by the model scoring them "
                     "(same image content (SHA-1 of the image arrays) as a training study); for them this evaluation "
                     "is not external."]
    ext = json.loads((tiny_run / "external" / "_test_tiny-24" / "metrics.json").read_text())["external"]
    assert (ext["n_patients"], ext["n_patients_overlap"], ext["overlap_fraction"]) == (24, 12, 0.5)
    assert ext["n_patients_same_images"] == 12 and ext["n_patients_same_ids"] == 12
    assert ext["overlap_ids"] == [f"P{i:02d}" for i in range(10)] and ext["content_checked"] is True
    md = (tiny_run / "report.md").read_text()
    assert ("WARNING (run): external evaluation _test_tiny-24: 12 of 24 patients (50 %) were seen in training"
            in md[:md.index("Runs: ")])
    cohorts = md[md.index("external validation cohorts"):].splitlines()
    assert next(line for line in cohorts if line.startswith("| _test_tiny-24 |")).endswith("| 12 | 12 of 24 (50 %) |")


def test_other_pixels_same_ids_and_own_fold_are_not_overlap(tiny_run: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    evaluate_run(tiny_run, "_test_tiny", tmp_path, {"n": 6, "seed": 5}, log=lines.append)
    ext = json.loads((tiny_run / "external" / "_test_tiny-6-5" / "metrics.json").read_text())["external"]
    # the ids P00..P05 were training patients, but these are other images: reported, not counted as overlap
    assert ext["n_patients_in_training"] == 6 and ext["n_patients_same_ids"] == 6
    assert ext["n_patients_overlap"] == 0 and lines == []
    # --fold own: each patient by the model that held it out, so the run's own cohort has no overlap
    evaluate_run(tiny_run, "_test_tiny", tmp_path, fold="own")
    own = json.loads((tiny_run / "external" / "_test_tiny-own-fold" / "metrics.json").read_text())["external"]
    assert own["n_patients_overlap"] == 0 and own["n_patients"] == 12
    # fold 1's model on the run's cohort: its training patients (train + val of fold 1) overlap, its test ones not
    evaluate_run(tiny_run, "_test_tiny", tmp_path, fold=1)
    f1 = json.loads((tiny_run / "external" / "_test_tiny-fold1" / "metrics.json").read_text())["external"]
    split = json.loads((tiny_run / "splits.json").read_text())["folds"][1]
    assert f1["n_patients_overlap"] == len(split["train"]) + len(split["val"]) == 6
