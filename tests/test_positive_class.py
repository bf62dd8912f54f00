"""The clinically positive class (``eval.positive``), the binary operating point (``eval.decision: auto`` = Youden
on validation, ``eval.target_sensitivity``) and post-hoc calibration on the one prediction path."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from cadx.config import load_config
from cadx.errors import CadxConfigError, CadxDataError
from cadx.evaluation import metrics as M
from cadx.evaluation.bootstrap import bootstrap_ci
from cadx.evaluation.summary import evaluate_predictions, positive_index
from cadx.evaluation.thresholds import decide, sensitivity_threshold
from cadx.runs import predict_study, run_cv
from cadx.runs.inference import calibrate_rows, combine_decisions, decide_rows, fit_decision, resolve_rule
from helpers import tiny_cohort, tiny_config

BREAST = ["malignant", "normal_benign"]  # MedMNIST BreastMNIST: label 0 = malignant
REPO = Path(__file__).resolve().parents[1]


def _data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p0 = np.clip(0.5 + 0.35 * (y == 0) - 0.2 + rng.normal(scale=0.2, size=n), 0.01, 0.99)
    proba = np.stack([p0, 1 - p0], 1)
    return y, proba, decide(proba, "argmax")


def test_metrics_follow_the_positive_class_like_sklearn_pos_label():
    y, proba, pred = _data()
    assert M.sensitivity(y, pred, positive=0) == pytest.approx(recall_score(y, pred, pos_label=0))
    assert M.specificity(y, pred, positive=0) == pytest.approx(recall_score(y, pred, pos_label=1))
    assert M.precision(y, pred, positive=0) == pytest.approx(precision_score(y, pred, pos_label=0))
    assert M.npv(y, pred, positive=0) == pytest.approx(precision_score(y, pred, pos_label=1))
    assert M.roc_auc(y, proba, positive=0) == pytest.approx(roc_auc_score(y == 0, proba[:, 0]))
    b = M.binary_metrics(y, pred, positive=0)
    assert b["sensitivity"] == M.specificity(y, pred) and b["npv"] == M.precision(y, pred)
    # hand case: y = 0 0 0 1, pred = 0 1 0 1 with positive 0 -> TP 2, FN 1, FP 0, TN 1
    t, p = np.array([0, 0, 0, 1]), np.array([0, 1, 0, 1])
    assert (M.sensitivity(t, p, positive=0), M.specificity(t, p, positive=0)) == (pytest.approx(2 / 3), 1.0)
    assert (M.precision(t, p, positive=0), M.npv(t, p, positive=0)) == (1.0, 0.5)
    with pytest.raises(ValueError, match="positive"):
        M.sensitivity(t, p, positive=2)


def test_evaluate_predictions_reports_the_named_positive_class_with_matching_cis():
    y, proba, pred = _data(80, seed=1)
    df = pd.DataFrame({"study_id": [f"S{i}" for i in range(80)], "patient_id": [f"P{i // 2}" for i in range(80)],
                       "y_true": [BREAST[k] for k in y], "y_pred": [BREAST[k] for k in pred],
                       "p_malignant": proba[:, 0], "p_normal_benign": proba[:, 1]})
    m = evaluate_predictions(df, BREAST, n_bootstrap=200, seed=3, decision="given", positive="malignant")
    pooled = m["pooled"]
    assert m["positive"] == pooled["positive"] == "malignant"
    assert pooled["sensitivity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert pooled["specificity"] == pytest.approx(recall_score(y, pred, pos_label=1))
    assert pooled["precision"] == pytest.approx(precision_score(y, pred, pos_label=0))
    assert pooled["npv"] == pytest.approx(precision_score(y, pred, pos_label=1))
    want = bootstrap_ci(functools.partial(M.sensitivity, n_classes=2, positive=0), y, pred,
                        groups=df["patient_id"].to_numpy(), n_resamples=200, seed=3)
    assert pooled["ci"]["sensitivity"] == pytest.approx([want.lo, want.hi])
    # the default (index 1) reports the other class: sensitivity and specificity swap
    d = evaluate_predictions(df, BREAST, n_bootstrap=0, decision="given")["pooled"]
    assert d["positive"] == "normal_benign"
    assert (d["sensitivity"], d["specificity"]) == (pooled["specificity"], pooled["sensitivity"])
    assert positive_index(0, BREAST) == 0 and positive_index(None, BREAST) == 1
    with pytest.raises(CadxDataError, match=r"eval\.positive.*'cancer'"):
        positive_index("cancer", BREAST)
    with pytest.raises(CadxDataError, match="binary"):
        positive_index("a", ["a", "b", "c"])


def test_sensitivity_threshold_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.4, 0.3, 0.7, 0.35, 0.2, 0.1])
    assert sensitivity_threshold(y, s, 0.5) == 0.8     # 2 of 4 positives at >= .8
    assert sensitivity_threshold(y, s, 0.6) == 0.4     # 3 of 4 needs .4 (.7 only adds a negative)
    assert sensitivity_threshold(y, s, 1.0) == 0.3
    with pytest.raises(ValueError, match="target"):
        sensitivity_threshold(y, s, 0.0)
    # positive = 0: class 0 predicted when its probability reaches the threshold
    p = np.array([[0.6, 0.4], [0.3, 0.7]])
    assert decide(p, "youden", threshold=0.5, positive=0).tolist() == [0, 1]
    assert decide(p, "youden", threshold=0.2, positive=0).tolist() == [0, 0]


def test_auto_rule_fit_split_and_target_sensitivity():
    assert resolve_rule("auto", 2) == "youden" and resolve_rule("auto", 2, 0.9) == "sensitivity"
    assert resolve_rule("auto", 3) == "argmax" and resolve_rule("prior", 2) == "prior"
    rows = pd.DataFrame({"y_true": ["malignant"] * 4 + ["normal_benign"] * 4,
                         "p_malignant": [0.9, 0.8, 0.4, 0.3, 0.7, 0.35, 0.2, 0.1]})
    rows["p_normal_benign"] = 1 - rows["p_malignant"]
    d = fit_decision("auto", BREAST, fit_studies=rows, positive="malignant", fit_split="validation")
    # Youden on p_malignant for y == malignant: J(.9) = .25, J(.8) = .5, J(.7) = .25, J(.4) = .75 - .25 = .5,
    # J(.35) = .25, J(.3) = 1 - .5 = .5: a tie, which goes to the highest threshold -> .8
    assert d == {"rule": "youden", "requested": "auto", "positive": "malignant", "threshold": 0.8,
                 "fit_split": "validation"}
    t = fit_decision("auto", BREAST, fit_studies=rows, positive="malignant", target_sensitivity=0.6,
                     fit_split="train")
    assert t["rule"] == "sensitivity" and t["threshold"] == 0.4 and t["fit_split"] == "train"
    one = fit_decision("auto", BREAST, fit_studies=rows.iloc[:4], positive="malignant")
    assert one["threshold"] == 0.5 and "lack one of the two classes" in one["threshold_fallback"]
    assert fit_decision("auto", ["a", "b", "c"]) == {"rule": "argmax", "requested": "auto"}
    # deciding with the positive class index 0
    st = pd.DataFrame({"p_malignant": [0.85, 0.75], "p_normal_benign": [0.15, 0.25]})
    assert decide_rows(st, BREAST, d)["y_pred"].tolist() == ["malignant", "normal_benign"]
    both = combine_decisions("auto", [d, {**d, "threshold": 0.5}])
    assert both["rule"] == "youden" and both["threshold"] == pytest.approx(0.65) and both["positive"] == "malignant"


def test_calibrate_rows_keeps_raw_and_decides_on_calibrated():
    st = pd.DataFrame({"p_malignant": [0.8, 0.3], "p_normal_benign": [0.2, 0.7], "y_pred": ["x", "y"]})
    cal = {"method": "temperature", "fitted": True, "temperature": 2.0}
    out = calibrate_rows(st, BREAST, cal)
    z = np.log(0.8 / 0.2) / 2
    assert out["p_malignant"].iloc[0] == pytest.approx(1 / (1 + np.exp(-z)))
    assert out["raw_p_malignant"].tolist() == [0.8, 0.3] and "y_pred" not in out
    assert calibrate_rows(st, BREAST, {"method": "platt", "fitted": False}) is st


def test_config_keys_and_breastmnist_positive_class():
    cfg = load_config(REPO / "configs" / "breastmnist_resnet18.yaml")
    assert cfg.eval.positive == "malignant"
    from cadx.data.datasets.medmnist import LABEL_NAMES
    assert LABEL_NAMES["breastmnist"][0] == "malignant"
    assert load_config(None, []).eval.decision == "auto"
    with pytest.raises(CadxConfigError, match="target_sensitivity"):
        load_config(None, ["eval.decision=sensitivity"])
    with pytest.raises(CadxConfigError, match="target_sensitivity"):
        load_config(None, ["eval.decision=argmax", "eval.target_sensitivity=0.9"])
    with pytest.raises(CadxConfigError, match="calibration"):
        load_config(None, ["eval.calibration=beta"])


@pytest.mark.ci
def test_cv_fits_threshold_and_calibration_on_validation_and_predict_agrees(tmp_path: Path):
    n = 16
    base = [f"data.options={{n: {n}}}", "eval.calibration=platt", "eval.positive=malignant", "seed=1"]
    run = tmp_path / "val"
    m = run_cv(tiny_config("cv.val_fraction=0.3", *base), run)
    for k in (0, 1):
        fm = json.loads((run / f"fold_{k}" / "metrics.json").read_text())
        d = fm["decision_fit"]
        assert d["rule"] == "youden" and d["requested"] == "auto" and d["fit_split"] == "validation"
        assert d["positive"] == "malignant" and d["calibration"]["method"] == "platt"
        assert d["calibration"]["fit_split"] in ("validation", "none")
        assert fm["selection"]["decision"]["split"] == "validation"
        assert "calibration" in fm["selection"]
    rows = pd.read_csv(run / "predictions.csv", dtype={"study_id": str}).set_index("study_id")
    assert {"raw_p_malignant", "raw_p_benign"} <= set(rows.columns) or not any(
        json.loads((run / f"fold_{k}" / "metrics.json").read_text())["decision_fit"]["calibration"]["fitted"]
        for k in (0, 1))
    cal = m["calibration"]
    assert cal["method"] == "platt" and cal["n_bins"] == 10 and set(cal["ci"]) == {"brier", "ece"}
    y = (rows["y_true"] == "malignant").to_numpy(int)
    assert cal["brier"] == pytest.approx(np.mean((rows["p_malignant"].to_numpy() - y) ** 2))
    assert m["positive"] == "malignant"
    # predict (own fold's model) gives the calibrated probabilities and decision of the CV row
    studies = {st.study_id: st for st in tiny_cohort(n, 0)}
    from cadx.data.image import ImageData
    from cadx.data.readers import write_image
    sid = rows.index[0]
    st = studies[sid]
    img = write_image(ImageData(st.image().load().array, (2.0, 1.0, 1.0)), tmp_path / "s.nii.gz")
    out = predict_study(run, img, box=list(st.boxes[0]), fold=int(rows.loc[sid, "fold"]))
    assert out["probabilities"]["malignant"] == pytest.approx(rows.loc[sid, "p_malignant"], abs=1e-6)
    assert out["prediction"] == rows.loc[sid, "y_pred"]
    # no validation patients: the threshold is fitted on the training studies, nothing is calibrated
    run2 = tmp_path / "noval"
    run_cv(tiny_config(*base), run2)
    d2 = json.loads((run2 / "fold_0" / "metrics.json").read_text())
    assert d2["decision_fit"]["fit_split"] == "train"
    assert d2["decision_fit"]["calibration"] == {"method": "platt", "fitted": False, "fit_split": "none",
                                                 "reason": "the fold has no validation patients: not calibrated"}
    assert d2["selection"]["decision"]["split"] == "train" and d2["selection"]["calibration"]["split"] == "none"
    assert "before" not in json.loads((run2 / "metrics.json").read_text())["calibration"]


def test_selection_record_names_the_fitted_rule_split_and_fallback():
    from cadx.runs.folder import decision_selection

    d = {"rule": "youden", "requested": "auto", "positive": "malignant", "threshold": 0.3, "fit_split": "train"}
    assert decision_selection(d) == {"split": "train", "value": 0.3, "rule": "youden threshold on the training "
                                     "studies' scores (positive class malignant) (eval.decision auto)"}
    fb = decision_selection({"rule": "youden", "threshold": 0.5, "threshold_fallback": "0.5 (no fitting studies)"})
    assert fb["split"] == "none" and "not fitted, threshold 0.5 (no fitting studies)" in fb["rule"]
    s = decision_selection({"rule": "sensitivity", "target_sensitivity": 0.9, "threshold": 0.2,
                            "fit_split": "validation"})
    assert s["split"] == "validation" and s["rule"].startswith("highest threshold reaching sensitivity 0.9")
    assert decision_selection({"rule": "argmax", "requested": "auto"})["split"] == "none"


def test_comparison_table_names_each_runs_positive_class(tmp_path: Path) -> None:
    from cadx.report.runs import RunData
    from cadx.report.tables import comparison_table

    runs = [RunData("bm", tmp_path, {"pooled": {"n_studies": 4, "auc": 0.7, "positive": "malignant"}}),
            RunData("other", tmp_path, {"pooled": {"n_studies": 4, "auc": 0.6}})]
    assert "positive class (bm: malignant)" in (comparison_table(runs).note or "")
    assert "index 1 unless eval.positive" in (comparison_table(runs[1:]).note or "")
