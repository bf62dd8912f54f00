"""MTMR-Net (Liu et al., multi-task lung nodule analysis), Table I / Fig. 3.

Feature extraction = a ResNet (ResNet-152 in the paper) → image features ``f`` (D = 2048 for bottleneck
depths, 512·width/64 for basic ones). Regression module: ``a = ReLU(fc(D → 256))`` (attribute features) →
``fc(256 → A)`` attribute scores. Classification module: ``fc(concat(f, a) → K)`` — ``(2048 + 256) → K`` in the
paper — so the classification loss also trains the regression module's first layer. Siamese training with the
margin ranking loss runs this model on both images of a pair (weights shared).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, maybe_load_pretrained
from cadx.models.registry import PretrainedOptions, register_model
from cadx.models.resnet import ResNet, Stem

__all__ = ["MTMRNet"]


class MTMRNet(CadxModel):
    """MTMR-Net on ``(B, C, H, W)`` (paper: 224×224 crops) or ``(B, C, D, H, W)``.

    Args:
        num_attributes: attribute scores ``A`` (8 on LIDC-IDRI); required when ``attribute_branch``.
        depth, width, stem: backbone (see ``cadx.models.resnet.ResNet``); depth 152 in the paper.
        attribute_dim: width of the attribute-feature layer (256 in the paper).
        attribute_branch: ``False`` = ablation without the regression module (classifier on ``f`` only;
            no ``"attributes"`` output).
        attribute_activation: ``"sigmoid"`` (default: targets are rescaled to [0, 1]) or ``"linear"``.

    Choices where the paper is silent or inconsistent: ReLU on the 256-d attribute features; the second
    regression layer is ``256 → A`` (Table I prints "fc 2048x8", Fig. 3 and the text feed it the 256-d features);
    ``num_classes=1`` gives Table I's single logit, ``num_classes=2`` a softmax/CE head.

    ``forward(x)``: ``"features"`` ``f`` ``(B, D)``; ``"logits"`` ``(B, K)`` when ``num_classes > 0``;
    ``"attributes"`` ``(B, A)`` and ``"attribute_features"`` ``(B, attribute_dim)`` with the branch.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2, num_attributes: int = 8,
                 depth: int = 50, width: int = 64, stem: str = "imagenet", attribute_dim: int = 256,
                 attribute_branch: bool = True, attribute_activation: str = "sigmoid") -> None:
        super().__init__(num_classes, in_channels, check_spatial_dims(spatial_dims, "mtmr"))
        if attribute_branch and num_attributes < 1:
            raise CadxConfigError("mtmr needs num_attributes >= 1 (8 on LIDC-IDRI), or attribute_branch=False")
        if attribute_activation not in ("sigmoid", "linear"):
            raise CadxConfigError(f"mtmr attribute_activation must be 'sigmoid' or 'linear', "
                                  f"got {attribute_activation!r}")
        if not attribute_branch and num_classes == 0:
            raise CadxConfigError("mtmr without the attribute branch needs num_classes > 0")
        self.backbone = ResNet(0, in_channels, spatial_dims, depth=depth, width=width, stem=stem)
        self.feature_dim = self.backbone.feature_dim
        self.num_attributes = int(num_attributes) if attribute_branch else 0
        self.attribute_branch = bool(attribute_branch)
        self.attribute_activation = attribute_activation
        self.attr_fc: nn.Linear | None = None
        self.attr_out: nn.Linear | None = None
        cls_in = self.feature_dim
        if self.attribute_branch:
            self.attr_fc = nn.Linear(self.feature_dim, attribute_dim)
            self.attr_out = nn.Linear(attribute_dim, self.num_attributes)
            cls_in += attribute_dim
        self._init_head(cls_in)
        for m in (self.attr_fc, self.attr_out, self.head):  # paper: Xavier init of both modules
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def pretrained_prefixes(self) -> list[str]:
        """A plain ResNet state_dict (e.g. ImageNet ResNet-152) loads into ``backbone``."""
        return ["", "backbone."]

    def forward_features(self, x: Tensor) -> Tensor:
        """Image features ``(B, D)`` (globally pooled last stage of the backbone)."""
        return self.backbone.forward_features(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.forward_features(x)
        out: dict[str, Tensor] = {"features": f}
        cls_in = f
        if self.attr_fc is not None and self.attr_out is not None:
            a = torch.relu(self.attr_fc(f))
            scores = self.attr_out(a)
            out["attribute_features"] = a
            out["attributes"] = torch.sigmoid(scores) if self.attribute_activation == "sigmoid" else scores
            cls_in = torch.cat([f, a], dim=1)
        if self.head is not None:
            out["logits"] = self.head(cls_in)
        return out


class MTMROptions(PretrainedOptions):
    """Options of ``mtmr`` (see :class:`MTMRNet`)."""

    depth: int = 50
    width: int = 64
    stem: Stem = "imagenet"
    attribute_dim: int = 256
    attribute_branch: bool = True
    attribute_activation: Literal["sigmoid", "linear"] = "sigmoid"


@register_model("mtmr", "MTMR-Net: ResNet + attribute regression (fc→256→A) concatenated into the classifier",
                options=MTMROptions)
def mtmr(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, depth: int, width: int,
         stem: str, attribute_dim: int, attribute_branch: bool, attribute_activation: str,
         pretrained_path: str | None) -> MTMRNet:
    """Build ``MTMRNet`` (default depth 50: the paper's 2048-d features at a third of ResNet-152's cost)."""
    model = MTMRNet(num_classes, in_channels, spatial_dims, num_attributes=num_attributes, depth=depth,
                    width=width, stem=stem, attribute_dim=attribute_dim, attribute_branch=attribute_branch,
                    attribute_activation=attribute_activation)
    maybe_load_pretrained(model, pretrained_path)
    return model
