"""Reporting checklist (cadx.report.checklist) on a real tiny CV run, the report's warnings and checklist sections,
the Holm/Bonferroni columns of the paired table, dataset source/licence, and a study's checklist section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cadx.data.datasets import load_dataset
from cadx.data.datasets.base import DATA_SOURCES
from cadx.report import write_report
from cadx.report.checklist import checklist, leaked_patients, merge_checklists, run_warnings
from cadx.report.studies import checklist_section, write_study_notes
from cadx.runs import run_cv
from helpers import tiny_config

SHARED = "Patients shared between training and test"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny CV run (12 single-study patients, 2 folds x 2 epochs, 50 bootstrap resamples)."""
    run = tmp_path_factory.mktemp("checklist") / "run"
    run_cv(tiny_config(), run)
    return run


def test_leaked_patients_hand_case() -> None:
    fold1: dict[str, Any] = {"fold": 1, "train": ["c", "d"], "val": [], "test": ["a", "b"]}
    splits = {"folds": [{"fold": 0, "train": ["a", "b"], "val": ["c"], "test": ["d", "c"]}, fold1]}
    assert leaked_patients(splits) == {"0": ["c"]}
    fold1["train"].append("b")
    assert leaked_patients(splits) == {"0": ["c"], "1": ["b"]}


def test_checklist_answers_from_the_run_folder(tiny_run: Path) -> None:
    items = dict(checklist(tiny_run))
    assert next(iter(items)) == "Unit of split" and len(items) == 11
    splits = json.loads((tiny_run / "splits.json").read_text())
    assert items["Unit of split"] == f"patient; splits.json kind {splits['kind']}, 2 fold(s), split seed 0"
    assert items["Unit of analysis"].startswith("study (one prediction per study): 12 studies of 12 patients")
    assert items[SHARED] == ("0 (checked: train + val against test in each of 2 fold(s) of splits.json); "
                             "predictions.csv: 0 of 12 studies scored by a fold that trained on their patient")
    m = json.loads((tiny_run / "metrics.json").read_text())
    skipped = ", ".join(f"{k} {v}" for k, v in m["pooled"]["bootstrap_skipped"].items())
    assert items["Confidence intervals"] == (f"percentile bootstrap, 50 resamples of patients, 95% intervals, seed 0; "
                                             f"resamples skipped (single class or undefined): {skipped}")
    assert items["Seeds"].startswith("config seed 0;") and "one training seed" in items["Seeds"]
    assert items["Use of the test data"].startswith("cross-validation: each patient's studies scored once")
    assert items["Multiplicity"] == "none: the report makes no paired comparison"
    if "calibration" in m:  # measured by the run (Brier with its CI) ...
        c = m["calibration"]
        assert items["Calibration"].startswith(f"Brier {c['brier']:.3f} [{c['ci']['brier'][0]:.3f}")
    else:
        assert items["Calibration"] == "not measured"
    # the tiny adapter is a test stand-in: no source/licence recorded, and the checklist says so
    assert items["Data source and licence"].endswith("not recorded (fingerprint.json has no data_source/licence)")
    assert items["Exclusions"].startswith("data check: 12 studies, 0 warning(s)")
    assert items["Exclusions"].endswith("0 of 12 cohort studies not scored")


