"""Thesis A.4 transfer learning (cadx.studies.radiogenomics.transfer) on tiny synthetic LGG-like volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from cadx.data.image import LazyImage
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError
from cadx.models import create_model
from cadx.models.unet import UNet
from cadx.models.unet_encoder import UNetEncoder
from cadx.studies.radiogenomics import transfer as T

TINY: dict[str, Any] = {
    "size": 64, "patch": 16, "max_shift": 4, "max_rotate": 10.0, "copies": 2, "folds": 3, "base_filters": 2,
    "levels": 2, "epochs": 1, "batch_size": 16, "unet": {"epochs": 1}, "n_bootstrap": 50, "seed": 0,
}


def _cohort(n: int = 9, extra_bad: bool = False) -> Cohort:
    """``n`` patients, classes "1"/"2"/"3" in turn, volumes (3, 4, 48, 64) with a bright square tumour whose
    size grows with the class; ``extra_bad`` adds an unlabelled patient and one without a tumour slice."""
    rng = np.random.default_rng(5)
    studies = []
    for i in range(n):
        cls = i % 3
        img = rng.normal(50, 10, size=(3, 4, 48, 64)).astype(np.float32)
        mask = np.zeros((1, 4, 48, 64), np.uint8)
        r = 3 + 2 * cls
        for z in (1, 2):
            cy, cx = 20 + z, 30 + i % 4
            mask[0, z, cy - r:cy + r, cx - r:cx + r] = 1
            img[:, z][:, cy - r:cy + r, cx - r:cx + r] += 60
        studies.append(Study(f"S{i}", f"P{i}", {"image": LazyImage.from_array(img, source=f"P{i}")},
                             label=str(cls + 1), masks={"mask": LazyImage.from_array(mask)}))
    if extra_bad:
        img = rng.normal(50, 10, size=(3, 4, 48, 64)).astype(np.float32)
        mask = np.zeros((1, 4, 48, 64), np.uint8)
        studies.append(Study("S_empty", "P_empty", {"image": LazyImage.from_array(img, source="P_empty")},
                             label="1", masks={"mask": LazyImage.from_array(mask)}))
        mask2 = mask.copy()
        mask2[0, 1, 10:20, 10:20] = 1
        studies.append(Study("S_nolabel", "P_nolabel", {"image": LazyImage.from_array(img)}, label=None,
                             masks={"mask": LazyImage.from_array(mask2)}))
    return Cohort(studies, classes=["1", "2", "3"], name="synthetic-lgg")


def _encoder_weights(tmp_path: Path, cfg: T.TransferConfig) -> Path:
    path = tmp_path / "enc.pt"
    torch.manual_seed(0)
    torch.save(UNetEncoder(6, 1, base_filters=cfg.base_filters, levels=cfg.levels).state_dict(), path)
    return path


def test_holm_hand_computed() -> None:
    # sorted 0.01, 0.03, 0.04 → 0.03, 0.06, max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(T.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(T.holm([0.5, 0.9]), [1.0, 1.0])
    out = T.holm([0.02, float("nan")])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1])


def test_patient_scores_mean_of_slices() -> None:
    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])
    pats, s = T.patient_scores(proba, ["b", "a", "b", "a", "b"])
    assert pats == ["b", "a"]
    np.testing.assert_allclose(s, [[0.4, 0.6], [0.55, 0.45]])


def test_training_examples_copies_then_uniform_classes() -> None:
    cfg = T.TransferConfig(**TINY)
    items, _ = T.collect_patches(_cohort(5), cfg)  # classes 1, 2, 3, 1, 2: 4, 4, 2 tumour slices
    x, y = T.training_examples(items, cfg, fold=0)
    # 2 copies per slice → 8, 8, 4 examples; oversampled to 8 each
    assert x.shape == (24, 1, 16, 16)
    np.testing.assert_array_equal(np.bincount(y), [8, 8, 8])
    x2, y2 = T.training_examples(items, cfg, fold=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_pretrain_isolation_refuses_test_patients() -> None:
    cfg = T.TransferConfig(**TINY)
    items, _ = T.collect_patches(_cohort(6), cfg)
    T.check_pretrain_isolation(["P0", "P1"], ["P2"], 0)
    with pytest.raises(CadxDataError, match=r"fold 3: test patients \['P1'\]"):
        T.check_pretrain_isolation(["P0", "P1"], ["P1", "P2"], 3)
    with pytest.raises(CadxDataError, match="pretraining"):
        T.pretrain_unet(items, ["P0", "P1", "P2"], ["P2", "P3"], cfg, 0)
    sd, info = T.pretrain_unet(items, ["P0", "P1"], ["P2", "P3"], cfg, 0)
    assert info["patients"] == ["P0", "P1"] and info["n_slices"] == 4  # two tumour slices each
    assert "encoders.0.0.weight" in sd and "seg_head.weight" in sd


def test_weights_file_loading_prefix_map_and_errors(tmp_path: Path) -> None:
    src = UNet(0, 1, base_filters=2, levels=2)
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pt")
    model = UNetEncoder(3, 1, base_filters=2, levels=2)
    with pytest.raises(CadxConfigError, match=r"w\.pt does not fit unet_encoder: 36 of 36 encoder keys missing"):
        T.load_encoder_weights(model, tmp_path / "w.pt")
    rep = T.load_encoder_weights(model, tmp_path / "w.pt", {"backbone.": ""})
    assert rep["loaded"] == len([k for k in model.state_dict() if not k.startswith("head.")])
    assert any(k.startswith("decoders.") for k in rep["ignored"])
    torch.testing.assert_close(model.state_dict()["bottleneck.3.weight"], src.state_dict()["bottleneck.3.weight"])
    # an RGB first conv (ImageNet style) is summed to one channel
    rgb = UNet(0, 3, base_filters=2, levels=2)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    T.load_encoder_weights(model, tmp_path / "rgb.pt")
    torch.testing.assert_close(model.state_dict()["encoders.0.0.weight"],
                               rgb.state_dict()["encoders.0.0.weight"].sum(1, keepdim=True))
    wide = UNet(0, 1, base_filters=4, levels=2)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CadxConfigError, match=r"wide\.pt does not fit unet_encoder: shape mismatch"):
        T.load_encoder_weights(model, tmp_path / "wide.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CadxConfigError, match=r"junk\.pt is not a tensor-only state_dict"):
        T.load_encoder_weights(model, tmp_path / "junk.pt")
    with pytest.raises(CadxConfigError, match="file not found"):
        T.load_encoder_weights(model, tmp_path / "absent.pt")


def test_unet_encoder_registered_and_loads_unet_state() -> None:
    m = create_model("unet_encoder", 3, 1, base_filters=2, levels=2)
    assert isinstance(m, UNetEncoder)
    out = m(torch.zeros(2, 1, 16, 16))
    assert out["logits"].shape == (2, 3) and out["features"].shape == (2, 8)
    res = m.load_state_dict(UNet(0, 1, base_filters=2, levels=2).state_dict(), strict=False)
    assert res.missing_keys == ["head.weight", "head.bias"]


def test_run_transfer_end_to_end_isolation_scores_and_exclusions(tmp_path: Path) -> None:
    cfg = dict(TINY)
    enc = _encoder_weights(tmp_path, T.TransferConfig(**cfg))
    cfg.update(mednist={"weights": str(enc)}, transfer={"weights": str(enc)})
    res = T.run_transfer(cfg, tmp_path / "out", cohort=_cohort(9, extra_bad=True))
    assert res["starts"] == ["scratch", "mednist", "lgg_unet", "weights"]
    assert res["n_patients"] == 9 and res["patients_per_class"] == {"1": 3, "2": 3, "3": 3}
    assert {e["patient"] for e in res["excluded"]} == {"P_empty", "P_nolabel"}
    assert any("no slice with tumour" in e["reason"] for e in res["excluded"])
    for f in res["folds"]:  # in-domain pretraining used exactly the fold's training patients
        assert sorted(f["pretrain_patients"]) == sorted(f["train"])
        assert not set(f["pretrain_patients"]) & set(f["test"])
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"y_class": str})
    assert list(pred.columns[:6]) == ["patient", "fold", "start", "task", "score", "label"]
    assert len(pred) == 9 * 4 * 3 and set(pred["task"]) == {"CoC1 vs rest", "CoC2 vs rest", "CoC3 vs rest"}
    assert not set(pred["patient"]) & {"P_empty", "P_nolabel"}
    sl = pd.read_csv(tmp_path / "out" / "predictions_slices.csv")
    one = sl[(sl.patient == "P4") & (sl.start == "lgg_unet")]
    assert len(one) == 2
    got = pred[(pred.patient == "P4") & (pred.start == "lgg_unet") & (pred.task == "CoC2 vs rest")]
    assert got["score"].item() == pytest.approx(one["p_2"].mean())
    assert got["label"].item() == 1  # P4 is class "2"
    for task, t in res["tasks"].items():  # pooled AUC = sklearn's on the written patient scores
        for s in res["starts"]:
            d = pred[(pred.task == task) & (pred.start == s)]
            assert t["auc"][s]["auc"] == pytest.approx(roc_auc_score(d["label"], d["score"]))
            assert t["auc"][s]["ci_lo"] <= t["auc"][s]["auc"] <= t["auc"][s]["ci_hi"]
        assert len(t["pvalues"]) == 6
        assert all(p["p"] <= p["p_holm"] <= 1 for p in t["pvalues"])
    assert (tmp_path / "out" / "metrics.json").is_file() and (tmp_path / "out" / "splits.json").is_file()


def test_run_transfer_same_seed_same_result(tmp_path: Path) -> None:
    cfg = dict(TINY, starts=["scratch", "lgg_unet"], folds=2)
    part = T.run_transfer(dict(cfg, only_folds=[1]), tmp_path / "a", cohort=_cohort(6))  # resumable by fold
    assert part == {"folds_done": [1], "folds": 2}
    assert (tmp_path / "a" / "fold_1" / "DONE").is_file() and not (tmp_path / "a" / "fold_0").exists()
    a = T.run_transfer(cfg, tmp_path / "a", cohort=_cohort(6))
    b = T.run_transfer(cfg, tmp_path / "b", cohort=_cohort(6))
    pa = pd.read_csv(tmp_path / "a" / "predictions_slices.csv")
    pb = pd.read_csv(tmp_path / "b" / "predictions_slices.csv")
    pd.testing.assert_frame_equal(pa, pb)
    assert a["tasks"] == b["tasks"]
    c = T.run_transfer(dict(cfg, seed=1), tmp_path / "c", cohort=_cohort(6))
    pc = pd.read_csv(tmp_path / "c" / "predictions_slices.csv")
    assert not np.allclose(pa.filter(like="p_").to_numpy(), pc.filter(like="p_").to_numpy())
    assert c["starts"] == ["scratch", "lgg_unet"]
    with pytest.raises(CadxConfigError, match=r"fold\.json: saved with other settings"):
        T.run_transfer(dict(cfg, epochs=2), tmp_path / "a", cohort=_cohort(6))


def test_config_errors_are_one_line() -> None:
    with pytest.raises(CadxConfigError, match="radiogenomics transfer config") as e:
        T.run_transfer({"epochz": 3}, "/tmp/never")
    assert "\n" not in str(e.value)
    with pytest.raises(CadxConfigError, match=r"transfer\.weights"):
        T.run_transfer({"starts": ["weights"]}, "/tmp/never", cohort=_cohort(3))


def test_pretrain_mednist_on_a_tiny_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for k, cls in enumerate(["Hand", "HeadCT"]):
        (tmp_path / "mn" / cls).mkdir(parents=True)
        for i in range(6):
            a = np.clip(rng.normal(60 + 120 * k, 20, size=(64, 64)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(tmp_path / "mn" / cls / f"{i:06d}.jpeg")
    cfg = T.TransferConfig(**dict(TINY, mednist={"root": str(tmp_path / "mn"), "per_class": 5, "epochs": 2}))
    info = T.pretrain_mednist(cfg, tmp_path / "w" / "enc.pt")
    assert info["trained"] and info["heldout_images"] == 2 and 0 <= info["heldout_accuracy"] <= 1
    model = UNetEncoder(3, 1, base_filters=2, levels=2)
    assert T.load_encoder_weights(model, tmp_path / "w" / "enc.pt")["loaded"] > 0
