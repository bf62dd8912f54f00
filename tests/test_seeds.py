"""Seed repeats (``cadx cv CONFIG --seeds 0,1 --out DIR``): same splits, different models, mean ± SD over seeds and
the seed ensemble = the mean of the seeds' prediction files; resumable; ``train.seed`` is backward compatible."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cadx.cli import app
from cadx.config import load_config
from cadx.errors import CadxConfigError
from cadx.runs.seeds import parse_seeds, seed_config, seed_summary, with_calibration
from cadx.studies.imbalance.tables import paired_seed_ci
from cadx.training.trainer import fold_seed, training_seed
from helpers import tiny_config


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(" 3 , 7") == [3, 7]
    for bad in ("", "a,b", "1,1", "-1"):
        with pytest.raises(CadxConfigError, match="--seeds"):
            parse_seeds(bad)


def test_training_seed_defaults_to_the_run_seed() -> None:
    cfg = tiny_config("seed=5")
    assert cfg.train.seed is None and training_seed(cfg) == 5          # one seed drives both, as before
    s2 = seed_config(cfg, 2)
    assert s2.seed == 5 and s2.train.seed == 2 and training_seed(s2) == 2  # splits seed kept, training seed set
    assert fold_seed(training_seed(s2), 0) != fold_seed(training_seed(cfg), 0)


def test_seed_summary_mean_sd_and_ensemble() -> None:
    per = {0: {"pooled": {"auc": 0.8, "accuracy": 0.7, "n_studies": 10}},
           1: {"pooled": {"auc": 0.9, "accuracy": 0.75, "n_studies": 10}},
           2: {"pooled": {"auc": 0.7, "accuracy": float("nan")}}}
    ens = {"pooled": {"auc": 0.85, "ci": {"auc": [0.7, 0.95]}}}
    s = seed_summary(per, ens)
    assert list(s) == ["auc", "accuracy"]                               # counts (n_*) are not metrics
    assert s["auc"]["mean"] == pytest.approx(0.8) and s["auc"]["sd"] == pytest.approx(0.1)  # ddof=1
    assert s["auc"]["ensemble"] == 0.85 and s["auc"]["ensemble_ci"] == [0.7, 0.95]
    assert s["accuracy"]["n"] == 2 and s["accuracy"]["mean"] == pytest.approx(0.725)      # NaN left out
    assert seed_summary({0: per[0]}, None)["auc"]["sd"] is None
    m = with_calibration({"pooled": {"auc": 0.8, "ci": {"auc": [0.7, 0.9]}},
                          "calibration": {"brier": 0.12, "ece": 0.05, "ci": {"brier": [0.1, 0.14]}}})
    assert m["pooled"]["brier"] == 0.12 and m["pooled"]["ece"] == 0.05
    assert m["pooled"]["ci"] == {"auc": [0.7, 0.9], "brier": [0.1, 0.14]}
    assert with_calibration({"pooled": {"auc": 0.8}}) == {"pooled": {"auc": 0.8}}


@pytest.mark.slow
@pytest.mark.ci
def test_cv_seeds_same_splits_different_models_and_ensemble(tmp_path: Path) -> None:
    cfg = tiny_config("cv.val_fraction=0.3", "eval.decision=argmax")
    path = tmp_path / "tiny.yaml"
    cfg.save(path)
    out = tmp_path / "seeds"
    res = CliRunner().invoke(app, ["cv", str(path), "--seeds", "0,1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    s0, s1 = out / "seed_0", out / "seed_1"
    # identical splits (made with the config's seed 0), training seeds 0 and 1
    folds = [json.loads((d / "splits.json").read_text())["folds"] for d in (s0, s1)]
    assert folds[0] == folds[1]
    assert load_config(s0 / "config.yaml").train.seed == 0 and load_config(s1 / "config.yaml").train.seed == 1
    assert load_config(s1 / "config.yaml").seed == 0
    p0 = pd.read_csv(s0 / "predictions.csv", dtype={"study_id": str}).set_index("study_id").sort_index()
    p1 = pd.read_csv(s1 / "predictions.csv", dtype={"study_id": str}).set_index("study_id").sort_index()
    assert (p0["fold"] == p1["fold"]).all()
    assert not np.allclose(p0["p_malignant"], p1["p_malignant"])     # two different models
    # the seed ensemble = the hand-computed mean of the two prediction files
    mean = (p0["p_malignant"] + p1["p_malignant"]) / 2
    ens = pd.read_csv(out / "ensemble" / "predictions.csv", dtype={"study_id": str}).set_index("study_id")
    np.testing.assert_allclose(ens.loc[mean.index, "p_malignant"], mean, atol=1e-9)
    y = (p0["y_true"] == "malignant").astype(int)
    rec = json.loads((out / "seeds.json").read_text())
    auc = rec["metrics"]["auc"]
    assert auc["ensemble"] == pytest.approx(roc_auc_score(y, mean))
    ens_metrics = json.loads((out / "ensemble" / "metrics.json").read_text())
    assert auc["ensemble"] == pytest.approx(ens_metrics["pooled"]["auc"])
    a0, a1 = roc_auc_score(y, p0["p_malignant"]), roc_auc_score(y, p1["p_malignant"])
    assert auc["seeds"] == {"0": pytest.approx(a0), "1": pytest.approx(a1)}
    assert auc["mean"] == pytest.approx((a0 + a1) / 2) and auc["sd"] == pytest.approx(statistics.stdev([a0, a1]))
    assert len(auc["ensemble_ci"]) == 2
    report = (out / "report.md").read_text()
    assert "mean ± SD" in report and f"{(a0 + a1) / 2:.3f} ± {statistics.stdev([a0, a1]):.3f}" in report
    # resumable: a second call reuses both finished seed folders (no retraining)
    mtime = (s0 / "fold_0" / "checkpoint_best.ckpt").stat().st_mtime
    res = CliRunner().invoke(app, ["cv", str(path), "--seeds", "0,1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rec2 = json.loads((out / "seeds.json").read_text())
    assert {r["status"] for r in rec2["runs"].values()} == {"reused (finished before)"}
    assert (s0 / "fold_0" / "checkpoint_best.ckpt").stat().st_mtime == mtime
    assert rec2["metrics"]["auc"]["mean"] == pytest.approx(auc["mean"])


def test_paired_seed_ci_strict_rule_by_hand() -> None:
    # d = [0.02, 0.03, 0.04]: mean 0.03, SD 0.01, t(0.975, 2) = 4.302653 → half-width 0.0248414
    r = paired_seed_ci(np.array([0.90, 0.92, 0.94]), np.array([0.88, 0.89, 0.90]))
    assert r["diff"] == pytest.approx(0.03) and r["verdict"] == "win"
    assert r["ci"] == pytest.approx([0.03 - 0.0248414, 0.03 + 0.0248414], abs=1e-6)
    r = paired_seed_ci(np.array([0.90, 0.95, 0.85]), np.array([0.91, 0.90, 0.90]))   # d = [-.01, .05, -.05]
    assert r["verdict"] == "tie" and r["ci"][0] < 0 < r["ci"][1]
    assert paired_seed_ci(np.array([0.8]), np.array([0.9])) == {"n": 1, "diff": pytest.approx(-0.1), "ci": None,
                                                                 "verdict": "tie"}
    assert paired_seed_ci(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.7, 0.6]))["verdict"] == "loss"
