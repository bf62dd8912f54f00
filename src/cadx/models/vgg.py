"""VGG-19 (Simonyan & Zisserman), the VGG baseline of DMRN's Table 2, for 2D or 3D inputs.

Layer names follow torchvision (``features.<i>``, ``classifier.0``/``classifier.3``), so a local
``vgg19``/``vgg19_bn`` ImageNet state_dict loads with ``pretrained_path=`` (the 1000-class layer is not used; our
classifier is ``head``).
"""

from __future__ import annotations

from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, conv_nd, maybe_load_pretrained, norm_nd, pool_nd
from cadx.models.registry import PretrainedOptions, register_model

__all__ = ["VGG", "VGG19_CFG"]

#: conv output channels at width 64; "M" = 2× max-pool
VGG19_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


class VGG(CadxModel):
    """VGG-19 on ``(B, C, H, W)`` or ``(B, C, D, H, W)``: 16 × 3×3 conv (+BN) + ReLU, 5 max-pools, 3 FC.

    Args:
        width: channels of the first block (64 = the standard net; 8–16 for CPU runs); all blocks scale.
        batch_norm: BN after every conv (``vgg19_bn``; default, it trains from scratch far more reliably).
        pool_size: adaptive average pool after the convs (7 = torchvision; 1 = global pooling — use for small
            inputs and CPU, it cuts the first FC from ``512·49`` to 512 inputs).
        fc_dim: width of the two hidden FC layers (4096 in the paper); ``feature_dim`` = ``fc_dim``.
        dropout: dropout after each hidden FC (0.5 in the paper).

    Small inputs: max-pools use ``ceil_mode=True`` so every input size ≥ 1 px survives the 5 halvings
    (28 → 14 → 7 → 4 → 2 → 1), and the adaptive pool then gives ``pool_size`` per axis (replicating a 1-px map).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2, width: int = 64,
                 batch_norm: bool = True, pool_size: int = 7, fc_dim: int = 4096, dropout: float = 0.5) -> None:
        super().__init__(num_classes, in_channels, check_spatial_dims(spatial_dims, "vgg19"))
        if width < 1 or pool_size < 1 or fc_dim < 1:
            raise CadxConfigError(f"vgg19 needs width, pool_size, fc_dim >= 1, got {width}, {pool_size}, {fc_dim}")
        conv, norm, maxpool = conv_nd(spatial_dims), norm_nd(spatial_dims), pool_nd("max", spatial_dims)
        layers: list[nn.Module] = []
        c = in_channels
        for v in VGG19_CFG:
            if v == "M":
                layers.append(maxpool(kernel_size=2, stride=2, ceil_mode=True))
                continue
            out = max(1, int(v) * width // 64)
            layers.append(conv(c, out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(norm(out))
            layers.append(nn.ReLU(inplace=True))
            c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = pool_nd("adaptiveavg", spatial_dims)(pool_size)
        flat = c * pool_size**spatial_dims
        self.classifier = nn.Sequential(nn.Linear(flat, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(fc_dim, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.feature_dim = fc_dim
        self._init_head()
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial) -> (B, fc_dim)``: the second hidden FC layer (after ReLU and dropout)."""
        self.check_input(x)
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class VGGOptions(PretrainedOptions):
    """Options of ``vgg19`` (see :class:`VGG`): ``pool_size=1`` and a small ``fc_dim`` for small inputs."""

    width: int = 64
    batch_norm: bool = True
    pool_size: int = 7
    fc_dim: int = 4096
    dropout: float = 0.5


@register_model("vgg19", "VGG-19 (BN by default), 2D or 3D; width=, pool_size=1 and fc_dim= for small inputs",
                options=VGGOptions)
def vgg19(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, width: int,
          batch_norm: bool, pool_size: int, fc_dim: int, dropout: float, pretrained_path: str | None) -> VGG:
    """Build ``VGG``; ``pretrained_path`` = a local torchvision-layout state_dict."""
    if num_attributes:
        raise CadxConfigError("vgg19 has no attribute head (num_attributes must be 0)")
    model = VGG(num_classes, in_channels, spatial_dims, width=width, batch_norm=batch_norm, pool_size=pool_size,
                fc_dim=fc_dim, dropout=dropout)
    maybe_load_pretrained(model, pretrained_path)
    return model
