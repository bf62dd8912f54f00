"""`cadx points fit|score` and `cadx study points-lidc`: files written, numbers recomputed from them by hand or
with scikit-learn, split rules, bad input as one line naming the file, row and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cadx.classical.points import design_matrix, load_system, totals
from cadx.cli import app
from cadx.errors import CadxConfigError, CadxDataError
from cadx.studies.points import (
    PointsConfig,
    holdout_mask,
    lidc_system_path,
    read_points_table,
    run_points_lidc,
    synthetic_points_table,
)
from conftest import shared_path

SMALL_GA = {"seed": 0, "n_resamples": 50, "ga": {"population": 12, "generations": 4},
            "grid": {"generations": [0, 4]}}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    acr, ai = load_system("acr"), load_system("ai")
    df = synthetic_points_table(acr, 300, seed=0, true_points=ai.points, prevalence=0.3)
    p = tmp_path_factory.mktemp("pts") / "nodules.csv"
    df.to_csv(p, index=False)
    return p


def _invoke(*args: str) -> None:
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output


def test_synthetic_table_is_seeded_and_valid() -> None:
    acr = load_system("acr")
    a, b = synthetic_points_table(acr, 50, seed=3), synthetic_points_table(acr, 50, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert design_matrix(a, acr).shape == (50, 23) and set(a["malignant"]) <= {0, 1}


def test_score_ai_against_acr_writes_recomputable_numbers(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "score"
    _invoke("points", "score", str(table), "--system", "ai", "--baseline", "acr", "--label", "malignant",
            "--size-column", "size_mm", "--out", str(out), "--n-resamples", "50")
    m = json.loads((out / "metrics.json").read_text())
    df = pd.read_csv(table)
    acr, ai = load_system("acr"), load_system("ai")
    t_acr, t_ai = totals(design_matrix(df, acr), acr.points), totals(design_matrix(df, ai), ai.points)
    assert m["systems"]["baseline"]["auc"][0] == pytest.approx(roc_auc_score(df["malignant"], t_acr))
    assert m["systems"]["system"]["auc"][0] == pytest.approx(roc_auc_score(df["malignant"], t_ai))
    preds = pd.read_csv(out / "predictions.csv")
    assert preds["total_baseline"].tolist() == t_acr.tolist() and preds["total_system"].tolist() == t_ai.tolist()
    fna = preds["recommendation_system"] == "FNA"
    pos = preds["y_true"] == 1
    assert m["systems"]["system"]["sensitivity"]["x"] == int((fna & pos).sum())
    assert m["systems"]["system"]["specificity"]["x"] == int((~fna & ~pos).sum())
    rc = pd.read_csv(out / "reclassification.csv", index_col=0)
    assert int(rc.to_numpy().sum()) == len(df)
    lower = int((preds["level_system"].str[2].astype(int) < preds["level_baseline"].str[2].astype(int)).sum())
    assert m["shifts"]["lower"] == lower
    assert "Reclassification" in (out / "report.md").read_text()


def test_fit_with_a_test_split_keeps_bounds_and_fixed_features(table: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "ga.yaml"
    cfg.write_text(yaml.safe_dump(SMALL_GA))
    out = tmp_path / "fit"
    _invoke("points", "fit", str(table), "--system", "acr", "--label", "malignant", "--test-split", "fraction:0.3",
            "--folds", "2", "--config", str(cfg), "--out", str(out))
    m = json.loads((out / "metrics.json").read_text())
    pts = pd.read_csv(out / "points.csv")
    assert ((pts["optimised"] >= pts["low"]) & (pts["optimised"] <= pts["high"])).all()
    assert (pts.loc[pts["fixed"], "optimised"] == pts.loc[pts["fixed"], "baseline"]).all()
    opt = load_system(out / "system_optimised.yaml")
    assert opt.points.tolist() == pts["optimised"].tolist()
    preds = pd.read_csv(out / "predictions.csv")
    assert (preds["part"] == "test").all() and m["n_train"] + len(preds) == 300
    df = pd.read_csv(table)
    test_rows = preds["row"].to_numpy() - 1
    assert not set(df["patient_id"].iloc[test_rows]) & set(df["patient_id"].drop(index=test_rows))
    expect = totals(design_matrix(df.iloc[test_rows], opt), opt.points)
    assert preds["total_optimised"].tolist() == expect.tolist()
    assert m["systems"]["optimised"]["auc"][0] == pytest.approx(roc_auc_score(preds["y_true"], expect))
    assert len(pd.read_csv(out / "ga_cv.csv")) == 2 and m["train_auc"]["optimised"] >= m["train_auc"]["baseline"]


def test_fit_without_test_split_is_out_of_fold(table: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "ga.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL_GA, "grid": {}}))
    out = tmp_path / "oof"
    _invoke("points", "fit", str(table), "--system", "acr", "--label", "malignant", "--folds", "3",
            "--config", str(cfg), "--out", str(out))
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 300 and sorted(preds["part"].unique()) == ["oof0", "oof1", "oof2"]
    per_patient = preds.groupby("patient_id")["part"].nunique()
    assert (per_patient == 1).all()  # a patient's rows are scored by one fold's system


def test_split_rules(table: Path) -> None:
    acr = load_system("acr")
    df = pd.read_csv(table)
    df["patient_id"] = [f"p{i}" for i in range(len(df))]
    df["split"] = ["test" if i % 4 == 0 else "train" for i in range(len(df))]
    tab = read_points_table(df, acr, "malignant")
    assert holdout_mask("none", tab).sum() == 0
    assert holdout_mask("last:30", tab).tolist() == [False] * 270 + [True] * 30
    assert holdout_mask("column:split", tab).sum() == 75
    assert holdout_mask("fraction:0.2", tab, seed=1).tolist() == holdout_mask("fraction:0.2", tab, seed=1).tolist()
    with pytest.raises(CadxConfigError, match="expected none, last:N"):
        holdout_mask("random", tab)
    df.loc[3, "split"] = "validation"
    with pytest.raises(CadxDataError, match="split: row 4: 'validation'; allowed: train, test"):
        holdout_mask("column:split", read_points_table(df, acr, "malignant"))


def test_bad_cells_and_labels_are_one_line_with_row_and_column(table: Path, tmp_path: Path) -> None:
    acr = load_system("acr")
    df = pd.read_csv(table)
    df.loc[6, "echogenicity"] = "glowing"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    with pytest.raises(CadxDataError) as e:
        read_points_table(bad, acr, "malignant")
    assert str(e.value).startswith(f"{bad}: echogenicity: row 7: unknown value 'glowing'; allowed: anechoic")
    df = pd.read_csv(table, dtype=str)
    df.loc[2, "malignant"] = "maybe"
    with pytest.raises(CadxDataError, match="malignant: row 3: label 'maybe' is not binary"):
        read_points_table(df, acr, "malignant")
    df = pd.read_csv(table, dtype=str)
    df.loc[0, "size_mm"] = "big"
    with pytest.raises(CadxDataError, match="size_mm: row 1: size 'big'"):
        read_points_table(df, acr, "malignant", size_column="size_mm")
    res = CliRunner().invoke(app, ["points", "score", str(bad), "--system", "acr", "--label", "malignant",
                                   "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and isinstance(res.exception, CadxDataError)


def test_lidc_system_file_parses() -> None:
    s = load_system(lidc_system_path())
    assert [c.name for c in s.categories] == ["subtlety", "internalstructure", "calcification", "sphericity",
                                              "margin", "lobulation", "spiculation", "texture"]
    assert int(s.points.max()) == 4 and int(s.fixed.sum()) == 6 and len(s.features) == 40


def test_points_lidc_study_on_real_data(tmp_path: Path) -> None:
    root = shared_path("lidc")
    cfg = PointsConfig(data_root=str(root), folds=3, inner_folds=2, ga={"population": 10, "generations": 3},
                       grid={}, n_resamples=50)
    m = run_points_lidc(cfg, tmp_path)
    assert m["n"] == 1410 and m["n_malignant"] == 486 and m["n_patients"] == 586
    preds = pd.read_csv(tmp_path / "predictions.csv")
    y = preds["y_true"]
    for v in ("baseline", "logreg"):
        col = "total_baseline" if v == "baseline" else "score_logreg"
        assert m["auc"][v][0] == pytest.approx(roc_auc_score(y, preds[col]))
    assert m["auc"]["ga"][0] == pytest.approx(roc_auc_score(y, preds["total_ga"]))
    assert (preds.groupby("patient_id")["part"].nunique() == 1).all()
    table = pd.read_csv(tmp_path / "lidc_table.csv", dtype=str)
    assert np.isin(table["margin"].unique(), ["1", "2", "3", "4", "5"]).all()