def test_leaked_split_gives_a_nonzero_count(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "leaky"
    shutil.copytree(tiny_run, run)
    sp = json.loads((run / "splits.json").read_text())
    moved = sp["folds"][0]["test"][0]
    sp["folds"][0]["train"].append(moved)  # fold 0's model "trained on" one of its test patients
    (run / "splits.json").write_text(json.dumps(sp))
    m = json.loads((run / "metrics.json").read_text())
    m.pop("calibration", None)
    (run / "metrics.json").write_text(json.dumps(m))
    fp = json.loads((run / "fingerprint.json").read_text())
    fp["info"] = {**(fp.get("info") or {}), "data_source": "toy source", "licence": "CC BY 4.0"}
    (run / "fingerprint.json").write_text(json.dumps(fp))
    items = dict(checklist(run, (4, "Holm over the table")))
    assert items[SHARED] == (f"1 patient(s) on both sides — fold 0: 1 ({moved}); predictions.csv: 1 of 12 studies "
                             "scored by a fold that trained on their patient")
    assert items["Calibration"] == "not measured"
    assert items["Data source and licence"] == "tiny: toy source; licence: CC BY 4.0"
    assert items["Multiplicity"] == "4 paired comparison(s), Holm over the table"


def test_warnings_hand_cases() -> None:
    m = {"pooled": {"classes": ["a", "b"], "sensitivity": 0.0, "specificity": 1.0, "auc": 0.7,
                    "ci": {"sensitivity": [0.0, 0.0], "specificity": [1.0, 1.0], "auc": [0.6, 0.6],
                           "accuracy": [0.8, 0.9]},
                    "bootstrap_skipped": {"auc": 737, "accuracy": 0}},
         "bootstrap": {"n_resamples": 2000}}
    w = run_warnings(m)
    assert w[0].startswith("sensitivity 0.000 [0.000, 0.000]: every positive case missed")
    assert w[1].startswith("specificity 1.000 [1.000, 1.000]: no error at all on this class")
    assert w[2].startswith("auc: the 95% CI has zero width ([0.600, 0.600])")
    assert w[3].startswith("bootstrap resamples skipped (single class or undefined metric): auc 737 of 2000;")
    assert len(w) == 4
    ok = {"pooled": {"classes": ["a", "b"], "sensitivity": 0.6, "specificity": 0.9,
                     "ci": {"sensitivity": [0.4, 0.8]}, "bootstrap_skipped": {"auc": 0}}}
    assert run_warnings(ok) == []
    # a segmentation run: a false-positive rate of 0 on every resample
    seg = {"pooled": {"lesion_split": {"no_lesion": {"ci_false_positive_rate": [0.0, 0.0]}}}}
    assert run_warnings(seg) == ["no_lesion false_positive_rate: the 95% CI has zero width ([0.000, 0.000])."]
    ext = [("other", {"external": {"n_patients_overlap": 3, "n_patients": 12}})]
    assert run_warnings(ok, ext) == ["external evaluation other: 3 of 12 patients (25 %) were seen in training by "
                                     "the model that scored them; for them it is not external."]


def test_report_prints_warnings_first_and_checklist_last(tiny_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    pred = pd.read_csv(other / "predictions.csv")
    pred["p_malignant"] = np.clip(pred["p_malignant"] * 0.9 + 0.05, 0, 1)
    pred["p_benign"] = 1 - pred["p_malignant"]
    pred.to_csv(other / "predictions.csv", index=False)
    _, md_path = write_report([tiny_run, other], out_dir=tmp_path / "rep")
    md = md_path.read_text()
    head = md[:md.index("Runs: ")]
    for w in run_warnings(json.loads((tiny_run / "metrics.json").read_text())):
        assert f"WARNING (run): {w}" in head
    assert md.rindex("## ") == md.index("## Reporting checklist")
    tail = md[md.index("## Reporting checklist"):]
    assert f"| {SHARED} | 0 (checked: train + val against test in each of 2 fold(s)" in tail
    # two runs on the same 12 studies: one paired table, 2 p-values, Holm and Bonferroni columns
    assert "p Holm (AUC)" in md and "p Bonferroni (Acc)" in md
    assert "| Multiplicity | 2 paired comparison(s), Holm and Bonferroni adjusted over the paired table's p-values |" \
        in tail


def test_study_notes_end_with_the_merged_checklist(tiny_run: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    shutil.copytree(tiny_run, study / "a")
    shutil.copytree(tiny_run, study / "b")
    heading, lines = checklist_section(study)
    assert heading == "Reporting checklist"
    text = "\n".join(lines)
    assert "from the 2 run folder(s)" in text and f"| {SHARED} | 0 (checked:" in text  # shared answer printed once
    path = write_study_notes(study, "Toy study", [("Results", "x")])
    assert path.read_text().rstrip().endswith(lines[-1])
    assert str(checklist_section(tmp_path / "empty")[1]).startswith("No run folder")
    merged = merge_checklists([("a", [("Seeds", "0"), ("CI", "x")]), ("b", [("Seeds", "1"), ("CI", "x")])])
    assert merged == [("Seeds", "a: 0 · b: 1"), ("CI", "x")]


def test_load_dataset_records_source_and_licence(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.zeros((8, 8), np.float32))
    (tmp_path / "m.csv").write_text("study_id,patient_id,path,label\ns1,p1,img.npy,a\n")
    c = load_dataset("manifest", tmp_path / "m.csv")
    assert (c.info["data_source"], c.info["licence"]) == DATA_SOURCES["manifest"]
    assert DATA_SOURCES["lidc"][1] == "CC BY 3.0" and DATA_SOURCES["medmnist"][1] == "CC BY 4.0"


def test_test_use_names_the_split_kind() -> None:
    from cadx.report.checklist import _test_use

    assert _test_use({}, {"kind": "holdout"}).startswith("a held-out test split (holdout)")
    assert _test_use({}, {"kind": "kfold"}).startswith("cross-validation")
    assert _test_use({}, {"kind": "official"}).startswith("the official test split")
    assert _test_use({}, None) == "not recorded (no splits.json)"
