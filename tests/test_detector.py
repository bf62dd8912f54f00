"""Thesis A.8 detector: YOLO-DenseNet outputs and prior bias, the four objectness losses and the box loss by hand,
targets and grid crops, slice combination, merge-NMS on hand boxes, and a 1-epoch run through ``cadx cv``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cadx.config import DetectionConfig, load_config
from cadx.data.boxes import LesionBox
from cadx.data.image import ImageData
from cadx.data.readers import write_image
from cadx.models import create_model
from cadx.models.yolo_dense import YoloDense, decode, prior_bias
from cadx.objectives import build_objective
from cadx.objectives.detection import objectness_loss
from cadx.pipeline.det_items import DetStudy, encode_targets, foreground_mask, grid_crop, make_batch, training_items
from cadx.runs.cv import run_cv
from cadx.runs.detection import combine_slices, iou_matrix, merge_nms, predict_study
from cadx.runs.kinds import kind_of


def test_output_shapes_and_cell() -> None:
    m = create_model("yolo_dense", 0, 3, 2, block_config=[1, 2, 2], growth_rate=4, num_init_features=8)
    assert isinstance(m, YoloDense) and m.cell_size == 8
    out = m(torch.randn(2, 3, 64, 48))
    assert out["det_logits"].shape == (2, 5, 8, 6) and out["features"].shape == (2, m.feature_dim)
    with pytest.raises(Exception, match="multiples of the cell size 8"):
        m(torch.randn(1, 3, 60, 48))


def test_prior_bias_init() -> None:
    m = YoloDense(1, prior=0.01)
    b = m.head.bias.detach()  # type: ignore[union-attr]
    assert b[0].item() == pytest.approx(-math.log(99.0))       # -4.595, sigmoid = 0.01
    assert torch.sigmoid(b[0]).item() == pytest.approx(0.01)
    assert b[1:].abs().max().item() == 0.0
    assert prior_bias(0.5) == 0.0
    # untrained: mean objectness near the prior (weights random, bias dominates)
    p = decode(m(torch.zeros(1, 1, 64, 64))["det_logits"].detach(), m.cell_size, m.anchor)[:, 0]
    assert float(p.mean()) < 0.1


def test_decode_hand() -> None:
    logits = torch.zeros(1, 5, 2, 2)
    logits[0, 1, 1, 0] = math.atanh(0.5)     # dy = +0.5 half-cells
    logits[0, 3, 1, 0] = math.log(2.0)       # h = 2 anchors
    d = decode(logits, 16, 10.0)
    assert d[0, 0, 1, 0].item() == pytest.approx(0.5)
    assert d[0, 1, 1, 0].item() == pytest.approx(16 * 1.5 + 0.5 * 8)   # cy = 28
    assert d[0, 2, 1, 0].item() == pytest.approx(8.0)                   # cx = cell centre
    assert d[0, 3, 1, 0].item() == pytest.approx(20.0) and d[0, 4, 1, 0].item() == pytest.approx(10.0)


def _hand(logit: float, y: float) -> tuple[float, float]:
    p = 1 / (1 + math.exp(-logit))
    pt = p if y else 1 - p
    return p, pt


def test_objectness_losses_by_hand() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])    # 2 positives
    pts = [_hand(float(v), float(t))[1] for v, t in zip(logits, y, strict=True)]
    ce = [-math.log(pt) for pt in pts]
    assert objectness_loss(logits, y, "bce").item() == pytest.approx(sum(ce) / 2)
    pi = 0.1
    wb = sum(2 * ((1 - pi) if t else pi) * c for c, t in zip(ce, y.tolist(), strict=True)) / 2
    assert objectness_loss(logits, y, "weighted_bce", prior=pi).item() == pytest.approx(wb)
    fo = sum((0.25 if t else 0.75) * (1 - pt) ** 2 * c for pt, c, t in zip(pts, ce, y.tolist(), strict=True)) / 2
    assert objectness_loss(logits, y, "focal", alpha=0.25, gamma=2.0).item() == pytest.approx(fo)
    rf = sum((1.0 if pt < 0.5 else ((1 - pt) / 0.5) ** 2) * c for pt, c in zip(pts, ce, strict=True)) / 2
    assert objectness_loss(logits, y, "reduced_focal", alpha=None, gamma=2.0).item() == pytest.approx(rf)
    # reduced focal = BCE for every cell with p_t < 0.5, and below BCE above it
    hard = torch.tensor([-2.0, 1.0])
    yy = torch.tensor([1.0, 0.0])
    assert objectness_loss(hard, yy, "reduced_focal", alpha=None).item() == pytest.approx(
        objectness_loss(hard, yy, "bce").item())
    # gamma = 0 focal without alpha is BCE
    assert objectness_loss(logits, y, "focal", alpha=None, gamma=0.0).item() == pytest.approx(sum(ce) / 2)
    # all-negative batch: the plain sum (divided by max(1, 0))
    assert objectness_loss(torch.tensor([0.0]), torch.tensor([0.0]), "bce").item() == pytest.approx(math.log(2))


def test_registered_objective_and_box_mse() -> None:
    obj = build_objective({"det_focal": 1.0, "det_box_mse": 2.0})
    logits = torch.zeros(1, 5, 2, 2)
    logits[0, 1, 0, 0] = math.atanh(0.2)
    logits[0, 3, 0, 0] = 0.3
    target = torch.zeros(1, 5, 2, 2)
    target[0, :, 0, 0] = torch.tensor([1.0, 0.5, -0.5, 0.0, 0.1])
    loss, parts = obj({"det_logits": logits}, {"det_target": target})
    box = ((0.2 - 0.5) ** 2 + (0.0 + 0.5) ** 2 + (0.3 - 0.0) ** 2 + (0.0 - 0.1) ** 2) / 1
    assert parts["det_box_mse"].item() == pytest.approx(box)
    pt = 0.5  # every logit 0
    focal = (0.25 * 1 + 0.75 * 3) * (1 - pt) ** 2 * math.log(2)
    assert parts["det_focal"].item() == pytest.approx(focal)
    assert loss.item() == pytest.approx(focal + 2 * box)
    with pytest.raises(Exception, match="must both be"):
        obj({"det_logits": logits}, {"det_target": target[:, :4]})


def test_encode_targets_and_grid_crop() -> None:
    t = encode_targets([(4.0, 20.0, 12.0, 28.0), (0.0, 0.0, 2.0, 2.0), (5.0, 21.0, 11.0, 27.0)], (2, 2), 16, 8.0)
    # box 1: centre (8, 24) -> cell (0, 1); offsets (8 - 8) / 8 = 0 and (24 - 24) / 8 = 0; sizes 8x8 -> log 1 = 0
    assert t[:, 0, 1].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]     # the smaller box in the same cell lost
    assert t[0, 0, 0] == 1.0 and t[1, 0, 0] == pytest.approx((1 - 8) / 8) and t[3, 0, 0] == pytest.approx(
        math.log(2 / 8))
    rng = np.random.default_rng(0)
    for _ in range(50):
        y, x = grid_crop((128, 96), 64, 16, (40.0, 10.0, 90.0, 50.0), rng)
        assert y % 16 == 0 and x % 16 == 0 and y <= 40 and y + 64 >= 90 and x <= 10 and x + 64 >= 50
    assert grid_crop((32, 32), 64, 16, None, rng) == (0, 0)


def _det_study(z: int = 10, three_d: bool = True) -> DetStudy:
    img = np.zeros((z, 1, 64, 64), np.float32)
    img[:, :, 8:56, 8:56] = 0.5
    img[4:7, :, 20:36, 24:40] = 1.0
    fg = np.stack([foreground_mask(i, 1) for i in img])
    return DetStudy("s", "p", img, fg, [LesionBox(20, 24, 36, 40, 5, 4, 7)], 1.0, (z, 64, 64), three_d)


def test_training_items_and_batch() -> None:
    st = _det_study()
    pos, neg = training_items([st], [0])
    assert pos[:, 1].tolist() == [3, 4, 5, 6]          # sqrt(16) = 4 slices around z = 5
    assert neg[:, 1].tolist() == [0, 1, 2, 3, 7, 8, 9]  # outside the extent [4, 7)
    b = make_batch([st], np.array([[0, 5], [0, 0]]), np.array([True, False]), 32, 16, 16.0,
                   np.random.default_rng(0), flip=False)
    assert b["image"].shape == (2, 1, 32, 32) and b["det_target"].shape == (2, 5, 2, 2)
    assert b["det_target"][0, 0].sum() == 1 and b["det_target"][1, 0].sum() == 0


def test_combine_slices_halves() -> None:
    dec = np.arange(5 * 5 * 1 * 1, dtype=float).reshape(5, 5, 1, 1)
    parts, bounds = combine_slices(dec, 2)
    assert bounds.tolist() == [[0, 3], [3, 5]]
    assert parts[0, 0, 0, 0] == pytest.approx(np.mean([0, 5, 10])) and parts[1, 0, 0, 0] == pytest.approx(17.5)
    assert combine_slices(dec[:1], 2)[1].tolist() == [[0, 1]]


def test_merge_nms_hand_boxes() -> None:
    b = np.array([[0, 0, 0, 1, 10, 10],      # A 0.9
                  [0, 1, 1, 1, 11, 11],      # B 0.5: IoU(A, B) = 81 / 119 = 0.68 > 0.5, ratio 1.8 -> merged
                  [0, 0, 0, 1, 10, 10.5],    # C 0.05: IoU > 0.5 but ratio 18 >= 10 -> kept
                  [0, 30, 30, 1, 40, 40]],   # D 0.4: far away -> kept
                 float)
    assert iou_matrix(b[:1], b[1:2])[0, 0] == pytest.approx(81 / 119)
    boxes, scores = merge_nms(b, np.array([0.9, 0.5, 0.05, 0.4]))
    assert scores.tolist() == [0.9, 0.4, 0.05]
    assert boxes[0].tolist() == [0, 0, 0, 1, 11, 11]            # the union of A and B, max score
    # ratio exactly 10 is not "less than 10": no merge
    _, s2 = merge_nms(b[:2], np.array([1.0, 0.1]))
    assert s2.tolist() == [1.0, 0.1]
    # boxes in different halves of a volume never overlap in z -> never merged
    _, s3 = merge_nms(np.array([[0, 0, 0, 5, 10, 10], [5, 0, 0, 10, 10, 10]], float), np.array([0.9, 0.8]))
    assert len(s3) == 2


def test_predict_study_filters_background() -> None:
    st = _det_study()
    m = YoloDense(1, growth_rate=4, block_config=(1, 1, 1, 1), num_init_features=8, anchor=16.0, prior=0.5)
    det = DetectionConfig(min_score=0.0, min_foreground=0.5)
    df = predict_study(m, st, det)
    assert len(df) >= 1 and {"score", "y", "x", "z", "z0", "z1"} <= set(df.columns)
    assert set(df["z0"]) <= {0, 5} and set(df["z1"]) <= {5, 10}      # the two halves
    # no box whose centre lies in the zero border (< 8 px) survives the foreground filter
    assert ((df["y1"] - df["y0"]) > 0).all()
    everything = predict_study(m, st, DetectionConfig(min_score=0.0, min_foreground=0.0))
    assert len(everything) >= len(df)


def _tiny_manifest(root: Path) -> Path:
    rows = []
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.normal(0.3, 0.05, (1, 8, 64, 64)).astype(np.float32)
        img[:, :, :4] = 0
        mask = np.zeros((1, 8, 64, 64), np.uint8)
        y, x = 10 + 5 * i, 30 - 3 * i
        img[0, 2:6, y:y + 14, x:x + 12] += 1.0
        mask[0, 2:6, y:y + 14, x:x + 12] = 1
        write_image(ImageData(img, (1.0, 1.0, 1.0)), root / f"img{i}.nii.gz")
        write_image(ImageData(mask, (1.0, 1.0, 1.0)), root / f"mask{i}.nii.gz")
        rows.append({"study_id": f"s{i}", "patient_id": f"p{i}", "path": f"img{i}.nii.gz", "label": "",
                     "mask": f"mask{i}.nii.gz"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_one_epoch_cv_run(tmp_path: Path) -> None:
    csv = _tiny_manifest(tmp_path)
    cfg_path = tmp_path / "det.yaml"
    cfg_path.write_text(
        f"name: det_tiny\ndata: {{dataset: manifest, root: {csv}, allow_unlabelled: true}}\n"
        "task: {classification: false}\n"
        "model: {name: yolo_dense, kwargs: {growth_rate: 4, block_config: [1, 1, 1, 1], num_init_features: 8,"
        " anchor: 16.0}}\n"
        "objective: {det_reduced_focal: 1.0, det_box_mse: 1.0}\n"
        "optim: {name: adam, lr: 0.001, weight_decay: 0.0}\n"
        "train: {epochs: 1, batch_size: 4, progress: false}\n"
        "cv: {folds: 2, val_fraction: 0.34}\neval: {bootstrap: 50}\n"
        "detection: {size: 64, crop: 32, distance_px: 4.0}\n", encoding="utf-8")
    cfg = load_config(cfg_path)
    assert kind_of(cfg) == "detection"
    m = run_cv(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for f in ("metrics.json", "predictions.csv", "predictions_slices.csv", "lesions.csv", "splits.json",
              "figures/froc.png", "fold_0/checkpoint_best.pt", "fold_1/history.csv", "fold_1/DONE"):
        assert (run / f).is_file(), f
    assert m["lesion"]["n_targets"] == 6 and m["lesion"]["n_images"] == 6
    for k in ("1.0", "2.0", "4.0", "8.0"):
        s = m["lesion"]["sensitivity"][k]
        assert 0.0 <= s <= 1.0
    boxes = pd.read_csv(run / "predictions_slices.csv")
    assert set(boxes["study_id"]) <= {f"s{i}" for i in range(6)} and boxes["score"].between(0, 1).all()
    # patients never cross folds
    studies = pd.read_csv(run / "predictions.csv")
    assert studies.groupby("patient_id")["fold"].nunique().max() == 1 and len(studies) == 6
    # same seed, same result: resume reads the finished folds back and reproduces the table
    m2 = run_cv(cfg, run, resume=True)
    assert m2["lesion"]["sensitivity"] == m["lesion"]["sensitivity"]


def test_study_variants_and_tables(tmp_path: Path) -> None:
    from cadx.errors import CadxConfigError
    from cadx.studies.detection import loss_variants, run_detection_study

    csv = _tiny_manifest(tmp_path)
    cfg = load_config(None, [f"data.root={csv}", "data.dataset=manifest", "data.allow_unlabelled=true",
                             "task.classification=false", "model.name=yolo_dense",
                             "model.kwargs={growth_rate: 4, block_config: [1, 1, 1, 1], num_init_features: 8, "
                             "anchor: 16.0}", "objective={det_focal: {weight: 1.0, gamma: 1.0}, det_box_mse: 0.5}",
                             "train.epochs=1", "train.batch_size=4", "train.progress=false", "cv.folds=2",
                             "eval.bootstrap=20", "detection={size: 64, crop: 32}"])
    v = loss_variants(cfg)
    assert list(v) == ["bce", "weighted_bce", "focal", "reduced_focal"]
    assert v["bce"].objective == {"det_bce": 1.0, "det_box_mse": 0.5}
    assert v["focal"].objective == {"det_focal": {"weight": 1.0, "gamma": 1.0}, "det_box_mse": 0.5}  # kept
    assert v["reduced_focal"].name == f"{cfg.name}_reduced_focal"
    with pytest.raises(CadxConfigError, match="unknown loss"):
        loss_variants(cfg, ["dice"])
    summary = run_detection_study(cfg, tmp_path / "study", ["bce", "focal"])
    assert set(summary["runs"]) == {"bce", "focal"}
    report = (tmp_path / "study" / "report.md").read_text(encoding="utf-8")
    assert "FROC: focal objectness loss" in report and "| bce |" in report
    assert (tmp_path / "study" / "froc_lesion.png").is_file()
    # a second call reuses the finished runs (same configs): the same numbers
    again = run_detection_study(cfg, tmp_path / "study", ["bce", "focal"])
    assert again["runs"]["bce"]["lesion"] == summary["runs"]["bce"]["lesion"]
