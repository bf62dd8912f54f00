"""Volume-level segmentation through the engine (cadx.runs.segmentation): tiny in-memory cohorts of 16×16
slices (3-channel volumes with a bright "head" disc and a brighter lesion; 2D images), U-Net and SCNet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cadx.config import load_config
from cadx.data.datasets.base import DATASETS, register_dataset
from cadx.data.image import ImageData, LazyImage
from cadx.data.readers import read_image, write_image
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError
from cadx.evaluation.overlap import dice
from cadx.pipeline.seg_items import build_seg_data, image_items, training_items
from cadx.registry import Options
from cadx.runs import evaluate_run, run_cv
from cadx.runs.ensemble import ensemble_runs
from cadx.runs.predict import predict_study
from cadx.runs.seg_predict import predict_segmentation
from cadx.runs.segmentation import final_masks, predict_volume, vote_rows


def seg_volume(rng: np.random.Generator, label: int, z: int = 5, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(3, z, n, n) image: a disc of "tissue" (~100) on black, a bright square lesion (~220) on slices 1..z-2;
    background slice 0 is empty (no tissue). Returns (image, mask (1, z, n, n))."""
    img = np.zeros((3, z, n, n), np.float32)
    yy, xx = np.mgrid[:n, :n]
    disc = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 2 - 2) ** 2
    img[:, 1:, disc] = 100.0
    mask = np.zeros((1, z, n, n), np.uint8)
    c = int(rng.integers(5, n - 7))
    mask[0, 1:z - 1, c:c + 4, c:c + 4] = 1
    img[:, mask[0] > 0] = 220.0 if label else 180.0
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    img[:, 0] = 0.0
    return img, mask


def seg_cohort(n: int = 3, seed: int = 0, two_d: bool = False) -> Cohort:
    rng = np.random.default_rng(seed)
    studies = []
    for i in range(n):
        img, mask = seg_volume(rng, i % 2)
        if two_d:
            img, mask = img[:, 2], mask[:, 2]
        sp = (1.0, 1.0) if two_d else (1.0, 1.0, 1.0)
        studies.append(Study(f"S{i}", f"P{i}", images={"image": LazyImage.from_array(img, sp)},
                             masks={"mask": LazyImage.from_array(mask, sp)}, label=["G2", "G3"][i % 2]))
    return Cohort(studies, classes=["G2", "G3"], name="segtiny")


class SegCohortOptions(Options):
    n: int = 4
    seed: int = 0
    two_d: bool = False


if "_test_seg" not in DATASETS:
    @register_dataset("_test_seg", "test stand-in: tiny segmentation cohort", options=SegCohortOptions)
    def _load(root: Path, *, n: int, seed: int, two_d: bool) -> Cohort:
        return seg_cohort(n, seed, two_d)


def seg_config(*overrides: str) -> Any:
    base = ["name=segtiny", "data.dataset=_test_seg", "data.root=.", "task.classification=false",
            "task.segmentation=true", "input.size=16", "input.normalize=minmax", "model.name=unet",
            "model.kwargs={base_filters: 4, levels: 2}", "objective={dice: {weight: 1, batch: true}}",
            "train.epochs=2", "train.batch_size=4", "train.progress=false", "cv.folds=2", "eval.bootstrap=50",
            "optim.lr=0.01", "segmentation={oversample_lesion: 3, min_tissue_fraction: 0.05, tissue_channel: 1}"]
    return load_config(None, [*base, *overrides])


def test_items_targets_and_sampling() -> None:
    cfg = seg_config("segmentation.tissue_class=true", "model.name=scnet", "model.kwargs={num_seg_classes: 3}")
    data = build_seg_data(seg_cohort(3), cfg)
    st = data.store
    assert st.images.shape == (15, 3, 16, 16) and st.masks is not None and st.masks.shape == (15, 1, 16, 16)
    assert st.slice_pos.tolist() == [0, 1, 2, 3, 4] * 3
    # ternary targets: 0 background, 1 tissue (disc), 2 lesion; slice 0 holds no tissue
    assert set(np.unique(st.masks.numpy()).tolist()) == {0.0, 1.0, 2.0}
    assert st.masks[0].sum() == 0 and data.tissue[0] == 0.0 and data.tissue[1] > 0.4
    assert data.lesion.tolist() == [False, True, True, True, False] * 3
    items = training_items(data, np.arange(5), cfg.segmentation)
    # slice 0 dropped (no tissue), slices 1-3 (lesion) three times each, slice 4 once
    assert items.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert data.gt[0].shape == (5, 16, 16) and data.gt[0].dtype == bool


