"""MTMR-Net: regression module concatenated into the classifier (Table I / Fig. 3), ablation, 3D."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cadx.errors import CadxConfigError
from cadx.models import MODELS, create_model


def small(**kw):
    base = {"depth": 18, "width": 8, "stem": "small"}
    base.update(kw)
    return base


def test_registered() -> None:
    assert "mtmr" in MODELS


def test_outputs_2d() -> None:
    torch.manual_seed(0)
    m = create_model("mtmr", 2, num_attributes=8, **small()).eval()
    x = torch.randn(2, 1, 32, 32)
    out = m(x)
    assert set(out) == {"features", "attribute_features", "attributes", "logits"}
    assert out["features"].shape == (2, 64)  # 512 * 8 / 64
    assert out["attribute_features"].shape == (2, 256)
    assert out["attributes"].shape == (2, 8) and out["logits"].shape == (2, 2)
    assert ((out["attributes"] > 0) & (out["attributes"] < 1)).all()  # sigmoid: targets in [0, 1]
    torch.testing.assert_close(out["features"], m.forward_features(x))
    # classifier input = concat(image features, attribute features)
    expected = m.head(torch.cat([out["features"], out["attribute_features"]], dim=1))
    torch.testing.assert_close(out["logits"], expected)


def test_table1_layer_sizes() -> None:
    # bottleneck backbone -> D = 2048 at width 64; regression fc 2048x256, 256x8; classifier (2048+256)x1
    m = create_model("mtmr", 1, num_attributes=8, depth=50, width=64, stem="small")
    assert m.feature_dim == 2048
    assert sum(p.numel() for p in m.attr_fc.parameters()) == 2048 * 256 + 256
    assert sum(p.numel() for p in m.attr_out.parameters()) == 256 * 8 + 8
    assert sum(p.numel() for p in m.head.parameters()) == (2048 + 256) * 1 + 1


def test_classification_loss_flows_into_regression_branch() -> None:
    torch.manual_seed(0)
    m = create_model("mtmr", 2, num_attributes=8, **small())
    out = m(torch.randn(4, 1, 16, 16))
    F.cross_entropy(out["logits"], torch.tensor([0, 1, 0, 1])).backward()
    assert m.attr_fc.weight.grad is not None and m.attr_fc.weight.grad.abs().sum() > 0
    assert m.attr_out.weight.grad is None  # the scores layer is trained by the regression loss only


def test_regression_loss_trains_backbone() -> None:
    m = create_model("mtmr", 2, num_attributes=3, attribute_activation="linear", **small(width=4))
    out = m(torch.randn(2, 1, 16, 16))
    F.mse_loss(out["attributes"], torch.rand(2, 3)).backward()
    assert m.backbone.conv1.weight.grad.abs().sum() > 0
    assert m.head.weight.grad is None


def test_ablation_without_attribute_branch() -> None:
    m = create_model("mtmr", 2, attribute_branch="false", **small(width=4))
    out = m(torch.randn(2, 1, 16, 16))
    assert set(out) == {"features", "logits"}
    assert m.head.in_features == m.feature_dim == 32
    assert m.attr_fc is None


def test_3d_and_regression_only() -> None:
    m = create_model("mtmr", 0, spatial_dims=3, num_attributes=4, **small(width=4))
    out = m(torch.randn(2, 1, 8, 8, 8))
    assert "logits" not in out and out["attributes"].shape == (2, 4)


def test_determinism() -> None:
    x = torch.randn(2, 1, 16, 16)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(create_model("mtmr", 2, num_attributes=8, **small(width=4)).eval()(x)["attributes"])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_bad_configs() -> None:
    with pytest.raises(CadxConfigError, match="num_attributes"):
        create_model("mtmr", 2, **small(width=4))
    with pytest.raises(CadxConfigError, match="attribute_activation"):
        create_model("mtmr", 2, num_attributes=8, attribute_activation="tanh", **small(width=4))
    with pytest.raises(CadxConfigError, match="num_classes"):
        create_model("mtmr", 0, attribute_branch=False, **small(width=4))


@pytest.mark.slow
def test_paper_configuration_resnet152() -> None:
    m = create_model("mtmr", 2, num_attributes=8, depth=152, in_channels=3)
    assert m.head.in_features == 2304
