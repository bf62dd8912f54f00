"""PSPNet (Zhao et al. 2017) as configured by SCNet (Pan et al. 2019, §II-A/B): the segmentation baseline of
SCNet's Table I and SCNet's shared trunk (``pspnet``).

Trunk = a dilated ResNet (cadx :class:`~cadx.models.resnet.ResNet`, torchvision layer names, so local ImageNet
weights load under ``backbone.``) + a pyramid pooling module (PPM). Dilation is added in place, as PSPNet's own
code does (``_nostride_dilate``): a stage made stride-free with dilation ``d`` gets ``stride 1``, its first
3×3 conv dilation ``d/2`` (1 when ``d`` ≤ 2) and every other 3×3 conv dilation ``d`` (padding = dilation).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, maybe_load_pretrained
from cadx.models.registry import PretrainedOptions, register_model
from cadx.models.resnet import ResNet
from cadx.registry import IntText, IntTuple

__all__ = ["OUTPUT_STRIDES", "PSPNet", "PyramidPooling", "build_dilated_resnet", "dilate_stage",
           "ppm_bins"]

#: output stride → (keep the stem's 7×7 conv stride 2, keep the 3×3/2 max-pool, keep stage 2's stride 2).
#: Stages 3 and 4 are always stride-free with dilation 2 and 4 (PSPNet).
OUTPUT_STRIDES: dict[int, tuple[bool, bool, bool]] = {
    8: (True, True, True),     # PSPNet
    4: (True, False, True),    # max-pool removed
    2: (True, False, False),   # SCNet default: no pooling, no stride-2 conv after the stem
    1: (False, False, False),  # no down-sampling at all
}


def dilate_stage(stage: nn.Module, dilation: int) -> None:
    """Make a ResNet stage stride-free with ``dilation`` in place (PSPNet's ``_nostride_dilate``)."""
    for m in stage.modules():
        if not isinstance(m, nn.Conv2d):
            continue
        k = m.kernel_size[0]
        if m.stride == (2, 2):
            m.stride = (1, 1)
            if k == 3:
                d = max(1, dilation // 2)
                m.dilation, m.padding = (d, d), (d, d)
        elif k == 3:
            m.dilation, m.padding = (dilation, dilation), (dilation, dilation)


def build_dilated_resnet(in_channels: int, depth: int = 50, width: int = 64, output_stride: int = 8) -> ResNet:
    """A cadx ResNet (ImageNet stem) whose stage-4 map has ``1/output_stride`` of the input's H × W.

    Stage 3 and 4 are dilated 2 and 4 for every output stride (see :data:`OUTPUT_STRIDES`).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise CadxConfigError(f"output_stride must be one of {sorted(OUTPUT_STRIDES)}, got {output_stride}")
    net = ResNet(0, in_channels, 2, depth=depth, width=width, stem="imagenet")
    stem_stride, pool, stage2_stride = OUTPUT_STRIDES[output_stride]
    if not stem_stride:
        net.conv1.stride = (1, 1)
    if not pool:
        net.maxpool = nn.Identity()
    if not stage2_stride:
        dilate_stage(net.layer2, 1)
    dilate_stage(net.layer3, 2)
    dilate_stage(net.layer4, 4)
    return net


def ppm_bins(size: int, ratios: tuple[int, ...] = (2, 4, 8)) -> list[int]:
    """Pooled sizes of the PPM branches for a feature-map side ``size``: ``max(1, size // r)`` for each ratio
    ``r`` (so bins are 1/2, 1/4, 1/8 of the map, rounded down, never 0)."""
    return [max(1, size // r) for r in ratios]


class PyramidPooling(nn.Module):
    """SCNet's PPM: ``(B, C, h, w) -> (B, C + len(ratios)·C_b, h, w)``, ``C_b = branch_channels``.

    Each branch adaptive-average-pools the input to ``(h // r, w // r)`` (at least 1×1; ratios 1/2, 1/4, 1/8
    as SCNet §II-B, instead of PSPNet's fixed 1, 2, 3, 6 bins), applies 1×1 conv + BN + ReLU to ``C_b``
    channels (default ``C // 4``, PSPNet's 2048 → 512) and bilinearly up-samples back to ``(h, w)``
    (``align_corners=False``). The output concatenates the input itself (the "direct short-cut") and the
    branches, in that order. A 1×1 bin in a training batch of one uses the BN running statistics (batch
    statistics of a single value are undefined).
    """

    def __init__(self, in_channels: int, ratios: tuple[int, ...] = (2, 4, 8), branch_channels: int | None = None
                 ) -> None:
        super().__init__()
        if not ratios or any(int(r) < 1 for r in ratios):
            raise CadxConfigError(f"PPM ratios must be integers >= 1, got {ratios}")
        self.ratios = tuple(int(r) for r in ratios)
        cb = int(branch_channels) if branch_channels else max(1, in_channels // 4)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, cb, 1, bias=False), nn.BatchNorm2d(cb), nn.ReLU(inplace=True))
            for _ in self.ratios)
        self.out_channels = in_channels + len(self.ratios) * cb

    def bins(self, h: int, w: int) -> list[tuple[int, int]]:
        """Pooled ``(h_r, w_r)`` of each branch for an ``h × w`` input map."""
        return list(zip(ppm_bins(h, self.ratios), ppm_bins(w, self.ratios), strict=True))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        outs = [x]
        for branch, size in zip(self.branches, self.bins(h, w), strict=True):
            conv, bn, act = branch[0], branch[1], branch[2]  # type: ignore[index]
            y = conv(F.adaptive_avg_pool2d(x, size))
            if self.training and y.shape[0] * y.shape[2] * y.shape[3] == 1:
                # one value per channel (batch of 1, 1×1 bin): batch statistics are undefined → running stats
                y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            else:
                y = bn(y)
            y = act(y)
            outs.append(F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False))
        return torch.cat(outs, dim=1)


def upsample_to(t: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``t`` (B, S, h, w) to ``like``'s H × W (identity when equal)."""
    if t.shape[-2:] == like.shape[-2:]:
        return t
    return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)


class PSPTrunk(CadxModel):
    """Dilated ResNet + PPM shared by :class:`PSPNet` and SCNet. ``shared(x)`` = the PPM output
    ``(B, ppm.out_channels, H/os, W/os)``; ``features`` = its global average ``(B, ppm.out_channels)``."""

    def __init__(self, num_classes: int, in_channels: int, depth: int, width: int, output_stride: int,
                 ppm_ratios: tuple[int, ...]) -> None:
        super().__init__(num_classes, in_channels, 2)
        self.backbone = build_dilated_resnet(in_channels, depth, width, output_stride)
        self.output_stride = output_stride
        c4 = self.backbone.stage_channels[-1]
        self.ppm = PyramidPooling(c4, tuple(ppm_ratios))
        self.hidden = max(1, c4 // 4)  # PSPNet: 512 for ResNet-50
        self.feature_dim = self.ppm.out_channels

    def pretrained_prefixes(self) -> list[str]:
        """A plain (torchvision-named) ResNet state_dict loads under ``backbone.``."""
        return ["", "backbone."]

    def shared(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, ppm.out_channels, ⌈H/os⌉, ⌈W/os⌉)`` (the PPM output)."""
        return self.ppm(self.backbone.forward_stages(x)[-1])

    def forward_features(self, x: Tensor) -> Tensor:
        """Global average of the PPM output ``(B, ppm.out_channels)``."""
        return self.shared(x).mean(dim=(2, 3))


class PSPNet(PSPTrunk):
    """PSPNet ``(B, C, H, W) -> {"seg_logits": (B, S, H, W), "features": (B, D), "logits"?: (B, K)}``.

    Classifier after the PPM (PSPNet): 3×3 conv → ``hidden`` (= stage-4 channels / 4, 512 at full width) + BN +
    ReLU + dropout 0.1 + 1×1 conv → S, bilinearly up-sampled to the input size. ``num_classes > 0`` adds a
    linear image classifier on ``features`` (not in PSPNet; for multi-task baselines). PSPNet's auxiliary
    stage-3 loss is not included.
    """

    def __init__(self, num_classes: int = 0, in_channels: int = 1, num_seg_classes: int = 3, depth: int = 50,
                 width: int = 64, output_stride: int = 8, ppm_ratios: tuple[int, ...] = (2, 4, 8),
                 dropout: float = 0.1) -> None:
        super().__init__(num_classes, in_channels, depth, width, output_stride, ppm_ratios)
        if num_seg_classes < 1:
            raise CadxConfigError(f"pspnet: num_seg_classes must be >= 1, got {num_seg_classes}")
        self.num_seg_classes = int(num_seg_classes)
        h = self.hidden
        self.classifier = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, h, 3, padding=1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout), nn.Conv2d(h, self.num_seg_classes, 1))
        self._init_head()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.shared(x)
        feats = z.mean(dim=(2, 3))
        out = {"seg_logits": upsample_to(self.classifier(z), x), "features": feats}
        if self.head is not None:
            out["logits"] = self.head(feats)
        return out


def check_trunk_options(name: str, spatial_dims: int, num_attributes: int) -> None:
    """Shared factory checks of ``pspnet``/``scnet`` (2D only, no attributes)."""
    if num_attributes:
        raise CadxConfigError(f"{name} has no attribute head (num_attributes={num_attributes})")
    check_spatial_dims(spatial_dims, name, (2,))


class PSPNetOptions(PretrainedOptions):
    """Options of ``pspnet`` (``ppm_ratios`` also as ``"2,4,8"`` from the command line)."""

    num_seg_classes: int = 3
    depth: Annotated[Literal[18, 34, 50, 101], IntText] = 50
    width: int = 64
    output_stride: int = 8
    ppm_ratios: IntTuple = (2, 4, 8)
    dropout: float = 0.1


@register_model("pspnet", "PSPNet: dilated ResNet-50 (output stride 8) + SCNet PPM (bins 1/2,1/4,1/8 + shortcut); "
                          "num_seg_classes=3, width=, depth=", options=PSPNetOptions)
def pspnet(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, num_seg_classes: int,
           depth: int, width: int, output_stride: int, ppm_ratios: tuple[int, ...], dropout: float,
           pretrained_path: str | None) -> PSPNet:
    """Factory of :class:`PSPNet`. ``width`` 64 = standard ResNet-50 channels (use 8–16 on CPU);
    ``output_stride`` 8 (PSPNet) / 4 / 2 (SCNet) / 1; ``pretrained_path`` = local ResNet or PSPNet weights."""
    check_trunk_options("pspnet", spatial_dims, num_attributes)
    model = PSPNet(num_classes, in_channels, num_seg_classes=num_seg_classes, depth=depth, width=width,
                   output_stride=output_stride, ppm_ratios=ppm_ratios, dropout=dropout)
    return maybe_load_pretrained(model, pretrained_path)  # type: ignore[return-value]
