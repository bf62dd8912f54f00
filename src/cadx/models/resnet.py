"""ResNet-10/18/34/50/101/152 for 2D and 3D inputs, with stage access for multi-scale models.

Layer names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``), so an
ImageNet state_dict saved to a local file loads with ``pretrained_path=`` (the classifier ``fc`` is not used:
our classifier is ``head``). Bottleneck blocks stride in the 3×3 conv (torchvision "v1.5").

The network is written here with ``torch.nn`` only; it is MONAI's ``monai.networks.nets.resnet.ResNet`` (shortcut
"B", ``bias_downsample=False``, ``feed_forward=False``) re-built: same module tree, state_dict keys and shapes,
forward maths and weight initialisation (so checkpoints from the MONAI-based version load unchanged and a seed
gives the same initial weights). Why by hand: importing any MONAI submodule runs MONAI's package ``__init__``
(scipy.signal, matplotlib, monai.transforms, ...), 1.56 s of the 4.85 s of ``cadx predict`` with the torch
backend (benchmarks/results/predict_latency/importtime_torch.txt; issue 19 item 3: ≤ 3 s).
``tests/test_resnet_native.py`` pins it to MONAI's ResNet (weights copied, equal outputs and gradients; equal
initial weights for a seed). ``block=`` still takes MONAI's block classes (ARL subclasses MONAI's bottleneck).
"""

from __future__ import annotations

from typing import Any, Literal, cast

from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, conv_nd, maybe_load_pretrained, norm_nd, pool_nd
from cadx.models.registry import PretrainedOptions, register_model

__all__ = ["RESNET_LAYERS", "STEMS", "ResNet", "ResNetBlock", "ResNetBottleneck", "ResNetOptions", "Stem",
           "resnet_stage_channels"]

