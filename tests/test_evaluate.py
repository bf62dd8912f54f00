"""`cadx evaluate` (cadx.runs.evaluate): the run's own dataset options unless told otherwise, the model choice
(--fold), the CV's scoring on the run's own cohort, and the external-validation section of the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cadx.errors import CadxConfigError, CadxDataError
from cadx.report import tables as T
from cadx.runs import evaluate_run, run_cv
from cadx.runs.evaluate import external_name, parse_fold, resolve_options
from helpers import tiny_config


def test_resolve_options_run_options_unless_told_otherwise() -> None:
    cfg = tiny_config("data.options={n: 8, seed: 2}")
    assert resolve_options(cfg, "_test_tiny", None) == ({"n": 8, "seed": 2}, {"n": 8, "seed": 2})
    # explicit options override key by key; the inherited part is still reported
    assert resolve_options(cfg, "_test_tiny", {"seed": "5"}) == ({"n": 8, "seed": "5"}, {"n": 8, "seed": 2})
    # another adapter: the run's options belong to its own dataset and are not carried over
    assert resolve_options(cfg, "_test_seg", {"n": "3"}) == ({"n": "3"}, {})
    # the adapter is the name before ':' (a flag selects a subset of the same adapter)
    assert resolve_options(cfg, "_test_tiny:other", None)[0] == {"n": 8, "seed": 2}


def test_parse_fold_and_names() -> None:
    assert (parse_fold(None), parse_fold("own"), parse_fold(" OWN "), parse_fold("2"), parse_fold(3)) == \
        (None, "own", "own", 2, 3)
    with pytest.raises(CadxConfigError, match="--fold: expected a fold number or 'own', got 'first'"):
        parse_fold("first")
    assert external_name("medmnist", {"flag": "breastmnist"}) == "medmnist-breastmnist"
    assert external_name("_test_tiny", {"seed": 5, "n": 6}, "own") == "_test_tiny-6-5-own-fold"
    assert external_name("lgg", None, 1) == "lgg-fold1"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny classification CV run (2 folds × 2 epochs, prior decision) shared by the tests below."""
    run = tmp_path_factory.mktemp("eval") / "run"
    return run, run_cv(tiny_config("eval.decision=prior"), run)


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("extra", [("eval.decision=prior",), ("eval.decision=youden", "eval.aggregation=vote",
                                                              "cv.val_fraction=0.3")])
def test_own_fold_evaluate_equals_predictions_csv(tmp_path: Path, extra: tuple[str, ...]) -> None:
    """On the cohort it was cross-validated on, each patient scored by its own fold's model (and that fold's
    fitted decision): the same classes and probabilities as predictions.csv, and the same pooled metrics."""
    run = tmp_path / "run"
    m = run_cv(tiny_config(*extra), run)
    pooled = evaluate_run(run, "_test_tiny", tmp_path, fold="own")
    cv = pd.read_csv(run / "predictions.csv")
    ev = pd.read_csv(run / "external" / "_test_tiny-own-fold" / "predictions.csv")
    assert ev["study_id"].tolist() == cv["study_id"].tolist() and ev["fold"].tolist() == cv["fold"].tolist()
    assert ev["y_pred"].tolist() == cv["y_pred"].tolist()
    np.testing.assert_allclose(ev[["p_benign", "p_malignant"]], cv[["p_benign", "p_malignant"]], atol=1e-6)
    for k in ("accuracy", "auc", "sensitivity", "specificity"):
        assert pooled[k] == pytest.approx(m["pooled"][k], abs=1e-9)
    ext = json.loads((run / "external" / "_test_tiny-own-fold" / "metrics.json").read_text())["external"]
    fitted = [json.loads((run / f"fold_{k}" / "metrics.json").read_text())["decision_fit"] for k in (0, 1)]
    assert [{k: v for k, v in d.items() if k != "fold"} for d in ext["decision"]] == fitted
    if extra == ("eval.decision=prior",):
        # --tta flips re-scores the same fold models with the flips: the probabilities of a CV run with eval.tta=flips
        # (eval.tta does not change training), other than the plain ones
        evaluate_run(run, "_test_tiny", tmp_path, fold="own", tta="flips")
        ev_flips = pd.read_csv(run / "external" / "_test_tiny-own-fold-tta-flips" / "predictions.csv")
        run_cv(tiny_config(*extra, "eval.tta=flips"), tmp_path / "run_tta")
        cv_flips = pd.read_csv(tmp_path / "run_tta" / "predictions.csv")
        cols = ["p_benign", "p_malignant"]
        np.testing.assert_allclose(ev_flips[cols], cv_flips[cols], atol=1e-6)
        assert not np.allclose(ev_flips[cols], cv[cols], atol=1e-4)


