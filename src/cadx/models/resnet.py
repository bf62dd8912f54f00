"""ResNet-10/18/34/50/101/152 for 2D and 3D inputs (MONAI blocks), with stage access for multi-scale models.

Layer names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``), so an
ImageNet state_dict saved to a local file loads with ``pretrained_path=`` (the classifier ``fc`` is not used:
our classifier is ``head``). Bottleneck blocks stride in the 3×3 conv (torchvision "v1.5").
"""

from __future__ import annotations

from typing import Any, Literal, cast

from monai.networks.nets.resnet import ResNet as _MonaiResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, maybe_load_pretrained, pool_nd
from cadx.models.registry import PretrainedOptions, register_model

__all__ = ["RESNET_LAYERS", "STEMS", "ResNet", "ResNetOptions", "Stem", "resnet_stage_channels"]

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
        block: residual block class to use instead of the MONAI basic/bottleneck block (same constructor as
            ``monai.networks.nets.resnet.ResNetBottleneck``; used by ARL).
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
        net = _MonaiResNet(block=cast(Any, block or kind), layers=layers,
                           block_inplanes=[width * m for m in (1, 2, 4, 8)],
                           spatial_dims=spatial_dims, n_input_channels=in_channels, conv1_t_size=k,
                           conv1_t_stride=s, no_max_pool=not pool, feed_forward=False, bias_downsample=False)
        self.depth, self.width, self.stem = depth, width, stem
        self.conv1, self.bn1, self.act = net.conv1, net.bn1, net.act
        self.maxpool: nn.Module = net.maxpool if pool else nn.Identity()
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_channels = resnet_stage_channels(depth, width)
        self.feature_dim = self.stage_channels[-1]
        self.avgpool = pool_nd("adaptiveavg", spatial_dims)(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._init_head()

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