#: depth → (block kind, residual units per stage)
RESNET_LAYERS: dict[int, tuple[str, list[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}

#: stem → (conv1 kernel, conv1 stride, use 3×3/2 max-pool). Total stem downsampling: imagenet 4×, pool 2×,
#: small 1×.
STEMS: dict[str, tuple[int, int, bool]] = {"imagenet": (7, 2, True), "pool": (3, 1, True), "small": (3, 1, False)}
Stem = Literal["imagenet", "pool", "small"]


class ResNetOptions(PretrainedOptions):
    """Options of ``resnet10`` … ``resnet152`` (see :class:`ResNet`)."""

    width: int = 64
    stem: Stem = "imagenet"
    dropout: float = 0.0


class ResNetBlock(nn.Module):
    """Basic residual block (MONAI's ``ResNetBlock``): ``(B, in_planes, *S) -> (B, planes, *S / stride)``.

    ``act(bn2(conv2(act(bn1(conv1(x))))) + shortcut(x))``, 3×3 convs (padding 1, no bias; ``conv1`` strides),
    ``shortcut`` = ``downsample`` (1×1 conv + BN) or the identity. Constructor = MONAI's (``norm`` must be
    ``"batch"``), so the two are interchangeable as ``ResNet(block=...)``.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, spatial_dims: int = 3, stride: int = 1,
                 downsample: nn.Module | None = None, norm: str = "batch") -> None:
        super().__init__()
        _check_norm(norm)
        conv, bn = conv_nd(spatial_dims), norm_nd(spatial_dims)
        self.conv1 = conv(in_planes, planes, kernel_size=3, padding=1, stride=stride, bias=False)
        self.bn1 = bn(planes)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        out: Tensor = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return cast(Tensor, self.act(out))


class ResNetBottleneck(nn.Module):
    """Bottleneck block (MONAI's ``ResNetBottleneck``): ``(B, in_planes, *S) -> (B, 4·planes, *S / stride)``.

    1×1 conv → BN → ReLU → 3×3 conv (strides, padding 1) → BN → ReLU → 1×1 conv to ``4·planes`` → BN, plus the
    shortcut (``downsample`` or identity), ReLU; convs without bias. Constructor = MONAI's (``norm="batch"``).
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, spatial_dims: int = 3, stride: int = 1,
                 downsample: nn.Module | None = None, norm: str = "batch") -> None:
        super().__init__()
        _check_norm(norm)
        conv, bn = conv_nd(spatial_dims), norm_nd(spatial_dims)
        self.conv1 = conv(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.conv3 = conv(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = bn(planes * self.expansion)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        out: Tensor = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return cast(Tensor, self.act(out))


def _check_norm(norm: str) -> None:
    if norm != "batch":
        raise CadxConfigError(f"cadx ResNet blocks use batch norm only, got norm={norm!r}")


def resnet_stage_channels(depth: int, width: int = 64) -> list[int]:
    """Output channels of the 4 stages: ``[w, 2w, 4w, 8w]`` × (4 for bottleneck depths ≥ 50, else 1)."""
    kind, _ = _layers(depth)
    exp = ResNetBottleneck.expansion if kind == "bottleneck" else ResNetBlock.expansion
    return [width * m * exp for m in (1, 2, 4, 8)]


def _layers(depth: int) -> tuple[str, list[int]]:
    if depth not in RESNET_LAYERS:
        raise CadxConfigError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
    return RESNET_LAYERS[depth]


class ResNet(CadxModel):
    """ResNet on ``(B, C, H, W)`` (``spatial_dims=2``) or ``(B, C, D, H, W)`` (``spatial_dims=3``).

    Args:
        depth: 10, 18, 34 (basic blocks) or 50, 101, 152 (bottleneck blocks).
        width: channels of the first stage (64 = the standard nets; 16–32 for CPU runs). Stage ``s`` has
            ``width·2^s`` (× 4 for bottleneck) output channels; ``feature_dim`` = the last of them
            (512·width/64 basic, 2048·width/64 bottleneck).
        stem: ``"imagenet"`` = 7×7/2 conv + 3×3/2 max-pool (4× downsampling; use for inputs ≥ ~112 px and to
            load ImageNet ``conv1`` weights); ``"small"`` = 3×3/1 conv, no pool (use for 28–64 px / 28³–64³
            inputs, which the ImageNet stem shrinks to 1–2 px at stage 4); ``"pool"`` = 3×3/1 conv + 3×3/2
            max-pool (2×: 28³ volumes give stages of 14/7/4/2 at an eighth of the small stem's 3D cost).
        block: residual block class to use instead of :class:`ResNetBlock` / :class:`ResNetBottleneck` (same
            constructor, an ``expansion`` attribute; MONAI's block classes fit; used by ARL).
        dropout: dropout probability before the head (0 = none).

    Any input size works (global average pooling); 28 px with the ImageNet stem gives a 1×1 stage 4.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2, depth: int = 18,
                 width: int = 64, stem: str = "imagenet", block: type[nn.Module] | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__(num_classes, in_channels, check_spatial_dims(spatial_dims, f"resnet{depth}"))
        kind, layers = _layers(depth)
        if stem not in STEMS:
            raise CadxConfigError(f"ResNet stem must be one of {sorted(STEMS)}, got {stem!r}")
        if width < 1:
            raise CadxConfigError(f"ResNet width must be >= 1, got {width}")
        k, s, pool = STEMS[stem]
        self.depth, self.width, self.stem = depth, width, stem
        conv, bn = conv_nd(spatial_dims), norm_nd(spatial_dims)
        # Built, and its weights initialised, in MONAI ResNet's order (same seed ⇒ same initial weights).
        self.conv1 = cast("nn.Conv2d | nn.Conv3d",
                          conv(in_channels, width, kernel_size=k, stride=s, padding=k // 2, bias=False))
        self.bn1 = bn(width)
        self.act = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = pool_nd("max", spatial_dims)(kernel_size=3, stride=2, padding=1) if pool \
            else nn.Identity()
        unit: Any = block or (ResNetBottleneck if kind == "bottleneck" else ResNetBlock)
        self.layer1 = self._make_layer(unit, width, width, layers[0], 1)
        self.layer2 = self._make_layer(unit, width * unit.expansion, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(unit, width * 2 * unit.expansion, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(unit, width * 4 * unit.expansion, width * 8, layers[3], 2)
        for m in self.modules():
            if isinstance(m, conv):
                nn.init.kaiming_normal_(cast(Tensor, m.weight), mode="fan_out", nonlinearity="relu")
            elif isinstance(m, bn):
                nn.init.constant_(cast(Tensor, m.weight), 1)
                nn.init.constant_(cast(Tensor, m.bias), 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)
        self.stage_channels = resnet_stage_channels(depth, width)
        self.feature_dim = self.stage_channels[-1]
        self.avgpool = pool_nd("adaptiveavg", spatial_dims)(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._init_head()

    def _make_layer(self, block: Any, in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        """One stage (MONAI ResNet's ``_make_layer``, shortcut "B" without bias): ``(B, in_planes, *S) ->
        (B, planes·expansion, *S / stride)`` by ``blocks`` units, the first with ``stride`` and, when the shape
        changes, a 1×1 conv + BN ``downsample`` (created before the unit, as MONAI does)."""
        conv, bn = conv_nd(self.spatial_dims), norm_nd(self.spatial_dims)
        out_planes = planes * int(block.expansion)
        downsample: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            downsample = nn.Sequential(conv(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                                       bn(out_planes))
        units = [block(in_planes=in_planes, planes=planes, spatial_dims=self.spatial_dims, stride=stride,
                       downsample=downsample)]
        units += [block(in_planes=out_planes, planes=planes, spatial_dims=self.spatial_dims)
                  for _ in range(1, blocks)]
        return nn.Sequential(*units)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The 4 stage outputs ``(B, stage_channels[s], *spatial / (stem_stride·2^s))``, s = 0..3."""
        self.check_input(x)
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs

    def pool(self, fmap: Tensor) -> Tensor:
        """Global average pool ``(B, C, *spatial) -> (B, C)``."""
        return self.avgpool(fmap).flatten(1)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial) -> (B, feature_dim)``: global average of stage 4."""
        return self.dropout(self.pool(self.forward_stages(x)[-1]))


def build_resnet(depth: int, num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *,
                 width: int, stem: str, dropout: float, pretrained_path: str | None) -> ResNet:
    """Factory behind ``resnet10`` … ``resnet152`` (options: :class:`ResNetOptions`)."""
    if num_attributes:
        raise CadxConfigError(f"resnet{depth} has no attribute head (num_attributes={num_attributes}); use mtmr")
    model = ResNet(num_classes, in_channels, spatial_dims, depth=depth, width=width, stem=stem, dropout=dropout)
    maybe_load_pretrained(model, pretrained_path)
    return model


def _register(depth: int) -> None:
    kind, _ = RESNET_LAYERS[depth]

    @register_model(f"resnet{depth}", f"ResNet-{depth} ({kind} blocks), 2D or 3D", options=ResNetOptions)
    def factory(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, width: int,
                stem: str, dropout: float, pretrained_path: str | None) -> ResNet:
        return build_resnet(depth, num_classes, in_channels, spatial_dims, num_attributes, width=width, stem=stem,
                            dropout=dropout, pretrained_path=pretrained_path)

    factory.__name__ = f"resnet{depth}"


for _d in RESNET_LAYERS:
    _register(_d)
