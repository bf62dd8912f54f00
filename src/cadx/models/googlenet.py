"""GoogLeNet / Inception v1 (Szegedy et al. 2015, Table 1), the third "milestone" baseline of paper 001.

Layout (Caffe ``bvlc_googlenet``, the one DIGITS trains — paper 001 reports its "loss1/loss2" heads):
conv1 64@7×7/2 p3 → ReLU → max-pool 3/2 (ceil) → LRN → conv2 1×1 64 → ReLU → conv2 192@3×3 p1 → ReLU → LRN →
max-pool 3/2 → inception 3a, 3b → max-pool → 4a, 4b, 4c, 4d, 4e → max-pool → 5a, 5b → global average pool
(7×7 at 224 px) → ``features`` (B, 1024) → dropout 0.4 → ``head`` (K).
Inception branches: 1×1 | 1×1 → 3×3 | 1×1 → **5×5** (as the paper, not torchvision's 3×3) | max-pool 3/1 → 1×1,
each conv + ReLU, outputs concatenated. No batch norm (that is Inception v2).

Auxiliary classifiers on 4a (512 ch) and 4d (528 ch): avg-pool 5×5/3 (14 → 4 at 224 px) → 1×1 conv 128 → ReLU →
fc 1024 → ReLU → dropout 0.7 → fc K. They are returned as ``out["aux_logits"]`` (list of two (B, K)) **only in
training mode** and are not computed at inference (``eval()``); ``aux_ce`` in ``cadx.objectives`` weights them 0.3.

Input size: ``input_size=224`` (default) resizes any input to 224 px inside the model (the stride-32 stem leaves
a 2×2 map for 64 px inputs and 1×1 for 28–32 px, where the 5×5/3 aux pooling is impossible). With
``input_size=None`` the net runs natively (≥ 47 px): the aux heads use adaptive average pooling to 4×4 and the end
uses global average pooling, so FC shapes never depend on the input size.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from cadx.models.base import maybe_load_pretrained
from cadx.models.lenet_alexnet import InputSize, PaperNet, PaperNetOptions, caffe_lrn, check_model_args, paper_init
from cadx.models.registry import register_model

# (1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool proj) per module, Szegedy et al. 2015 Table 1
INCEPTION_CFG: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _conv_relu(cin: int, cout: int, k: int, padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=padding), nn.ReLU(inplace=True))


class Inception(nn.Module):
    """Inception v1 module: ``(B, in_ch, H, W) -> (B, c1 + c3 + c5 + cp, H, W)`` (spatial size preserved)."""

    def __init__(self, in_ch: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.branch1 = _conv_relu(in_ch, c1, 1)
        self.branch3 = nn.Sequential(_conv_relu(in_ch, c3r, 1), _conv_relu(c3r, c3, 3, padding=1))
        self.branch5 = nn.Sequential(_conv_relu(in_ch, c5r, 1), _conv_relu(c5r, c5, 5, padding=2))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), _conv_relu(in_ch, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


class AuxHead(nn.Module):
    """Auxiliary classifier: ``(B, in_ch, H, W) -> (B, K)``; pool 5×5/3 at the paper size, adaptive 4×4 otherwise."""

    def __init__(self, in_ch: int, num_classes: int, fixed_pool: bool, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, 3) if fixed_pool else nn.AdaptiveAvgPool2d(4)
        self.conv = _conv_relu(in_ch, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(self.pool(x)).flatten(1)
        return self.fc2(self.dropout(torch.relu(self.fc1(h))))


class GoogLeNet(PaperNet):
    """Inception v1. Input ``(B, C, H, W)``; ``features`` (B, 1024); ``aux_logits`` in training mode only."""

    paper_size = 224

    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int | str | None = 224,
                 aux: bool = True, dropout: float = 0.4, aux_dropout: float = 0.7) -> None:
        super().__init__(num_classes, in_channels, input_size)
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(in_channels, 64, 7, stride=2, padding=3)), ("relu1", nn.ReLU(inplace=True)),
            ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)), ("norm1", caffe_lrn()),
            ("conv2_reduce", nn.Conv2d(64, 64, 1)), ("relu2_reduce", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(64, 192, 3, padding=1)), ("relu2", nn.ReLU(inplace=True)),
            ("norm2", caffe_lrn()), ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ]
        ch = 192
        for name, cfg in INCEPTION_CFG.items():
            if name in ("4a", "5a"):
                layers.append((f"pool{name[0]}", nn.MaxPool2d(3, 2, ceil_mode=True)))
            block = Inception(ch, *cfg)
            layers.append((f"inception{name}", block))
            ch = block.out_channels
        self.trunk = nn.Sequential(OrderedDict(layers))
        self._check_input_size()
        self.pool = nn.AdaptiveAvgPool2d(1)  # = the paper's 7×7/1 average pool at 224 px
        self.pre_head = nn.Dropout(dropout)
        self.feature_dim = ch  # 1024
        self._init_head()
        fixed = self.input_size == self.paper_size
        self.aux_heads = nn.ModuleDict(
            {"inception4a": AuxHead(512, num_classes, fixed, aux_dropout),
             "inception4d": AuxHead(528, num_classes, fixed, aux_dropout)}
        ) if aux and num_classes > 0 else None

    def _run(self, x: Tensor, with_aux: bool) -> tuple[Tensor, list[Tensor]]:
        h = self.prepare(x)
        aux: list[Tensor] = []
        for name, m in self.trunk.named_children():
            h = m(h)
            if with_aux and self.aux_heads is not None and name in self.aux_heads:
                aux.append(self.aux_heads[name](h))
        return self.pool(h).flatten(1), aux

    def forward_features(self, x: Tensor) -> Tensor:
        """Global-average-pooled inception 5b output ``(B, 1024)``."""
        return self._run(x, with_aux=False)[0]

    def forward(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:  # type: ignore[override]
        """``{"features", "logits"}`` plus ``"aux_logits"`` (list of 2 × (B, K)) when ``self.training``."""
        with_aux = self.training and self.aux_heads is not None
        f, aux = self._run(x, with_aux)
        out: dict[str, Tensor | list[Tensor]] = {"features": f}
        if self.head is not None:
            out["logits"] = self.head(self.pre_head(f))
        if with_aux:
            out["aux_logits"] = aux
        return out


class GoogLeNetOptions(PaperNetOptions):
    input_size: InputSize = 224
    aux: bool = True
    dropout: float = 0.4
    aux_dropout: float = 0.7


@register_model("googlenet", "GoogLeNet / Inception v1 (Szegedy 2015) with 2 aux heads in training, 2D, 224 px",
                options=GoogLeNetOptions)
def googlenet(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *,
              input_size: int | str | None, aux: bool, dropout: float, aux_dropout: float, init: str,
              pretrained_path: str | None) -> GoogLeNet:
    """``input_size=None`` = native resolution (≥ 47 px); ``aux=False`` drops the auxiliary classifiers.
    ``num_attributes`` is ignored (no attribute head)."""
    check_model_args("googlenet", spatial_dims)
    model = paper_init(GoogLeNet(num_classes, in_channels, input_size=input_size, aux=aux, dropout=dropout,
                                 aux_dropout=aux_dropout), init)
    return maybe_load_pretrained(model, pretrained_path)  # type: ignore[arg-type,return-value]


__all__ = ["INCEPTION_CFG", "AuxHead", "GoogLeNet", "GoogLeNetOptions", "Inception", "googlenet"]
