"""DMRN — Deep Multi-Scale Resemblance Network (Bi et al., adrenal masses on CT), §2.2.

A ResNet backbone; after each of its 4 stages a residual pooling unit (RPU) turns the stage's feature map into
an embedding (25 % of the stage's channels). Training is Siamese (weights shared; run the model on both images
of a pair) with one contrastive loss (margin 1) per stage on the embeddings; inference uses the last stage's
embedding as the feature vector of a linear SVM fitted afterwards, and slice probabilities are averaged per study.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, conv_nd, maybe_load_pretrained, pool_nd
from cadx.models.registry import PretrainedOptions, register_model
from cadx.models.resnet import ResNet, Stem

__all__ = ["DMRN", "ResidualPoolingUnit"]


class ResidualPoolingUnit(nn.Module):
    """RPU: ``y = ReLU(x + conv3(ReLU(conv3(x))))`` → adaptive average pool to 1 → ``fc(C → C // 4)``.

    A ResNet basic block without batch norm (the paper removes it); the convs keep ``C`` channels and carry a
    bias (no BN follows them). The paper lists "ReLU and summation"; we also apply the ReLU after the sum as in
    the original residual block (choice). Input ``(B, C, *spatial)`` (2D or 3D), output ``(B, max(1, C // 4))``.
    """

    def __init__(self, channels: int, spatial_dims: int = 2, reduction: float = 0.25) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.conv1 = conv(channels, channels, kernel_size=3, padding=1, bias=True)
        self.conv2 = conv(channels, channels, kernel_size=3, padding=1, bias=True)
        self.act = nn.ReLU()
        self.pool = pool_nd("adaptiveavg", spatial_dims)(1)
        self.out_dim = max(1, int(channels * reduction))
        self.fc = nn.Linear(channels, self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(x + self.conv2(self.act(self.conv1(x))))
        return self.fc(self.pool(y).flatten(1))


class DMRN(CadxModel):
    """DMRN on ``(B, C, H, W)`` or ``(B, C, D, H, W)``; 2.5D = ``in_channels=k`` adjacent slices in 2D.

    Args:
        depth: backbone ResNet depth (10/18/34/50/101; the paper used 101, ImageNet-initialised; 10 = one block
            per stage, for 3D on CPU).
        width, stem: backbone options (see ``cadx.models.resnet.ResNet``; ``stem="small"`` for ≤ 64 px,
            ``"pool"`` for 28³ volumes).
        multiscale: ``True`` = an RPU + embedding on all 4 stages; ``False`` = only the last stage
            (the "w.o. MS" ablation of Table 4) — ``"embeddings"`` then has one element.

    ``forward(x)`` returns ``"embeddings"`` (list of ``(B, C_s // 4)``, stage 1→4, or just stage 4),
    ``"features"`` = the last embedding ``(B, C_4 // 4)`` (what the SVM is fitted on) and, when
    ``num_classes > 0``, ``"logits"`` from a linear head on that embedding. The paper has no such head (its
    classifier is the SVM); it exists only as an optional auxiliary loss / training monitor.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2, depth: int = 18,
                 width: int = 64, stem: str = "imagenet", multiscale: bool = True) -> None:
        super().__init__(num_classes, in_channels, check_spatial_dims(spatial_dims, "dmrn"))
        if depth not in (10, 18, 34, 50, 101):
            raise CadxConfigError(f"dmrn depth must be 10, 18, 34, 50 or 101, got {depth}")
        self.backbone = ResNet(0, in_channels, spatial_dims, depth=depth, width=width, stem=stem)
        self.multiscale = bool(multiscale)
        chans = self.backbone.stage_channels if self.multiscale else self.backbone.stage_channels[-1:]
        self.rpus = nn.ModuleList(ResidualPoolingUnit(c, spatial_dims) for c in chans)
        self.embedding_dims = [int(r.out_dim) for r in self.rpus]  # type: ignore[arg-type]
        self.feature_dim = self.embedding_dims[-1]
        self._init_head()

    def pretrained_prefixes(self) -> list[str]:
        """A plain ResNet state_dict (e.g. ImageNet ResNet-101) loads into ``backbone``."""
        return ["", "backbone."]

    def forward_embeddings(self, x: Tensor) -> list[Tensor]:
        """Per-stage embeddings ``[(B, C_s // 4)]`` (4 with ``multiscale``, else the last only)."""
        stages = self.backbone.forward_stages(x)
        if not self.multiscale:
            stages = stages[-1:]
        return [rpu(s) for rpu, s in zip(self.rpus, stages, strict=True)]

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's RPU embedding ``(B, C_4 // 4)``."""
        return self.forward_embeddings(x)[-1]

    def forward(self, x: Tensor) -> dict[str, Any]:
        emb = self.forward_embeddings(x)
        out: dict[str, Any] = {"features": emb[-1], "embeddings": emb}
        if self.head is not None:
            out["logits"] = self.head(emb[-1])
        return out


class DMRNOptions(PretrainedOptions):
    """Options of ``dmrn``: the ResNet backbone's ``depth``/``width``/``stem`` and ``multiscale`` (False = the
    last-stage embedding only, the ablation)."""

    depth: int = 18
    width: int = 64
    stem: Stem = "imagenet"
    multiscale: bool = True


@register_model("dmrn", "DMRN: ResNet + residual pooling unit per stage, multi-scale contrastive embeddings (SVM)",
                options=DMRNOptions)
def dmrn(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, depth: int, width: int,
         stem: str, multiscale: bool, pretrained_path: str | None) -> DMRN:
    """Build ``DMRN``; ``pretrained_path`` = a local ResNet or DMRN state_dict (loaded leniently)."""
    if num_attributes:
        raise CadxConfigError("dmrn has no attribute head (num_attributes must be 0)")
    model = DMRN(num_classes, in_channels, spatial_dims, depth=depth, width=width, stem=stem, multiscale=multiscale)
    maybe_load_pretrained(model, pretrained_path)
    return model
