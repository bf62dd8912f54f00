"""DMRN's baselines: VGG-19, the 3D CNNs, ARL and SDL."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models import MODELS, create_model
from cadx.models.attention import ARLBottleneck, sdl_loss_terms, synergic_loss, synergic_targets
from conftest import n_params


def test_registered() -> None:
    for name in ("vgg19", "cnn3d", "cnn3d_small", "arl", "sdl"):
        assert name in MODELS


# ---------------------------------------------------------------- VGG-19
def test_vgg19_shapes_2d_3d_and_tiny_inputs() -> None:
    m = create_model("vgg19", 3, width=8, pool_size=1, fc_dim=32).eval()
    out = m(torch.randn(2, 1, 32, 32))
    assert out["features"].shape == (2, 32) and out["logits"].shape == (2, 3)
    assert m(torch.randn(1, 1, 7, 9))["logits"].shape == (1, 3)  # ceil-mode pools survive 5 halvings
    m3 = create_model("vgg19", 2, spatial_dims=3, width=4, pool_size=1, fc_dim=16).eval()
    assert m3(torch.randn(2, 1, 8, 8, 8))["features"].shape == (2, 16)


def test_vgg19_hand_counted_parameters() -> None:
    m = create_model("vgg19", 2, width=8, pool_size=1, fc_dim=32)
    chans = [(1, 8), (8, 8), (8, 16), (16, 16), (16, 32), *[(32, 32)] * 3, (32, 64), *[(64, 64)] * 7]
    convs = sum(ci * co * 9 + co for ci, co in chans)
    bns = sum(2 * co for _, co in chans)
    fcs = (64 * 32 + 32) + (32 * 32 + 32) + (32 * 2 + 2)
    assert convs + bns + fcs == 318_106 == n_params(m)
    assert sum(isinstance(x, nn.Conv2d) for x in m.modules()) == 16
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 3  # 16 conv + 3 fc = 19 weight layers


def test_vgg19_torchvision_layout_and_pool_size() -> None:
    m = create_model("vgg19", 2, width=8, fc_dim=16)  # default pool_size=7
    assert m.classifier[0].in_features == 64 * 7 * 7
    sd = m.state_dict()
    assert sd["features.0.weight"].shape == (8, 1, 3, 3) and "features.1.running_mean" in sd
    assert sd["features.3.weight"].shape == (8, 8, 3, 3)
    plain = create_model("vgg19", 2, width=8, fc_dim=16, batch_norm="false")
    assert plain.state_dict()["features.2.weight"].shape == (8, 8, 3, 3)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in plain.modules())


@pytest.mark.slow
def test_vgg19_bn_imagenet_count() -> None:
    assert n_params(create_model("vgg19", 1000, in_channels=3)) == 143_678_248  # torchvision vgg19_bn


# ---------------------------------------------------------------- 3D CNNs
def test_cnn3d_structure_and_shapes() -> None:
    m = create_model("cnn3d", 4, spatial_dims=3, width=4, fc_dims=[16, 8]).eval()
    assert sum(isinstance(x, nn.Conv3d) for x in m.modules()) == 6
    assert sum(isinstance(x, nn.BatchNorm3d) for x in m.modules()) == 6
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 3
    assert m.classifier[0].in_features == 16 * 2**3
    out = m(torch.randn(2, 1, 16, 16, 16))
    assert out["features"].shape == (2, 8) and out["logits"].shape == (2, 4)
    assert m(torch.randn(1, 1, 5, 6, 7))["logits"].shape == (1, 4)


def test_cnn3d_small_28_cube_and_hand_count() -> None:
    m = create_model("cnn3d_small", 3, spatial_dims=3).eval()
    convs = sum(ci * co * 27 + 2 * co for ci, co in [(1, 16), (16, 32), (32, 64), (64, 128)])  # no conv bias
    assert n_params(m) == convs + 128 * 3 + 3 == 291_603
    out = m(torch.randn(2, 1, 28, 28, 28))
    assert out["features"].shape == (2, 128) and out["logits"].shape == (2, 3)
    m2 = create_model("cnn3d_small", 2, spatial_dims=3, width=4, convs_per_stage=2)
    assert sum(isinstance(x, nn.Conv3d) for x in m2.modules()) == 8 and m2.feature_dim == 32


def test_3d_models_reject_2d() -> None:
    for name in ("cnn3d", "cnn3d_small"):
        with pytest.raises(CadxConfigError, match="3D model"):
            create_model(name, 2)
    with pytest.raises(CadxConfigError, match="spatial_dims"):
        create_model("vgg19", 2, spatial_dims=1)


# ---------------------------------------------------------------- ARL
def test_arl_alpha_zero_equals_resnet50_and_shapes() -> None:
    torch.manual_seed(0)
    a = create_model("arl", 3, width=4, stem="small").eval()
    r = create_model("resnet50", 3, width=4, stem="small").eval()
    missing, unexpected = r.load_state_dict(a.state_dict(), strict=False)
    assert missing == [] and len(unexpected) == 16 and all(k.endswith(".alpha") for k in unexpected)  # 3+4+6+3
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(a(x)["logits"], r(x)["logits"])
    for blk in a.modules():
        if isinstance(blk, ARLBottleneck):
            blk.alpha.data.fill_(0.5)
    assert not torch.allclose(a(x)["logits"], r(x)["logits"])
    a3 = create_model("arl", 2, spatial_dims=3, width=4, stem="small").eval()
    assert a3(torch.randn(2, 1, 8, 8, 8))["features"].shape == (2, 128)


def test_arl_block_formula_and_alpha_gradient() -> None:
    torch.manual_seed(0)
    a = create_model("arl", 2, width=4, stem="small")
    blk = a.layer2[1]
    f = torch.randn(2, 32, 4, 4)
    mask = blk.mask(f)
    torch.testing.assert_close(mask.sum(dim=(2, 3)), torch.ones(2, 32))  # spatial softmax per channel
    x = torch.randn(2, 32, 4, 4)
    blk.alpha.data.fill_(0.7)
    h = blk.act(blk.bn1(blk.conv1(x)))
    h = blk.bn3(blk.conv3(blk.act(blk.bn2(blk.conv2(h)))))
    expected = torch.relu(x + h + 0.7 * blk.mask(h) * x)
    torch.testing.assert_close(blk(x), expected)
    loss = F.cross_entropy(a(torch.randn(2, 1, 16, 16))["logits"], torch.tensor([0, 1]))
    loss.backward()
    assert a.layer1[0].alpha.grad is not None and a.layer1[0].alpha.grad.abs().item() > 0


def test_arl_options() -> None:
    s = create_model("arl", 2, width=4, stem="small", attention="sigmoid", attend="residual")
    blk = s.layer1[0]
    assert blk.attention == "sigmoid" and blk.attend == "residual"
    torch.testing.assert_close(blk.mask(torch.zeros(1, 16, 2, 2)), torch.full((1, 16, 2, 2), 0.5))
    with pytest.raises(CadxConfigError, match="bottleneck"):
        create_model("arl", 2, depth=18)
    with pytest.raises(CadxConfigError, match="attention"):
        create_model("arl", 2, attention="tanh")


# ---------------------------------------------------------------- SDL
def test_sdl_single_mode_fuses_branch_probabilities() -> None:
    torch.manual_seed(0)
    m = create_model("sdl", 3, depth=18, width=4, stem="small").eval()
    x = torch.randn(5, 1, 16, 16)
    out = m(x)
    assert set(out) == {"features", "logits", "logits_a", "logits_b", "synergic_logits"}
    assert out["features"].shape == (5, 32) and out["synergic_logits"].shape == (2, 2)  # halves: (0,2), (1,3)
    mean_p = (out["logits_a"].softmax(1) + out["logits_b"].softmax(1)) / 2
    torch.testing.assert_close(out["logits"].softmax(1), mean_p)
    torch.testing.assert_close(out["features"], m.forward_features(x))
    fb = m.branch_b.forward_features(x)
    torch.testing.assert_close(out["synergic_logits"], m.synergic(torch.cat([out["features"][:2], fb[2:4]], 1)))
    assert m.branch_a.conv1.weight is not m.branch_b.conv1.weight
    assert not torch.equal(m.branch_a.conv1.weight, m.branch_b.conv1.weight)  # separate weights


def test_sdl_pair_mode_and_synergic_gradient() -> None:
    torch.manual_seed(0)
    m = create_model("sdl", 2, depth=18, width=4, stem="small", synergic_hidden=8)
    x, xb = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    out = m(x, xb)
    assert set(out) == {"features", "logits", "logits_a", "features_b", "logits_b", "synergic_logits"}
    assert out["synergic_logits"].shape == (4, 2) and out["logits_b"].shape == (4, 2)
    ya, yb = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1])
    parts = sdl_loss_terms(out, ya, yb)
    torch.testing.assert_close(parts["synergic"], synergic_loss(out["synergic_logits"], ya, yb))
    torch.testing.assert_close(parts["ce_b"], F.cross_entropy(out["logits_b"], yb))
    parts["synergic"].backward()
    assert m.branch_a.conv1.weight.grad.abs().sum() > 0 and m.branch_b.conv1.weight.grad.abs().sum() > 0
    assert m.branch_a.head.weight.grad is None
    with pytest.raises(CadxConfigError, match="equal batch"):
        m(x, xb[:2])
    with pytest.raises(CadxDataError, match="label_b"):
        sdl_loss_terms(out, ya)


def test_sdl_loss_terms_single_batch_pairs_halves() -> None:
    out = {"logits_a": torch.zeros(4, 3), "logits_b": torch.zeros(4, 3),
           "synergic_logits": torch.tensor([[0.0, 2.0], [1.0, 0.0]])}
    parts = sdl_loss_terms(out, torch.tensor([2, 0, 2, 1]))  # pairs (2, 2) same, (0, 1) different
    torch.testing.assert_close(parts["synergic"], F.cross_entropy(out["synergic_logits"], torch.tensor([1, 0])))
    assert parts["ce_a"].item() == pytest.approx(math.log(3)) and parts["ce_b"].item() == pytest.approx(math.log(3))


def test_synergic_targets_and_loss_values() -> None:
    ya, yb = torch.tensor([0, 1, 2, -1]), torch.tensor([0, 2, 2, 1])
    assert synergic_targets(ya, yb).tolist() == [1, 0, 1, -1]
    assert synergic_loss(torch.zeros(4, 2), ya, yb).item() == pytest.approx(math.log(2))
    logits = torch.tensor([[0.0, 3.0], [1.0, 0.0], [0.0, 0.0], [9.0, -9.0]])
    expected = F.cross_entropy(logits[:3], torch.tensor([1, 0, 1]))
    torch.testing.assert_close(synergic_loss(logits, ya, yb), expected)
    assert synergic_loss(torch.zeros(2, 2), torch.tensor([-1, 0]), torch.tensor([1, -1])).item() == 0.0


def test_sdl_pretrained_resnet_into_both_branches(tmp_path) -> None:
    torch.manual_seed(0)
    src = create_model("resnet18", 2, width=4)
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    m = create_model("sdl", 2, depth=18, width=4, pretrained_path=path)
    torch.testing.assert_close(m.branch_a.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    torch.testing.assert_close(m.branch_b.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    torch.testing.assert_close(m.branch_b.head.weight, src.head.weight)
    with pytest.raises(CadxConfigError, match="num_classes"):
        create_model("sdl", 0, depth=18, width=4)
