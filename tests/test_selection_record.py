"""The selection record: fold and run ``metrics.json`` ``selection`` says which split chose the epoch, the decision
and the classifier; the test items are "scored once, after selection"; the report prints "which data chose what"."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cadx.data.splits import Fold
from cadx.report.render import _selection_table
from cadx.report.runs import load_run
from cadx.runs import run_cv
from cadx.runs.folder import TEST_USED, fold_selection, run_selection
from cadx.training.trainer import epoch_selection
from helpers import tiny_config


def test_epoch_selection_rules() -> None:
    cfg = tiny_config("train.early_stopping.patience=3")
    e = epoch_selection(cfg, True, 4, 0.31, 8)
    assert e == {"split": "validation", "rule": "best val_loss (min) over the epochs; early stopping on val_loss, "
                 "patience 3", "value": 4, "monitor": "val_loss", "monitor_value": 0.31, "epochs_run": 8}
    e = epoch_selection(tiny_config("train.early_stopping.monitor=val_auc"), True, 2)
    assert e["rule"].startswith("best val_auc (max)")
    e = epoch_selection(cfg, False, 1, None, 2)
    assert e["split"] == "none" and e["rule"] == "last epoch of 2 (no validation set)" and e["value"] == 1


def test_fold_selection_decision_split() -> None:
    with_val = Fold(0, ["a", "b"], ["c"], ["d"])
    no_val = Fold(0, ["a", "b", "c"], [], ["d"])
    assert fold_selection(tiny_config("eval.decision=argmax"), with_val, 1)["decision"]["split"] == "none"
    assert fold_selection(tiny_config("eval.decision=prior"), with_val, 1)["decision"]["split"] == "train"
    youden = tiny_config("eval.decision=youden")
    assert fold_selection(youden, with_val, 1)["decision"]["split"] == "validation"
    assert fold_selection(youden, no_val, 1)["decision"]["split"] == "train"
    assert "falls back" in fold_selection(youden, with_val, 1, decision_fitted=False)["decision"]["rule"]
    s = fold_selection(tiny_config("cv.use_official=true", "eval.classifier=svm"), with_val, 3)
    assert s["test_used"] == TEST_USED == "scored once, after selection" and s["test_split"] == "official"
    assert s["classifier"]["split"] == "train"
    assert fold_selection(tiny_config("cv.kind=holdout"), with_val, 1)["test_split"] == "holdout"
    assert fold_selection(tiny_config(), with_val, 1)["test_split"] == "cv fold"
    assert s["epoch"] == {"split": "none", "rule": "not recorded by this run kind", "value": 3}


def test_run_selection_of_folds_without_record(tmp_path: Path) -> None:
    for k, sel in ((0, {"epoch": {"split": "validation", "rule": "r", "value": 2}, "test_used": TEST_USED}),
                   (1, None)):
        d = tmp_path / f"fold_{k}"
        d.mkdir()
        (d / "DONE").write_text(json.dumps({"fold": k}))
        (d / "metrics.json").write_text(json.dumps({"selection": sel} if sel else {}))
    out = run_selection(tmp_path)
    assert out == {"epoch": {"split": "validation", "rule": "r", "values": {"0": 2}}, "test_used": TEST_USED,
                   "folds_without_record": ["fold_1"]}


@pytest.mark.slow
@pytest.mark.ci
def test_run_records_which_split_chose_the_epoch(tmp_path: Path) -> None:
    # with validation patients: the kept epoch is the argmin of the validation loss in history.csv
    cfg = tiny_config("cv.val_fraction=0.3", "train.epochs=3", "eval.decision=youden")
    run_cv(cfg, tmp_path / "val")
    for k in (0, 1):
        fd = tmp_path / "val" / f"fold_{k}"
        sel = json.loads((fd / "metrics.json").read_text())["selection"]
        hist = pd.read_csv(fd / "history.csv")
        best = int(hist["epoch"].to_numpy()[hist["val_loss"].to_numpy().argmin()])
        assert sel["epoch"]["split"] == "validation" and sel["epoch"]["value"] == best
        assert sel["epoch"]["monitor_value"] == pytest.approx(hist["val_loss"].min(), rel=1e-5)
        assert sel["epoch"]["epochs_run"] == 3
        assert sel["decision"]["split"] == "validation" and sel["test_used"] == TEST_USED
        assert json.loads((fd / "DONE").read_text())["best_epoch"] == best
    run_sel = json.loads((tmp_path / "val" / "metrics.json").read_text())["selection"]
    assert run_sel["epoch"]["split"] == "validation" and set(run_sel["epoch"]["values"]) == {"0", "1"}
    assert run_sel["test_used"] == TEST_USED
    md = (tmp_path / "val" / "report.md").read_text()
    assert "which data chose what" in md and "youden threshold on the validation studies' scores" in md
    # without validation patients: the last epoch, chosen by no data
    run_cv(tiny_config("eval.decision=argmax"), tmp_path / "noval")
    sel = json.loads((tmp_path / "noval" / "fold_0" / "metrics.json").read_text())["selection"]
    assert sel["epoch"] == {"split": "none", "rule": "last epoch of 2 (no validation set)", "value": 1,
                            "epochs_run": 2}
    assert sel["decision"] == {"split": "none", "rule": "argmax (nothing fitted)"}
    table = _selection_table(load_run(tmp_path / "noval"))
    assert table is not None and table.rows[0][:2] == ["epoch", "none"] and "scored once" in table.note


@pytest.mark.slow
def test_detection_run_records_its_epoch_rule(tmp_path: Path) -> None:
    from cadx.config import load_config
    from test_detector import _tiny_manifest

    csv = _tiny_manifest(tmp_path)
    cfg_path = tmp_path / "det.yaml"
    cfg_path.write_text(
        f"name: det_tiny\ndata: {{dataset: manifest, root: {csv}, allow_unlabelled: true}}\n"
        "task: {classification: false}\n"
        "model: {name: yolo_dense, kwargs: {growth_rate: 4, block_config: [1, 1, 1, 1], num_init_features: 8,"
        " anchor: 16.0}}\n"
        "objective: {det_reduced_focal: 1.0}\noptim: {name: adam, lr: 0.001, weight_decay: 0.0}\n"
        "train: {epochs: 2, batch_size: 4, progress: false}\ncv: {folds: 2, val_fraction: 0.34}\n"
        "eval: {bootstrap: 20}\ndetection: {size: 64, crop: 32, distance_px: 4.0}\n", encoding="utf-8")
    run_cv(load_config(cfg_path), tmp_path / "run")
    for k in (0, 1):
        fd = tmp_path / "run" / f"fold_{k}"
        sel = json.loads((fd / "metrics.json").read_text())["selection"]
        hist = pd.read_csv(fd / "history.csv")
        sens = hist["val_mean_sens"].to_numpy()
        best = int(len(sens) - 1 - sens[::-1].argmax())          # highest validation sensitivity, ties → later
        assert sel["epoch"]["split"] == "validation" and sel["epoch"]["value"] == best
        assert sel["test_used"] == TEST_USED
    run_sel = json.loads((tmp_path / "run" / "metrics.json").read_text())["selection"]
    assert run_sel["epoch"]["split"] == "validation" and set(run_sel["epoch"]["values"]) == {"0", "1"}
