"""benchmarks/time_to_accuracy.py: CPU-minutes and validation curves read from run folders (hand-computed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("time_to_accuracy", ROOT / "benchmarks" / "time_to_accuracy.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(root: Path, cpu: bool) -> Path:
    """Two folds × 3 epochs; fold 0 CPU 10, 20, 30 s and val AUC .6 .7 .8; fold 1 CPU 30 s each, AUC .8 .9 .7."""
    for k, (cpus, aucs) in enumerate((([10, 20, 30], [0.6, 0.7, 0.8]), ([30, 30, 30], [0.8, 0.9, 0.7]))):
        h = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5,
                          "val_auc": aucs, "lr": 1e-3, "seconds": [5.0, 5.0, 5.0]})
        if cpu:
            h["cpu_seconds"] = cpus
        (root / f"fold_{k}").mkdir(parents=True)
        h.to_csv(root / f"fold_{k}" / "history.csv", index=False)
    (root / "metrics.json").write_text(json.dumps({"pooled": {"auc": 0.85, "ci": {"auc": [0.8, 0.9]},
                                                              "n_patients": 40}, "run": {"seconds": 40.0}}))
    return root


def test_cpu_minutes_and_validation_curve(tmp_path: Path) -> None:
    tta = _module()
    p = tta.run_point("a", _run(tmp_path / "a", cpu=True), "auc", None, 2)
    assert p["cpu_minutes"] == pytest.approx(150 / 60, abs=0.01) and p["cpu_source"] == "history cpu_seconds"
    assert p["value"] == 0.85 and p["ci"] == [0.8, 0.9] and p["n_patients"] == 40
    vc = p["validation_curve"]
    assert vc["column"] == "val_auc"
    assert vc["cpu_minutes"] == pytest.approx([40 / 60, 90 / 60, 150 / 60], abs=1e-3)
    assert vc["value"] == pytest.approx([0.7, 0.8, 0.75])


def test_fallbacks_given_then_wall_times_threads(tmp_path: Path) -> None:
    tta = _module()
    run = _run(tmp_path / "b", cpu=False)
    assert tta.run_cpu_minutes(run, 7.5, 2) == (7.5, "given (see note)")
    minutes, how = tta.run_cpu_minutes(run, None, 2)
    assert minutes == pytest.approx(30 * 2 / 60) and how == "wall × 2 threads"
    # a given total rescales the wall-time validation curve (both folds 5 s per epoch) so that it ends there
    curve = tta.run_point("b", run, "auc", 7.5, 2)["validation_curve"]
    assert curve["cpu_minutes"] == pytest.approx([2.5, 5.0, 7.5])


def test_main_writes_json_and_figure_and_names_a_bad_metric(tmp_path: Path) -> None:
    tta = _module()
    run = _run(tmp_path / "c", cpu=True)
    tta.main(["--name", "x", "--metric", "auc", "--run", f"c={run}", "--target", "0.9", "--out", str(tmp_path)])
    out = json.loads((tmp_path / "x.json").read_text())
    assert out["points"][0]["label"] == "c" and (tmp_path / "x.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="pooled has no 'dice_mean'"):
        tta.main(["--name", "y", "--metric", "dice_mean", "--run", f"c={run}", "--out", str(tmp_path)])
