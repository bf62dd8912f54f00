"""Paper-001 nets: anatomy CNN (Table I), LeNet-5, AlexNet, GoogLeNet — shapes, hand-counted parameters,
aux heads, input-size handling and the visualisation helpers."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models import MODELS, create_model
from cadx.models.anatomy_cnn import AnatomyCNN
from cadx.models.googlenet import GoogLeNet, Inception
from cadx.models.lenet_alexnet import AlexNet, LeNet, trunk_out_size
from conftest import n_params

SIZES = (28, 32, 64, 227)


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"anatomy_cnn": create_model("anatomy_cnn", 5).eval(), "lenet": create_model("lenet", 5).eval(),
            "alexnet": create_model("alexnet", 5).eval(), "googlenet": create_model("googlenet", 5).eval()}


def test_registered_and_2d_only() -> None:
    for name in ("anatomy_cnn", "lenet", "alexnet", "googlenet"):
        assert name in MODELS
        with pytest.raises(CadxConfigError, match="spatial_dims"):
            create_model(name, 2, spatial_dims=3)
        with pytest.raises(CadxConfigError, match="unknown option"):
            create_model(name, 2, inputsize=64)  # a typo is not silently ignored


@pytest.mark.parametrize("name,dim,paper,full", [
    ("anatomy_cnn", 4096, 227, SIZES), ("lenet", 84, 32, SIZES), ("alexnet", 4096, 227, (28, 227)),
    ("googlenet", 1024, 224, (224,))])  # GoogLeNet's resized path (28 px) runs in the aux-head test
def test_output_shapes_all_sizes(nets: dict[str, nn.Module], name: str, dim: int, paper: int,
                                 full: tuple[int, ...]) -> None:
    m = nets[name]
    for s in SIZES:  # every input size becomes the paper size inside the model (the rest is size-independent)
        assert m.prepare(torch.zeros(1, 1, s, s + 1)).shape == (1, 1, paper, paper)
    with torch.no_grad():
        for s in full:
            out = m(torch.randn(1, 1, s, s))
            assert set(out) == {"features", "logits"}, (name, s)
            assert out["features"].shape == (1, dim) and out["logits"].shape == (1, 5)
            assert torch.equal(m.forward_features(torch.zeros(1, 1, s, s)), m(torch.zeros(1, 1, s, s))["features"])
    assert m.feature_dim == dim


def test_anatomy_cnn_table_i_layers_and_parameters() -> None:
    m = AnatomyCNN(num_classes=5, in_channels=1)
    t = m.trunk
    # Table I: filters 96/256/384/256, kernels 11/5/3/3, strides 4/2/2/2
    convs = [t.conv1, t.conv2, t.conv3, t.conv4]
    assert [c.out_channels for c in convs] == [96, 256, 384, 256]
    assert [c.kernel_size for c in convs] == [(11, 11), (5, 5), (3, 3), (3, 3)]
    assert [c.stride for c in convs] == [(4, 4), (2, 2), (2, 2), (2, 2)]
    assert m.layer_names == ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "conv3", "relu3", "conv4",
                             "relu4"]
    assert isinstance(t.norm1, nn.LocalResponseNorm) and (t.pool1.kernel_size, t.pool1.stride) == (3, 2)
    assert not any(isinstance(x, nn.Dropout) for x in m.modules())  # §III: fc5 has ReLU only
    # hand counts: weights + biases
    assert n_params(t.conv1) == 96 * 1 * 11 * 11 + 96 == 11_712
    assert n_params(t.conv2) == 256 * 96 * 5 * 5 + 256 == 614_656
    assert n_params(t.conv3) == 384 * 256 * 3 * 3 + 384 == 885_120
    assert n_params(t.conv4) == 256 * 384 * 3 * 3 + 256 == 884_992
    assert n_params(m.fc5) == 4096 * 4096 + 4096 == 16_781_312  # 256×4×4 = 4096 inputs at 227 px
    assert n_params(m.head) == 4096 * 5 + 5
    assert n_params(m) == 19_198_277
    assert n_params(AnatomyCNN(5, in_channels=3, fc_units=8).trunk.conv1) == 96 * 3 * 121 + 96 == 34_944


def test_anatomy_cnn_map_sizes_at_227_and_feature_maps(nets: dict[str, nn.Module]) -> None:
    m = nets["anatomy_cnn"]
    x = torch.randn(1, 1, 227, 227)
    with torch.no_grad():
        sizes = {ly: tuple(m.feature_maps(x, ly).shape[1:]) for ly in ("relu1", "pool1", "conv2", "conv3", "conv4")}
    assert sizes == {"relu1": (96, 55, 55), "pool1": (96, 27, 27), "conv2": (256, 14, 14), "conv3": (384, 7, 7),
                     "conv4": (256, 4, 4)}
    assert m.first_conv is m.trunk.conv1 and m.first_conv.weight.shape == (96, 1, 11, 11)
    with pytest.raises(CadxConfigError, match="unknown layer"):
        m.feature_maps(x, "conv9")


def test_resize_inside_model_equals_external_resize(nets: dict[str, nn.Module]) -> None:
    m = nets["anatomy_cnn"]
    native = AnatomyCNN(5, input_size="none").eval()
    native.load_state_dict(m.state_dict())
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a = m(x)["logits"]
        b = native(F.interpolate(x, size=(227, 227), mode="bilinear", align_corners=False))["logits"]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.fixture(scope="module")
def native_googlenet() -> GoogLeNet:
    return GoogLeNet(3, input_size=None, aux=False).eval()


@pytest.mark.parametrize("cls,min_size", [(AnatomyCNN, 19), (AlexNet, 67), (GoogLeNet, 47), (LeNet, 16)])
def test_native_resolution_min_size(cls: type, min_size: int, native_googlenet: GoogLeNet) -> None:
    if cls is GoogLeNet:
        m = native_googlenet
    else:
        m = (cls(3, input_size=None, fc_units=8) if cls is AnatomyCNN else cls(3, input_size=None)).eval()
    assert m.min_size == min_size
    with torch.no_grad():
        assert m(torch.randn(1, 1, min_size, min_size + 3))["logits"].shape == (1, 3)
    with pytest.raises(CadxDataError, match="input_size"):
        m(torch.randn(1, 1, min_size - 1, min_size - 1))
    with pytest.raises(CadxConfigError):
        cls(3, input_size=min_size - 1)
    with pytest.raises(CadxDataError):
        m(torch.randn(1, 2, 64, 64))  # wrong channel count


def test_trunk_size_arithmetic_matches_torch(native_googlenet: GoogLeNet) -> None:
    m = AnatomyCNN(2, input_size=None)
    for s in (19, 28, 64, 100):
        with torch.no_grad():
            got = m.trunk(torch.zeros(1, 1, s, s)).shape[-1]
        assert trunk_out_size(m.trunk.modules(), s) == got
    g = native_googlenet
    with torch.no_grad():
        assert g.feature_maps(torch.zeros(1, 1, 50, 50), "inception5b").shape[-1] == trunk_out_size(
            g.trunk.modules(), 50) == 1
    upto_4a = list(g.trunk.children())[:g.layer_names.index("inception4a") + 1]
    assert trunk_out_size(itertools.chain.from_iterable(c.modules() for c in upto_4a), 224) == 14  # aux input
    assert trunk_out_size(g.trunk.modules(), 224) == 7  # the paper's 7×7 average pool


def test_lenet_parameters_and_variants() -> None:
    m = LeNet(10)
    assert n_params(m.trunk.conv1) == 6 * 25 + 6 == 156
    assert n_params(m.trunk.conv2) == 16 * 6 * 25 + 16 == 2_416  # full C3 (the paper's sparse table: 1,516)
    assert n_params(m.c5) == 120 * 16 * 25 + 120 == 48_120
    assert n_params(m.f6) == 84 * 120 + 84 == 10_164
    assert n_params(m.head) == 84 * 10 + 10
    assert m.input_size == 32 and m.feature_maps(torch.zeros(1, 1, 28, 28), "pool2").shape == (1, 16, 5, 5)
    c = LeNet(10, variant="caffe")
    assert c.input_size == 28 and c.feature_dim == 500
    assert n_params(c.trunk.conv1) == 520 and n_params(c.trunk.conv2) == 50 * 20 * 25 + 50
    assert n_params(c.ip1) == 800 * 500 + 500
    with pytest.raises(CadxConfigError):
        LeNet(10, variant="lenet7")


def test_input_size_option_strings() -> None:  # CLI/YAML values arrive as strings
    assert AnatomyCNN(2, input_size="paper", fc_units=8).input_size == 227
    assert AnatomyCNN(2, input_size="native", fc_units=8).input_size is None
    assert AnatomyCNN(2, input_size="128", fc_units=8).input_size == 128
    assert LeNet(2, input_size="none").input_size is None
    with pytest.raises(CadxConfigError):
        AnatomyCNN(2, input_size="big", fc_units=8)


def test_alexnet_parameters_dropout_lrn(nets: dict[str, nn.Module]) -> None:
    m = nets["alexnet"]
    t = m.trunk
    assert [n_params(getattr(t, f"conv{i}")) for i in range(1, 6)] == [
        96 * 121 + 96, 256 * 96 * 25 + 256, 384 * 256 * 9 + 384, 384 * 384 * 9 + 384, 256 * 384 * 9 + 256]
    assert n_params(m.fc6) == 256 * 6 * 6 * 4096 + 4096 and n_params(m.fc7) == 4096 * 4096 + 4096
    drops = [x for x in m.modules() if isinstance(x, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)
    assert sum(isinstance(x, nn.LocalResponseNorm) for x in m.modules()) == 2
    with torch.no_grad():
        assert m.feature_maps(torch.zeros(1, 1, 227, 227), "pool5").shape == (1, 256, 6, 6)


def test_googlenet_inception_parameters() -> None:
    b = Inception(192, 64, 96, 128, 16, 32, 32)  # inception (3a)
    assert b.out_channels == 256
    assert n_params(b) == (192 * 64 + 64) + (192 * 96 + 96) + (96 * 128 * 9 + 128) + (192 * 16 + 16) \
        + (16 * 32 * 25 + 32) + (192 * 32 + 32) == 163_696
    assert b.branch5[1][0].kernel_size == (5, 5)  # the paper's 5×5, not torchvision's 3×3
def test_googlenet_layout(nets: dict[str, nn.Module]) -> None:
    g = nets["googlenet"]
    chans = {n: m.out_channels for n, m in g.trunk.named_children() if isinstance(m, Inception)}
    assert chans == {"inception3a": 256, "inception3b": 480, "inception4a": 512, "inception4b": 512,
                     "inception4c": 512, "inception4d": 528, "inception4e": 832, "inception5a": 832,
                     "inception5b": 1024}
    assert g.aux_heads is not None and g.aux_heads["inception4a"].fc1.in_features == 128 * 4 * 4


def test_googlenet_aux_heads_train_only(nets: dict[str, nn.Module]) -> None:
    g = nets["googlenet"]
    x = torch.randn(1, 1, 28, 28)
    g.train()
    try:
        with torch.no_grad():
            out = g(x)
    finally:
        g.eval()
    assert [a.shape for a in out["aux_logits"]] == [(1, 5), (1, 5)]
    with torch.no_grad():
        ev = g(x)
    assert "aux_logits" not in ev and ev["logits"].shape == (1, 5) and ev["features"].shape == (1, 1024)
    assert GoogLeNet(5, aux=False).aux_heads is None


def test_he_init_keeps_googlenet_signal_and_torch_init_shrinks_it() -> None:
    """``init="he"`` (default): conv weights have std √(2/fan_in), biases 0; the 22-layer GoogLeNet's features
    keep the input's scale, whereas PyTorch's default init shrinks them by orders of magnitude."""
    torch.manual_seed(0)
    he = create_model("googlenet", 6, input_size=None)
    conv = he.trunk.conv2
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert abs(float(conv.weight.std()) / (2 / fan_in) ** 0.5 - 1) < 0.02 and float(conv.bias.abs().max()) == 0.0
    torch.manual_seed(0)
    default = create_model("googlenet", 6, input_size=None, init="torch")
    x = torch.rand(4, 1, 64, 64)
    f_he = float(he.eval()(x)["features"].std())
    f_torch = float(default.eval()(x)["features"].std())
    assert f_he > 0.3 and f_torch < f_he / 20   # measured: 0.81 vs 0.011
    with pytest.raises(CadxConfigError, match="init"):
        create_model("alexnet", 6, init="xavier")
