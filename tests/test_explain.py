"""cadx.explain: Grad-CAM on tiny models with a known answer (2D and 3D), cross-checked by hand and against
monai.visualize.GradCAM; filters/feature maps via hooks; t-SNE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.explain import (
    default_cam_layer,
    default_perplexity,
    feature_maps_figure,
    first_layer_filters,
    first_layer_filters_figure,
    grad_cam,
    last_conv_layer,
    overlay_figure,
    tsne_figure,
)

PNG = b"\x89PNG\r\n\x1a\n"


class HalvesNet(nn.Module):
    """Logit 0 = mean of ReLU(conv(x * left half)), logit 1 = the same for the right half (2D or 3D).

    The depthwise conv has an identity kernel and no bias, so channel k of its output is the masked input itself:
    Grad-CAM for class 0 has weight 0 on channel 1, so its map is exactly zero on the right half, and vice versa.
    """

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(2, 2, 3, padding=1, groups=2, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[(slice(None), 0, *[1] * spatial_dims)] = 1.0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        w = x.shape[-1]
        left = torch.zeros_like(x)
        left[..., : w // 2] = 1
        a = torch.relu(self.conv(torch.cat([x * left, x * (1 - left)], dim=1)))
        logits = a.flatten(2).mean(dim=2)
        return {"logits": logits, "features": logits}


@pytest.mark.parametrize("dims", [2, 3])
def test_grad_cam_heat_follows_the_half_the_logit_reads(dims):
    g = torch.Generator().manual_seed(0)
    shape = (2, 1, 8, 8) if dims == 2 else (2, 1, 4, 8, 8)
    x = 0.5 + 0.5 * torch.rand(shape, generator=g)
    x[..., :4] += 1.0  # brighter left half: class 0 is predicted
    model = HalvesNet(dims).train()
    assert last_conv_layer(model, x) == "conv"
    h0 = grad_cam(model, x)  # default target = predicted class = 0
    assert h0.shape == (2, *shape[2:]) and h0.min() >= 0 and h0.max() == pytest.approx(1.0)
    assert np.all(h0[..., 4:] == 0) and np.all(h0[..., :4] > 0)
    # cam = w_0 * A_0 with w_0 > 0 constant, then min-max scaled: the left half equals the scaled input
    xl = x[:, 0, ..., :4].numpy()
    want = np.concatenate([xl / xl.reshape(2, -1).max(axis=1).reshape(2, *[1] * dims),
                           np.zeros_like(xl)], axis=-1)
    np.testing.assert_allclose(h0, want, atol=1e-6)
    h1 = grad_cam(model, x, target=1, layer="conv")
    assert np.all(h1[..., :4] == 0) and np.all(h1[..., 4:] > 0)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_upsamples_and_validates():
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(3, 2))
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    h = grad_cam(net, x, target=[0, 1, 1])
    assert h.shape == (3, 16, 16) and h.min() >= 0 and h.max() <= 1
    assert default_cam_layer(net, x) == "1"  # the ReLU'd 8x8 map; the 1x1 pooled map is not spatial
    with pytest.raises(CadxConfigError):
        grad_cam(net, x, layer="nope")
    with pytest.raises(CadxDataError):
        grad_cam(net, x, target=5)
    with pytest.raises(CadxConfigError):
        last_conv_layer(nn.Sequential(nn.Flatten(), nn.Linear(256, 2)), x)


class ConvPoolFC(nn.Module):
    """conv 3x3 (padding 1) → ReLU(inplace) → global mean → fc: Grad-CAM of ``act`` has a closed form.

    ``dy_c/dA_k(s) = W_fc[c, k] / |s|`` for every position, so ``w_k = W_fc[c, k] / |s|`` and
    ``cam = ReLU(sum_k W_fc[c, k] A_k) / |s|`` with ``A_k = ReLU(x ⋆ kernel_k + b_k)`` (no upsampling: same size).
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():  # class 0 reads channels 0 and 2, class 1 mostly channel 1
            self.fc.weight.copy_(torch.tensor([[1.0, -0.5, 0.3], [-0.2, 1.0, 0.5]]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))}