def test_image_items_resize_2d() -> None:
    cfg = seg_config("input.size=8")
    rng = np.random.default_rng(1)
    img, mask = seg_volume(rng, 1)
    imgs, tgts, pos, frac = image_items(img[:, 2] / 220.0, mask[0, 2] > 0, cfg.input, cfg.segmentation)
    assert len(imgs) == 1 and imgs[0].shape == (1, 8, 8) and pos == [-1]  # channels=1: colour → mean
    assert set(np.unique(tgts[0]).tolist()) == {0.0, 1.0} and 0.3 < frac[0] < 0.8


def test_final_masks_resize_lcc_and_decision() -> None:
    seg = np.zeros((2, 3, 4, 4), np.float32)
    seg[:, 0] = 1.0
    seg[0, 2, :2, :2] = 2.0          # lesion (channel 2) in slice 0, top-left
    seg[1, 2, 3, 3] = 2.0            # a lone voxel in slice 1, bottom-right (not connected)
    seg[0, 1, 3, 0] = 2.0            # tissue wins there: not lesion
    m = final_masks(seg, (2, 8, 8), lesion=2, largest=False, connectivity=1)
    assert m.shape == (2, 8, 8) and m[0, :4, :4].all() and m[0].sum() == 16 and m[1].sum() > 0
    m2 = final_masks(seg, (2, 8, 8), lesion=2, largest=True, connectivity=1)
    assert m2[0].sum() == 16 and m2[1].sum() == 0
    sig = np.full((1, 1, 4, 4), 0.2, np.float32)
    sig[0, 0, 1, 1] = 0.9
    assert final_masks(sig, (4, 4), 0, True, 1).sum() == 1


def test_vote_over_lesion_slices_and_fallback() -> None:
    df = pd.DataFrame({"study_id": ["a"] * 4 + ["b"] * 2, "patient_id": ["a"] * 4 + ["b"] * 2, "fold": 0,
                       "y_true": "G2", "pred_pixels": [0, 5, 9, 3, 0, 0],
                       "p_G2": [0.9, 0.2, 0.4, 0.7, 0.3, 0.4], "p_G3": [0.1, 0.8, 0.6, 0.3, 0.7, 0.6]})
    v = vote_rows(df, ["G2", "G3"], min_pixels=4).set_index("study_id")
    # a: slices with >= 4 pixels are 1 and 2, both vote G3 (slice 0's strong G2 is ignored)
    assert v.loc["a", "y_pred"] == "G3" and v.loc["a", "p_G3"] == 1.0 and v.loc["a", "vote_slices"] == 2
    assert not v.loc["a", "vote_fallback"]
    # b: no lesion slice → every slice votes
    assert v.loc["b", "vote_fallback"] and v.loc["b", "y_pred"] == "G3" and v.loc["b", "vote_slices"] == 0


@pytest.mark.slow
def test_unet_cv_end_to_end(tmp_path: Path) -> None:
    cfg = seg_config("train.epochs=25")
    m = run_cv(cfg, tmp_path / "run")
    run = tmp_path / "run"
    pred = pd.read_csv(run / "predictions.csv")
    assert sorted(pred["study_id"]) == ["S0", "S1", "S2", "S3"]
    assert {"dice", "lesion_voxels", "pred_voxels", "n_slices"} <= set(pred.columns)
    assert (pred["lesion_voxels"] == 48).all() and (pred["n_slices"] == 5).all()
    # the easy synthetic lesion is learnt: Dice per volume recomputed from the saved masks
    for _, r in pred.iterrows():
        with np.load(run / f"fold_{int(r['fold'])}" / "pred_masks.npz") as z:
            mask = z[f"s{int(r['study_id'][1:])}"]
        gt = seg_cohort(4)[int(r["study_id"][1:])].mask().load().array[0] > 0
        assert dice(mask, gt) == pytest.approx(r["dice"])
    assert m["pooled"]["dice_mean"] == pytest.approx(pred["dice"].mean())
    assert m["pooled"]["dice_mean"] > 0.5
    assert "dice_mean" in m["pooled"]["ci"] and "dice_median" in m["pooled"]["ci"]
    saved = json.loads((run / "metrics.json").read_text())
    figs = [f["path"] for f in saved["extra"]["figures"]]
    assert all((run / p).is_file() for p in figs) and len(figs) == 2
    assert "## Segmentation" in (run / "notes.md").read_text()
    assert (run / "report.html").is_file()
    # cadx predict for a segmentation run: a NIfTI mask beside the result, same shape and spacing as the input
    study = seg_cohort(4)[1]
    write_image(study.image().load(), tmp_path / "new.nii.gz")
    res = predict_segmentation(run, tmp_path / "new.nii.gz", tmp_path / "out")
    out = read_image(res["mask"])
    assert res["mask"].endswith("new_mask.nii.gz") and out.array.shape == (1, 5, 16, 16) and res["models"] == 2
    gt = study.mask().load().array[0] > 0
    assert res["lesion_voxels"] == int(out.array.sum()) and dice(out.array[0] > 0, gt) > 0.5
    assert "prediction" not in res


