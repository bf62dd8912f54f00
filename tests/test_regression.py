"""The fixed regression run: the demo's ResNet-18 CV of round 1 (``tests/data/regression_demo_resnet18.yaml``, the
packaged demo_resnet.yaml as it was before the one-engine restructuring), 2 folds × 2 epochs on the synthetic
cohort, one torch thread, seed 0.

History of the pinned numbers:
- recorded with the round-1 code (commit 493304b): ``regression_demo_resnet18_predictions_round1.csv``,
  :data:`ROUND1`. The restructured engine reproduced them exactly (every probability, every class) up to and
  including commit 4379252, where this test asserted :data:`ROUND1`.
- then the epoch-sampler fix: Lightning never called ``set_epoch`` on cadx's batch sampler, so every epoch replayed
  epoch 0's batch order, oversampling, Siamese partners and augmentation. With the fix epoch 1 draws new batches,
  so the numbers changed once more: ``regression_demo_resnet18_predictions.csv``, :data:`CURRENT`, which any
  further refactoring must reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cadx.config import load_config
from cadx.runs import run_cv
from conftest import ROOT

DATA = ROOT / "tests" / "data"
# pooled metrics, torch.set_num_threads(1), seed 0
ROUND1 = {"accuracy": 0.2, "auc": 0.5330029766150297, "sensitivity": 0.21785714285714283,
          "specificity": 0.803248030724615, "f1": 0.16199831033216827}
CURRENT = {"accuracy": 0.21, "auc": 0.5139231682519777, "sensitivity": 0.23823809523809522,
           "specificity": 0.8076725320374653, "f1": 0.18666587704941567}


@pytest.mark.slow
@pytest.mark.ci
def test_engine_reproduces_the_pinned_regression_run(tmp_path: Path) -> None:
    cfg = load_config(DATA / "regression_demo_resnet18.yaml",
                      ["cv.folds=2", "train.epochs=2", f"data.root={tmp_path / 'data'}", "eval.bootstrap=200",
                       "train.progress=false", "train.precision=32"])  # pinned in fp32 (auto = bf16 on AMX CPUs)
    pooled = run_cv(cfg, tmp_path / "run")["pooled"]
    for k, v in CURRENT.items():
        assert pooled[k] == pytest.approx(v, abs=1e-9), k
    before = pd.read_csv(DATA / "regression_demo_resnet18_predictions.csv")
    after = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert list(after["study_id"]) == list(before["study_id"])
    assert list(after["y_pred"]) == list(before["y_pred"])
    cols = [c for c in before.columns if c.startswith("p_")]
    np.testing.assert_allclose(after[cols].to_numpy(), before[cols].to_numpy(), atol=1e-6)
