"""SCNet (Pan et al., ICIP 2019): multi-task segmentation + classification of renal tumours (``scnet``).

BNet = the PSPNet trunk (dilated ResNet-50 + PPM, :mod:`cadx.models.pspnet`) whose PPM output ``X`` is shared by
SegNet and ClsNet (§II-A). SegNet's 2-step strategy (§II-C, Eq. 1)::

    Y = Φ2(Φ1(X) × F(X) + F(X))

Choices where the paper is silent (Fig. 1–3 are not in the text):

- ``Φ1`` (2-class foreground classifier) = 3×3 conv → 32 + BN + ReLU + 1×1 conv → 2 logits; the multiplier
  is its **softmax foreground probability** ``p = softmax(Φ1(X))[:, 1:2]`` (B, 1, h, w), broadcast over F's
  32 channels; gradients flow through ``p`` (not detached).
- ``F`` = 3×3 conv → 32 + BN + ReLU ("the 32-channel convolution layer"); ``Φ2`` = 1×1 conv 32 → S.
- Everything runs at the trunk's resolution (H/os × W/os); the logits are bilinearly up-sampled to H × W.
- ``two_step=False`` (the "ternary loss" ablation of Table I): ``Y = Φ2(F(X))``, no Φ1, no binary output.
- ClsNet ("several residual blocks"): ``cls_blocks`` basic residual blocks (the first stride 2, to
  ``cls_channels`` = stage-4 channels / 4), global average pool, dropout, FC → K. Patient-level majority
  voting over slices judged to contain tumour is done in evaluation, not here.
- Output stride 2 by default: "decrease the number of pooling layer and avoid … convolutional layers with
  stride 2" for 150 × 150 inputs is read as: keep the 7×7/2 stem conv, drop the max-pool and stage 2's stride;
  stages 3–4 dilated 2 and 4 ("dilated convolution is also applied").
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import maybe_load_pretrained
from cadx.models.pspnet import PSPTrunk, check_trunk_options, upsample_to
from cadx.models.registry import PretrainedOptions, register_model
from cadx.registry import IntText, IntTuple

__all__ = ["ResidualBlock", "SCNet"]


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """Basic residual block ``relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x))``; the shortcut is a 1×1
    conv + BN when ``stride > 1`` or the channel count changes. ``(B, c_in, h, w) -> (B, c_out, ⌈h/s⌉, ⌈w/s⌉)``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(y + self.shortcut(x))