@pytest.mark.slow
@pytest.mark.ci
def test_external_section_in_report_and_option_rule(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    run, m = tiny_run
    # explicit options: another cohort of the same adapter; the fold ensemble scores it
    pooled = evaluate_run(run, "_test_tiny", tmp_path, {"n": "6", "seed": "5"})
    ext = json.loads((run / "external" / "_test_tiny-6-5" / "metrics.json").read_text())
    assert pooled["n_studies"] == 6 and ext["external"]["options_override"] == {"n": "6", "seed": "5"}
    assert ext["external"]["models"] == ["fold_0", "fold_1"] and ext["external"]["options_from_run"] == {}
    # another seed of the same adapter reuses the ids P00..P05: all of them were training patients of a fold model
    assert ext["external"]["n_patients_in_training"] == 6
    # the decision: the folds' mean training priors (both folds are balanced here: 0.5 / 0.5)
    assert ext["external"]["decision"]["rule"] == "prior"
    np.testing.assert_allclose(ext["external"]["decision"]["priors"], [0.5, 0.5])
    md = (run / "report.md").read_text()
    sec = md[md.index("### External validation"):]
    assert "_test_tiny-6-5" in sec and "n=6 (given), seed=5 (given)" in sec and "mean of 2 fold models" in sec
    p = ext["pooled"]
    table = sec[sec.index("external validation beside cross-validation"):].splitlines()
    ext_line = next(line for line in table if line.startswith("| _test_tiny-6-5 | 6 | 6 |"))
    assert T.fmt_ci(p["accuracy"], p["ci"]["accuracy"]) in ext_line
    assert T.fmt_ci(p["auc"], p["ci"].get("auc")) in ext_line
    cv_line = next(line for line in table if line.startswith("| cross-validation (out-of-fold) | 12 |"))
    assert T.fmt_ci(m["pooled"]["accuracy"], m["pooled"]["ci"]["accuracy"]) in cv_line
    assert "External validation" in (run / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.ci
def test_evaluate_errors_and_cli(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    from cadx.cli import app

    run, _ = tiny_run
    with pytest.raises(CadxDataError, match="no finished fold 7"):
        evaluate_run(run, "_test_tiny", tmp_path, fold=7)
    # a cohort with patients the run never held out: --fold own cannot score them
    with pytest.raises(CadxDataError, match=r"patients \['P12', 'P13'\] are in no fold's test set"):
        evaluate_run(run, "_test_tiny", tmp_path, {"n": "14"}, fold="own")
    res = CliRunner().invoke(app, ["evaluate", str(run), "--dataset", "_test_tiny", "--root", str(tmp_path),
                                   "--fold", "1", "--name", "by-cli", "--json"])
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "external" / "by-cli" / "metrics.json").read_text())
    assert json.loads(res.output)["accuracy"] == pytest.approx(saved["pooled"]["accuracy"])
    assert saved["external"]["models"] == ["fold_1"] and saved["external"]["fold"] == 1
    # fold 1's model scoring the run's own cohort: its training patients are fold 1's train + val parts
    split = json.loads((run / "splits.json").read_text())["folds"][1]
    assert saved["external"]["n_patients_in_training"] == len(split["train"]) + len(split.get("val", [])) == 6
