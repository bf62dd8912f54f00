"""Every paper config in configs/papers/ still runs end to end: a 1-epoch smoke on a few real patients (slow suite).

Each smoke keeps the config's model, objective, input kind and run kind, and shrinks only what costs time: the
epochs (1), the folds (2, or the config's holdout/official split), the patients (``data.max_patients``), and for
the paper-scale inputs the image size. It checks that the run folder is complete and its metrics are finite.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cadx.config import load_config
from cadx.runs import run_cv
from cadx.utils import read_json
from conftest import ROOT, shared_path

PAPERS = ROOT / "configs" / "papers"
_COMMON = ["train.epochs=1", "eval.bootstrap=20", "train.progress=false"]
SMOKES: dict[str, tuple[str | None, list[str]]] = {
    "anatomy_mednist": ("mednist", ["data.max_patients=60", "model.kwargs.input_size=64"]),
    "dmrn_adrenal": (None, ["data.options.n_patients=12", "cv.folds=2"]),
    "dmrn_adrenalmnist3d": ("medmnist", ["data.max_patients=40", "eval.tta=none"]),
    "cnn3d_adrenalmnist3d_recipe": ("medmnist", ["data.max_patients=40"]),
    "mtmr_lidc": ("lidc", ["data.max_patients=16", "cv.folds=2"]),
    "mtmr_lidc_recipe": ("lidc", ["data.max_patients=16", "cv.folds=2"]),
    "mtmr_lidc_paper": ("lidc", ["data.max_patients=8", "cv.folds=2", "input.size=64"]),
    "scnet_busi": ("busi", ["data.max_patients=12", "cv.folds=2", "input.size=64"]),
    "scnet_lgg": ("lgg", ["data.max_patients=4", "cv.folds=2", "input.size=48"]),
    "scnet_lgg_recipe": ("lgg", ["data.max_patients=4", "cv.folds=2", "input.size=48"]),
    "unet_lgg": ("lgg", ["data.max_patients=4", "cv.folds=2", "input.size=64"]),
    "unet_lgg_recipe": ("lgg", ["data.max_patients=4", "cv.folds=2", "input.size=48"]),
    "unet_busi": ("busi", ["data.max_patients=16", "cv.folds=2", "input.size=48"]),
    "detection_lgg": ("lgg", ["data.max_patients=6", "cv.folds=2"]),
    "detection_busi": ("busi", ["data.max_patients=16", "cv.folds=2"]),
}
#: Study files (each read by its study's config type; tests/test_config.py checks them).
STUDY_FILES = ["anomaly_busi", "anomaly_lgg", "calipers_busi", "imbalance_mednist", "multitask_lidc",
               "radiogenomics_lgg"]
RUN_KIND_CONFIGS = sorted(p.stem for p in PAPERS.glob("*.yaml") if p.stem not in STUDY_FILES)


def test_every_run_config_has_a_smoke() -> None:
    assert sorted(SMOKES) == RUN_KIND_CONFIGS


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKES))
def test_paper_config_smoke(name: str, tmp_path: Path) -> None:
    data, overrides = SMOKES[name]
    root = [f"data.root={shared_path(data)}"] if data else []
    cfg = load_config(PAPERS / f"{name}.yaml", [*_COMMON, *root, *overrides])
    metrics = run_cv(cfg, tmp_path / name)
    run = tmp_path / name
    # a detection run's report is the study's (`cadx study detection`: report.md over its loss runs); the run
    # itself writes the FROC figure
    last = "figures/froc.png" if cfg.detection is not None else "report.md"
    for f in ("config.yaml", "splits.json", "fingerprint.json", "predictions.csv", "metrics.json", last):
        assert (run / f).is_file(), f
    n_folds = len(read_json(run / "splits.json")["folds"])
    assert len(list(run.glob("fold_*/DONE"))) == n_folds >= 1
    if cfg.detection is not None:                                 # FROC: sensitivity at 1/2/4/8 FP per image
        sens = metrics["lesion"]["sensitivity"]
        assert sens and all(0.0 <= v <= 1.0 for v in sens.values())
        return
    pooled = metrics["pooled"]
    key = "dice_mean" if cfg.segmentation is not None else "accuracy"
    assert math.isfinite(pooled[key]) and 0.0 <= pooled[key] <= 1.0


def test_every_paper_config_is_a_run_or_a_listed_study_file() -> None:
    assert sorted(p.stem for p in PAPERS.glob("*.yaml")) == sorted([*SMOKES, *STUDY_FILES])


@pytest.mark.slow
def test_imbalance_paper_config_smoke(tmp_path: Path) -> None:
    """The A.2 grid config through its study runner on real MedNIST, shrunk to one setting, one seed, 3 methods."""
    from cadx.studies.imbalance import load_study_config, run_imbalance_study

    cfg = load_study_config(PAPERS / "imbalance_mednist.yaml", [
        f"experiment.data.root={shared_path('mednist')}", "study.seeds=[0]", "study.base=20", "study.rhos=[4]",
        "study.mus=[0.5]", "study.kinds=[step]", "study.iterations=4", "study.epoch_curve=false",
        "study.select=[baseline,thresholding,two-phase-over]"])
    df = run_imbalance_study(cfg, tmp_path / "imbalance", progress=False)
    assert len(df) == 3 and set(df.method) == {"baseline", "thresholding", "two-phase-over"}
    assert set(df.kind) == {"step"} and set(df.rho) == {4.0}
    assert df.auc.between(0, 1).all()
    assert (tmp_path / "imbalance" / "summary.md").is_file()
