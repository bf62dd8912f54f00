"""Plain 3D CNNs: ``cnn3d`` (DMRN's 3D-CNN baseline, after Dou et al.) and ``cnn3d_small`` (AdrenalMNIST3D)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, maybe_load_pretrained
from cadx.models.registry import PretrainedOptions, register_model
from cadx.registry import IntTuple

__all__ = ["CNN3D", "SmallCNN3D"]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm3d(cout),
                         nn.ReLU(inplace=True))


class CNN3D(CadxModel):
    """6 × (Conv3d 3³ + BN + ReLU) with a 2× max-pool after every second conv, then 3 FC layers.

    The paper gives only "6 3D conv layers + 3D BN + ReLU, 3 FC layers, cross-entropy"; our choices: channels
    ``(w, w, 2w, 2w, 4w, 4w)`` (``width`` w = 32), pools after convs 2/4/6 (``ceil_mode``, so any size ≥ 1
    works), adaptive average pool to ``pool_size``³ (2), FC ``4w·pool_size³ → fc_dims[0] → fc_dims[1] → K``
    with ReLU + dropout between. Input ``(B, C, D, H, W)``; ``"features"`` = the second FC output ``(B, fc_dims[1])``.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, pool_size: int = 2,
                 fc_dims: Sequence[int] = (256, 128), dropout: float = 0.5) -> None:
        super().__init__(num_classes, in_channels, 3)
        if len(fc_dims) != 2 or width < 1 or pool_size < 1:
            raise CadxConfigError(f"cnn3d needs width, pool_size >= 1 and two fc_dims, got {width}, {pool_size}, "
                                  f"{list(fc_dims)}")
        chans = [width, width, 2 * width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        c = in_channels
        for i, out in enumerate(chans):
            layers.append(_conv_bn_relu(c, out))
            if i % 2 == 1:
                layers.append(nn.MaxPool3d(2, ceil_mode=True))
            c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool3d(pool_size)
        self.classifier = nn.Sequential(
            nn.Linear(c * pool_size**3, fc_dims[0]), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc_dims[0], fc_dims[1]), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.feature_dim = int(fc_dims[1])
        self._init_head()

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W) -> (B, fc_dims[1])``."""
        self.check_input(x)
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class SmallCNN3D(CadxModel):
    """4 stages of (Conv3d 3³ + BN + ReLU) × ``convs_per_stage`` + 2× max-pool, channels 16/32/64/128.

    Sized for AdrenalMNIST3D (28³ or 64³): 28 → 14 → 7 → 4 → 2. Global average pool → ``"features"``
    ``(B, 8·width)`` → dropout → linear head. ``width`` (16) scales the stages ``(w, 2w, 4w, 8w)``.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16, convs_per_stage: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__(num_classes, in_channels, 3)
        if width < 1 or convs_per_stage < 1:
            raise CadxConfigError(f"cnn3d_small needs width, convs_per_stage >= 1, got {width}, {convs_per_stage}")
        stages: list[nn.Module] = []
        c = in_channels
        for out in (width, 2 * width, 4 * width, 8 * width):
            blocks = [_conv_bn_relu(c if i == 0 else out, out) for i in range(convs_per_stage)]
            stages.append(nn.Sequential(*blocks, nn.MaxPool3d(2, ceil_mode=True)))
            c = out
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.feature_dim = c
        self._init_head()

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W) -> (B, 8·width)``."""
        self.check_input(x)
        return self.dropout(self.avgpool(self.stages(x)).flatten(1))


def _check(name: str, spatial_dims: int, num_attributes: int) -> None:
    check_spatial_dims(spatial_dims, name, supported=(3,))
    if num_attributes:
        raise CadxConfigError(f"{name} has no attribute head (num_attributes must be 0)")


class CNN3DOptions(PretrainedOptions):
    """Options of ``cnn3d`` (``fc_dims`` also as ``"256,128"`` from the command line)."""

    width: int = 32
    pool_size: int = 2
    fc_dims: IntTuple = (256, 128)
    dropout: float = 0.5


class SmallCNN3DOptions(PretrainedOptions):
    """Options of ``cnn3d_small``."""

    width: int = 16
    convs_per_stage: int = 1
    dropout: float = 0.2


@register_model("cnn3d", "3D CNN baseline: 6 x (Conv3d+BN+ReLU) with pooling, 3 FC layers (DMRN Table 2)",
                options=CNN3DOptions)
def cnn3d(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, width: int,
          pool_size: int, fc_dims: tuple[int, ...], dropout: float, pretrained_path: str | None) -> CNN3D:
    """Build ``CNN3D`` (3D only: ``spatial_dims`` must be 3)."""
    _check("cnn3d", spatial_dims, num_attributes)
    model = CNN3D(num_classes, in_channels, width=width, pool_size=pool_size, fc_dims=list(fc_dims),
                  dropout=dropout)
    maybe_load_pretrained(model, pretrained_path)
    return model


@register_model("cnn3d_small", "small 3D CNN: 4 stages 16-128 channels, global pooling (AdrenalMNIST3D 28^3/64^3)",
                options=SmallCNN3DOptions)
def cnn3d_small(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, width: int,
                convs_per_stage: int, dropout: float, pretrained_path: str | None) -> SmallCNN3D:
    """Build ``SmallCNN3D`` (3D only)."""
    _check("cnn3d_small", spatial_dims, num_attributes)
    model = SmallCNN3D(num_classes, in_channels, width=width, convs_per_stage=convs_per_stage, dropout=dropout)
    maybe_load_pretrained(model, pretrained_path)
    return model