class SCNet(PSPTrunk):
    """SCNet ``(B, C, H, W) ->`` dict with

    - ``"seg_logits"`` (B, S, H, W): Φ2's output Y (S = ``num_seg_classes``, 3 = background/kidney/tumour);
    - ``"seg_binary_logits"`` (B, 2, H, W): Φ1's background/foreground logits (only when ``two_step``);
    - ``"features"`` (B, D): global average of the shared PPM output X, D = ``ppm.out_channels``;
    - ``"logits"`` (B, K): ClsNet (only when ``num_classes > 0``; SCNet uses K = 3: normal/benign/malignant).

    Args: ``depth`` (50; 18/34 for CPU), ``width`` (64 = ResNet-50; 8–16 for CPU), ``output_stride`` (2),
    ``seg_channels`` (32, F's channels), ``cls_blocks`` (2), ``cls_channels`` (None = stage-4 channels / 4),
    ``dropout`` (0.1, before the ClsNet FC), ``two_step`` (True).
    """

    def __init__(self, num_classes: int = 3, in_channels: int = 2, num_seg_classes: int = 3, depth: int = 50,
                 width: int = 64, output_stride: int = 2, ppm_ratios: tuple[int, ...] = (2, 4, 8),
                 two_step: bool = True, seg_channels: int = 32, cls_blocks: int = 2,
                 cls_channels: int | None = None, dropout: float = 0.1) -> None:
        super().__init__(num_classes, in_channels, depth, width, output_stride, ppm_ratios)
        if num_seg_classes < 2 or seg_channels < 1 or cls_blocks < 1:
            raise CadxConfigError(f"scnet: need num_seg_classes >= 2, seg_channels >= 1, cls_blocks >= 1, got "
                                  f"{num_seg_classes}, {seg_channels}, {cls_blocks}")
        self.num_seg_classes, self.two_step = int(num_seg_classes), bool(two_step)
        c = self.ppm.out_channels
        self.f = nn.Sequential(*_conv_bn_relu(c, seg_channels))
        self.phi1: nn.Module | None = None
        if self.two_step:
            self.phi1 = nn.Sequential(*_conv_bn_relu(c, seg_channels), nn.Conv2d(seg_channels, 2, 1))
        self.phi2 = nn.Conv2d(seg_channels, self.num_seg_classes, 1)
        self.cls_net: nn.Module | None = None
        if self.num_classes > 0:
            cc = int(cls_channels) if cls_channels else self.hidden
            blocks = [ResidualBlock(c, cc, stride=2)] + [ResidualBlock(cc, cc) for _ in range(cls_blocks - 1)]
            self.cls_net = nn.Sequential(*blocks)
            self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.head = nn.Linear(cc, self.num_classes)

    def segment(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """SegNet on the shared map ``z`` (B, D, h, w): ``(Y (B, S, h, w), Φ1 logits (B, 2, h, w) or None)``."""
        fx = self.f(z)
        if self.phi1 is None:
            return self.phi2(fx), None
        b = self.phi1(z)
        p = torch.softmax(b, dim=1)[:, 1:2]
        return self.phi2(p * fx + fx), b

    def classify(self, z: Tensor) -> Tensor:
        """ClsNet on the shared map ``z``: ``(B, K)`` logits."""
        assert self.cls_net is not None and self.head is not None
        return self.head(self.dropout(self.cls_net(z).mean(dim=(2, 3))))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.shared(x)
        y, b = self.segment(z)
        out = {"seg_logits": upsample_to(y, x), "features": z.mean(dim=(2, 3))}
        if b is not None:
            out["seg_binary_logits"] = upsample_to(b, x)
        if self.cls_net is not None:
            out["logits"] = self.classify(z)
        return out


class SCNetOptions(PretrainedOptions):
    """Options of ``scnet`` (see :class:`SCNet`; ``ppm_ratios`` also as ``"2,4,8"``)."""

    num_seg_classes: int = 3
    depth: Annotated[Literal[18, 34, 50, 101], IntText] = 50
    width: int = 64
    output_stride: int = 2
    ppm_ratios: IntTuple = (2, 4, 8)
    two_step: bool = True
    seg_channels: int = 32
    cls_blocks: int = 2
    cls_channels: int | None = None
    dropout: float = 0.1


@register_model("scnet", "SCNet multi-task: PSPNet trunk + 2-step SegNet Y=Φ2(Φ1(X)·F(X)+F(X)) + residual ClsNet; "
                         "two_step=, width=, depth=", options=SCNetOptions)
def scnet(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, num_seg_classes: int,
          depth: int, width: int, output_stride: int, ppm_ratios: tuple[int, ...], two_step: bool,
          seg_channels: int, cls_blocks: int, cls_channels: int | None, dropout: float,
          pretrained_path: str | None) -> SCNet:
    """Factory of :class:`SCNet` (inputs: 2 channels = the CTA and CTU phases in the paper; any C works)."""
    check_trunk_options("scnet", spatial_dims, num_attributes)
    model = SCNet(num_classes, in_channels, num_seg_classes=num_seg_classes, depth=depth, width=width,
                  output_stride=output_stride, ppm_ratios=ppm_ratios, two_step=two_step, seg_channels=seg_channels,
                  cls_blocks=cls_blocks, cls_channels=cls_channels, dropout=dropout)
    return maybe_load_pretrained(model, pretrained_path)  # type: ignore[return-value]
