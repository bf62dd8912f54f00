"""A.9 sliding-window heatmaps on toy generators (hand-computed maps), the inside/outside ratio and pixel AUROC
(cross-checked against scikit-learn), and the study end to end on a tiny manifest cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cadx.cli import app
from cadx.errors import CadxConfigError
from cadx.evaluation.anomaly import box_ratio, box_region, lesion_boxes, pixel_auroc, ratio_table
from cadx.explain.anomaly import anomaly_heatmaps, model_functions, patch_scores, window_positions
from cadx.models.inpaint import InpaintGAN
from cadx.pipeline.normal_patches import Slice2D
from cadx.studies.anomaly import load_study_config
from cadx.studies.anomaly.study import largest_lesions
from cadx.utils import read_json

LOG2 = float(np.log(2.0))


def _zeros(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.zeros_like(p)


def _identity(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    return p.copy()


def _critic0(c: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.zeros(len(c))


def test_window_positions() -> None:
    pos = window_positions(10, 12, 4, 3)
    assert pos.tolist() == [[y, x] for y in (0, 3, 6) for x in (0, 3, 6)]
    with pytest.raises(ValueError, match="smaller than the field of view"):
        window_positions(3, 12, 4, 1)


def test_patch_scores_by_hand() -> None:
    p = np.zeros((2, 1, 4, 4))
    c = np.zeros((2, 1, 4, 4))
    m = np.zeros((2, 1, 4, 4))
    m[:, :, 1:3, 1:3] = 1
    c[0, 0, 1, 1] = 2.0  # one hole pixel off by 2 -> MSE 4/4 = 1
    c[1, 0, 0, 0] = 9.0  # outside the hole: ignored
    s = patch_scores(p, c, m, np.array([0.0, 50.0]))
    assert np.allclose(s["mse"], [1.0, 0.0])
    assert np.allclose(s["critic"], [LOG2, np.log1p(np.exp(-50.0))])  # softplus(-D)
    assert np.allclose(s["dmse"], s["mse"] * s["critic"])


def test_heatmaps_of_a_zero_generator_by_hand() -> None:
    img = (np.arange(64, dtype=np.float32).reshape(8, 8) / 64.0)
    hm = anomaly_heatmaps(img, _zeros, _critic0, fov=4, hole=2, stride=2, batch_size=4)
    starts = (0, 2, 4)
    assert hm.positions.tolist() == [[y, x] for y in starts for x in starts]
    # the window at (y, x) masks img[y+1:y+3, x+1:x+3]; a zero completion gives MSE = mean of its squares
    mse = {(y, x): float((img[y + 1:y + 3, x + 1:x + 3] ** 2).mean()) for y in starts for x in starts}
    raw = np.full((8, 8), np.nan)
    for (y, x), v in mse.items():
        raw[y + 1:y + 3, x + 1:x + 3] = v  # the stride-2 cell centred on the window centre (y+2, x+2)
    assert np.allclose(hm.raw["mse"], raw, equal_nan=True)
    assert np.allclose(hm.raw["critic"], np.where(np.isnan(raw), np.nan, LOG2), equal_nan=True)
    assert np.allclose(hm.raw["dmse"], raw * LOG2, equal_nan=True)
    # averaged over the field of view: every pixel is covered 1, 2 or 4 times
    cover1d = np.array([1, 1, 2, 2, 2, 2, 1, 1])
    assert np.array_equal(hm.coverage, np.outer(cover1d, cover1d))
    assert hm.averaged["mse"][0, 0] == pytest.approx(mse[(0, 0)])
    assert hm.averaged["mse"][3, 2] == pytest.approx(np.mean([mse[(0, 0)], mse[(0, 2)], mse[(2, 0)], mse[(2, 2)]]))
    assert hm.averaged["mse"][7, 5] == pytest.approx(np.mean([mse[(4, 2)], mse[(4, 4)]]))
    assert np.isfinite(hm.averaged["mse"]).all()


def test_hole_averaging_leaves_uncovered_borders_nan_and_identity_scores_zero() -> None:
    img = np.random.default_rng(0).random((9, 9)).astype(np.float32)
    hm = anomaly_heatmaps(img, _identity, _critic0, fov=4, hole=2, stride=2, average_over="hole")
    assert np.isnan(hm.averaged["mse"][0]).all() and np.isnan(hm.averaged["mse"][:, 8]).all()  # no window's hole
    assert np.nanmax(hm.averaged["mse"]) == 0.0 and np.nanmax(hm.raw["dmse"]) == 0.0
    assert int(hm.coverage.sum()) == 9 * 4  # nine windows, four hole pixels each


def test_the_critic_sees_the_completed_patch() -> None:
    img = np.full((4, 4), 0.5, np.float32)
    seen = []

    def critic(c: np.ndarray, m: np.ndarray) -> np.ndarray:
        seen.append(c.copy())
        return -c.mean(axis=(1, 2, 3))

    anomaly_heatmaps(img, _zeros, critic, fov=4, hole=2, stride=1)
    c = seen[0][0, 0]
    assert c[1:3, 1:3].max() == 0.0 and c[0].min() == 0.5  # the hole holds the completion, the rest the image


def test_lesion_boxes_and_ratio_by_hand() -> None:
    mask = np.zeros((6, 6), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours: one 8-connected component
    mask[4:6, 4] = True
    assert lesion_boxes(mask) == [(1, 1, 3, 3), (4, 4, 6, 5)]
    assert lesion_boxes(np.zeros((3, 3))) == []
    assert box_region((3, 3), [(0, 0, 1, 2)]).sum() == 2
    hm = np.ones((4, 4))
    hm[0:2, 0:2] = 3.0
    assert box_ratio(hm, [(0, 0, 2, 2)]) == pytest.approx(3.0)
    hm[3, 3] = 13.0  # outside mean (11 + 13) / 12 = 2 -> ratio 1.5 ...
    assert box_ratio(hm, [(0, 0, 2, 2)]) == pytest.approx(1.5)
    fg = np.ones((4, 4), bool)
    fg[3, 3] = False  # ... unless that pixel is background
    assert box_ratio(hm, [(0, 0, 2, 2)], fg) == pytest.approx(3.0)
    hm[3, 2] = np.nan  # uncovered: excluded, the ratio stays
    assert box_ratio(hm, [(0, 0, 2, 2)], fg) == pytest.approx(3.0)
    hm[0:2, 0:2] = np.nan  # box not covered at all
    assert np.isnan(box_ratio(hm, [(0, 0, 2, 2)], fg))


def test_pixel_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    hm = np.round(rng.random((3, 16, 16)), 1)  # ties on purpose
    lesion = rng.random((3, 16, 16)) < 0.2
    fg = rng.random((3, 16, 16)) < 0.8
    hm[0, :2] = np.nan
    ok = np.isfinite(hm) & fg
    assert pixel_auroc(hm, lesion, fg) == pytest.approx(roc_auc_score(lesion[ok], hm[ok]))
    assert pixel_auroc(hm[1], lesion[1]) == pytest.approx(roc_auc_score(lesion[1].ravel(), hm[1].ravel()))
    assert np.isnan(pixel_auroc(hm[1], np.zeros((16, 16), bool)))
    perfect = lesion[2].astype(float)
    assert pixel_auroc(perfect, lesion[2]) == 1.0


def test_ratio_table_mean_and_sd() -> None:
    df = pd.DataFrame({"score": ["mse"] * 4 + ["dmse"], "map": ["raw"] * 5, "ratio": [1.0, 2.0, 3.0, np.nan, 5.0]})
    t = ratio_table(df).set_index("score")
    assert t.loc["mse", "images"] == 3 and t.loc["mse", "excluded"] == 1
    assert t.loc["mse", "mean"] == pytest.approx(2.0) and t.loc["mse", "sd"] == pytest.approx(1.0)
    assert t.loc["dmse", "mean"] == 5.0 and np.isnan(t.loc["dmse", "sd"])


def test_model_functions_of_a_gan() -> None:
    torch.manual_seed(0)
    gan = InpaintGAN(1, fov=16, local_size=16, width=4)
    inpaint, critic = model_functions(gan)
    p = np.random.default_rng(0).random((2, 1, 16, 16)).astype(np.float32)
    m = np.zeros_like(p)
    m[:, :, 4:12, 4:12] = 1
    out = inpaint(p, m)
    assert out.shape == p.shape and out.min() >= 0 and out.max() <= 1
    assert critic(out, m).shape == (2,)
    hm = anomaly_heatmaps(np.random.default_rng(1).random((32, 32)), inpaint, critic, fov=16, hole=8, stride=8)
    assert len(hm.positions) == 9 and np.isfinite(hm.raw["dmse"][4:28, 4:28]).all()


def _tiny_cohort(root: Path) -> Path:
    """12 patients with one 64x64 PNG each: 6 normal, 6 with a lesion (a bright square), as a manifest CSV."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(12):
        kind = "normal" if p % 2 else "lesion"
        img = (80 + 40 * rng.random((64, 64))).astype(np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        if kind == "lesion":
            img[20:36, 24:40] = 250
            mask[20:36, 24:40] = 255
        Image.fromarray(img).save(root / f"p{p}.png")
        Image.fromarray(mask).save(root / f"p{p}_mask.png")
        rows.append({"study_id": f"s{p}", "patient_id": f"p{p}", "path": f"p{p}.png", "label": kind,
                     "mask": f"p{p}_mask.png"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _study_yaml(tmp_path: Path, manifest: Path) -> Path:
    cfg = tmp_path / "anomaly.yaml"
    cfg.write_text(f"""name: tiny
data:
  {{dataset: manifest, root: {manifest}, options: {{allow_empty_masks: true}}, size: 64, normal_label: normal,
   lesion_labels: [lesion]}}
split: {{test_fraction: 0.34, val_fraction: 0.25, seed: 0}}
model: {{fov: 32, hole: 16, width: 4, contextual_attention: true}}
patches: {{hole_min: 4, hole_max: 16}}
train: {{epochs: 1, iters_per_epoch: 1, batch_size: 2, n_critic: 1, val_patches: 2}}
eval: {{stride: 16, overlays: 1}}
""")
    return cfg


def test_study_end_to_end_on_a_tiny_cohort(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    cfg = _study_yaml(tmp_path, _tiny_cohort(tmp_path / "data"))
    out = tmp_path / "study"
    res = CliRunner().invoke(app, ["study", "anomaly", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    metrics = read_json(out / "metrics.json")
    fold = read_json(out / "splits.json")["folds"][0]
    labels = {f"p{p}": "normal" if p % 2 else "lesion" for p in range(12)}
    test_lesion = {p for p in fold["test"] if labels[p] == "lesion"}
    assert metrics["test_patients"] == fold["test"] and metrics["test_slices"] == len(test_lesion) > 0
    assert metrics["normal_slices"]["train"] == sum(labels[p] == "normal" for p in fold["train"])  # 1 image each
    per = pd.read_csv(out / "per_image.csv")
    assert set(per["patient_id"]) == test_lesion and len(per) == len(test_lesion) * 6  # 3 scores x 2 maps
    assert {"mse", "critic", "dmse"} == set(per["score"]) and (per["boxes"] == 1).all()
    table = pd.read_csv(out / "ratio_table.csv")
    raw_mse = per[(per.score == "mse") & (per["map"] == "raw")]["ratio"]
    assert table.set_index(["score", "map"]).loc[("mse", "raw"), "mean"] == pytest.approx(raw_mse.mean())
    assert (out / "figures" / "overlays.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "Inside/outside lesion-box ratio" in report and "figures/overlays.png" in report
    assert (out / "model" / "checkpoint_last.pt").is_file()


def test_study_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    cfg = _study_yaml(tmp_path, tmp_path / "m.csv")
    with pytest.raises(CadxConfigError, match=r"anomaly.yaml: model.widht: unknown key"):
        load_study_config(cfg, ["model.widht=3"])
    with pytest.raises(CadxConfigError, match=r"hole .* < fov"):
        load_study_config(cfg, ["model.hole=32"])
    with pytest.raises(CadxConfigError, match="multiples of 16"):
        load_study_config(cfg, ["model.fov=40"])
    assert load_study_config(cfg, ["train.epochs=3"]).train.epochs == 3


def test_largest_lesions_keeps_each_patients_k_biggest_in_order() -> None:
    def sl(pid: str, z: int, n: int) -> Slice2D:
        les = np.zeros((4, 4), bool)
        les.flat[:n] = True
        return Slice2D(f"{pid}s", pid, z, np.zeros((4, 4), np.float32), les)

    slices = [sl("a", 0, 1), sl("a", 1, 5), sl("a", 2, 3), sl("a", 3, 5), sl("b", 0, 2)]
    kept = largest_lesions(slices, 2)
    assert [(s.patient_id, s.index) for s in kept] == [("a", 1), ("a", 3), ("b", 0)]
