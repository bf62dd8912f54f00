"""Run ensembles: mean probabilities over runs with the same test studies, evaluated like a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score
from typer.testing import CliRunner

from cadx.cli import app
from cadx.errors import CadxDataError
from cadx.runs.ensemble import ensemble_runs, mean_probabilities


def _run(root: Path, name: str, p1: np.ndarray, order: np.ndarray | None = None) -> Path:
    n = len(p1)
    y = np.array(["b", "m"])[np.arange(n) % 2]
    df = pd.DataFrame({"study_id": [f"s{i}" for i in range(n)], "patient_id": [f"P{i // 2}" for i in range(n)],
                       "fold": np.arange(n) % 3, "y_true": y, "p_b": 1 - p1, "p_m": p1, "y_pred": "b"})
    if order is not None:
        df = df.iloc[order]
    d = root / name
    d.mkdir()
    df.to_csv(d / "predictions.csv", index=False)
    (d / "metrics.json").write_text(json.dumps({"classes": ["b", "m"], "pooled": {"auc": 0.5}}))
    return d


def test_ensemble_is_the_mean_of_member_probabilities(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 40
    y = (np.arange(n) % 2).astype(int)
    pa, pb = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1), np.clip(0.2 * y + rng.uniform(0, 0.8, n), 0, 1)
    a = _run(tmp_path, "a", pa)
    b = _run(tmp_path, "b", pb, order=rng.permutation(n))        # same studies, another row order
    m = ensemble_runs([a, b], tmp_path / "ens", n_bootstrap=50, report=False)
    df = pd.read_csv(tmp_path / "ens" / "predictions.csv")
    np.testing.assert_allclose(df["p_m"], (pa + pb) / 2)
    assert m["pooled"]["auc"] == pytest.approx(roc_auc_score(y, (pa + pb) / 2))
    assert m["pooled"]["accuracy"] == pytest.approx(accuracy_score(y, ((pa + pb) / 2 > 0.5).astype(int)))
    assert len(m["run"]["members"]) == 2 and set(m["folds"]) == {"0", "1", "2"}
    res = CliRunner().invoke(app, ["ensemble", str(a), str(b), "--out", str(tmp_path / "cli"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["auc"] == pytest.approx(m["pooled"]["auc"])


def test_ensemble_refuses_runs_on_other_studies(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", np.linspace(0, 1, 10))
    b = _run(tmp_path, "b", np.linspace(0, 1, 12))
    with pytest.raises(CadxDataError, match="test studies differ"):
        ensemble_runs([a, b], tmp_path / "ens", report=False)
    t = pd.read_csv(a / "predictions.csv", dtype={"study_id": str})
    t2 = t.assign(fold=(t["fold"] + 1) % 3)
    with pytest.raises(CadxDataError, match="fold"):
        mean_probabilities([t, t2], ["a", "b"])


def test_ensemble_averages_attribute_scores_and_scores_abe_on_the_recorded_range(tmp_path: Path) -> None:
    """Multi-task members: the ensemble's pred_<a> is the members' mean (rows matched by study id), ABE is taken on
    the range the first member recorded (``pooled.abe_range``): hand-computed mean |pred − true| × (hi − lo)."""
    n = 10
    true = np.linspace(0, 1, n)
    pa, pb = true + 0.2, true - 0.1                      # member errors 0.2 and 0.1; the mean is off by 0.05
    a = _run(tmp_path, "a", np.linspace(0.1, 0.9, n))
    b = _run(tmp_path, "b", np.linspace(0.2, 0.8, n), order=np.arange(n)[::-1])
    for d, p in ((a, pa), (b, pb)):
        t = pd.read_csv(d / "predictions.csv")
        idx = t["study_id"].str[1:].astype(int).to_numpy()
        t["pred_spic"], t["true_spic"] = p[idx], true[idx]
        t["pred_only_a"] = t["true_only_a"] = 0.5          # an attribute one member lacks is left out
        t.drop(columns=["pred_only_a", "true_only_a"] if d == b else []).to_csv(d / "predictions.csv", index=False)
    (a / "metrics.json").write_text(json.dumps({"classes": ["b", "m"], "pooled": {"auc": 0.5,
                                                                                  "abe_range": {"spic": [1, 5]}}}))
    m = ensemble_runs([a, b], tmp_path / "ens", n_bootstrap=0, report=False)
    df = pd.read_csv(tmp_path / "ens" / "predictions.csv")
    np.testing.assert_allclose(df["pred_spic"], true[df["study_id"].str[1:].astype(int)] + 0.05)
    assert "pred_only_a" not in df.columns
    assert m["pooled"]["abe"] == {"spic": pytest.approx(0.05 * 4)} and m["pooled"]["abe_scale"] == {"spic": "original"}
    # a member whose rating of a study differs is refused, naming it
    t = pd.read_csv(b / "predictions.csv")
    t.loc[0, "true_spic"] += 0.5
    t.to_csv(b / "predictions.csv", index=False)
    with pytest.raises(CadxDataError, match="true_spic"):
        ensemble_runs([a, b], tmp_path / "ens2", n_bootstrap=0, report=False)
