"""``contrastive``: the DMRN multi-stage contrastive loss (Bi et al. §2.2.2; Hadsell, Chopra & LeCun 2006).

For each stage t and pair i: ``D = ‖x₁ᵗ − x₂ᵗ‖₂``, ``Y = 0`` if the two images share the class, 1 otherwise,
``Lᵗ = (1 − Y)·½·D² + Y·½·max(0, m − D)²`` with margin ``m = 1`` (DMRN Eqs. 1–5). The loss is the mean over
pairs of ``Σ_t Lᵗ`` — summed over stages (Eq. 2), averaged over the batch (Eq. 2 sums over pairs; the mean keeps
the learning rate independent of the batch size). MONAI's ``ContrastiveLoss`` is SimCLR's NT-Xent, a different
loss, so this one is written out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives.registry import Loss, need, pair_halves, register_loss, zero_like


def contrastive_pair_loss(x1: Tensor, x2: Tensor, y: Tensor, margin: float = 1.0) -> Tensor:
    """Per-pair Hadsell loss ``(P,)`` for embeddings ``(P, d)`` and dissimilarity ``y`` (P,) ∈ {0, 1}.

    ``D = 0`` is handled without a square root of 0 (whose gradient is NaN): identical embeddings of a
    dissimilar pair give exactly ``½ m²`` with a zero gradient; the similar term uses ``D²`` directly.
    """
    d2 = (x1 - x2).pow(2).sum(dim=1)
    pos = d2 > 0
    d = torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))
    y = y.to(d2)
    return (1.0 - y) * 0.5 * d2 + y * 0.5 * (margin - d).clamp_min(0.0).pow(2)


@register_loss("contrastive", "DMRN/Hadsell contrastive loss on paired embeddings, summed over stages, m = 1")
class ContrastiveLoss(Loss):
    """Pairwise. Embeddings: ``out["embeddings"]`` (list of (B, d_t), one per stage) — or ``[out["features"]]``
    when the model has no stage embeddings — against the same of ``out_b``; ``Y`` from ``batch["label"]`` vs
    ``batch_b["label"]``. Pairs with a missing label (−1) on either side are left out of the mean; no valid pair →
    0. Without ``out_b`` the first half of the batch is paired with the second half.
    """

    pairwise = True

    def __init__(self, context: Mapping[str, Any] | None = None, margin: float = 1.0,
                 out_key: str = "embeddings", target_key: str = "label") -> None:
        super().__init__(context)
        if float(margin) <= 0:
            raise CadxConfigError(f"contrastive: margin must be > 0, got {margin}")
        self.margin = float(margin)
        self.out_key, self.target_key = out_key, target_key

    def _stages(self, out: Mapping[str, Any]) -> list[Tensor]:
        emb = out.get(self.out_key)
        if emb is None:
            emb = need(out, "features", "contrastive")
        return list(emb) if isinstance(emb, list | tuple) else [emb]

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        sa = self._stages(out)
        sb = self._stages(out_b) if out_b is not None else [None] * len(sa)
        if len(sa) != len(sb):
            raise CadxDataError(f"contrastive: branches have {len(sa)} and {len(sb)} stages")
        ya = need(batch, self.target_key, "contrastive").reshape(-1)
        yb = None if batch_b is None else need(batch_b, self.target_key, "contrastive").reshape(-1)
        if (out_b is None) != (batch_b is None):
            raise CadxDataError("contrastive: give both out_b and batch_b, or neither")
        la, lb = pair_halves(ya, yb)
        valid = (la >= 0) & (lb >= 0)
        if not bool(valid.any()):
            return zero_like(torch.stack([s.sum() for s in sa]))
        dissimilar = (la != lb).long()[valid]
        total: Tensor | None = None
        for a, b in zip(sa, sb, strict=True):
            x1, x2 = pair_halves(a, b)
            term = contrastive_pair_loss(x1[valid], x2[valid], dissimilar, self.margin)
            total = term if total is None else total + term
        assert total is not None
        return total.mean()


__all__ = ["ContrastiveLoss", "contrastive_pair_loss"]
