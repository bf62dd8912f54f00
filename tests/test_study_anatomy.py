"""Paper 001 study (anatomy CNN vs LeNet/AlexNet/GoogLeNet): net configs, the fixed group split and its
subsampling, the engine's holdout hook, Table II end to end and the learning curve on a tiny MedNIST-like folder."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cadx.cli import app
from cadx.config import load_config
from cadx.data.datasets import load_dataset
from cadx.data.splits import Splits, patient_strata
from cadx.errors import CadxConfigError
from cadx.runs.folder import get_splits
from cadx.studies.anatomy import render_learning_curve, run_anatomy_study, run_learning_curve
from cadx.studies.anatomy.variants import (
    NETS,
    balanced_groups,
    fixed_split,
    naive_config,
    net_config,
    net_input_size,
    reduced_split,
)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "papers" / "anatomy_mednist.yaml"
CLASSES = ("CXR", "Hand", "HeadCT")


@pytest.fixture
def tiny_mednist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """3 classes × 12 images (64 px): 6 groups per class, each an image and a near-copy (+1 grey level)."""
    monkeypatch.setenv("CADX_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "mednist"
    for k, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for g in range(6):
            base = np.kron(rng.integers(0, 200, (8, 8)), np.ones((8, 8)))
            base[:, 16 * k:16 * k + 16] = 250  # a class-specific bright band: learnable
            for j in range(2):
                Image.fromarray((base + j).astype(np.uint8)).save(root / cls / f"{2 * g + j:06d}.png")
    return root


def _cfg(root: Path, *extra: str):
    return load_config(CONFIG, [f"data.root={root}", "train.epochs=2", "train.batch_size=8", "train.progress=false",
                                "eval.bootstrap=50", "cv.test_fraction=0.25", "cv.val_fraction=0.25", *extra])


def test_net_configs_keep_everything_but_the_model() -> None:
    cfg = load_config(CONFIG, ["data.root=/nowhere"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
    assert cfg.cv.kind == "holdout" and cfg.data.options == {"group": "dedup"}
    g = net_config(cfg, "googlenet", "paper")
    assert g.model.name == "googlenet" and g.model.kwargs == {"input_size": 224}
    assert g.objective == {"ce": 1.0, "aux_ce": 1.0} and g.optim == cfg.optim and g.cv == cfg.cv
    assert net_config(cfg, "proposed", "reduced").model.kwargs == {"input_size": None}
    assert net_config(cfg, "alexnet", "reduced").model.kwargs == {"input_size": 67}  # AlexNet's minimum
    le = net_config(cfg, "lenet", "reduced", {"input_size": 28})
    assert le.model.kwargs == {"variant": "lenet5", "input_size": 28} and le.name == "anatomy_mednist_lenet"
    assert [net_input_size(n, "reduced") for n in NETS] == [64, 67, 32, 64]
    assert [net_input_size(n, "paper") for n in NETS] == [227, 227, 32, 224]
    assert naive_config(cfg).data.options == {"group": "image"}
    with pytest.raises(CadxConfigError, match="unknown net"):
        net_config(cfg, "vgg", "paper")
    with pytest.raises(CadxConfigError, match="input_mode"):
        net_config(cfg, "lenet", "huge")  # type: ignore[arg-type]


def test_reduced_nets_build_at_64px() -> None:
    """Every net of the reduced mode accepts the 64 px MedNIST input (AlexNet via its 67 px resize)."""
    import torch

    from cadx.models import create_model

    cfg = load_config(CONFIG, ["data.root=/nowhere"])
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert set(NETS) == {"proposed", "alexnet", "lenet", "googlenet"}
    for net in NETS:
        m = net_config(cfg, net, "reduced").model
        model = create_model(m.name, num_classes=6, in_channels=1, spatial_dims=2, **m.kwargs).eval()
        with torch.no_grad():
            logits = model(x)["logits"]
        assert logits.shape == (2, 6) and torch.isfinite(logits).all(), net
        size = net_input_size(net, "reduced")
        assert (model.input_size or 64) == size, net  # AlexNet 67, LeNet 32, the others the native 64


def test_balanced_reduced_split_and_holdout_hook(tiny_mednist: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_mednist)
    cohort = load_dataset("mednist", tiny_mednist, group="dedup")
    assert len(cohort.patients) == 18  # the near-copies are grouped
    strata = patient_strata(cohort)
    chosen = balanced_groups(cohort, list(strata), 12, seed=0)
    assert chosen == balanced_groups(cohort, list(strata), 12, seed=0)
    assert Counter(strata[p] for p in chosen) == {0: 2, 1: 2, 2: 2}  # 12 images = 2 groups of 2 per class
    # quotas 1, 1, 0: no group fits a quota of 1, so the smallest is kept; a quota of 0 keeps nothing
    assert Counter(strata[p] for p in balanced_groups(cohort, list(strata), 2, seed=0)) == {0: 1, 1: 1}
    red = reduced_split(cohort, {"train": 12, "val": 6, "test": 6}, seed=0)
    f = red[0]
    assert red.kind == "holdout" and (len(f.train), len(f.val), len(f.test)) == (6, 3, 3)
    assert not set(f.train) & set(f.val) and not (set(f.train) | set(f.val)) & set(f.test)
    assert Counter(strata[p] for p in f.test) == {0: 1, 1: 1, 2: 1}
    with pytest.raises(CadxConfigError, match="train size 40"):
        reduced_split(cohort, {"train": 40, "val": 6, "test": 6}, seed=0)
    with pytest.raises(CadxConfigError, match="missing"):
        reduced_split(cohort, {"train": 12}, seed=0)
    # the full split and the engine hook: cv.kind=holdout makes holdout_split's split, saved as splits.json
    full = fixed_split(cohort, cfg)[0]
    assert len(full.train) + len(full.val) + len(full.test) == 18 and 4 <= len(full.test) <= 6
    engine = get_splits(cfg, cohort, tmp_path)
    assert engine.kind == "holdout" and engine[0].to_dict() == full.to_dict()
    assert Splits.load(tmp_path / "splits.json")[0].test == full.test


@pytest.mark.slow
def test_table_ii_end_to_end(tiny_mednist: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_mednist)
    out = tmp_path / "study"
    over = {"proposed": {"fc_units": 16}}
    sizes = {"train": 12, "val": 6, "test": 6}
    df = run_anatomy_study(cfg, out, nets=["lenet", "proposed"], input_mode="reduced", sizes=sizes,
                           net_overrides=over)
    assert list(df["net"]) == ["lenet", "proposed"] and list(df["input_px"]) == [32, 64]
    assert (df["runtime_s"] > 0).all() and (df["epochs"] == 2).all()
    for pre in ("test", "naive"):
        acc = df["test_accuracy" if pre == "test" else "naive_test_accuracy"]
        assert ((df[f"{pre}_ci_low"] <= acc) & (acc <= df[f"{pre}_ci_high"])).all()
    assert (df["train_items"] == 12).all() and (df["test_items"] == 6).all() and (df["val_items"] == 6).all()
    s_lenet = json.loads((out / "runs" / "lenet" / "splits.json").read_text())
    s_prop = json.loads((out / "runs" / "proposed" / "splits.json").read_text())
    assert s_lenet["folds"] == s_prop["folds"] and s_lenet["sizes_images"] == sizes
    naive = json.loads((out / "runs" / "lenet_naive" / "splits.json").read_text())["folds"][0]
    assert len(naive["train"]) == 12 and all("/" in p for p in naive["train"])  # per-image patients, same sizes
    preds = pd.read_csv(out / "runs" / "proposed" / "fold_0" / "predictions.csv")
    assert len(preds) == 6 and set(preds["patient_id"]) <= set(s_prop["folds"][0]["test"])
    m = json.loads((out / "metrics.json").read_text())
    t = m["extra"]["tables"][0]
    assert len(t["rows"]) == 2 and t["columns"][-1].startswith("Naive") and t["rows"][0][0] == "LeNet"
    assert [f["path"] for f in m["extra"]["figures"]] == [
        "figures/filters_lenet.png", "figures/feature_maps_lenet.png",
        "figures/filters_proposed.png", "figures/feature_maps_proposed.png"]
    assert all((out / f["path"]).stat().st_size > 1000 for f in m["extra"]["figures"])
    notes = (out / "notes.md").read_text()
    assert "no patient ids" in notes and "Naive per-image split" in notes and "Input mode `reduced`" in notes
    report = (out / "report.md").read_text()
    assert "Table II on MedNIST" in report and "first-layer filters" in report
    again = run_anatomy_study(cfg, out, nets=["lenet", "proposed"], input_mode="reduced", sizes=sizes,
                              net_overrides=over, resume=True, figures=False, naive_nets=["lenet"])
    pd.testing.assert_frame_equal(again[df.columns[:8]], df[df.columns[:8]])  # finished runs are reused
    rows = json.loads((out / "metrics.json").read_text())["extra"]["tables"][0]["rows"]
    assert rows[1][-1] == "not run" and rows[0][-1] != "not run"  # naive split only for the listed nets


@pytest.mark.slow
def test_learning_curve(tiny_mednist: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_mednist, "train.epochs=1", "cv.val_fraction=0.5")
    out = tmp_path / "lc"
    df = run_learning_curve(cfg, [24, 12], out, nets=["lenet"], input_mode="reduced", test_size=6)
    assert list(df["size_images"]) == [12, 24] and list(df["val_images"]) == [6, 12]  # 50 % (whole groups)
    assert list(df["train_images"]) == [6, 12] and list(df["train_groups"]) == [3, 6]
    assert (df["test_images"] == 6).all() and df["accuracy"].between(0, 1).all()
    assert (out / "learning_curve.png").stat().st_size > 1000 and not list(out.glob("runs/*/*.ckpt"))
    assert (out / "runs" / "lenet_n24" / "history.csv").is_file()
    sets = [f"data.root={tiny_mednist}", "train.epochs=1", "train.batch_size=8", "train.progress=false",
            "eval.bootstrap=50", "cv.test_fraction=0.25", "cv.val_fraction=0.5"]
    before = (out / "learning_curve.csv").read_text()
    res = CliRunner().invoke(app, ["study", "learning-curve", str(CONFIG), "--sizes", "12,24", "--out", str(out),
                                   "--nets", "lenet", "--input-mode", "reduced", "--test-size", "6",
                                   *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    assert "2 points" in res.output  # resumed through the CLI: rows reused, nothing retrained
    assert (out / "learning_curve.csv").read_text() == before
    redo = render_learning_curve(cfg, out, "reduced")  # from learning_curve.csv alone (an interrupted run)
    table = json.loads((out / "metrics.json").read_text())["extra"]["tables"][0]
    assert len(redo) == 2 and [r[:3] for r in table["rows"]] == [["LeNet", 3, 6], ["LeNet", 6, 12]]
    with pytest.raises(CadxConfigError, match="training images"):
        run_learning_curve(cfg, [100], tmp_path / "lc2", nets=["lenet"], input_mode="reduced")