def test_grad_cam_equals_a_hand_computed_grad_cam():
    from scipy.signal import correlate2d

    model = ConvPoolFC()
    x = torch.rand(2, 1, 9, 11, generator=torch.Generator().manual_seed(3))
    k, b = model.conv.weight.detach().numpy()[:, 0].astype(np.float64), model.conv.bias.detach().numpy()
    w_fc = model.fc.weight.detach().numpy().astype(np.float64)
    want = []
    for i, c in enumerate([1, 0]):
        acts = np.stack([np.maximum(correlate2d(x[i, 0].numpy(), k[j], mode="same") + b[j], 0) for j in range(3)])
        cam = np.maximum(np.tensordot(w_fc[c], acts, axes=1) / acts[0].size, 0)
        assert cam.max() > cam.min()
        want.append((cam - cam.min()) / (cam.max() - cam.min()))
    got = grad_cam(model, x, target=[1, 0], layer="act")
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5)
    assert got.min() == 0 and got.max() == 1
    # a batch with one target per sample gives each sample's own map (MONAI's logits[:, idx] would mix them)
    # (to float rounding: a batch of 1 may take other conv kernels than a batch of 2; mixing would differ by ~1)
    np.testing.assert_allclose(got[1:], grad_cam(model, x[1:], target=0, layer="act"), rtol=0, atol=1e-6)


def test_grad_cam_core_is_monai_gradcam():
    import copy

    from monai.visualize import GradCAM

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    with torch.no_grad():
        net[4].weight[2] = torch.tensor([1.0, 0.5, -0.3, 0.8])
    x = torch.rand(3, 1, 16, 12, generator=torch.Generator().manual_seed(5))
    ours = grad_cam(net, x, target=2, layer="1")  # 8 x 6 map, bilinearly upsampled to 16 x 12
    ref = GradCAM(nn_module=copy.deepcopy(net), target_layers="1")(x, class_idx=2)[:, 0].numpy()
    assert ref.shape == ours.shape == (3, 16, 12)
    assert (ours.reshape(3, -1).max(1) == 1).all() and (ours.reshape(3, -1).min(1) == 0).all()
    np.testing.assert_allclose(ours, 1 - ref, atol=1e-6)  # MONAI's default normaliser maps (min, max) to (1, 0)


def test_grad_cam_leaves_the_model_as_it_was():
    model = ConvPoolFC().train()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.conv.bias.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = grad_cam(model, x, layer="act")
    np.testing.assert_array_equal(grad_cam(model, x, layer="act"), first)  # no hook piles up
    assert model.training and model.act.inplace
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight)) and model.conv.weight.grad is None
    assert model.conv.weight.requires_grad and not model.conv.bias.requires_grad
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


class ReusedReLU(nn.Module):
    """One ``nn.ReLU`` applied twice per forward pass (as in a residual unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.act(self.conv1(x))
        return {"logits": self.fc(self.act(a + self.conv2(a)).mean(dim=(2, 3)))}


def test_a_layer_that_runs_twice_is_refused_and_not_the_default():
    model = ReusedReLU()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(CadxConfigError, match="runs 2 times"):
        grad_cam(model, x, layer="act")
    assert default_cam_layer(model, x) == "conv2"


class SegAndClassify(nn.Module):
    """Encoder feeding both a classifier and a 1x1-conv segmentation head that runs last."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.dec = nn.Conv2d(4, 1, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = torch.relu(self.enc(x))
        return {"logits": self.fc(a.mean(dim=(2, 3))), "seg_logits": self.dec(a)}


def test_default_layer_is_the_last_one_the_score_depends_on():
    model = SegAndClassify()
    x = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    assert last_conv_layer(model, x) == "dec"
    assert default_cam_layer(model, x) == "enc"
    np.testing.assert_array_equal(grad_cam(model, x, target=1), grad_cam(model, x, target=1, layer="enc"))
    with pytest.raises(CadxConfigError, match="does not depend"):
        grad_cam(model, x, layer="dec")


