"""DMRN's attention / multi-network baselines (its §2.4): ARL and SDL.

- ``arl``: attention residual learning (Zhang et al., IEEE TMI 2019, skin lesions): a ResNet-50-style net whose
  every bottleneck adds an attention term computed from its own residual-branch output, with no extra layers.
- ``sdl``: synergic deep learning (Zhang et al., Medical Image Analysis 2019): two ResNet classifiers with their
  own weights plus a synergic network that predicts from a pair's concatenated features whether the two images
  share a class; the synergic loss is added to each branch's cross-entropy (``sdl_loss_terms``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from monai.networks.nets.resnet import ResNetBottleneck
from torch import Tensor, nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models.base import CadxModel, check_spatial_dims, maybe_load_pretrained
from cadx.models.registry import PretrainedOptions, register_model
from cadx.models.resnet import ResNet, Stem

__all__ = ["SDL", "ARLBottleneck", "build_arl", "sdl_loss_terms", "synergic_loss", "synergic_targets"]


class ARLBottleneck(ResNetBottleneck):
    """Bottleneck with attention residual learning: ``out = ReLU(s + F + α · M(F) ⊙ T)``.

    ``s`` = identity (or its 1×1 projection), ``F`` = the residual branch output (after ``bn3``), ``M(F)`` the
    attention mask computed from ``F`` without learnable layers, ``α`` a learnable scalar initialised to 0
    (the block starts as a plain bottleneck, so ImageNet ResNet weights are a valid start). Choices (set on the
    instance by ``build_arl``):

    - ``attention="softmax"``: per-channel spatial softmax of ``F`` over all positions (values in [0, 1] that
      sum to 1 per channel, so the term stays bounded by ``α·T``; ``α`` learns the scale — rescaling by the
      number of positions made 16 stacked blocks blow activations up to ~1e9 at α = 1);
      ``"sigmoid"``: ``sigmoid(F)`` element-wise.
    - ``attend="identity"``: the mask re-weights the block input ``s`` (ARL's "high layer's features give the
      attention map of a low layer"); ``"residual"``: it re-weights ``F`` itself.
    """

    attention: str = "softmax"
    attend: str = "identity"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = nn.Parameter(torch.zeros(1))

    def mask(self, f: Tensor) -> Tensor:
        """Attention mask of ``f`` ``(B, C, *spatial)``, same shape."""
        if self.attention == "sigmoid":
            return torch.sigmoid(f)
        return torch.softmax(f.flatten(2), dim=2).view_as(f)

    def forward(self, x: Tensor) -> Tensor:
        s = self.downsample(x) if self.downsample is not None else x
        f = self.act(self.bn1(self.conv1(x)))
        f = self.act(self.bn2(self.conv2(f)))
        f = self.bn3(self.conv3(f))
        target = s if self.attend == "identity" else f
        return self.act(s + f + self.alpha * self.mask(f) * target)


def build_arl(num_classes: int, in_channels: int = 1, spatial_dims: int = 2, depth: int = 50, width: int = 64,
              stem: str = "imagenet", attention: str = "softmax", attend: str = "identity",
              dropout: float = 0.0) -> ResNet:
    """ARL-CNN: a bottleneck ResNet (50 in ARL, also 101/152) with ``ARLBottleneck`` in every block."""
    if depth not in (50, 101, 152):
        raise CadxConfigError(f"arl uses bottleneck ResNets: depth must be 50, 101 or 152, got {depth}")
    if attention not in ("softmax", "sigmoid") or attend not in ("identity", "residual"):
        raise CadxConfigError(f"arl: attention must be 'softmax'|'sigmoid' and attend 'identity'|'residual', "
                              f"got {attention!r}, {attend!r}")
    model = ResNet(num_classes, in_channels, spatial_dims, depth=depth, width=width, stem=stem,
                   block=ARLBottleneck, dropout=dropout)
    for m in model.modules():
        if isinstance(m, ARLBottleneck):
            m.attention, m.attend = attention, attend
    return model


class ARLOptions(PretrainedOptions):
    """Options of ``arl`` (see :func:`build_arl`)."""

    depth: int = 50
    width: int = 64
    stem: Stem = "imagenet"
    attention: Literal["softmax", "sigmoid"] = "softmax"
    attend: Literal["identity", "residual"] = "identity"
    dropout: float = 0.0


@register_model("arl", "ARL: ResNet-50 whose bottlenecks add a parameter-free attention term (Zhang et al. 2019)",
                options=ARLOptions)
def arl(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, depth: int, width: int,
        stem: str, attention: str, attend: str, dropout: float, pretrained_path: str | None) -> ResNet:
    """Build ARL-CNN; ``pretrained_path`` = a local ResNet state_dict (the ``alpha`` scalars stay 0)."""
    if num_attributes:
        raise CadxConfigError("arl has no attribute head (num_attributes must be 0)")
    model = build_arl(num_classes, in_channels, check_spatial_dims(spatial_dims, "arl"), depth=depth, width=width,
                      stem=stem, attention=attention, attend=attend, dropout=dropout)
    maybe_load_pretrained(model, pretrained_path)
    return model


class SDL(CadxModel):
    """Synergic deep learning with two ResNet branches ``A`` and ``B`` (separate weights) and a synergic net.

    ``forward(x)`` — one batch (what ``cadx.runs`` calls, also for each member of a Siamese batch):
    both branches classify ``x``. ``"logits"`` = log of the mean of the two branches' softmax outputs (SDL fuses
    its components' predictions; ``softmax(logits)`` is that mean), ``"logits_a"``/``"logits_b"`` the branch
    logits, ``"features"`` = branch A's features ``(B, D)``, and ``"synergic_logits"`` ``(B // 2, 2)`` for the
    in-batch pairs (row i of the first half seen by A, row ``B//2 + i`` seen by B — the first-half/second-half
    convention of ``cadx.objectives`` pairwise losses; a shuffled batch gives random pairs as in SDL).

    ``forward(x, x_b)`` — explicit pairs: A sees ``x``, B sees ``x_b``; ``"logits"`` = ``"logits_a"`` (A on
    ``x``), ``"logits_b"``/``"features_b"`` (B on ``x_b``), ``"synergic_logits"`` ``(B, 2)`` for ``(x_i, x_b_i)``.

    Synergic logits: class 1 = "same class". Train with ``sdl_loss_terms`` (CE of each branch + synergic CE;
    SDL adds them with a weight λ on the synergic term). The synergic net is ``Linear(2D → hidden) → ReLU →
    Dropout → Linear(hidden → 2)`` (hidden = 256: our choice).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2, depth: int = 50,
                 width: int = 64, stem: str = "imagenet", synergic_hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__(num_classes, in_channels, check_spatial_dims(spatial_dims, "sdl"))
        if num_classes < 1:
            raise CadxConfigError("sdl needs num_classes >= 1 (its branches are classifiers)")
        self.branch_a = ResNet(num_classes, in_channels, spatial_dims, depth=depth, width=width, stem=stem)
        self.branch_b = ResNet(num_classes, in_channels, spatial_dims, depth=depth, width=width, stem=stem)
        self.feature_dim = self.branch_a.feature_dim
        self.synergic = nn.Sequential(nn.Linear(2 * self.feature_dim, synergic_hidden), nn.ReLU(inplace=True),
                                      nn.Dropout(dropout), nn.Linear(synergic_hidden, 2))

    def pretrained_prefixes(self) -> list[str]:
        """An SDL checkpoint loads as is; a plain ResNet state_dict loads into both branches."""
        return ["", "branch_a.", "branch_b."]

    def load_pretrained(self, path: str | Path, all_prefixes: bool = True) -> dict[str, Any]:
        return super().load_pretrained(path, all_prefixes=all_prefixes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Branch A's features ``(B, D)``."""
        return self.branch_a.forward_features(x)

    def forward(self, x: Tensor, x_b: Tensor | None = None) -> dict[str, Tensor]:
        a = self.branch_a(x)
        if x_b is None:
            b = self.branch_b(x)
            logp = torch.stack([F.log_softmax(a["logits"], 1), F.log_softmax(b["logits"], 1)])
            h = x.shape[0] // 2
            syn = self.synergic(torch.cat([a["features"][:h], b["features"][h:2 * h]], dim=1))
            return {"features": a["features"], "logits": torch.logsumexp(logp, dim=0) - math.log(2.0),
                    "logits_a": a["logits"], "logits_b": b["logits"], "synergic_logits": syn}
        if x_b.shape[0] != x.shape[0]:
            raise CadxConfigError(f"sdl pairs need equal batch sizes, got {x.shape[0]} and {x_b.shape[0]}")
        b = self.branch_b(x_b)
        syn = self.synergic(torch.cat([a["features"], b["features"]], dim=1))
        return {"features": a["features"], "logits": a["logits"], "logits_a": a["logits"],
                "features_b": b["features"], "logits_b": b["logits"], "synergic_logits": syn}


def synergic_targets(y_a: Tensor, y_b: Tensor) -> Tensor:
    """``(B,)`` long: 1 where the pair shares a class, 0 where not, −1 where either label is missing (−1)."""
    same = (y_a == y_b).long()
    return torch.where((y_a < 0) | (y_b < 0), torch.full_like(same, -1), same)


def _masked_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Mean CE over rows with ``target >= 0``; a zero connected to ``logits`` when there is none."""
    if not bool((target >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=-1)


def synergic_loss(synergic_logits: Tensor, y_a: Tensor, y_b: Tensor) -> Tensor:
    """Cross-entropy of the synergic net's ``(P, 2)`` logits against ``synergic_targets(y_a, y_b)``; pairs with
    a missing label are ignored (0 when none is left)."""
    return _masked_ce(synergic_logits, synergic_targets(y_a, y_b))


def sdl_loss_terms(out: dict[str, Tensor], label: Tensor, label_b: Tensor | None = None) -> dict[str, Tensor]:
    """SDL's loss parts for one ``SDL.forward`` output: ``{"ce_a", "ce_b", "synergic"}`` (unweighted).

    ``label`` ``(B,)`` long (−1 = missing) are the classes of ``x``; ``label_b`` those of ``x_b`` (required
    for an explicit-pair output, ignored otherwise). Single-batch outputs pair the batch's halves.
    """
    syn = out["synergic_logits"]
    if "features_b" in out:
        if label_b is None:
            raise CadxDataError("sdl: an explicit-pair output needs label_b", field="label_b")
        yb, t = label_b, synergic_targets(label, label_b)
    else:
        h = label.shape[0] // 2
        yb, t = label, synergic_targets(label[:h], label[h:2 * h])
    return {"ce_a": _masked_ce(out["logits_a"], label), "ce_b": _masked_ce(out["logits_b"], yb),
            "synergic": _masked_ce(syn, t)}


class SDLOptions(PretrainedOptions):
    """Options of ``sdl`` (see :class:`SDL`)."""

    depth: int = 50
    width: int = 64
    stem: Stem = "imagenet"
    synergic_hidden: int = 256
    dropout: float = 0.5


@register_model("sdl", "SDL: two ResNet classifiers + synergic net on pair features (same/different class)",
                options=SDLOptions)
def sdl(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, depth: int, width: int,
        stem: str, synergic_hidden: int, dropout: float, pretrained_path: str | None) -> SDL:
    """Build ``SDL`` (ResNet-50 branches as in SDL); ``pretrained_path`` = ResNet weights for both branches."""
    if num_attributes:
        raise CadxConfigError("sdl has no attribute head (num_attributes must be 0)")
    model = SDL(num_classes, in_channels, spatial_dims, depth=depth, width=width, stem=stem,
                synergic_hidden=synergic_hidden, dropout=dropout)
    maybe_load_pretrained(model, pretrained_path)
    return model
