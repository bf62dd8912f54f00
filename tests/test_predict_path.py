"""The one prediction path: ``cadx predict`` answers exactly like ``cadx cv`` for the same model.

For every decision rule (argmax, prior, youden) × aggregation (mean, vote) a tiny binary CV is run; then every study,
written to disk as a NIfTI volume + mask, is predicted with ``predict_study(..., fold=k)`` (its own fold's model) and
must get the same class and probabilities (1e-6) as that fold's row in the run's ``predictions.csv``. The fold
ensemble's decision is the documented combination (mean outputs, mean priors / thresholds).

The settings make the rules matter (measured, and asserted so the test keeps its teeth): 15 patients, so one fold
trains on 6 benign / 4 malignant (priors .6/.4) and barely trained models keep probabilities near .5 — the prior rule
changes decisions; the vote runs score 4 whole slices per volume (vote fractions in quarters). 2-2 vote ties occurred
here only while every epoch replayed epoch 0 (the sampler bug fixed since); the tie rule itself is pinned by hand in
test_aggregation.py, and predict and cv share that one implementation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cadx.cli import app
from cadx.data.image import ImageData
from cadx.data.readers import write_image
from cadx.data.splits import Splits
from cadx.errors import CadxDataError
from cadx.runs import predict_study, run_cv
from cadx.runs.inference import combine_decisions, decide_rows, fit_decision
from helpers import tiny_cohort, tiny_config

CLASSES = ["benign", "malignant"]
N = 15
SETTINGS = {"mean": ["seed=2", "optim.lr=0.003", "input.max_slices=2"],                   # box ROI, 2 slices
            "vote": ["input.roi=none", "input.size=16", "input.max_slices=4", "train.epochs=4"]}  # whole slices
ITEMS = {"mean": 2, "vote": 4}


def _write_studies(folder: Path) -> dict[str, tuple[Path, Path, list[int]]]:
    """The ``_test_tiny`` cohort (n=N, seed=0) on disk: {study_id: (image.nii.gz, mask.nii.gz, box)}."""
    out = {}
    for st in tiny_cohort(N, 0):
        img, mask = st.image().load(), st.mask().load()  # type: ignore[union-attr]
        ip = write_image(ImageData(img.array, img.spacing), folder / f"{st.study_id}.nii.gz")
        mp = write_image(ImageData(mask.array, mask.spacing), folder / f"{st.study_id}_mask.nii.gz")
        out[st.study_id] = (ip, mp, list(st.boxes[0]))
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, list[int]]]:
    return _write_studies(tmp_path_factory.mktemp("studies"))


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("aggregation", ["mean", "vote"])
@pytest.mark.parametrize("rule", ["argmax", "prior", "youden"])
def test_predict_equals_cv_row_for_every_study(tmp_path: Path, studies: dict, rule: str, aggregation: str) -> None:
    cfg = tiny_config("cv.val_fraction=0.3", f"data.options={{n: {N}}}", f"eval.decision={rule}",
                      f"eval.aggregation={aggregation}", *SETTINGS[aggregation])
    run = tmp_path / "run"
    run_cv(cfg, run)
    rows = pd.read_csv(run / "predictions.csv", dtype={"study_id": str}).set_index("study_id")
    assert len(rows) == N
    p_mal = rows["p_malignant"].to_numpy(float)
    if rule == "prior" and aggregation == "mean":   # the priors change decisions
        assert (np.where(p_mal > 0.5, "malignant", "benign") != rows["y_pred"].to_numpy()).any()
    splits = Splits.load(run / "splits.json")
    labels = {s.patient_id: s.label for s in tiny_cohort(N, 0)}
    fits = {k: json.loads((run / f"fold_{k}" / "metrics.json").read_text())["decision_fit"] for k in (0, 1)}
    for f in splits:   # the saved decision parameters are the documented ones
        assert fits[f.fold]["rule"] == rule
        if rule == "prior":
            y = np.array([CLASSES.index(str(labels[p])) for p in f.train])
            np.testing.assert_allclose(fits[f.fold]["priors"], np.bincount(y, minlength=2) / y.size)
        if rule == "youden":
            assert 0.0 <= fits[f.fold]["threshold"] <= 1.0
    for sid, (img, mask, box) in studies.items():
        row = rows.loc[sid]
        out = predict_study(run, img, mask=mask, box=box, fold=int(row["fold"]))
        assert out["models"] == 1 and out["items"] == ITEMS[aggregation]
        got = np.array([out["probabilities"][c] for c in CLASSES])
        np.testing.assert_allclose(got, row[[f"p_{c}" for c in CLASSES]].to_numpy(float), atol=1e-6)
        assert out["prediction"] == row["y_pred"], sid
        assert out["decision"] == fits[int(row["fold"])]
        if aggregation == "vote":      # vote fractions of 4 slices
            np.testing.assert_allclose(got * 4, np.round(got * 4), atol=1e-9)
    # the CLI once (mask only: its bounding box is the study's box)
    sid = "S03"
    img, mask, _ = studies[sid]
    fold = rows["fold"].astype(int).to_dict()[sid]
    res = CliRunner().invoke(app, ["predict", str(run), "--study", str(img), "--mask", str(mask), "--fold",
                                   str(fold), "--json"])
    assert res.exit_code == 0, res.output
    js = json.loads(res.stdout)
    assert js["prediction"] == rows.loc[sid, "y_pred"]
    assert js["probabilities"]["malignant"] == pytest.approx(rows.loc[sid, "p_malignant"], abs=1e-6)
    # the fold ensemble: mean of the two fold models' outputs, decided with the folds' parameters combined
    per_fold = [predict_study(run, img, mask=mask, fold=k) for k in (0, 1)]
    ens = predict_study(run, img, mask=mask)
    assert ens["models"] == 2
    decision = combine_decisions(rule, [fits[0], fits[1]])
    assert ens["decision"] == decision
    p = np.array([[ens["probabilities"][c] for c in CLASSES]])
    if aggregation == "mean":          # the mean over slices and models commutes
        mean = np.mean([[r["probabilities"][c] for c in CLASSES] for r in per_fold], axis=0)
        np.testing.assert_allclose(p[0], mean, atol=1e-6)
    if rule == "prior":
        pri = np.mean([fits[0]["priors"], fits[1]["priors"]], axis=0)
        assert ens["prediction"] == CLASSES[int(np.argmax(p[0] / pri))]
    elif rule == "youden":
        thr = (fits[0]["threshold"] + fits[1]["threshold"]) / 2
        assert ens["prediction"] == CLASSES[int(p[0, 1] >= thr)]


@pytest.mark.slow
@pytest.mark.ci
def test_predict_fold_errors(tmp_path: Path, studies: dict) -> None:
    run = tmp_path / "run"
    run_cv(tiny_config("eval.decision=prior", "train.epochs=1"), run)
    img, mask, _ = studies["S00"]
    with pytest.raises(CadxDataError, match="no finished fold 5"):
        predict_study(run, img, mask=mask, fold=5)
    # a fold whose metrics.json lacks the fitted priors (a run from before decision_fit) is named in the error
    m = run / "fold_1" / "metrics.json"
    saved = json.loads(m.read_text())
    saved.pop("decision_fit")
    m.write_text(json.dumps(saved))
    with pytest.raises(CadxDataError, match=r"fold_1.*metrics.json.*decision_fit.priors"):
        predict_study(run, img, mask=mask)


def test_fit_and_combine_decisions_by_hand() -> None:
    y = np.array([0, 0, 0, 1, -1])                               # -1 = unlabelled, skipped
    assert fit_decision("prior", CLASSES, y) == {"rule": "prior", "priors": [0.75, 0.25], "positive": "malignant",
                                                 "fit_split": "train"}
    fit_rows = pd.DataFrame({"y_true": ["benign", "benign", "malignant", "malignant"],
                             "p_malignant": [0.1, 0.6, 0.4, 0.9], "p_benign": [0.9, 0.4, 0.6, 0.1]})
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], drop_intermediate=False)
    best = float(thr[1:][np.argmax((tpr - fpr)[1:])])
    assert fit_decision("youden", CLASSES, fit_studies=fit_rows)["threshold"] == pytest.approx(best)
    assert fit_decision("youden", CLASSES, fit_studies=fit_rows.iloc[:2])["threshold"] == 0.5   # one class only
    assert fit_decision("argmax", CLASSES, y) == {"rule": "argmax", "positive": "malignant"}
    with pytest.raises(ValueError, match="unknown decision rule"):
        fit_decision("median", CLASSES, y)
    both = combine_decisions("prior", [{"priors": [0.75, 0.25]}, {"priors": [0.25, 0.75]}])
    assert both == {"rule": "prior", "priors": [0.5, 0.5]}
    assert combine_decisions("youden", [{"threshold": 0.2}, {"threshold": 0.6}])["threshold"] == pytest.approx(0.4)
    # applying: argmax keeps the aggregation's (vote) y_pred; prior divides by the priors; youden thresholds
    st = pd.DataFrame({"p_benign": [0.5, 0.7], "p_malignant": [0.5, 0.3], "y_pred": ["malignant", "benign"]})
    assert decide_rows(st, CLASSES, {"rule": "argmax"})["y_pred"].tolist() == ["malignant", "benign"]
    assert decide_rows(st, CLASSES, {"rule": "prior", "priors": [0.8, 0.2]})["y_pred"].tolist() == \
        ["malignant", "malignant"]
    assert decide_rows(st, CLASSES, {"rule": "youden", "threshold": 0.5})["y_pred"].tolist() == \
        ["malignant", "benign"]


@pytest.mark.slow
@pytest.mark.ci
def test_run_ensemble_decides_with_the_members_combined_fold_priors(tmp_path: Path) -> None:
    from cadx.runs.ensemble import ensemble_runs

    base = ["cv.val_fraction=0.3", f"data.options={{n: {N}}}", "eval.decision=prior", *SETTINGS["mean"]]
    runs = [tmp_path / "a", tmp_path / "b"]
    run_cv(tiny_config(*base), runs[0])
    run_cv(tiny_config(*base, "optim.lr=0.01"), runs[1])          # same seed → same splits, another model
    m = ensemble_runs(runs, tmp_path / "ens", n_bootstrap=0, report=False)
    df = pd.read_csv(tmp_path / "ens" / "predictions.csv")
    for k in (0, 1):
        fits = [json.loads((r / f"fold_{k}" / "metrics.json").read_text())["decision_fit"]["priors"] for r in runs]
        pri = np.mean(fits, axis=0)
        assert m["run"]["decision"]["folds"][str(k)]["priors"] == pytest.approx(pri.tolist())
        d = df[df["fold"] == k]
        want = np.array(CLASSES)[np.argmax(d[["p_benign", "p_malignant"]].to_numpy() / pri, axis=1)]
        assert d["y_pred"].tolist() == want.tolist()
    assert m["run"]["decision"]["rule"] == "prior"
    assert m["pooled"]["accuracy"] == pytest.approx(float((df["y_pred"] == df["y_true"]).mean()))
