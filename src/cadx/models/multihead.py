"""Multi-task CNN with categorical feature heads (thesis A.6, Buda et al. Radiology 2019, repo thyroid-us).

A shared trunk feeds one malignancy head (``"logits"`` ``(B, K)``) and one categorical head per lexicon feature
(``"feature_logits"``: a list of ``(B, K_h)``, one per attribute of the task, in the task's attribute order; the
loss is ``feature_focal`` in :mod:`cadx.objectives.feature_heads`).

Trunks:

* ``thyroid`` (default) — the thyroid-us ``model.py`` stack: ``len(filters)`` Conv3×3 (same padding) + ReLU
  blocks with filters 8, 12, 16, 24, 32, 48, a 2×2 max-pool after each of the first ``pools`` (5) blocks, dropout
  0.5. ``batch_norm`` (not in the repo, default off) adds a BatchNorm after each conv.
* ``resnet`` — the cadx :class:`~cadx.models.resnet.ResNet` (``depth``, ``width``, ``stem``).

Choice (the repo's heads are Conv5×5 *valid* on the 5×5 map of a 160 px input, i.e. a linear layer on the
flattened map, and a 1-unit sigmoid for binary heads): here every head is a linear layer on the globally
average-pooled trunk features, so any input size works (at 40 px the thyroid trunk's map is already 1×1), and
every head is a softmax over its ``K_h ≥ 2`` categories (a binary feature such as TI-RADS shape has ``K_h = 2``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.models.base import CadxModel, check_spatial_dims, conv_nd, maybe_load_pretrained, norm_nd, pool_nd
from cadx.models.registry import PretrainedOptions, register_model
from cadx.models.resnet import ResNet, Stem

__all__ = ["MultiHeadNet", "MultiHeadOptions", "ThyroidTrunk"]

#: thyroid-us ``model.py`` filters.
THYROID_FILTERS = (8, 12, 16, 24, 32, 48)


class ThyroidTrunk(nn.Module):
    """Conv3×3 + ReLU blocks (``filters``), max-pool 2 after each of the first ``pools`` blocks, dropout, global
    average pool: ``(B, C, *spatial) -> (B, filters[-1])``. Inputs must be ≥ ``2**pools`` px per axis."""

    def __init__(self, in_channels: int, spatial_dims: int, filters: tuple[int, ...] = THYROID_FILTERS,
                 pools: int = 5, dropout: float = 0.5, batch_norm: bool = False) -> None:
        super().__init__()
        if not filters or min(filters) < 1:
            raise CadxConfigError(f"multihead: filters must be positive channel counts, got {list(filters)}")
        if not 0 <= pools <= len(filters):
            raise CadxConfigError(f"multihead: pools must be in [0, {len(filters)}], got {pools}")
        if not 0.0 <= dropout < 1.0:
            raise CadxConfigError(f"multihead: dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        c = in_channels
        for i, f in enumerate(filters):
            layers.append(conv_nd(spatial_dims)(c, f, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(norm_nd(spatial_dims)(f))
            layers.append(nn.ReLU(inplace=True))
            if i < pools:
                layers.append(pool_nd("max", spatial_dims)(kernel_size=2))
            c = f
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.avgpool = pool_nd("adaptiveavg", spatial_dims)(1)
        self.feature_dim = int(filters[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.avgpool(self.dropout(self.body(x))).flatten(1)


class MultiHeadNet(CadxModel):
    """Shared trunk + malignancy head + one categorical head per feature, on ``(B, C, H, W)`` or ``(B, C, D, H, W)``.

    Args:
        num_classes: malignancy classes ``K`` (2 for benign/malignant; 0 = feature heads only).
        categories: ``K_h`` per feature head (length = the task's number of attributes, each ≥ 2; empty = a
            single-task net). LIDC: subtlety 5, internalstructure 4, calcification 6, sphericity 5, margin 5,
            lobulation 5, spiculation 5, texture 5.
        trunk: ``thyroid`` or ``resnet`` (module docstring); the other options configure the chosen trunk.

    ``forward(x)``: ``"features"`` ``(B, D)``; ``"logits"`` ``(B, K)`` when ``K > 0``; ``"feature_logits"`` list of
    ``(B, K_h)`` when there are feature heads.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2,
                 categories: tuple[int, ...] = (), trunk: str = "thyroid",
                 filters: tuple[int, ...] = THYROID_FILTERS, pools: int = 5, dropout: float = 0.5,
                 batch_norm: bool = False, depth: int = 18, width: int = 16, stem: str = "small") -> None:
        super().__init__(num_classes, in_channels, check_spatial_dims(spatial_dims, "multihead"))
        if any(int(k) < 2 for k in categories):
            raise CadxConfigError(f"multihead: every categorical head needs >= 2 categories, got {list(categories)}")
        if num_classes == 0 and not categories:
            raise CadxConfigError("multihead needs num_classes > 0 or at least one categorical head")
        self.trunk: nn.Module
        if trunk == "thyroid":
            self.trunk = ThyroidTrunk(in_channels, spatial_dims, tuple(filters), pools, dropout, batch_norm)
            self.feature_dim = self.trunk.feature_dim
        elif trunk == "resnet":
            res = ResNet(0, in_channels, spatial_dims, depth=depth, width=width, stem=stem, dropout=dropout)
            self.trunk, self.feature_dim = res, res.feature_dim
        else:
            raise CadxConfigError(f"multihead: trunk must be 'thyroid' or 'resnet', got {trunk!r}")
        self.categories = [int(k) for k in categories]
        self._init_head()
        self.feature_heads = nn.ModuleList(nn.Linear(self.feature_dim, k) for k in self.categories)
        for m in [self.head, *self.feature_heads]:  # thyroid-us: Glorot-normal head weights
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Trunk features ``(B, feature_dim)``."""
        self.check_input(x)
        f: Tensor = self.trunk.forward_features(x) if isinstance(self.trunk, ResNet) else self.trunk(x)
        return f

    def forward(self, x: Tensor) -> dict[str, Any]:  # type: ignore[override]
        f = self.forward_features(x)
        out: dict[str, Any] = {"features": f}
        if self.head is not None:
            out["logits"] = self.head(f)
        if self.categories:
            out["feature_logits"] = [h(f) for h in self.feature_heads]
        return out


class MultiHeadOptions(PretrainedOptions):
    """Options of ``multihead`` (see :class:`MultiHeadNet`)."""

    categories: list[int] = Field(default_factory=list)
    trunk: Literal["thyroid", "resnet"] = "thyroid"
    filters: list[int] = Field(default_factory=lambda: list(THYROID_FILTERS))
    pools: int = 5
    dropout: float = 0.5
    batch_norm: bool = False
    depth: int = 18
    width: int = 16
    stem: Stem = "small"


@register_model("multihead", "thyroid-us multi-task CNN: shared trunk, malignancy head + one categorical head per "
                "feature (A.6)", options=MultiHeadOptions)
def multihead(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *,
              categories: list[int], trunk: str, filters: list[int], pools: int, dropout: float, batch_norm: bool,
              depth: int, width: int, stem: str, pretrained_path: str | None) -> MultiHeadNet:
    """Build :class:`MultiHeadNet`; ``categories`` must have one entry per task attribute (``num_attributes``)."""
    if len(categories) != num_attributes:
        raise CadxConfigError(f"multihead: model.kwargs.categories has {len(categories)} entries but the task has "
                              f"{num_attributes} attribute(s) (task.attributes); give one category count each")
    model = MultiHeadNet(num_classes, in_channels, spatial_dims, categories=tuple(categories), trunk=trunk,
                         filters=tuple(filters), pools=pools, dropout=dropout, batch_norm=batch_norm, depth=depth,
                         width=width, stem=stem)
    maybe_load_pretrained(model, pretrained_path)
    return model
