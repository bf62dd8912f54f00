"""Thesis A.6 multi-task net: ``multihead`` shapes and registry, ``feature_focal`` values by hand, masked missing
labels, the study's variants, and a user manifest with categorical columns flowing into the loss."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from cadx.config import config_from_dict
from cadx.data.datasets.manifest import load_manifest
from cadx.errors import CadxConfigError, CadxDataError
from cadx.models import MODELS, create_model
from cadx.objectives import LOSSES, build_objective
from cadx.objectives.feature_heads import categorical_targets
from cadx.pipeline.items import build_store
from cadx.pipeline.loaders import ItemDataset
from cadx.studies.multitask.tables import auc_comparison, case_table
from cadx.studies.multitask.variants import load_study_config, variant_config

ROOT = Path(__file__).resolve().parents[1]
LIDC_CATEGORIES = [5, 4, 6, 5, 5, 5, 5, 5]


def test_registry_and_shapes_2d_3d_and_resnet_trunk() -> None:
    assert "multihead" in MODELS and "feature_focal" in LOSSES
    torch.manual_seed(0)
    m = create_model("multihead", num_classes=2, in_channels=1, spatial_dims=2, num_attributes=8,
                     categories=LIDC_CATEGORIES)
    out = m.eval()(torch.randn(3, 1, 40, 40))
    assert out["logits"].shape == (3, 2) and out["features"].shape == (3, 48)
    assert [tuple(h.shape) for h in out["feature_logits"]] == [(3, k) for k in LIDC_CATEGORIES]
    m3 = create_model("multihead", 2, 1, 3, 2, categories=[3, 2], filters=[4, 6, 8], pools=3)
    out3 = m3.eval()(torch.randn(2, 1, 16, 16, 16))
    assert out3["logits"].shape == (2, 2) and [h.shape[1] for h in out3["feature_logits"]] == [3, 2]
    r = create_model("multihead", 2, 1, 2, 1, categories=[4], trunk="resnet", depth=10, width=8)
    assert r.eval()(torch.randn(2, 1, 32, 32))["feature_logits"][0].shape == (2, 4)
    single = create_model("multihead", 2, 1, 2, 0)
    assert "feature_logits" not in single.eval()(torch.randn(2, 1, 32, 32))


def test_bad_model_options_raise() -> None:
    with pytest.raises(CadxConfigError, match="categories has 2 entries but the task has 3"):
        create_model("multihead", 2, 1, 2, 3, categories=[3, 3])
    with pytest.raises(CadxConfigError, match=">= 2 categories"):
        create_model("multihead", 2, 1, 2, 1, categories=[1])
    with pytest.raises(CadxConfigError):
        create_model("multihead", 2, 1, 2, 0, trunk="vgg")


def test_categorical_targets_round_half_up_and_missing() -> None:
    v = torch.tensor([[1.0, 3.5, math.nan], [2.49, 1.0, 5.0]])
    assert categorical_targets(v, [1, 1, 1], [5, 4, 5]).tolist() == [[0, 3, -1], [1, 0, 4]]
    with pytest.raises(CadxDataError, match="head 1"):
        categorical_targets(torch.tensor([[1.0, 5.0]]), [1, 1], [5, 4])  # 5 - 1 = 4 is outside 4 classes


def test_feature_focal_value_by_hand_and_missing_rows_ignored() -> None:
    # head 0 (K=3): row 0 logits 0,0,0 target 1 → p = 1/3; row 1 logits 0,ln3,0 target 1 → p = 3/5; row 2 NaN
    # head 1 (K=2, weight 2): every row missing → adds 0
    h0 = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(3), 0.0], [5.0, -3.0, 1.0]], requires_grad=True)
    h1 = torch.zeros(3, 2, requires_grad=True)
    batch = {"attributes": torch.tensor([[1.0, math.nan], [1.0, math.nan], [math.nan, math.nan]])}
    loss = LOSSES.get("feature_focal")(gamma=2.0, offsets=0, head_weights=[1.0, 2.0])
    value = loss({"feature_logits": [h0, h1]}, batch)
    want = ((2 / 3) ** 2 * math.log(3) + (2 / 5) ** 2 * math.log(5 / 3)) / 2
    assert value.item() == pytest.approx(want, rel=1e-6)
    value.backward()
    assert h0.grad is not None and bool((h0.grad[2] == 0).all())  # a missing label gives no gradient
    assert h1.grad is None or bool((h1.grad == 0).all())
    # γ = 0 is plain cross-entropy; one head equals the registry's focal on the same logits
    ce = LOSSES.get("feature_focal")(gamma=0.0, offsets=0)({"feature_logits": [h0[:2]]}, {"attributes": batch[
        "attributes"][:2, :1]})
    assert ce.item() == pytest.approx(F.cross_entropy(h0[:2], torch.tensor([1, 1])).item(), rel=1e-6)
    fl = LOSSES.get("focal")(gamma=2.0)({"logits": h0[:2]}, {"label": torch.tensor([1, 1])})
    assert fl.item() == pytest.approx(want, rel=1e-6)


def test_objective_sums_heads_with_weights() -> None:
    torch.manual_seed(1)
    m = create_model("multihead", 2, 1, 2, 2, categories=[3, 2])
    out = m(torch.randn(4, 1, 32, 32))
    batch = {"label": torch.tensor([0, 1, -1, 1]), "attributes": torch.tensor([[1, 0], [2, 1], [0, math.nan],
                                                                                 [math.nan, 1]]).float()}
    obj = build_objective({"focal": {"weight": 1.0, "gamma": 2.0},
                           "feature_focal": {"weight": 0.5, "gamma": 2.0, "offsets": 0, "head_weights": [1, 3]}})
    total, parts = obj(out, batch)
    assert total.item() == pytest.approx(parts["focal"].item() + 0.5 * parts["feature_focal"].item(), rel=1e-6)
    with pytest.raises(CadxDataError, match="2 feature heads"):
        obj(out, {**batch, "attributes": batch["attributes"][:, :1]})


def test_study_config_and_single_task_variant() -> None:
    cfg = load_study_config(ROOT / "configs" / "papers" / "multitask_lidc.yaml")
    assert cfg.experiment.model.kwargs["categories"] == LIDC_CATEGORIES and cfg.study.reference.positive_min == 4
    single = variant_config(cfg.experiment, "single")
    assert single.task.attributes == [] and single.model.kwargs["categories"] == []
    assert list(single.objective) == ["focal"] and single.sampler == cfg.experiment.sampler
    assert variant_config(cfg.experiment, "multitask").to_dict() == cfg.experiment.to_dict()
    with pytest.raises(CadxConfigError, match="unknown multitask variant"):
        variant_config(cfg.experiment, "triple")


def test_manifest_categorical_columns_reach_the_loss(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["study_id,patient_id,path,label,composition,margin"]
    comp = [0, 1, 2, 1, 0, 2]
    margin = ["1", "0", "", "1", "0", "1"]  # one missing margin
    for i in range(6):
        np.save(tmp_path / f"im{i}.npy", rng.random((1, 24, 24)).astype(np.float32))
        rows.append(f"s{i},p{i},im{i}.npy,{'malignant' if i % 2 else 'benign'},{comp[i]},{margin[i]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cohort = load_manifest(tmp_path / "m.csv")
    cfg = config_from_dict({"name": "t", "data": {"dataset": "manifest", "root": str(tmp_path / "m.csv")},
                            "task": {"attributes": ["composition", "margin"]},
                            "input": {"kind": "image2d", "size": 32},
                            "model": {"name": "multihead", "kwargs": {"categories": [3, 2]}},
                            "objective": {"focal": 1.0, "feature_focal": {"offsets": 0}}})
    store = build_store(cohort, cfg, progress=False)
    batch = ItemDataset(store, np.arange(len(store))).__getitems__(list(range(6)))
    assert torch.isnan(batch["attributes"][2, 1]) and batch["attributes"][:, 0].tolist() == comp
    model = create_model("multihead", 2, store.in_channels, 2, 2, categories=[3, 2])
    total, parts = build_objective(cfg.objective)(model(batch["image"]), batch)
    assert torch.isfinite(total) and parts["feature_focal"].item() > 0


def test_study_case_table_and_paired_auc(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 40
    y = rng.integers(0, 2, n)
    p_multi = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    p_single = rng.random(n)
    for v, p in (("multitask", p_multi), ("single", p_single)):
        (tmp_path / v).mkdir()
        df = {"study_id": [f"s{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
              "fold": [i % 5 for i in range(n)], "y_true": np.where(y == 1, "malignant", "benign"),
              "y_pred": np.where(p >= 0.5, "malignant", "benign"), "p_benign": 1 - p, "p_malignant": p}
        pd.DataFrame(df).iloc[:-1 if v == "single" else None].to_csv(tmp_path / v / "predictions.csv", index=False)
    cases = case_table(tmp_path, ["benign", "malignant"])
    assert len(cases) == n - 1  # only the nodules both variants scored
    assert cases["pred_multitask"].tolist() == (p_multi[:-1] >= 0.5).astype(int).tolist()
    results = {v: {"pooled": {"auc": 0.5, "ci": {"auc": [0.4, 0.6]}, "n_studies": n}} for v in ("multitask",
                                                                                                   "single")}
    auc = auc_comparison(cases, results, n_resamples=300, seed=0)
    assert auc["variants"]["multitask"]["auc_common"] == pytest.approx(roc_auc_score(y[:-1], p_multi[:-1]))
    assert auc["auc_difference"] == pytest.approx(roc_auc_score(y[:-1], p_multi[:-1])
                                                  - roc_auc_score(y[:-1], p_single[:-1]))
    assert 0.0 <= auc["p_value"] <= 1.0
    same = cases.assign(p_single=cases["p_multitask"])
    assert auc_comparison(same, results, n_resamples=100, seed=0)["p_value"] == 1.0