@pytest.mark.slow
def test_scnet_2d_classification_vote_and_png_prediction(tmp_path: Path) -> None:
    cfg = seg_config("data.options={two_d: true, n: 6}", "task.classification=true", "model.name=scnet",
                     "model.kwargs={num_seg_classes: 2, depth: 18, width: 4, two_step: false}",
                     "objective={ternary: {loss: scnet, part: ternary}, cls: {loss: scnet, part: cls}}",
                     "segmentation={largest_component: false}", "train.epochs=2")
    m = run_cv(cfg, tmp_path / "run")
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(pred) == 6 and (pred["n_slices"] == 1).all() and (pred["lesion_voxels"] == 16).all()
    assert {"y_pred", "p_G2", "p_G3", "vote_slices", "vote_fallback", "dice"} <= set(pred.columns)
    # one image per study: its own argmax decides, the vote probabilities are 0/1
    assert set(pred["p_G2"].round(6)) <= {0.0, 1.0}
    assert (pred["vote_slices"] == np.where(pred["vote_fallback"], 0, 1)).all()
    acc = float((pred["y_pred"] == pred["y_true"]).mean())
    assert m["pooled"]["accuracy"] == pytest.approx(acc) and m["pooled"]["dice_mean"] == pytest.approx(
        pred["dice"].mean())
    # cadx evaluate, own fold per patient: the same rows (Dice, vote, probabilities) as the CV
    ext = evaluate_run(tmp_path / "run", "_test_seg", tmp_path, fold="own")
    ev = pd.read_csv(tmp_path / "run" / "external" / "_test_seg-own-fold" / "predictions.csv")
    pd.testing.assert_frame_equal(ev, pred, check_exact=False, atol=1e-6)
    assert ext["accuracy"] == pytest.approx(m["pooled"]["accuracy"])
    img = seg_cohort(6, two_d=True)[0].image().load()
    write_image(ImageData(np.clip(img.array, 0, 255).astype(np.uint8), (1.0, 1.0)), tmp_path / "us.png")
    res = predict_segmentation(tmp_path / "run", tmp_path / "us.png", tmp_path / "out")
    out = read_image(res["mask"])
    assert res["mask"].endswith("us_mask.png") and out.array.shape == (1, 16, 16)
    assert set(np.unique(out.array).tolist()) <= {0, 255}
    assert res["prediction"] in ("G2", "G3") and sum(res["probabilities"].values()) == pytest.approx(1.0)
    # `cadx predict` goes through predict_study, which hands segmentation runs to predict_segmentation
    via_study = predict_study(tmp_path / "run", tmp_path / "us.png", out_dir=tmp_path / "out2")
    assert via_study["mask"].endswith("us_mask.png") and via_study["probabilities"] == res["probabilities"]


