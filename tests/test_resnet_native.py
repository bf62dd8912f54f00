"""cadx's hand-written ResNet (``cadx.models.resnet``, torch.nn only) is MONAI's ResNet as cadx built it before.

The reference is the previous implementation, kept here as :class:`MonaiBuiltResNet`: cadx's ResNet whose stem,
blocks and stages come from ``monai.networks.nets.resnet.ResNet`` (shortcut "B", ``bias_downsample=False``,
``feed_forward=False``), exactly as ``resnet.py`` built them until the MONAI import left the predict path.
For depth 10/18/50, 2D and 3D, every stem:

- the module tree is the same (names in order; every leaf's ``repr``: convs, norms, ReLU(inplace), pools);
- MONAI's state_dict loads into the new net with ``strict=True`` (same keys, shapes) and their outputs are
  identical in eval mode, as are one training step's loss, gradients and BatchNorm running statistics;
- built after the same seed, both have identical initial weights (head included): same creation order, same
  kaiming_normal(fan_out, relu) re-initialisation of the convs as MONAI's ResNet.

ARL (``block=`` a MONAI bottleneck subclass) builds the same net either way, and ``import cadx.models.resnet`` or
building ``resnet18`` through the registry imports no MONAI (a fresh interpreter).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from monai.networks.nets.resnet import ResNet as MonaiResNet
from torch import Tensor, nn

from cadx.models.attention import ARLBottleneck
from cadx.models.base import CadxModel, check_spatial_dims, pool_nd
from cadx.models.resnet import RESNET_LAYERS, STEMS, ResNet, resnet_stage_channels

WIDTH, IN_CH, CLASSES = 4, 2, 3


class MonaiBuiltResNet(ResNet):
    """The previous ``cadx.models.resnet.ResNet.__init__`` verbatim: the trunk taken from MONAI's ResNet."""

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2, depth: int = 18,
                 width: int = 64, stem: str = "imagenet", block: type[nn.Module] | None = None,
                 dropout: float = 0.0) -> None:
        CadxModel.__init__(self, num_classes, in_channels, check_spatial_dims(spatial_dims, f"resnet{depth}"))
        kind, layers = RESNET_LAYERS[depth]
        k, s, pool = STEMS[stem]
        net = MonaiResNet(block=block or kind, layers=layers,  # type: ignore[arg-type]
                          block_inplanes=[width * m for m in (1, 2, 4, 8)],
                          spatial_dims=spatial_dims, n_input_channels=in_channels, conv1_t_size=k,
                          conv1_t_stride=s, no_max_pool=not pool, feed_forward=False, bias_downsample=False)
        self.depth, self.width, self.stem = depth, width, stem
        self.conv1, self.bn1, self.act = net.conv1, net.bn1, net.act  # type: ignore[assignment]
        self.maxpool: nn.Module = net.maxpool if pool else nn.Identity()
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_channels = resnet_stage_channels(depth, width)
        self.feature_dim = self.stage_channels[-1]
        self.avgpool = pool_nd("adaptiveavg", spatial_dims)(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._init_head()


CASES = [(d, sd, stem) for d in (10, 18, 50) for sd in (2, 3) for stem in STEMS]


def _input(spatial_dims: int, seed: int) -> Tensor:
    """``(3, IN_CH, 32, 32)`` or ``(3, IN_CH, 32, 32, 32)``: stage 4 is ≥ 1 px for every stem."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, IN_CH, *[32] * spatial_dims, generator=g)


def _pair(depth: int, spatial_dims: int, stem: str, seed: int = 0,
          block: type[nn.Module] | None = None) -> tuple[ResNet, ResNet]:
    torch.manual_seed(seed)
    old = MonaiBuiltResNet(CLASSES, IN_CH, spatial_dims, depth=depth, width=WIDTH, stem=stem, block=block)
    torch.manual_seed(seed)
    new = ResNet(CLASSES, IN_CH, spatial_dims, depth=depth, width=WIDTH, stem=stem, block=block)
    return old, new


def _leaves(m: nn.Module) -> list[tuple[str, str]]:
    return [(n, repr(c)) for n, c in m.named_modules() if not list(c.children())]


@pytest.mark.parametrize(("depth", "spatial_dims", "stem"), CASES)
def test_same_module_tree_state_dict_and_initial_weights(depth: int, spatial_dims: int, stem: str) -> None:
    old, new = _pair(depth, spatial_dims, stem)
    assert [n for n, _ in new.named_modules()] == [n for n, _ in old.named_modules()]
    assert _leaves(new) == _leaves(old)
    sd_old, sd_new = old.state_dict(), new.state_dict()
    assert list(sd_new) == list(sd_old)
    assert [v.shape for v in sd_new.values()] == [v.shape for v in sd_old.values()]
    # same seed ⇒ the same initial weights (conv kaiming_normal fan_out, BN 1/0, the head's default init)
    for k, v in sd_old.items():
        assert torch.equal(sd_new[k], v), k
    assert "monai" not in type(new.layer1[0]).__module__


@pytest.mark.parametrize(("depth", "spatial_dims", "stem"), CASES)
def test_monai_weights_load_strictly_and_give_identical_outputs_and_gradients(depth: int, spatial_dims: int,
                                                                           stem: str) -> None:
    old, new = _pair(depth, spatial_dims, stem, seed=0)
    torch.manual_seed(1)   # new gets other random weights first, so the copy below is what makes them equal
    new = ResNet(CLASSES, IN_CH, spatial_dims, depth=depth, width=WIDTH, stem=stem)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters, so eval mode tests them too
        for m in old.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)   # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 2.0)     # type: ignore[union-attr]
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    new.load_state_dict(old.state_dict(), strict=True)
    x = _input(spatial_dims, seed=2)

    old.eval(), new.eval()
    with torch.no_grad():
        a, b = old(x), new(x)
        stages_a, stages_b = old.forward_stages(x), new.forward_stages(x)
    assert set(a) == set(b) == {"features", "logits"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for sa, sb in zip(stages_a, stages_b, strict=True):
        assert torch.equal(sa, sb)

    old.train(), new.train()
    y = torch.tensor([0, 1, 2])
    loss_a = nn.functional.cross_entropy(old(x)["logits"], y)
    loss_b = nn.functional.cross_entropy(new(x)["logits"], y)
    loss_a.backward()
    loss_b.backward()
    assert torch.equal(loss_a, loss_b)
    grads_a = {n: p.grad for n, p in old.named_parameters()}
    for n, p in new.named_parameters():
        g = grads_a[n]
        assert p.grad is not None and g is not None, n
        assert torch.equal(p.grad, g), n
    for (n, ba), bb in zip(old.named_buffers(), new.buffers(), strict=True):   # BN running stats updated alike
        assert torch.equal(ba, bb), n


def test_arl_block_builds_the_same_net_as_with_monai() -> None:
    old, new = _pair(50, 2, "small", block=ARLBottleneck)
    assert _leaves(new) == _leaves(old)
    for (k, v), (k2, v2) in zip(old.state_dict().items(), new.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2), k
    assert {type(m) for m in new.layer3} == {ARLBottleneck}
    x = _input(2, seed=3)
    old.eval(), new.eval()
    with torch.no_grad():
        assert torch.equal(old(x)["logits"], new(x)["logits"])


def test_resnet_imports_no_monai() -> None:
    code = ("import sys, torch\n"
            "import cadx.models.resnet\n"
            "from cadx.models import create_model\n"
            "m = create_model('resnet18', 2, width=8, stem='small')\n"
            "m(torch.zeros(1, 1, 32, 32))\n"
            "print(sorted(k for k in sys.modules if k == 'monai' or k.startswith('monai.')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert res.stdout.strip() == "[]"
