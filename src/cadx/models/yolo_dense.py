"""Single-stage YOLO-style detector with a DenseNet trunk (thesis A.8, Buda et al. 2021), ``yolo_dense``.

Architecture (A.8 §2 and the authors' ``duke-dbt-detection/dense_yolo.py``): a 5×5 stem conv + BN + ReLU + 2×2
max-pool, then MONAI DenseNet dense blocks (``monai.networks.nets.densenet._DenseBlock``, BN-ReLU-1×1-BN-ReLU-3×3
layers) separated by MONAI transitions (1×1 conv halving the channels + 2×2 average pool), a final BN + ReLU and
a 3×3 conv to **5 channels per output cell**. The output grid's cell is ``cell_size = 2 ** len(block_config)``
input pixels (stem pool + one pool per transition); an input whose H or W is not a multiple of it is refused.

Per cell, one box: channel 0 = objectness logit (probability = sigmoid), channels 1–2 = the centre offset
``(dy, dx)`` from the cell centre in half-cells (decoded with tanh, so the centre stays in the cell:
``centre = (i + 0.5) · cell + tanh(t) · cell / 2``), channels 3–4 = the log-scale of height and width against a
**square anchor** of ``anchor`` px (``size = anchor · exp(t)``). The authors' code instead decodes the size as
``anchor · sigmoid(t)²``; the issue asks for log-scale, which also lets a box exceed the anchor.

Initialisation: Kaiming normal convs (ReLU gain), BN weight 1 / bias 0; the objectness bias of the last conv is
the focal-loss prior ``b = −log((1 − π) / π)`` (Lin et al. 2017; ``prior`` = π, natural log: the authors' code uses
``log10`` and puts the value on the last BN bias of all 5 channels, which we do not copy), the other 4 biases 0.

Output (``docs/contracts.md``): ``{"det_logits": (B, 5, H / cell, W / cell), "features": (B, D)}`` (features =
global average pool of the trunk). :func:`decode` turns ``det_logits`` into probabilities and boxes.
"""

from __future__ import annotations

import math

import torch
from monai.networks.nets.densenet import _DenseBlock, _Transition
from pydantic import Field
from torch import Tensor, nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models.base import check_spatial_dims
from cadx.models.registry import PretrainedOptions, register_model

__all__ = ["YoloDense", "decode", "prior_bias"]


def prior_bias(prior: float) -> float:
    """The objectness bias ``−log((1 − π) / π)`` whose sigmoid is ``π`` (Lin et al. 2017)."""
    if not 0.0 < prior < 1.0:
        raise CadxConfigError(f"yolo_dense: prior must be in (0, 1), got {prior}")
    return -math.log((1.0 - prior) / prior)


class YoloDense(nn.Module):
    """``(B, C, H, W) -> {"det_logits": (B, 5, H / cell, W / cell), "features": (B, D)}`` (see module docstring).

    Args:
        in_channels: C.
        growth_rate, block_config, num_init_features, bn_size: the DenseNet trunk (paper's grid-searched
            defaults: 8, (1, 3, 2, 6, 4), 16, 4; cadx's CPU default drops the last block: cell 16 px).
        anchor: side of the square anchor in input pixels.
        prior: π of the focal-prior objectness bias.
    """

    def __init__(self, in_channels: int = 1, growth_rate: int = 8, block_config: tuple[int, ...] = (1, 3, 2, 6),
                 num_init_features: int = 16, bn_size: int = 4, anchor: float = 32.0, prior: float = 0.01) -> None:
        super().__init__()
        if in_channels < 1 or not block_config or anchor <= 0:
            raise CadxConfigError("yolo_dense: need in_channels >= 1, a non-empty block_config and anchor > 0")
        self.in_channels = int(in_channels)
        self.cell_size = 2 ** len(block_config)
        self.anchor = float(anchor)
        self.prior = float(prior)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_init_features, 5, padding=2, bias=False),
                                   nn.BatchNorm2d(num_init_features), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)]
        ch = num_init_features
        for i, n in enumerate(block_config):
            layers.append(_DenseBlock(2, int(n), ch, bn_size, growth_rate, 0.0))
            ch += int(n) * growth_rate
            if i != len(block_config) - 1:
                layers.append(_Transition(2, ch, ch // 2))
                ch //= 2
        layers += [nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = ch
        self.head = nn.Conv2d(ch, 5, 3, padding=1, bias=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            assert self.head.bias is not None
            self.head.bias[0] = prior_bias(prior)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise CadxDataError(f"YoloDense expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}",
                                field="image")
        if x.shape[2] % self.cell_size or x.shape[3] % self.cell_size:
            raise CadxDataError(f"YoloDense: H and W must be multiples of the cell size {self.cell_size}, got "
                                f"{tuple(x.shape[2:])}", field="image")
        f = self.trunk(x)
        return {"det_logits": self.head(f), "features": f.mean(dim=(2, 3))}


def decode(det_logits: Tensor, cell_size: int, anchor: float) -> Tensor:
    """``(B, 5, Gh, Gw)`` logits → ``(B, 5, Gh, Gw)`` = objectness probability, centre y, centre x, height,
    width in input pixels (continuous coordinates: pixel i covers [i, i + 1))."""
    b, _, gh, gw = det_logits.shape
    iy = torch.arange(gh, dtype=det_logits.dtype, device=det_logits.device).view(1, gh, 1)
    ix = torch.arange(gw, dtype=det_logits.dtype, device=det_logits.device).view(1, 1, gw)
    half = cell_size / 2.0
    obj = torch.sigmoid(det_logits[:, 0])
    cy = (iy + 0.5) * cell_size + torch.tanh(det_logits[:, 1]) * half
    cx = (ix + 0.5) * cell_size + torch.tanh(det_logits[:, 2]) * half
    h = anchor * torch.exp(det_logits[:, 3].clamp(max=10.0))
    w = anchor * torch.exp(det_logits[:, 4].clamp(max=10.0))
    return torch.stack([obj, cy.expand(b, gh, gw), cx.expand(b, gh, gw), h, w], dim=1)


class YoloDenseOptions(PretrainedOptions):
    """Options of ``yolo_dense`` (see :class:`YoloDense`)."""

    growth_rate: int = Field(8, ge=1)
    block_config: list[int] = Field(default_factory=lambda: [1, 3, 2, 6])
    num_init_features: int = Field(16, ge=1)
    bn_size: int = Field(4, ge=1)
    anchor: float = Field(32.0, gt=0)
    prior: float = Field(0.01, gt=0, lt=1)


@register_model("yolo_dense", "thesis A.8 single-stage YOLO-style detector, MONAI DenseNet trunk, one box per "
                              "cell (objectness + offset + log-scale vs a square anchor), focal-prior bias",
                options=YoloDenseOptions)
def yolo_dense(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, growth_rate: int,
               block_config: list[int], num_init_features: int, bn_size: int, anchor: float, prior: float,
               pretrained_path: str | None) -> YoloDense:
    """Factory of :class:`YoloDense` (2D only; ``num_classes`` is ignored: one objectness per cell)."""
    if num_attributes:
        raise CadxConfigError(f"yolo_dense has no attribute head (num_attributes={num_attributes})")
    check_spatial_dims(spatial_dims, "yolo_dense", (2,))
    model = YoloDense(in_channels, growth_rate, tuple(block_config), num_init_features, bn_size, anchor, prior)
    if pretrained_path:
        state = torch.load(pretrained_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    return model