def test_predict_volume_is_the_cv_rule_on_the_original_grid() -> None:
    """A fixed "model" whose sigmoid is 0.9 on an 8×8 block and on one lone pixel (0.1 elsewhere): at input size 8 the
    probabilities are resized back to 16×16, the lone pixel's component is dropped, Dice is taken per volume."""
    import torch

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            p = torch.full((x.shape[0], 1, 8, 8), 0.1)
            p[:, :, 2:4, 2:4] = 0.9
            p[:, :, 7, 7] = 0.9
            return {"seg_logits": torch.logit(p)}

    cfg = seg_config("input.size=8")
    gt = np.zeros((3, 16, 16), bool)
    gt[:, 4:8, 4:8] = True
    gt[1, 4:8, 8:12] = True
    vp = predict_volume(cfg, [Fixed()], torch.zeros(3, 1, 8, 8), (3, 16, 16), gt)
    # bilinear upsampling of the 2×2 block at 0.9: the > 0.5 region is 4:8 × 4:8 in every slice (the corner
    # pixel's blob is a separate, smaller component and is removed)
    assert vp.mask.shape == (3, 16, 16) and vp.mask[:, 4:8, 4:8].all() and not vp.mask[:, 12:, 12:].any()
    assert vp.mask.sum() == 48 and vp.row["lesion_voxels"] == 64
    assert vp.row["dice"] == pytest.approx(2 * 48 / (48 + 64)) == dice(vp.mask, gt)
    assert vp.row["pred_voxels"] == int(vp.mask.sum()) and vp.pred_pixels.tolist() == vp.mask.sum((1, 2)).tolist()
    cfg_all = seg_config("input.size=8", "segmentation={largest_component: false}")
    assert predict_volume(cfg_all, [Fixed()], torch.zeros(3, 1, 8, 8), (3, 16, 16)).mask[:, 14:, 14:].any()


