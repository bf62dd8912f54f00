"""2D U-Net of thesis A.3 (Buda, Saha, Mazurowski 2019), the LGG FLAIR-abnormality segmenter (``unet``).

Architecture (A.3 §3.1 Fig. 2 and the authors' Keras code, ``brain-segmentation/skull-stripping/net.py``):
four encoder levels of two 3×3 conv + BN + ReLU with ``base_filters·2^l`` filters (32, 64, 128, 256), each
followed by a 2×2 max-pool; a bottleneck of two convs with ``16·base_filters`` (512) filters; four decoder
levels, each a 2×2/2 **transposed convolution** ("up-convolutional layers", not upsample+conv) to the level's
width, concatenation with the encoder skip, and two 3×3 conv + BN + ReLU; a final 1×1 conv to ``S`` channels.
The Keras code has a ``batch_norm`` switch (off there); cadx defaults to ``batch_norm=True`` (BN before ReLU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, maybe_load_pretrained
from cadx.models.registry import PretrainedOptions, register_model

__all__ = ["UNet", "conv_block"]


def conv_block(in_ch: int, out_ch: int, batch_norm: bool = True) -> nn.Sequential:
    """Two 3×3 'same' convs, each followed by BN (optional) and ReLU: ``(B, in, H, W) -> (B, out, H, W)``.

    With BN the convs have no bias (BN's shift replaces it); without BN they do, as in the Keras code.
    """
    layers: list[nn.Module] = []
    for c_in in (in_ch, out_ch):
        layers.append(nn.Conv2d(c_in, out_ch, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(CadxModel):
    """2D U-Net ``(B, C, H, W) -> {"seg_logits": (B, S, H, W), "features": (B, 16·base), "logits"?: (B, K)}``.

    Args:
        num_classes: K > 0 adds a classification head (global average pool of the bottleneck → dropout → FC),
            for multi-task use; 0 = segmentation only (no ``"logits"``).
        in_channels: 3 for the LGG inputs (pre-contrast, FLAIR, post-contrast) or FLAIR with its two neighbour
            slices (A.3's FLAIR-only network); any C ≥ 1 works.
        num_seg_classes: S. 1 (default) = one foreground logit: apply a **sigmoid** (the ``dice``/``seg_ce``
            losses do, as the Keras model's sigmoid output + Dice loss); S ≥ 2 = **softmax** over S classes.
            The model returns logits, never probabilities.
        base_filters: filters of the first level (32); level ``l`` has ``base·2^l``, the bottleneck ``16·base``.
        levels: encoder levels (4 in A.3), each halving the resolution.
        batch_norm: BN after every 3×3 conv (default True).
        dropout: dropout before the classification head (0 = none).

    Inputs whose H or W is not a multiple of ``2^levels`` are zero-padded (bottom/right) and the output is
    cropped back, so ``seg_logits`` always has the input's H × W.
    """

    def __init__(self, num_classes: int = 0, in_channels: int = 3, num_seg_classes: int = 1, base_filters: int = 32,
                 levels: int = 4, batch_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__(num_classes, in_channels, check_spatial_dims(2, "unet", (2,)))
        if num_seg_classes < 1 or base_filters < 1 or levels < 1:
            raise CadxConfigError(f"unet: need num_seg_classes, base_filters, levels >= 1, got "
                                  f"{num_seg_classes}, {base_filters}, {levels}")
        self.num_seg_classes, self.levels = int(num_seg_classes), int(levels)
        widths = [base_filters * 2 ** i for i in range(levels)]
        self.widths = widths
        self.encoders = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.encoders.append(conv_block(c, w, batch_norm))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(c, 2 * c, batch_norm)
        self.upconvs = nn.ModuleList()
        self.decoders = nn.ModuleList()
        c = 2 * c
        for w in reversed(widths):
            self.upconvs.append(nn.ConvTranspose2d(c, w, kernel_size=2, stride=2))
            self.decoders.append(conv_block(2 * w, w, batch_norm))
            c = w
        self.seg_head = nn.Conv2d(c, num_seg_classes, kernel_size=1)
        self.feature_dim = 2 * widths[-1]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._init_head()

    def _pad(self, x: Tensor) -> Tensor:
        m = 2 ** self.levels
        ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
        return F.pad(x, (0, pw, 0, ph)) if ph or pw else x

    def encode(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Skips ``[(B, base·2^l, H/2^l, W/2^l)]`` and the bottleneck ``(B, 16·base, H/2^L, W/2^L)`` of the
        padded input."""
        self.check_input(x)
        skips = []
        h = self._pad(x)
        for enc in self.encoders:
            h = enc(h)
            skips.append(h)
            h = self.pool(h)
        return skips, self.bottleneck(h)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, 16·base)``: global average of the bottleneck."""
        return self.encode(x)[1].mean(dim=(2, 3))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        skips, h = self.encode(x)
        feats = h.mean(dim=(2, 3))
        for up, dec, skip in zip(self.upconvs, self.decoders, reversed(skips), strict=True):
            h = dec(torch.cat([up(h), skip], dim=1))  # Keras order: up-sampled map first
        seg = self.seg_head(h)[..., : x.shape[-2], : x.shape[-1]]
        out = {"seg_logits": seg, "features": feats}
        if self.head is not None:
            out["logits"] = self.head(self.dropout(feats))
        return out


class UNetOptions(PretrainedOptions):
    """Options of ``unet`` (see :class:`UNet`)."""

    num_seg_classes: int = 1
    base_filters: int = 32
    levels: int = 4
    batch_norm: bool = True
    dropout: float = 0.0


@register_model("unet", "2D U-Net of thesis A.3 (32-256 filters, 4 levels, BN, transposed-conv decoder); "
                        "num_seg_classes=1 (sigmoid), optional classification head", options=UNetOptions)
def unet(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, num_seg_classes: int,
         base_filters: int, levels: int, batch_norm: bool, dropout: float, pretrained_path: str | None) -> UNet:
    """Factory of :class:`UNet`; ``spatial_dims != 2`` or attributes raise ``CadxConfigError``."""
    if num_attributes:
        raise CadxConfigError(f"unet has no attribute head (num_attributes={num_attributes})")
    check_spatial_dims(spatial_dims, "unet", (2,))
    model = UNet(num_classes, in_channels, num_seg_classes=num_seg_classes, base_filters=base_filters,
                 levels=levels, batch_norm=batch_norm, dropout=dropout)
    return maybe_load_pretrained(model, pretrained_path)  # type: ignore[return-value]
