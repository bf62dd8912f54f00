"""``attribute_mse``: NaN-masked mean squared error on attribute scores (MTMR-Net Eq. 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives.registry import Loss, as_float_tensor, both, register_loss, zero_like


@register_loss("attribute_mse", "MSE on attributes (B,A) in [0,1], NaN targets masked; Σ over attributes (Eq. 2)")
class AttributeMSE(Loss):
    """Squared error between ``out["attributes"]`` (B, A) and ``batch["attributes"]`` (B, A); NaN targets are
    masked out.

    ``reduction="sum_attributes"`` (default, MTMR-Net Eq. 2 ``1/N Σ_i ‖ŷ_i − y_i‖²`` and the released code's sum of
    per-attribute ``MSELoss``): for each attribute the mean over the rows where it is observed, summed over the
    attributes observed at least once. ``reduction="mean"``: mean over all observed entries (``nn.MSELoss``).
    ``attribute_weights`` (A,) multiplies each attribute's term. The model decides the output range (``mtmr``
    applies a sigmoid, targets are rescaled to [0, 1] by the dataset). No observed target → 0.
    """

    attribute_weights: Tensor | None

    def __init__(self, context: Mapping[str, Any] | None = None, reduction: str = "sum_attributes",
                 attribute_weights: Sequence[float] | None = None, out_key: str = "attributes",
                 target_key: str = "attributes") -> None:
        super().__init__(context)
        if reduction not in ("sum_attributes", "mean"):
            raise CadxConfigError(f"attribute_mse: reduction must be 'sum_attributes' or 'mean', got {reduction!r}")
        self.reduction = reduction
        w = None if attribute_weights is None else as_float_tensor(attribute_weights, "attribute_weights")
        self.register_buffer("attribute_weights", w, persistent=False)
        self.out_key, self.target_key = out_key, target_key

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        pred, target = both(out, batch, out_b, batch_b, self.out_key, self.target_key, "attribute_mse")
        target = target.to(pred)
        if pred.shape != target.shape:
            raise CadxDataError(f"attribute_mse: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}",
                                field="attributes")
        seen = ~torch.isnan(target)
        sq = torch.where(seen, pred - torch.nan_to_num(target), torch.zeros_like(pred)).pow(2)
        if self.attribute_weights is not None:
            w = self.attribute_weights.to(pred)
            if w.numel() != pred.shape[1]:
                raise CadxConfigError(f"attribute_mse: {w.numel()} attribute_weights for {pred.shape[1]} attributes")
            sq = sq * w
        if not bool(seen.any()):
            return zero_like(pred)
        if self.reduction == "mean":
            return sq.sum() / seen.sum()
        n = seen.sum(dim=0)
        per_attr = sq.sum(dim=0) / n.clamp_min(1)
        return per_attr[n > 0].sum()


__all__ = ["AttributeMSE"]