def test_segmentation_tta_flips_averages_views_flipped_back_onto_the_input_grid() -> None:
    """``eval.tta: flips`` on a model that ignores its input and answers 0.9 in its top-left 2×2 quadrant (0.1
    elsewhere): the identity view says top-left; the row-flipped view, flipped back, says bottom-left; the
    column-flipped view, top-right. So those three quadrants average (0.9 + 0.1 + 0.1) / 3 and bottom-right stays 0.1
    (no pixel > 0.5, an empty mask). A model that echoes its input is unchanged by the flips; class probabilities
    are averaged over the views too."""
    import torch

    from cadx.runs.seg_inference import predict_items

    class Corner(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            p = torch.full((x.shape[0], 1, *x.shape[2:]), 0.1)
            p[:, :, :2, :2] = 0.9
            return {"seg_logits": torch.logit(p), "logits": torch.log(torch.tensor([[0.2, 0.8]])).expand(x.shape[0], 2)}

    class Echo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"seg_logits": torch.logit(x.clamp(0.05, 0.95))}

    x = torch.zeros(2, 1, 4, 4)
    seg, cls = predict_items([Corner()], x, tta="flips")
    expect = np.full((4, 4), 0.1)
    expect[:2, :2] = expect[2:, :2] = expect[:2, 2:] = (0.9 + 0.1 + 0.1) / 3
    assert seg.shape == (2, 1, 4, 4) and np.allclose(seg[0, 0], expect, atol=1e-6) and np.allclose(seg[1, 0], expect,
                                                                                                   atol=1e-6)
    assert cls is not None and np.allclose(cls, [[0.2, 0.8]] * 2, atol=1e-6)
    plain, _ = predict_items([Corner()], x)
    assert np.allclose(plain[0, 0, :2, :2], 0.9, atol=1e-6) and np.allclose(plain[0, 0, 2:, :], 0.1, atol=1e-6)
    img = torch.rand(3, 1, 5, 6, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    echo, _ = predict_items([Echo()], img, tta="flips")
    assert np.allclose(echo, img.numpy(), atol=1e-5)
    # the config switch reaches the one segmentation prediction (predict_volume)
    cfg = seg_config("input.size=4", "eval.tta=flips", "segmentation={largest_component: false}")
    vp = predict_volume(cfg, [Corner()], torch.zeros(1, 1, 4, 4), (1, 4, 4))
    assert vp.mask[0].tolist() == (seg[0, 0] > 0.5).tolist() and vp.mask.sum() == 0


@pytest.mark.slow
@pytest.mark.ci
def test_evaluate_own_fold_gives_the_cv_dice(tmp_path: Path) -> None:
    """`cadx evaluate` of a segmentation run on its own cohort, each patient scored by the fold that held it out:
    the same per-patient Dice (and masks) as the CV's out-of-fold rows. Input 8 px on 16 px volumes, so the
    masks are resized back to the original grid and the largest-component step matters."""
    cfg = seg_config("data.options={n: 6, seed: 3}", "input.size=8", "train.epochs=3")
    run = tmp_path / "run"
    m = run_cv(cfg, run)
    cv = pd.read_csv(run / "predictions.csv")
    pooled = evaluate_run(run, "_test_seg", tmp_path, fold="own")
    ext = run / "external" / "_test_seg-own-fold"
    ev = pd.read_csv(ext / "predictions.csv")
    assert ev["study_id"].tolist() == cv["study_id"].tolist() and ev["fold"].tolist() == cv["fold"].tolist()
    np.testing.assert_allclose(ev["dice"], cv["dice"], atol=1e-6)
    assert ev["pred_voxels"].tolist() == cv["pred_voxels"].tolist() and (cv["pred_voxels"] > 0).any()
    assert ev["lesion_voxels"].tolist() == cv["lesion_voxels"].tolist() == [48] * 6
    with np.load(ext / "pred_masks.npz") as z:
        for _, r in cv.iterrows():
            key = f"s{int(r['study_id'][1:])}"
            with np.load(run / f"fold_{int(r['fold'])}" / "pred_masks.npz") as f:
                np.testing.assert_array_equal(z[key], f[key])
    assert pooled["dice_mean"] == pytest.approx(m["pooled"]["dice_mean"], abs=1e-9)
    saved = json.loads((ext / "metrics.json").read_text())["external"]
    # no options given: the run's own data.options were used (6 studies, seed 3), and recorded as such
    assert saved["options"] == saved["options_from_run"] == {"n": 6, "seed": 3} and saved["options_override"] == {}
    assert (saved["n_studies"], saved["n_patients"], saved["fold"], saved["n_patients_in_training"]) == \
        (6, 6, "own", 0)
    # an explicit option overrides the run's (and is recorded); fold 0's model scores every study
    evaluate_run(run, "_test_seg", tmp_path, {"seed": "4"}, fold=0)
    other = json.loads((run / "external" / "_test_seg-4-fold0" / "metrics.json").read_text())["external"]
    assert other["options"] == {"n": 6, "seed": "4"} and other["options_override"] == {"seed": "4"}
    assert other["models"] == ["fold_0"]
    md = (run / "report.md").read_text()
    sec = md[md.index("### External validation"):]
    assert "_test_seg-own-fold" in sec and "_test_seg-4-fold0" in sec
    assert "n=6 (run), seed=3 (run)" in sec and "n=6 (run), seed=4 (given, overrides the run's 3)" in sec
    table = sec[sec.index("external validation beside cross-validation"):].splitlines()
    cv_line = next(line for line in table if line.startswith("| cross-validation"))
    own_line = next(line for line in table if line.startswith("| _test_seg-own-fold"))
    assert f"{m['pooled']['dice_mean']:.3f}" in cv_line and cv_line.split("|")[4:] == own_line.split("|")[4:]
    # --tta flips re-scores the same fold models with the flips: the rows of a CV run with eval.tta=flips (the same
    # training, since eval.tta only acts at prediction), and the models column says so
    evaluate_run(run, "_test_seg", tmp_path, fold="own", tta="flips")
    flips = run / "external" / "_test_seg-own-fold-tta-flips"
    run_cv(seg_config("data.options={n: 6, seed: 3}", "input.size=8", "train.epochs=3", "eval.tta=flips"),
           tmp_path / "run_tta")
    cv_flips = pd.read_csv(tmp_path / "run_tta" / "predictions.csv")
    ev_flips = pd.read_csv(flips / "predictions.csv")
    np.testing.assert_allclose(ev_flips["dice"], cv_flips["dice"], atol=1e-6)
    assert ev_flips["pred_voxels"].tolist() == cv_flips["pred_voxels"].tolist() != ev["pred_voxels"].tolist()
    ext_flips = json.loads((flips / "metrics.json").read_text())["external"]
    assert ext_flips["tta"] == "flips" and ext_flips["models_text"].endswith("; test-time flips")
    with pytest.raises(CadxConfigError, match="unknown test-time augmentation"):
        evaluate_run(run, "_test_seg", tmp_path, fold="own", tta="rot90")


def test_paired_comparison() -> None:
    from cadx.studies.segmentation.study import compare_paired

    a = pd.DataFrame({"study_id": ["x", "y", "z"], "patient_id": ["x", "y", "z"], "dice": [0.8, 0.5, 0.9],
                      "y_true": ["G2", "G3", "G2"], "y_pred": ["G2", "G3", "G3"]})
    b = a.assign(dice=[0.7, 0.6, 0.9], y_pred=["G3", "G3", "G3"])
    c = compare_paired(a, b, n_bootstrap=200)
    assert c["n"] == 3 and c["dice_diff_mean"] == pytest.approx(0.0)
    assert (c["wins"], c["losses"], c["ties"]) == (1, 1, 1)
    assert c["accuracy_a"] == pytest.approx(2 / 3) and c["accuracy_b"] == pytest.approx(1 / 3)
    assert c["dice_diff_ci"][0] <= 0.0 <= c["dice_diff_ci"][1]


def test_engine_study_rows_dice_follows_the_empty_rule() -> None:
    from cadx.runs.inference import study_rows

    slices = pd.DataFrame({"study_id": ["a", "a", "b", "c"], "patient_id": ["a", "a", "b", "c"], "fold": 0,
                           "y_true": None, "item": [0, 1, 2, 3], "slice": [0, 1, 0, 0],
                           "inter": [2, 1, 0, 0], "pred_sum": [3, 1, 0, 4], "true_sum": [2, 2, 0, 0]})
    r = study_rows(slices, [], "mean").set_index("study_id")
    assert r.loc["a", "dice"] == pytest.approx(2 * 3 / 8)
    assert r.loc["b", "dice"] == dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0   # both empty
    assert r.loc["c", "dice"] == 0.0                                                   # one empty


def test_noise_robustness_columns(tmp_path: Path) -> None:
    """A.3's noise test: sigma 0 reproduces the clean Dice exactly; a large sigma changes it; the pooled block
    is the column's mean with a bootstrap CI."""
    cfg = seg_config("segmentation={oversample_lesion: 3, min_tissue_fraction: 0.05, tissue_channel: 1, "
                     "test_noise: [0.0, 3.0]}", "train.epochs=6")
    m = run_cv(cfg, tmp_path / "run")
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert {"dice_noise_0", "dice_noise_3"} <= set(pred.columns)
    np.testing.assert_allclose(pred["dice_noise_0"], pred["dice"])
    assert not np.allclose(pred["dice_noise_3"], pred["dice"])
    noise = m["pooled"]["noise"]
    assert noise["3"]["dice_mean"] == pytest.approx(pred["dice_noise_3"].mean())
    lo, hi = noise["3"]["ci_dice_mean"]
    assert lo <= noise["3"]["dice_mean"] <= hi


def test_segmentation_ensemble_of_a_run_with_itself_is_the_run(tmp_path: Path) -> None:
    """`cadx ensemble` of segmentation runs averages slice probabilities: a run with itself gives its own masks
    and Dice; a second member with another input changes them; runs with other folds are refused."""
    run = tmp_path / "a"
    run_cv(seg_config("train.epochs=6"), run)
    m = ensemble_runs([run, run], tmp_path / "ens")
    pred = pd.read_csv(run / "predictions.csv").sort_values("study_id")
    ens = pd.read_csv(tmp_path / "ens" / "predictions.csv").sort_values("study_id")
    np.testing.assert_allclose(ens["dice"].to_numpy(), pred["dice"].to_numpy())
    assert m["pooled"]["dice_mean"] == pytest.approx(pred["dice"].mean())
    for k in (0, 1):
        with np.load(run / f"fold_{k}" / "pred_masks.npz") as a, np.load(tmp_path / "ens" / f"fold_{k}" /
                                                                          "pred_masks.npz") as b:
            assert sorted(a.files) == sorted(b.files) and all((a[f] == b[f]).all() for f in a.files)
    other = tmp_path / "b"
    run_cv(seg_config("train.epochs=6", "input.channels=3"), other)      # 2.5D member: 3 slices x 2 channels
    mixed = ensemble_runs([run, other], tmp_path / "mixed")
    assert 0.0 <= mixed["pooled"]["dice_mean"] <= 1.0 and len(mixed["run"]["members"]) == 2
    folds3 = tmp_path / "c"
    run_cv(seg_config("train.epochs=1", "data.options={n: 6}"), folds3)   # other patients in the folds
    with pytest.raises(CadxDataError, match="folds differ"):
        ensemble_runs([run, folds3], tmp_path / "bad")
