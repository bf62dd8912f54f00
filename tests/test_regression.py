"""The fixed regression run: the demo's ResNet-18 CV of round 1 (``tests/data/regression_demo_resnet18.yaml``, the
packaged demo_resnet.yaml as it was before the one-engine restructuring), 2 folds × 2 epochs on the synthetic
cohort, one torch thread. Its out-of-fold predictions and pooled metrics were recorded with the code before the
restructuring (``tests/data/regression_demo_resnet18_predictions.csv``); the restructured engine must reproduce
them at the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cadx.config import load_config
from cadx.runs import run_cv
from conftest import ROOT

DATA = ROOT / "tests" / "data"
# pooled metrics of the pre-restructuring code (commit 493304b), torch.set_num_threads(1), seed 0
BEFORE = {"accuracy": 0.2, "auc": 0.5330029766150297, "sensitivity": 0.21785714285714283,
          "specificity": 0.803248030724615, "f1": 0.16199831033216827}


@pytest.mark.slow
@pytest.mark.ci
def test_restructured_engine_reproduces_the_round1_regression_run(tmp_path: Path) -> None:
    cfg = load_config(DATA / "regression_demo_resnet18.yaml",
                      ["cv.folds=2", "train.epochs=2", f"data.root={tmp_path / 'data'}", "eval.bootstrap=200",
                       "train.progress=false"])
    pooled = run_cv(cfg, tmp_path / "run")["pooled"]
    for k, v in BEFORE.items():
        assert pooled[k] == pytest.approx(v, abs=1e-9), k
    before = pd.read_csv(DATA / "regression_demo_resnet18_predictions.csv")
    after = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert list(after["study_id"]) == list(before["study_id"])
    assert list(after["y_pred"]) == list(before["y_pred"])
    cols = [c for c in before.columns if c.startswith("p_")]
    np.testing.assert_allclose(after[cols].to_numpy(), before[cols].to_numpy(), atol=1e-6)