def test_grad_cam_on_a_cadx_model_and_overlay(tmp_path):
    from cadx.models import create_model

    model = create_model("cnn3d_small", num_classes=2, spatial_dims=3)
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    h = grad_cam(model, x[0])  # unbatched (C, D, H, W) is accepted
    assert h.shape == (1, 16, 16, 16) and h.min() >= 0 and h.max() <= 1
    p3 = overlay_figure(x[0].numpy(), h[0], tmp_path / "cam3d.png", title="3D")
    p2 = overlay_figure(np.random.default_rng(0).random((3, 20, 20)), np.zeros((20, 20)), tmp_path / "cam2d.png")
    assert p3.read_bytes()[:8] == PNG and p2.read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(CadxDataError):
        overlay_figure(np.zeros((10, 10)), np.zeros((12, 12)), tmp_path / "bad.png")


def test_first_layer_filters_are_the_scaled_kernels(tmp_path):
    conv = nn.Conv2d(1, 4, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(36, dtype=torch.float32).reshape(4, 1, 3, 3))
        conv.weight[3] = 2.0  # a constant kernel is drawn mid-grey
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(4, 2, 3))
    tiles = first_layer_filters(model)
    assert tiles.shape == (4, 3, 3)
    np.testing.assert_allclose(tiles[0], np.arange(9).reshape(3, 3) / 8)
    assert np.all(tiles[3] == 0.5)
    rgb = first_layer_filters(nn.Sequential(nn.Conv2d(3, 6, 5)), max_filters=4)
    assert rgb.shape == (4, 5, 5, 3) and rgb.min() == 0 and rgb.max() == 1
    assert first_layer_filters(nn.Sequential(nn.Conv3d(1, 2, 3))).shape == (2, 3, 3)
    out = first_layer_filters_figure(model, tmp_path / "filters.png")
    assert out.read_bytes()[:8] == PNG


def test_feature_maps_figure_returns_the_hooked_activation(tmp_path):
    conv = nn.Conv2d(1, 20, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = torch.arange(1, 21, dtype=torch.float32)  # map k = (k + 1) * x
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(0))
    maps = feature_maps_figure(model, x, "0", tmp_path / "maps.png", max_maps=12)
    assert maps.shape == (12, 12, 12)
    np.testing.assert_allclose(maps[4], 5 * x[0].numpy(), rtol=1e-6)
    assert (tmp_path / "maps.png").read_bytes()[:8] == PNG
    with pytest.raises(CadxConfigError):
        feature_maps_figure(model, x, "3", tmp_path / "flat.png")  # (1, 20): no spatial axes
    with pytest.raises(CadxConfigError):
        feature_maps_figure(model, x, "missing", tmp_path / "m.png")


def test_tsne_figure_keeps_clusters_and_is_seeded(tmp_path):
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(0, 1, (20, 64)), rng.normal(0, 1, (20, 64)) + 6.0])
    labels = np.repeat([0, 1], 20)
    xy = tsne_figure(emb, labels, ["benign", "malignant"], tmp_path / "tsne.png", seed=3, title="demo")
    assert xy.shape == (40, 2)
    assert (tmp_path / "tsne.png").read_bytes()[:8] == PNG
    # every point's nearest neighbour in the map has its label (the clusters are far apart in 64-D)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(axis=1)] == labels).all()
    again = tsne_figure(emb, np.where(labels == 0, "benign", "malignant"), ["benign", "malignant"],
                        tmp_path / "tsne2.pdf", seed=3)
    np.testing.assert_allclose(again, xy)
    assert default_perplexity(10) == 3.0 and default_perplexity(1000) == 30.0
    with pytest.raises(CadxDataError):
        tsne_figure(emb[:2], labels[:2], ["a", "b"], tmp_path / "x.png")
    with pytest.raises(CadxDataError):
        tsne_figure(emb, labels + 5, ["a", "b"], tmp_path / "x.png")
