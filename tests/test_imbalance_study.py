"""Class-imbalance toolbox (two-phase training) and the thesis A.2 imbalance study on tiny in-memory cohorts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cadx.training.trainer as trainer_mod
from cadx.data.image import LazyImage
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError
from cadx.pipeline.items import build_store
from cadx.studies.imbalance import load_study_config, run_imbalance_study
from cadx.studies.imbalance.tables import aggregate, conclusions, verdict_lines
from cadx.studies.imbalance.variants import MethodSpec, Setting, StudySettings, imbalanced_studies, make_grid
from cadx.training.trainer import fit, load_module
from cadx.training.two_phase import phase_configs, trainable_prefixes
from helpers import tiny_cohort, tiny_config

ROOT = Path(__file__).resolve().parents[1]
TOY = ["input.kind=image2d", "input.size=8", "input.roi=none", "input.normalize=none", "model.name=_test_tiny",
       "train.epochs=1", "train.batch_size=16", "optim.lr=0.01", "study.seeds=[0]"]


def toy_cohort(n_per: int = 16, k: int = 3, seed: int = 0) -> Cohort:
    """``k`` classes × ``n_per`` one-study patients of 8×8 noise with a class-specific bright band."""
    rng = np.random.default_rng(seed)
    studies = []
    for c in range(k):
        for i in range(n_per):
            img = rng.normal(0, 1, (1, 8, 8)).astype(np.float32)
            img[0, 2 * c:2 * c + 3, :] += 2.0
            studies.append(Study(f"c{c}_{i:02d}", f"p{c}_{i:02d}", images={"image": LazyImage.from_array(img)},
                                 label=f"k{c}"))
    return Cohort(studies, classes=[f"k{c}" for c in range(k)], name="toy")


def test_study_config_file_overrides_and_errors() -> None:
    cfg = load_study_config(ROOT / "configs/papers/imbalance_mednist.yaml", ["train.epochs=2", "study.seeds=[4]"])
    assert cfg.experiment.model.name == "lenet" and cfg.experiment.input.size == 32 and cfg.study.iterations == 200
    assert cfg.experiment.data.root == "../shared/data/mednist" and cfg.experiment.train.epochs == 2
    assert cfg.study.seeds == [4] and cfg.study.rhos == [1, 2, 10, 50, 100] and cfg.study.mus == [0.2, 0.5, 0.8]
    m = cfg.study.methods
    assert m["two-phase-under"].two_phase is not None and m["two-phase-under"].two_phase.sampler == "undersample"
    assert m["two-phase-over"].two_phase.lr_factor == pytest.approx(0.1)  # type: ignore[union-attr]
    assert m["oversampling+thresholding"].decision == "prior" and m["undersampling@0.5"].sampler.ratio == 0.5
    assert m["focal"].objective == {"focal": {"weight": 1.0, "gamma": 2.0, "alpha": "balanced"}}
    # 1 balanced + 4 ρ × 3 μ step + 4 linear settings
    assert len(make_grid(cfg.study)) == 17
    with pytest.raises(CadxConfigError, match="study"):
        load_study_config(None, ["study.rho=[2]"])
    with pytest.raises(CadxConfigError, match="unknown key"):
        load_study_config(None, ["train.epoch=2"])
    with pytest.raises(CadxConfigError, match="unknown methods"):
        load_study_config(None, ["study.select=[nope]"]).study.active_methods()


def test_imbalanced_training_sets_are_nested_and_step_shaped() -> None:
    y = np.repeat(np.arange(6), 20)
    st = StudySettings(base=20)
    sets = {rho: imbalanced_studies(Setting("step", rho, 0.5), y, 3, st) for rho in (2.0, 10.0)}
    counts = {rho: np.bincount(y[s], minlength=6) for rho, s in sets.items()}
    assert sorted(counts[10.0]) == [2, 2, 2, 20, 20, 20] and sorted(counts[2.0]) == [10, 10, 10, 20, 20, 20]
    assert np.array_equal(counts[2.0] == 10, counts[10.0] == 2)           # same minority classes across ρ
    assert set(sets[10.0]) <= set(sets[2.0])                               # nested subsets
    lin = np.bincount(y[imbalanced_studies(Setting("linear", 10.0), y, 3, st)], minlength=6)
    assert sorted(lin) == [2, 6, 9, 13, 16, 20]          # rint(linspace(2, 20, 6))
    bal = imbalanced_studies(Setting("balanced", 1.0), y, 3, StudySettings(base=15))
    assert np.bincount(y[bal]).tolist() == [15] * 6
    other_seed = np.bincount(y[imbalanced_studies(Setting("step", 10.0, 0.5), y, 4, st)], minlength=6)
    assert sorted(other_seed) == [2, 2, 2, 20, 20, 20]


def test_two_phase_trains_only_the_head_at_a_tenth_of_the_lr(tmp_path: Path) -> None:
    cfg = tiny_config("train.two_phase={sampler: undersample, epochs: 2, lr_factor: 0.1}", "train.epochs=1")
    c1, c2 = phase_configs(cfg)
    assert c1.sampler.kind == "undersample" and c1.train.epochs == 1 and c1.train.two_phase is None
    assert c2.sampler.kind == "plain" and c2.train.epochs == 2 and c2.optim.lr == pytest.approx(0.001)
    cohort = tiny_cohort(12)
    store = build_store(cohort, cfg, progress=False)
    items = np.arange(len(store))
    module = fit(cfg, store, items, np.zeros(0, np.int64), tmp_path, seed=5)   # engine entry point dispatches
    phase1, _ = load_module(tmp_path / "phase1" / "checkpoint_last.ckpt")
    final = module.model.state_dict()
    for name, value in phase1.state_dict().items():
        if name.startswith("head."):
            assert not torch.equal(value, final[name]), name                  # the head was fine-tuned
        else:
            assert torch.equal(value, final[name]), name                      # conv + BatchNorm stats frozen
    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist.epoch.tolist() == [0, 1] and np.allclose(hist.lr, 0.001)
    assert pd.read_csv(tmp_path / "phase1" / "history.csv").lr.tolist() == [pytest.approx(0.01)]
    assert trainable_prefixes(module.model, "head") == ["head."]
    with pytest.raises(CadxConfigError, match="matches no parameter"):
        trainable_prefixes(module.model, ["nothing."])


@pytest.mark.slow
@pytest.mark.ci
def test_study_end_to_end_resume_and_protocol_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sel = "study.select=[baseline,oversampling,undersampling,thresholding,two-phase-over]"
    cfg = load_study_config(None, [*TOY, "study.rhos=[1,4]", "study.mus=[0.5]", "study.kinds=[step,linear]", sel])
    out = tmp_path / "study"
    df = run_imbalance_study(cfg, out, cohort=toy_cohort(), progress=False)
    assert len(df) == 3 * 5 and set(df.kind) == {"balanced", "step", "linear"}
    by = df.set_index(["kind", "method"])
    # ρ=1: over/undersampling a balanced set gives the baseline's set → the same model, reused
    assert by.loc[("balanced", "oversampling"), "reused"] and by.loc[("balanced", "undersampling"), "reused"]
    assert by.loc[("balanced", "oversampling"), "auc"] == by.loc[("balanced", "baseline"), "auc"]
    step = df[df.kind == "step"].set_index("method")
    counts = sorted(int(c) for c in step.loc["baseline", "class_counts"].split(";"))
    base = counts[-1]
    assert counts == [round(base / 4), base, base] or counts == [round(base / 4), round(base / 4), base]
    assert step.loc["oversampling", "n_fit"] == 3 * base and step.loc["undersampling", "n_fit"] == 3 * counts[0]
    assert step.loc["thresholding", "auc"] == step.loc["baseline", "auc"]   # priors do not change AUC
    assert step.loc["thresholding", "accuracy"] == step.loc["baseline", "accuracy_prior"]
    assert step.loc["thresholding", "reused"] and not step.loc["two-phase-over", "reused"]
    assert step.loc["two-phase-over", "epochs"] == step.loc["oversampling", "epochs"] + 2
    assert df.auc.between(0, 1).all() and (df.auc_curve.str.count(";") >= 0).all()
    # the test set is fixed and untouched: 20 % of 48 patients, stratified
    import json
    test = json.loads((out / "splits.json").read_text())["folds"][0]["test"]
    assert len(test) == 9 or len(test) == 10
    for f in ("results.csv", "summary.md", "conclusions.json", "imbalance_auc.png", "imbalance_accuracy.png"):
        assert (out / f).is_file(), f
    assert "| step ρ=4 μ=0.5 |" in (out / "summary.md").read_text()
    # resume: nothing retrains; a new method only trains its own rows
    monkeypatch.setattr(trainer_mod, "_fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    again = run_imbalance_study(cfg, out, cohort=toy_cohort(), progress=False)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), pd.read_csv(out / "results.csv"), check_dtype=False)
    # methods may be added on resume: class-balanced batches and weighted CE train only their own rows
    monkeypatch.undo()
    more = cfg.model_copy(update={"study": cfg.study.model_copy(update={"select": None, "methods": {
        **cfg.study.methods, "balanced-batches": MethodSpec.model_validate({"sampler": {"kind": "balanced"}}),
        "weighted-ce": MethodSpec.model_validate({"objective": {"weighted_ce": 1.0}})}})})
    more.study.select = [*(cfg.study.select or []), "balanced-batches", "weighted-ce"]
    grown = run_imbalance_study(more, out, cohort=toy_cohort(), progress=False)
    assert len(grown) == 3 * 7 and (grown.iloc[:15].auc.to_numpy() == df.auc.to_numpy()).all()
    bb = grown[(grown.method == "balanced-batches") & (grown.kind == "step")].iloc[0]
    assert bb.n_fit == step.loc["baseline", "n_fit"] and not bb.reused and 0 <= bb.auc <= 1
    # a saved config written before a schema gained a setting (here: cv.use_official) still resumes
    import yaml
    saved = yaml.safe_load((out / "study_config.yaml").read_text())
    del saved["experiment"]["cv"]["use_official"]
    (out / "study_config.yaml").write_text(yaml.safe_dump(saved))
    assert len(run_imbalance_study(more, out, cohort=toy_cohort(), progress=False)) == 3 * 7
    with pytest.raises(CadxConfigError, match="different protocol"):
        run_imbalance_study(cfg.model_copy(update={"study": cfg.study.model_copy(update={"base": 3})}), out,
                            cohort=toy_cohort(), progress=False)
    with pytest.raises(CadxConfigError, match="resume=True"):
        run_imbalance_study(cfg, out, resume=False, cohort=toy_cohort(), progress=False)


def _row(kind: str, rho: float, mu: float | None, method: str, seed: int, auc: float, acc: float, acc_p: float,
         curve: str = "") -> dict[str, object]:
    return {"kind": kind, "rho": rho, "mu": np.nan if mu is None else mu, "method": method, "seed": seed,
            "auc": auc, "accuracy": acc, "accuracy_argmax": acc, "accuracy_prior": acc_p, "train_accuracy": 1.0,
            "auc_curve": curve}


def test_conclusions_are_computed_from_the_table() -> None:
    methods = {"baseline": MethodSpec(), "oversampling": MethodSpec.model_validate({"sampler": {"kind": "oversample"}}),
               "oversampling@0.5": MethodSpec.model_validate({"sampler": {"kind": "oversample", "ratio": 0.5}}),
               "undersampling": MethodSpec.model_validate({"sampler": {"kind": "undersample"}}),
               "undersampling@0.5": MethodSpec.model_validate({"sampler": {"kind": "undersample", "ratio": 0.5}})}
    rows = []
    for seed in (0, 1):
        rows += [_row("balanced", 1, None, m, seed, 0.99, 0.95, 0.95, "0.9;0.99") for m in methods]
        for rho, drop in ((10, 0.05), (100, 0.2)):
            rows += [_row("step", rho, 0.5, "baseline", seed, 0.99 - drop, 0.8, 0.85, "0.9;0.95;0.9"),
                     _row("step", rho, 0.5, "oversampling", seed, 0.985, 0.93, 0.94, "0.9;0.985"),
                     _row("step", rho, 0.5, "oversampling@0.5", seed, 0.97, 0.9, 0.9),
                     _row("step", rho, 0.5, "undersampling", seed, 0.9 if rho == 10 else 0.95, 0.9, 0.7),
                     _row("step", rho, 0.5, "undersampling@0.5", seed, 0.93, 0.9, 0.8)]
    df = pd.DataFrame(rows)
    c = conclusions(df, aggregate(df), methods, tol=0.005)
    (panel,) = c["i_imbalance_hurts"]["panels"]
    assert panel["auc_rho1"] == pytest.approx(0.99) and panel["auc_rho_max"] == pytest.approx(0.79)
    assert panel["spearman_auc_vs_rho"] == pytest.approx(-1.0) and c["i_imbalance_hurts"]["supported"]
    ii = c["ii_oversampling_dominates"]
    assert ii["settings"] == 2 and ii["wins"]["oversampling"] == 2 and ii["supported"]
    iii = c["iii_resampling_ratio"]
    assert iii["full_oversampling_best_fraction"] == 1.0
    assert [s["best_ratio"] for s in iii["undersampling"]["settings"]] == [0.5, 1.0]   # depends on ρ
    iv = c["iv_no_overfitting"]
    assert iv["auc_drop_from_best_epoch"] == {"baseline": pytest.approx(0.05), "oversampling": pytest.approx(0.0)}
    assert iv["supported"]
    v = c["v_thresholding_accuracy"]
    assert v["baseline"]["mean_gain"] == pytest.approx(0.05) and v["baseline"]["runs_improved"] == 4
    assert v["undersampling"]["mean_gain"] == pytest.approx(-0.2) and v["supported"]
    lines = verdict_lines(c)
    assert len(lines) == 5 and lines[0].startswith("- (i) imbalance hurts — supported: baseline AUC step, μ=0.5: 99.0")
    assert "{1.0: 1, 0.5: 1}" in lines[2] or "{0.5: 1, 1.0: 1}" in lines[2]
