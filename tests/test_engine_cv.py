"""End-to-end engine: tiny CV runs (run folder, determinism, resume after a crash), SVM + pairs, final model,
external evaluation and single-study prediction. Tiny in-memory cohort, 8 px, 2 folds × 2 epochs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import cadx.runs.network as cv_mod
from cadx.errors import CadxConfigError
from cadx.runs import evaluate_run, predict_study, run_cv, train_final
from helpers import tiny_config


def _pred(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "predictions.csv")


@pytest.mark.slow
@pytest.mark.ci
def test_run_folder_contents_and_determinism(tmp_path: Path) -> None:
    cfg = tiny_config("cv.val_fraction=0.3", "train.early_stopping.patience=5")
    m1 = run_cv(cfg, tmp_path / "a")
    run = tmp_path / "a"
    for f in ("config.yaml", "fingerprint.json", "splits.json", "predictions.csv", "predictions_slices.csv",
              "metrics.json", "notes.md"):
        assert (run / f).is_file(), f
    for k in (0, 1):
        fd = run / f"fold_{k}"
        for f in ("checkpoint_best.ckpt", "checkpoint_last.ckpt", "history.csv", "predictions.csv", "metrics.json",
                  "DONE"):
            assert (fd / f).is_file(), f"fold_{k}/{f}"
        hist = pd.read_csv(fd / "history.csv")
        assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "val_accuracy", "val_auc", "lr", "seconds",
                                      "cpu_seconds"]
        assert hist["epoch"].tolist() == [0, 1] and hist["val_loss"].notna().all()
        # process CPU time of an epoch: positive, and at most (cores × its wall time) + clock granularity
        assert (hist["cpu_seconds"] > 0).all()
        assert (hist["cpu_seconds"] <= (os.cpu_count() or 1) * hist["seconds"] + 0.05).all()
    pred = _pred(run)
    assert len(pred) == 12 and sorted(pred["study_id"]) == [f"S{i:02d}" for i in range(12)]
    assert {"study_id", "patient_id", "fold", "y_true", "y_pred", "p_benign", "p_malignant"} <= set(pred.columns)
    np.testing.assert_allclose(pred[["p_benign", "p_malignant"]].sum(1), 1.0, atol=1e-5)
    slices = pd.read_csv(run / "predictions_slices.csv")
    assert len(slices) == 12 * 4
    # study probability = mean of its slice probabilities
    mean = slices.groupby("study_id")["p_malignant"].mean()
    np.testing.assert_allclose(pred.set_index("study_id")["p_malignant"], mean.loc[pred["study_id"]], atol=1e-6)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["pooled"]["accuracy"] == pytest.approx(m1["pooled"]["accuracy"])
    assert set(saved["pooled"]["ci"]) >= {"accuracy", "auc"}
    acc = (pred["y_true"] == pred["y_pred"]).mean()
    assert m1["pooled"]["accuracy"] == pytest.approx(acc)
    splits = json.loads((run / "splits.json").read_text())
    for f in splits["folds"]:
        assert not set(f["train"]) & set(f["test"]) and len(f["val"]) >= 1
    assert "best" in (run / "notes.md").read_text()
    # same config + seed → identical predictions (a second run in another folder)
    run_cv(cfg, tmp_path / "b")
    pd.testing.assert_frame_equal(_pred(run), _pred(tmp_path / "b"))
    # the folder is not silently overwritten
    with pytest.raises(CadxConfigError, match="resume"):
        run_cv(cfg, run)


class _Crash(Callback):
    """Raises at the start of ``epoch`` of the first fold it sees (after that fold's previous checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
@pytest.mark.ci
def test_resume_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config("train.epochs=3", "input.augment.enabled=true", "input.augment.noise=0.05",
                      "model.kwargs={dropout: 0.3}")
    ref = run_cv(cfg, tmp_path / "ref")
    real_fit = cv_mod.fit
    calls = {"n": 0}

    def crashing_fit(*args, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:          # fold 1 dies in epoch 2, after checkpoint_last of epoch 1
            kw["callbacks"] = [_Crash(2)]
        return real_fit(*args, **kw)

    monkeypatch.setattr(cv_mod, "fit", crashing_fit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cv(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "fold_0" / "DONE").is_file() and not (run / "fold_1" / "DONE").is_file()
    assert torch.load(run / "fold_1" / "checkpoint_last.ckpt", weights_only=False)["epoch"] == 1
    monkeypatch.setattr(cv_mod, "fit", real_fit)
    res = run_cv(cfg, run, resume=True)
    pd.testing.assert_frame_equal(_pred(run), _pred(tmp_path / "ref"))
    assert res["pooled"]["accuracy"] == ref["pooled"]["accuracy"]
    assert res["pooled"]["auc"] == ref["pooled"]["auc"]
    h = pd.read_csv(run / "fold_1" / "history.csv")
    h_ref = pd.read_csv(tmp_path / "ref" / "fold_1" / "history.csv")
    assert h["epoch"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(h["train_loss"], h_ref["train_loss"])
    with pytest.raises(CadxConfigError, match="different config"):
        run_cv(tiny_config("train.epochs=4"), run, resume=True)


@pytest.mark.slow
@pytest.mark.ci
def test_pairs_svm_youden_and_final_predict_evaluate(tmp_path: Path) -> None:
    cfg = tiny_config("pairs=balanced", "objective={contrastive: 1.0}", "eval.classifier=svm",
                      "eval.decision=youden", "eval.aggregation=vote")
    m = run_cv(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "fold_0" / "svm.pkl").is_file()
    fold_m = json.loads((run / "fold_0" / "metrics.json").read_text())
    assert 0.0 <= fold_m["decision_fit"]["threshold"] <= 1.0
    pred = _pred(run)
    frac = pred["p_benign"].to_numpy() * 4                     # vote fractions of 4 slices
    np.testing.assert_allclose(frac, frac.round(), atol=1e-9)
    assert np.isfinite(m["pooled"]["accuracy"])
    # external evaluation with the fold ensemble
    pooled = evaluate_run(run, "_test_tiny", tmp_path, {"n": 6, "seed": 5})
    ext = run / "external" / "_test_tiny-6-5"
    assert (ext / "predictions.csv").is_file() and (ext / "metrics.json").is_file()
    assert pooled["n_studies"] == 6
    # final model on all data, then single-study prediction prefers final/
    final = train_final(cfg, run)
    assert (final / "DONE").is_file() and (final / "svm.pkl").is_file()
    from helpers import tiny_volume

    vol, _, box = tiny_volume(1, np.random.default_rng(9))
    np.save(tmp_path / "study.npy", vol[0])
    out = predict_study(run, tmp_path / "study.npy", box=list(box))
    thr = json.loads((final / "metrics.json").read_text())["decision_fit"]["threshold"]
    assert out["models"] == 1 and out["items"] == 4
    # final/ has no validation studies: its threshold was fitted on all (training) studies, and says so
    assert out["decision"] == {"rule": "youden", "threshold": thr, "positive": "malignant", "fit_split": "train"}
    p = out["probabilities"]["malignant"]
    np.testing.assert_allclose(p * 4, round(p * 4), atol=1e-9)          # a vote fraction of the 4 slices
    assert out["probabilities"]["benign"] == pytest.approx(1 - p, abs=1e-9)
    assert out["prediction"] == ("malignant" if p >= thr else "benign")  # final/'s fitted Youden threshold
    # (predict = cv for every rule × aggregation, study by study: tests/test_predict_path.py)


def _final_weights(final: Path) -> dict[str, torch.Tensor]:
    return torch.load(final / "checkpoint_last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
@pytest.mark.ci
def test_cv_final_trains_the_model_cadx_train_writes_and_resume_skips_it(tmp_path: Path) -> None:
    """``cv.final`` (``cadx cv --final``): the folds are those of a run without it, and ``final/`` holds the model,
    decision and SVM that ``train_final`` (``cadx train``) writes; a resumed run keeps a finished final model."""
    cfg = tiny_config("eval.classifier=svm", "cv.final=true")
    m = run_cv(cfg, tmp_path / "cvf")
    plain = run_cv(tiny_config("eval.classifier=svm"), tmp_path / "plain")
    pd.testing.assert_frame_equal(_pred(tmp_path / "cvf"), _pred(tmp_path / "plain"))
    assert m["pooled"]["auc"] == plain["pooled"]["auc"]
    alone = train_final(tiny_config("eval.classifier=svm"), tmp_path / "alone")
    got = tmp_path / "cvf" / "final"
    for f in ("DONE", "svm.pkl", "metrics.json", "config.yaml", "history.csv"):
        assert (got / f).is_file(), f
    a, b = _final_weights(got), _final_weights(alone)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (json.loads((got / "metrics.json").read_text())["decision_fit"]
            == json.loads((alone / "metrics.json").read_text())["decision_fit"])
    assert json.loads((got / "DONE").read_text())["fold"] == "final"
    n = len(pd.read_csv(tmp_path / "cvf" / "predictions.csv"))
    assert f"Final model: `final/`, trained on all {n} studies" in (tmp_path / "cvf" / "notes.md").read_text()
    assert "Final model" not in (tmp_path / "plain" / "notes.md").read_text()
    done = (got / "DONE").stat().st_mtime_ns
    run_cv(cfg, tmp_path / "cvf", resume=True)
    assert (got / "DONE").stat().st_mtime_ns == done  # read back, not retrained


def test_cv_final_is_refused_for_a_run_kind_without_a_final_model(tmp_path: Path) -> None:
    cfg = tiny_config("cv.final=true", "model.name=hc_svm")
    with pytest.raises(CadxConfigError, match=r"^cv\.final: only network runs train a final model \(this config "
                                              r"is a handcrafted run\)$"):
        run_cv(cfg, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # refused before anything was written
