"""The embedded demo (``cadx demo``): its packaged configs, the synthetic generator's ``classes`` option it uses,
and a reduced demo end to end (2 folds x 1 epoch on a few small patients) whose printed ``cadx predict`` command
is run as printed."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from cadx.config import load_config, packaged_config_path
from cadx.data.synthetic import cohort_params, generate_cohort, load_cohort
from cadx.data.synthetic_phantom import CLASSES, class_quota
from cadx.errors import CadxConfigError, CadxDataError
from cadx.runs.demo import DEMO_CONFIGS, demo_configs, run_demo
from cadx.runs.predict import predict_study

REDUCED = ["cv.folds=2", "train.epochs=1", "data.options.n_patients=8", "data.options.shape=10,40,40",
           "eval.bootstrap=50", "train.progress=false"]


def test_demo_configs_load_and_compare_like_with_like(tmp_path: Path) -> None:
    resnet, dmrn = demo_configs(tmp_path / "data")
    assert [c.name for c in (resnet, dmrn)] == ["demo_resnet18", "demo_dmrn"]
    assert (resnet.model.name, dmrn.model.name) == ("resnet18", "dmrn")
    assert resnet.data == dmrn.data and resnet.data.root == str(tmp_path / "data")
    assert resnet.input == dmrn.input  # the comparison differs only in the model and its objective
    assert resnet.cv == dmrn.cv and resnet.cv.folds == 5
    assert dmrn.eval.classifier == "svm" and dmrn.objective["contrastive"] > 0
    assert resnet.eval.bootstrap >= 1000  # the CIs the table prints
    for name in DEMO_CONFIGS:  # every packaged demo config loads on its own too
        assert load_config(packaged_config_path(name)).data.dataset == "synthetic"


def test_demo_configs_refuse_two_cohorts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = load_config

    def patched(path: Path, overrides: list[str] | None = None) -> object:
        extra = ["data.options.seed=1"] if Path(path).stem == "demo_dmrn" else []
        return real(path, [*(overrides or []), *extra])

    monkeypatch.setattr("cadx.runs.demo.load_config", patched)
    with pytest.raises(CadxConfigError, match="data sections differ"):
        demo_configs(tmp_path / "data")


def test_synthetic_classes_option_keeps_defaults(tmp_path: Path) -> None:
    # the default parameters are unchanged (no "classes" key): committed cohorts and results stay valid
    assert cohort_params() == {"version": 3, "n_patients": 100, "seed": 0, "shape": [28, 64, 64], "box_margin": 3}
    assert cohort_params(classes=list(CLASSES)) == cohort_params()
    assert cohort_params(classes=["NAA", "ACA"])["classes"] == ["NAA", "ACA"]
    for bad in (["ACA"], ["ACA", "ACA"], ["ACA", "XYZ"]):
        with pytest.raises(CadxConfigError, match="classes"):
            cohort_params(classes=bad)
    # a two-class cohort: the paper's proportions (ACA 54 : NAA 35) by largest remainder, 7 → 4 + 3 (hand: 4.25, 2.75)
    assert class_quota(7, {"ACA": 54, "NAA": 35}) == {"ACA": 4, "NAA": 3}
    generate_cohort(tmp_path / "c", n_patients=7, seed=0, shape=(10, 40, 40), classes=["ACA", "NAA"])
    cohort = load_cohort(tmp_path / "c")
    assert list(cohort.classes) == ["ACA", "NAA"]
    labels = [s.label for s in cohort.studies]
    assert sorted(labels) == ["ACA"] * 4 + ["NAA"] * 3
    meta = json.loads((tmp_path / "c" / "synthetic.json").read_text())
    assert meta["class_counts"] == {"ACA": 4, "NAA": 3} and meta["params"]["classes"] == ["ACA", "NAA"]
    assert set(meta["class_names"]) == {"ACA", "NAA"}


def test_reduced_demo_end_to_end_prints_a_working_predict_command(tmp_path: Path) -> None:
    con = Console(record=True, width=400)
    out = tmp_path / "demo"
    result = run_demo(out, REDUCED, console=con)
    text = con.export_text()

    names = ["demo_resnet18", "demo_dmrn"]
    assert list(result["runs"]) == names
    assert result["run_dirs"] == [str(out / n) for n in names]
    for n in names:
        m = result["runs"][n]
        pred = pd.read_csv(out / n / "predictions.csv")
        assert m["n_patients"] == 8 and len(pred) == 8  # every patient scored once, out of fold
        assert 0.0 <= m["auc"] <= 1.0 and m["ci"]["auc"][0] <= m["auc"] <= m["ci"]["auc"][1]
        assert np.isclose(m["accuracy"], (pred["y_true"] == pred["y_pred"]).mean())
        assert n in text
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["runs"].keys() == result["runs"].keys() and saved["predict"] == result["predict"]
    counts = saved["class_counts"]
    assert saved["chance"]["accuracy"] == pytest.approx(max(counts.values()) / 8, abs=1e-4)
    assert Path(result["report"]).is_file() and f"report: {result['report']}" in text

    # the printed command names a run folder inside the demo and a real study of the demo's data
    line = next(ln.strip() for ln in text.splitlines() if ln.strip().startswith("cadx predict "))
    assert line == result["predict"]
    args = shlex.split(line)[2:]
    run_dir, study, mask = Path(args[0]), Path(args[args.index("--study") + 1]), Path(args[args.index("--mask") + 1])
    assert run_dir == out / "demo_resnet18" and study.is_dir() and mask.is_file()
    assert study.parent == out / "data" / "images"
    p = predict_study(run_dir, study, mask=mask)
    assert p["models"] == 2 and set(p["probabilities"]) == set(counts)
    assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # binary: the default operating point (eval.decision auto) = the fold models' mean Youden threshold on the
    # probability of the positive class
    d = p["decision"]
    assert d["rule"] == "youden" and d["positive"] in counts
    other = next(c for c in counts if c != d["positive"])
    assert p["prediction"] == (d["positive"] if p["probabilities"][d["positive"]] >= d["threshold"] else other)
    assert result["example"]["label"] in counts
    # the demo folder itself holds runs, not a model: predict says which run folders to use
    with pytest.raises(CadxDataError, match=r"run folders demo_dmrn, demo_resnet18: use one of them"):
        predict_study(out, study, mask=mask)
