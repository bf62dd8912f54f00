"""Segmentation models (``unet`` of thesis A.3, ``pspnet``, ``scnet``) and the SCNet loss, on tiny CPU inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models import MODELS, create_model
from cadx.models.pspnet import PyramidPooling, build_dilated_resnet, ppm_bins
from cadx.models.resnet import ResNet
from cadx.models.scnet import ResidualBlock
from cadx.objectives import LOSSES, build_objective
from cadx.objectives.scnet import SCNetLoss, scnet_objective_spec
from conftest import n_params

SMALL = {"depth": 18, "width": 8}  # CPU-sized trunk: stage-4 has 64 channels, PPM output 64 + 3·16 = 112


def x_in(b: int = 2, c: int = 3, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_registered() -> None:
    for name in ("unet", "pspnet", "scnet"):
        assert name in MODELS
    assert "scnet" in LOSSES


# -- U-Net (thesis A.3) ------------------------------------------------------------------------------------------
def test_unet_architecture_filters_bn_transposed_conv() -> None:
    m = create_model("unet", 0, in_channels=3)
    assert m.widths == [32, 64, 128, 256] and m.levels == 4
    enc_convs = [[c.out_channels for c in e if isinstance(c, nn.Conv2d)] for e in m.encoders]
    assert enc_convs == [[32, 32], [64, 64], [128, 128], [256, 256]]
    assert [c.out_channels for c in m.bottleneck if isinstance(c, nn.Conv2d)] == [512, 512]
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 2 * (4 + 1 + 4)
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.modules()) == 1 and m.pool.kernel_size == 2
    ups = list(m.upconvs)
    assert [u.out_channels for u in ups] == [256, 128, 64, 32]
    assert all(isinstance(u, nn.ConvTranspose2d) and u.kernel_size == (2, 2) and u.stride == (2, 2) for u in ups)
    # hand-counted layers: first conv (BN → no bias), first up-conv (512→256, 2×2, bias), 1×1 sigmoid head
    assert m.encoders[0][0].weight.numel() == 32 * 3 * 9 and m.encoders[0][0].bias is None
    assert n_params(ups[0]) == 512 * 256 * 4 + 256
    assert n_params(m.seg_head) == 32 * 1 + 1


def _keras_unet_params(c_in: int, s: int = 1) -> int:
    """Parameter count of the Keras net of A.3 (no BN, convs with bias), computed layer by layer."""
    conv = lambda i, o, k=3: i * o * k * k + o  # noqa: E731
    total, c = 0, c_in
    for w in (32, 64, 128, 256, 512):
        total += conv(c, w) + conv(w, w)
        c = w
    for w in (256, 128, 64, 32):
        total += conv(c, w, 2) + conv(2 * w, w) + conv(w, w)
        c = w
    return total + conv(32, s, 1)


def test_unet_without_bn_has_the_keras_parameter_count() -> None:
    assert _keras_unet_params(1) == 7_759_521  # the well-known count of this Keras U-Net on 1 channel
    assert n_params(create_model("unet", 0, in_channels=3, batch_norm=False)) == _keras_unet_params(3)
    # BN variant: conv biases dropped (18 convs of 3×3), γ and β added per BN channel
    bn_channels = 2 * (32 + 64 + 128 + 256) * 2 + 2 * 512
    assert n_params(create_model("unet", 0, in_channels=3)) == _keras_unet_params(3) - bn_channels + 2 * bn_channels


def test_unet_forward_shapes_and_head() -> None:
    m = create_model("unet", 0, in_channels=3, base_filters=8).eval()
    out = m(x_in())
    assert set(out) == {"seg_logits", "features"}
    assert out["seg_logits"].shape == (2, 1, 64, 64) and out["features"].shape == (2, 128)
    m2 = create_model("unet", 2, in_channels=3, base_filters=8, num_seg_classes=3).eval()
    out2 = m2(x_in())
    assert out2["seg_logits"].shape == (2, 3, 64, 64) and out2["logits"].shape == (2, 2)
    torch.testing.assert_close(m2.forward_features(x_in()), out2["features"])
    # features = global average of the bottleneck, which is at 1/16 resolution
    _, bott = m2.encode(x_in())
    assert bott.shape == (2, 128, 4, 4)
    torch.testing.assert_close(out2["logits"], m2.head(bott.mean(dim=(2, 3))))


def test_unet_pads_sizes_not_divisible_by_16() -> None:
    m = create_model("unet", 0, in_channels=1, base_filters=4).eval()
    x = x_in(1, 1, 50, 37)
    assert m(x)["seg_logits"].shape == (1, 1, 50, 37)
    # the crop keeps the top-left part of the padded input's prediction
    xp = F.pad(x, (0, 48 - 37, 0, 64 - 50))
    torch.testing.assert_close(m(x)["seg_logits"], m(xp)["seg_logits"][..., :50, :37])


def test_unet_with_dice_loss_backward() -> None:
    m = create_model("unet", 0, in_channels=3, base_filters=4)
    mask = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.7).long()
    loss, _ = build_objective({"dice": 1.0})(m(x_in(h=32, w=32)), {"mask": mask})
    loss.backward()
    assert m.encoders[0][0].weight.grad is not None and 0 < loss.item() < 1


def test_unet_bad_options() -> None:
    with pytest.raises(CadxConfigError):
        create_model("unet", 0, spatial_dims=3)
    with pytest.raises(CadxConfigError):
        create_model("unet", 0, bogus=1)
    with pytest.raises(CadxDataError):
        create_model("unet", 0, in_channels=3, base_filters=4)(x_in(c=1))


# -- PSPNet trunk ------------------------------------------------------------------------------------------------
def test_dilated_resnet50_strides_and_dilations() -> None:
    net = build_dilated_resnet(3, depth=50, width=8, output_stride=8)
    assert net.layer2[0].conv2.stride == (2, 2)
    for layer, d in ((net.layer3, 2), (net.layer4, 4)):
        assert layer[0].conv2.stride == (1, 1) and layer[0].downsample[0].stride == (1, 1)
        assert layer[0].conv2.dilation == (d // 2, d // 2)
        assert all(b.conv2.dilation == (d, d) and b.conv2.padding == (d, d) for b in list(layer)[1:])
    x = x_in()
    for os_, side in ((8, 8), (4, 16), (2, 32), (1, 64)):
        stages = build_dilated_resnet(3, depth=18, width=8, output_stride=os_).forward_stages(x)
        assert stages[-1].shape == (2, 64, side, side)
        assert stages[2].shape[-1] == side  # stages 3 and 4 keep the resolution (dilated, stride 1)
    with pytest.raises(CadxConfigError):
        build_dilated_resnet(3, output_stride=16)


def test_ppm_bins_and_shortcut() -> None:
    assert ppm_bins(16) == [8, 4, 2] and ppm_bins(19) == [9, 4, 2] and ppm_bins(6) == [3, 1, 1]
    ppm = PyramidPooling(16).eval()
    assert ppm.out_channels == 16 + 3 * 4 and ppm.bins(16, 12) == [(8, 6), (4, 3), (2, 1)]
    seen: list[tuple[int, ...]] = []
    for br in ppm.branches:
        br[0].register_forward_hook(lambda _m, inp, _o: seen.append(tuple(inp[0].shape[-2:])))
    x = torch.randn(2, 16, 16, 12, generator=torch.Generator().manual_seed(2))
    y = ppm(x)
    assert y.shape == (2, 28, 16, 12) and seen == [(8, 6), (4, 3), (2, 1)]
    torch.testing.assert_close(y[:, :16], x)  # the direct short-cut comes first, unchanged
    for k, (br, size) in enumerate(zip(ppm.branches, ppm.bins(16, 12), strict=True)):
        manual = F.interpolate(br(F.adaptive_avg_pool2d(x, size)), size=(16, 12), mode="bilinear")
        torch.testing.assert_close(y[:, 16 + 4 * k: 20 + 4 * k], manual)
    assert n_params(ppm.branches[0]) == 16 * 4 + 2 * 4  # 1×1 conv (no bias) + BN
    ppm.train()
    y1 = ppm(x[:1, :, :8, :8])  # batch of 1 with a 1×1 bin (8 // 8) trains without a BatchNorm error
    assert y1.shape == (1, 28, 8, 8) and torch.isfinite(y1).all()


def test_pspnet_forward_and_parameter_counts() -> None:
    m = create_model("pspnet", 0, in_channels=3, **SMALL).eval()
    out = m(x_in())
    assert set(out) == {"seg_logits", "features"}
    assert out["seg_logits"].shape == (2, 3, 64, 64) and out["features"].shape == (2, 112)
    assert m.shared(x_in()).shape == (2, 112, 8, 8)  # output stride 8
    assert m.classifier[0].weight.numel() == 112 * 16 * 9 and n_params(m.classifier[-1]) == 16 * 3 + 3
    m2 = create_model("pspnet", 4, in_channels=1, num_seg_classes=2, output_stride=4, **SMALL).eval()
    out2 = m2(x_in(c=1, h=48, w=40))
    assert out2["seg_logits"].shape == (2, 2, 48, 40) and out2["logits"].shape == (2, 4)
    # full-size PSPNet (ResNet-50 without fc + PPM + classifier), counted by hand
    full = create_model("pspnet", 0, in_channels=3)
    resnet50 = 25_557_032 - (2048 * 1000 + 1000)
    ppm = 3 * (2048 * 512 + 2 * 512)
    cls = (2048 + 3 * 512) * 512 * 9 + 2 * 512 + 512 * 3 + 3
    assert n_params(full) == resnet50 + ppm + cls == 43_174_467


def test_pspnet_loads_local_resnet_weights(tmp_path: Path) -> None:
    src = ResNet(0, 3, 2, depth=18, width=8)
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    m = create_model("pspnet", 0, in_channels=3, pretrained_path=str(path), **SMALL)
    torch.testing.assert_close(m.backbone.layer4[1].conv2.weight, src.layer4[1].conv2.weight)


# -- SCNet ------------------------------------------------------------------------------------------------------
def test_scnet_outputs_and_two_step_formula() -> None:
    m = create_model("scnet", 3, in_channels=3, **SMALL).eval()
    x = x_in()
    out = m(x)
    assert set(out) == {"seg_logits", "seg_binary_logits", "features", "logits"}
    assert out["seg_logits"].shape == (2, 3, 64, 64) and out["seg_binary_logits"].shape == (2, 2, 64, 64)
    assert out["features"].shape == (2, 112) and out["logits"].shape == (2, 3)
    z = m.shared(x)
    assert z.shape == (2, 112, 32, 32)  # default output stride 2 (SCNet: no pooling, no stride-2 stages)
    fx = m.f(z)
    assert fx.shape[1] == 32
    b = m.phi1(z)
    p = torch.exp(b[:, 1:2]) / torch.exp(b).sum(dim=1, keepdim=True)  # Φ1 foreground probability
    y = m.phi2(p * fx + fx)
    up = lambda t: F.interpolate(t, size=(64, 64), mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(out["seg_logits"], up(y))
    torch.testing.assert_close(out["seg_binary_logits"], up(b))
    torch.testing.assert_close(out["features"], z.mean(dim=(2, 3)))
    torch.testing.assert_close(m.forward_features(x), out["features"])
    # saturated Φ1: p ≈ 1 gives Φ2(2F), p ≈ 0 gives Φ2(F)
    with torch.no_grad():
        m.phi1[-1].bias.copy_(torch.tensor([-60.0, 60.0]))
        torch.testing.assert_close(m(x)["seg_logits"], up(m.phi2(2 * fx)))
        m.phi1[-1].bias.copy_(torch.tensor([60.0, -60.0]))
        torch.testing.assert_close(m(x)["seg_logits"], up(m.phi2(fx)))


def test_scnet_ablation_and_heads() -> None:
    m2 = create_model("scnet", 3, in_channels=3, **SMALL)
    m1 = create_model("scnet", 3, in_channels=3, two_step="false", **SMALL).eval()
    assert m1.phi1 is None
    phi1 = 112 * 32 * 9 + 2 * 32 + 32 * 2 + 2  # 3×3 conv (no bias) + BN + 1×1 conv → 2
    assert n_params(m2) - n_params(m1) == phi1 == n_params(m2.phi1)
    x = x_in()
    out = m1(x)
    assert "seg_binary_logits" not in out
    torch.testing.assert_close(out["seg_logits"], F.interpolate(m1.phi2(m1.f(m1.shared(x))), size=(64, 64),
                                                                mode="bilinear"))
    assert n_params(m2.phi2) == 32 * 3 + 3 and n_params(m2.f) == 112 * 32 * 9 + 2 * 32
    # ClsNet: residual blocks (first stride 2, 112 → 16) + FC; none without classes
    assert n_params(ResidualBlock(112, 16, 2)) == 112 * 16 * 9 + 16 * 16 * 9 + 112 * 16 + 3 * 2 * 16
    assert n_params(ResidualBlock(16, 16)) == 2 * 16 * 16 * 9 + 2 * 2 * 16
    assert len(m2.cls_net) == 2 and m2.head.weight.shape == (3, 16)
    m0 = create_model("scnet", 0, in_channels=3, **SMALL)
    assert m0.cls_net is None and "logits" not in m0.eval()(x)
    big = create_model("scnet", 3, in_channels=2, num_seg_classes=3, **SMALL).eval()
    o = big(x_in(1, 2, 150, 150))  # the paper's 150×150 slices: 75×75 trunk maps, PPM bins 37, 18, 9
    assert o["seg_logits"].shape == (1, 3, 150, 150) and big.ppm.bins(75, 75) == [(37, 37), (18, 18), (9, 9)]
    with pytest.raises(CadxConfigError):
        create_model("scnet", 3, depth=152)


def test_scnet_ternary_loss_reaches_phi1_through_the_multiplier() -> None:
    m = create_model("scnet", 2, in_channels=1, output_stride=8, **SMALL)
    mask = torch.randint(0, 3, (2, 1, 32, 32), generator=torch.Generator().manual_seed(3))
    loss, parts = build_objective({"t": {"loss": "scnet", "part": "ternary"}})(m(x_in(c=1, h=32, w=32)),
                                                                              {"mask": mask})
    loss.backward()
    assert set(parts) == {"t"} and m.phi1[0].weight.grad is not None and m.phi1[0].weight.grad.abs().sum() > 0


# -- SCNet loss --------------------------------------------------------------------------------------------------
def _case() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float, float, float]:
    """B = 2, 1×2 pixels; row 2's mask is unknown (−1) and row 2's label is missing (−1)."""
    seg = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]], [[0.0, 2.0]]], [[[5.0, 5.0]], [[0.0, 0.0]], [[1.0, 1.0]]]])
    binl = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]], [[[9.0, 9.0]], [[0.0, 0.0]]]])
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 7.0]])
    mask = torch.tensor([[[[0, 2]]], [[[-1, -1]]]])
    label = torch.tensor([1, -1])
    ternary = (math.log(3.0) + (math.log(math.e + 1 + math.e ** 2) - 2.0)) / 2
    binary = (math.log(2.0) + math.log(4.0 / 3.0)) / 2  # pixel 2 is foreground (label 2 > 0)
    cls = math.log(math.e ** 2 + 2) - 0.0
    out = {"seg_logits": seg, "seg_binary_logits": binl, "logits": logits, "features": torch.zeros(2, 4)}
    return out, {"mask": mask, "label": label}, binary, ternary, cls


def test_scnet_loss_by_hand() -> None:
    out, batch, binary, ternary, cls = _case()
    loss = SCNetLoss()
    total = loss(out, batch)
    assert total.item() == pytest.approx(binary + ternary + cls, abs=1e-5)
    assert {k: round(v.item(), 5) for k, v in loss.last_parts.items()} == {
        "binary": round(binary, 5), "ternary": round(ternary, 5), "cls": round(cls, 5)}
    obj = build_objective(scnet_objective_spec())
    t, parts = obj(out, batch)
    assert list(parts) == ["binary", "ternary", "cls"] and t.item() == pytest.approx(total.item(), abs=1e-6)
    assert parts["ternary"].item() == pytest.approx(ternary, abs=1e-5)
    t2, _ = build_objective(scnet_objective_spec(binary=0.5, cls=2.0))(out, batch)
    assert t2.item() == pytest.approx(0.5 * binary + ternary + 2 * cls, abs=1e-5)


def test_scnet_loss_ablation_missing_labels_and_errors() -> None:
    out, batch, _, ternary, cls = _case()
    no_bin = {k: v for k, v in out.items() if k != "seg_binary_logits"}
    assert SCNetLoss()(no_bin, batch).item() == pytest.approx(ternary + cls, abs=1e-5)
    assert SCNetLoss(part="binary")(no_bin, batch).item() == 0.0
    unlabelled = {**batch, "label": torch.tensor([-1, -1])}
    logits = out["logits"].clone().requires_grad_(True)
    v = SCNetLoss(part="cls")({**out, "logits": logits}, unlabelled)
    v.backward()  # an empty term is a zero still connected to the graph
    assert v.item() == 0.0 and logits.grad is not None and logits.grad.abs().sum() == 0
    with pytest.raises(CadxDataError):
        SCNetLoss()(out, {**batch, "mask": torch.tensor([[[[0, 3]]], [[[0, 0]]]])})
    with pytest.raises(CadxDataError):
        SCNetLoss()(out, {**batch, "mask": torch.zeros(2, 1, 2, 2, dtype=torch.long)})
    with pytest.raises(CadxDataError):
        SCNetLoss()({k: v for k, v in out.items() if k != "logits"}, batch)
    with pytest.raises(CadxConfigError):
        build_objective({"scnet": {"part": "dice"}})
