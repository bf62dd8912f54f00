"""DMRN: residual pooling units, per-stage embeddings, multi-scale ablation, 2D / 2.5D / 3D."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadx.errors import CadxConfigError
from cadx.models import MODELS, create_model
from cadx.models.dmrn import ResidualPoolingUnit


def test_registered() -> None:
    assert "dmrn" in MODELS


def test_embeddings_2d_multiscale() -> None:
    torch.manual_seed(0)
    m = create_model("dmrn", 5, width=8, stem="small").eval()
    x = torch.randn(2, 1, 32, 32)
    out = m(x)
    assert set(out) == {"features", "embeddings", "logits"}
    # stage channels 8, 16, 32, 64 -> 25 %
    assert [tuple(e.shape) for e in out["embeddings"]] == [(2, 2), (2, 4), (2, 8), (2, 16)]
    assert m.embedding_dims == [2, 4, 8, 16] and m.feature_dim == 16
    torch.testing.assert_close(out["features"], out["embeddings"][-1])
    torch.testing.assert_close(m.forward_features(x), out["embeddings"][-1])
    assert out["logits"].shape == (2, 5)
    torch.testing.assert_close(out["logits"], m.head(out["embeddings"][-1]))


def test_bottleneck_backbone_dims_and_ablation() -> None:
    m = create_model("dmrn", 3, depth=50, width=4, stem="small")
    assert m.embedding_dims == [4, 8, 16, 32]  # 16, 32, 64, 128 channels
    ab = create_model("dmrn", 3, depth=50, width=4, stem="small", multiscale="false")
    assert not ab.multiscale and len(ab.rpus) == 1 and ab.embedding_dims == [32]
    out = ab(torch.randn(2, 1, 16, 16))
    assert len(out["embeddings"]) == 1 and out["embeddings"][0].shape == (2, 32)
    torch.testing.assert_close(out["features"], out["embeddings"][0])


def test_3d_and_25d_inputs() -> None:
    m3 = create_model("dmrn", 2, spatial_dims=3, width=4, stem="small").eval()
    out = m3(torch.randn(2, 1, 8, 8, 8))
    assert [tuple(e.shape) for e in out["embeddings"]] == [(2, 1), (2, 2), (2, 4), (2, 8)]
    assert out["logits"].shape == (2, 2)
    m25 = create_model("dmrn", 0, in_channels=3, width=4, stem="small")
    out = m25(torch.randn(2, 3, 16, 16))
    assert "logits" not in out and out["features"].shape == (2, 8)


def test_rpu_has_no_batchnorm_and_hand_counted_parameters() -> None:
    m = create_model("dmrn", 2, width=8, stem="small")
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for r in m.rpus for mod in r.modules())
    rpu = m.rpus[1]  # 16 channels
    conv = 16 * 16 * 9 + 16
    assert sum(p.numel() for p in rpu.parameters()) == 2 * conv + (16 * 4 + 4)
    assert m.rpus[3].fc.weight.shape == (16, 64)


def test_rpu_computes_residual_then_pool_then_fc() -> None:
    torch.manual_seed(1)
    rpu = ResidualPoolingUnit(8, spatial_dims=2)
    x = torch.randn(3, 8, 5, 5)
    y = torch.relu(x + rpu.conv2(torch.relu(rpu.conv1(x))))
    expected = rpu.fc(y.mean(dim=(2, 3)))
    torch.testing.assert_close(rpu(x), expected)
    assert rpu(x).shape == (3, 2)


def test_stage1_embedding_loss_trains_early_layers_only() -> None:
    m = create_model("dmrn", 2, width=4, stem="small")
    emb = m(torch.randn(2, 1, 16, 16))["embeddings"]
    d = (emb[0][0] - emb[0][1]).pow(2).sum()  # contrastive "same class" term on stage 1 only
    d.backward()
    assert m.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert m.rpus[0].fc.weight.grad.abs().sum() > 0
    assert m.backbone.layer4[0].conv1.weight.grad is None and m.rpus[3].fc.weight.grad is None


def test_pretrained_resnet_loads_into_backbone(tmp_path) -> None:
    torch.manual_seed(0)
    src = create_model("resnet18", 1000, in_channels=3, width=4)
    path = tmp_path / "resnet18.pt"
    torch.save(src.state_dict(), path)
    m = create_model("dmrn", 5, width=4, pretrained_path=path)
    torch.testing.assert_close(m.backbone.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    report = m.load_pretrained(path)
    assert report["unexpected"] == ["head.bias", "head.weight"]  # the ResNet's head has no place in DMRN
    assert all(k.startswith(("rpus.", "head.")) or k.endswith("num_batches_tracked") for k in report["missing"])


def test_determinism() -> None:
    x = torch.randn(2, 1, 16, 16)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(create_model("dmrn", 3, width=4, stem="small").eval()(x)["features"])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_bad_configs() -> None:
    with pytest.raises(CadxConfigError, match="depth"):
        create_model("dmrn", 2, depth=152)
    with pytest.raises(CadxConfigError, match="attribute"):
        create_model("dmrn", 2, num_attributes=8)


@pytest.mark.slow
def test_paper_configuration_resnet101() -> None:
    m = create_model("dmrn", 5, depth=101, in_channels=3)
    assert m.embedding_dims == [64, 128, 256, 512]
