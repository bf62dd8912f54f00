"""The encoder of the A.3 U-Net as a classifier (``unet_encoder``): one architecture for thesis A.4's three starts.

Thesis A.4 compares a CNN trained from scratch with fine-tuned pretrained networks. cadx makes the three starts
comparable by giving them the same network: the encoder levels and bottleneck of :class:`cadx.models.unet.UNet`
(same parameter names, ``encoders.<l>.*`` and ``bottleneck.*``), a global average pool, dropout and a linear
head. A ``unet`` state_dict (a segmentation U-Net) therefore loads into it as-is — the decoder keys are
unexpected and ignored — and so does a ``unet_encoder`` pretrained as a classifier on another task (its
``head.*`` is skipped when the class count differs).
"""

from __future__ import annotations

from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, maybe_load_pretrained
from cadx.models.registry import PretrainedOptions, register_model
from cadx.models.unet import conv_block

__all__ = ["UNetEncoder"]


class UNetEncoder(CadxModel):
    """``(B, C, H, W) -> {"features": (B, base·2^levels), "logits": (B, K)}``.

    ``levels`` conv blocks of ``base_filters·2^l`` filters, each followed by a 2×2 max-pool, then the
    bottleneck block (``2·base·2^(levels−1)`` filters); features = global average of the bottleneck
    (``feature_dim = base·2^levels``), logits = ``Linear(dropout(features))``. Any H, W ≥ 2^levels works
    (odd sizes are floored by the pools; no padding is needed because nothing is decoded).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, base_filters: int = 32, levels: int = 4,
                 batch_norm: bool = True, dropout: float = 0.5) -> None:
        super().__init__(num_classes, in_channels, 2)
        if base_filters < 1 or levels < 1:
            raise CadxConfigError(f"unet_encoder: need base_filters, levels >= 1, got {base_filters}, {levels}")
        widths = [base_filters * 2 ** i for i in range(levels)]
        self.encoders = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.encoders.append(conv_block(c, w, batch_norm))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(c, 2 * c, batch_norm)
        self.feature_dim = 2 * c
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._init_head()

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, feature_dim)``: global average of the bottleneck."""
        self.check_input(x)
        h = x
        for enc in self.encoders:
            h = self.pool(enc(h))
        return self.bottleneck(h).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.forward_features(x)
        out = {"features": f}
        if self.head is not None:
            out["logits"] = self.head(self.dropout(f))
        return out


class UNetEncoderOptions(PretrainedOptions):
    """Options of ``unet_encoder`` (see :class:`UNetEncoder`)."""

    base_filters: int = 32
    levels: int = 4
    batch_norm: bool = True
    dropout: float = 0.5


@register_model("unet_encoder", "encoder of the A.3 U-Net + global pool + dropout + linear head (A.4 starts: "
                                "loads unet weights by name)", options=UNetEncoderOptions)
def unet_encoder(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, base_filters: int,
                 levels: int, batch_norm: bool, dropout: float, pretrained_path: str | None) -> UNetEncoder:
    """Factory of :class:`UNetEncoder`; ``spatial_dims != 2`` or attributes raise ``CadxConfigError``."""
    if num_attributes:
        raise CadxConfigError(f"unet_encoder has no attribute head (num_attributes={num_attributes})")
    check_spatial_dims(spatial_dims, "unet_encoder", (2,))
    model = UNetEncoder(num_classes, in_channels, base_filters=base_filters, levels=levels,
                        batch_norm=batch_norm, dropout=dropout)
    return maybe_load_pretrained(model, pretrained_path)  # type: ignore[return-value]
