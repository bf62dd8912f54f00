"""``feature_focal``: focal loss on every categorical feature head of a multi-task net (thesis A.6, thyroid-us).

Targets come from ``batch["attributes"]`` ``(B, A)`` (the task's attributes, NaN = missing): head ``h`` predicts
attribute column ``h``, its class is ``floor(value + 0.5) − offsets[h]`` (round half **up**: a median of two
readers of 3.5 becomes 4, the more suspicious category), so ratings on a 1–5 scale with ``offset 1`` become
classes 0–4, and a manifest whose categorical columns already hold classes 0..K_h−1 uses ``offset 0``.
A missing value (NaN) is ignored in that head's loss only (the image still trains the other heads); a class
outside ``[0, K_h)`` raises :class:`~cadx.errors.CadxDataError` naming the head.

Value: ``Σ_h w_h · FL_h`` with ``FL_h`` the mean over the rows labelled for head ``h`` of
``−(1 − p_{y})^γ log p_{y}`` (softmax; as the registry's ``focal``); a head without any labelled row adds 0.
The malignancy head uses the registry's ``focal`` on ``logits``: ``{focal: 1.0, feature_focal: 1.0}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives.registry import Loss, need, register_loss, zero_like

__all__ = ["FeatureFocalLoss", "categorical_targets", "focal_terms"]


def categorical_targets(values: Tensor, offsets: Sequence[float], categories: Sequence[int]) -> Tensor:
    """Attribute values ``(B, H)`` (NaN = missing) → classes ``(B, H)`` long, −1 = missing.

    ``class = floor(value + 0.5) − offsets[h]``; raises ``CadxDataError`` when a class is outside
    ``[0, categories[h])``."""
    if values.ndim != 2 or values.shape[1] != len(categories) or len(offsets) != len(categories):
        raise CadxDataError(f"feature_focal: attributes {tuple(values.shape)} do not match {len(categories)} "
                            f"heads / {len(offsets)} offsets", field="attributes")
    v = values.float()
    ok = torch.isfinite(v)
    off = torch.as_tensor([float(o) for o in offsets], dtype=v.dtype, device=v.device)
    cls = torch.floor(torch.where(ok, v, torch.zeros_like(v)) + 0.5) - off
    k = torch.as_tensor([int(c) for c in categories], dtype=v.dtype, device=v.device)
    bad = ok & ((cls < 0) | (cls >= k))
    if bad.any():
        h = int(bad.nonzero()[0, 1])
        raise CadxDataError(f"feature_focal: head {h} has attribute value {float(v[bad.nonzero()[0, 0], h])} → "
                            f"class outside [0, {int(categories[h])}) (offset {offsets[h]})", field="attributes")
    return torch.where(ok, cls, torch.full_like(cls, -1.0)).long()


def focal_terms(logits: Tensor, target: Tensor, gamma: float) -> Tensor:
    """Per-row focal loss ``−(1 − p_y)^γ log p_y`` of rows with ``target ≥ 0``: ``(n,)`` (softmax over K)."""
    keep = target >= 0
    x, y = logits[keep].float(), target[keep]
    logp = F.log_softmax(x, dim=1).gather(1, y[:, None])[:, 0]
    return -((1.0 - logp.exp()).clamp_min(0.0) ** gamma) * logp


@register_loss("feature_focal", "focal loss on each categorical feature head (feature_logits) vs rounded "
               "attributes, NaN ignored, per-head weights (A.6)")
class FeatureFocalLoss(Loss):
    """``Σ_h w_h · focal_h`` over ``out["feature_logits"]`` (module docstring).

    Options: ``gamma`` (2, as thyroid-us), ``offsets`` (a number for every head or one per head; default 1 =
    ratings from 1), ``head_weights`` (None = 1 each, a number, or a list with one weight per head in the task's
    attribute order; thyroid-us weights every head 1.0). thyroid-us codes α = 2 on every class: a constant
    factor, left out here (use the objective weight).
    """

    def __init__(self, context: Mapping[str, Any] | None = None, gamma: float = 2.0,
                 offsets: float | Sequence[float] = 1.0, head_weights: float | Sequence[float] | None = None,
                 out_key: str = "feature_logits", target_key: str = "attributes") -> None:
        super().__init__(context)
        if float(gamma) < 0:
            raise CadxConfigError(f"feature_focal: gamma must be ≥ 0, got {gamma}")
        self.gamma = float(gamma)
        self.offsets = offsets
        self.head_weights = head_weights
        self.out_key, self.target_key = out_key, target_key

    def _per_head(self, value: Any, n: int, what: str, default: float) -> list[float]:
        if value is None:
            return [default] * n
        if isinstance(value, int | float) and not isinstance(value, bool):
            return [float(value)] * n
        vals = [float(v) for v in value]
        if len(vals) != n:
            raise CadxConfigError(f"feature_focal: {what} has {len(vals)} values for {n} heads")
        return vals

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        heads = list(need(out, self.out_key, "feature_focal"))
        values = need(batch, self.target_key, "feature_focal")
        if out_b is not None and batch_b is not None and self.out_key in out_b and self.target_key in batch_b:
            heads = [torch.cat([a, b], 0) for a, b in zip(heads, out_b[self.out_key], strict=True)]
            values = torch.cat([values, batch_b[self.target_key]], 0)
        n = len(heads)
        if values.ndim != 2 or values.shape[1] != n:
            raise CadxDataError(f"feature_focal: {n} feature heads but {self.target_key} has shape "
                                f"{tuple(values.shape)} (task.attributes must list one attribute per head)",
                                field=self.target_key)
        weights = self._per_head(self.head_weights, n, "head_weights", 1.0)
        offsets = self._per_head(self.offsets, n, "offsets", 1.0)
        target = categorical_targets(values, offsets, [int(h.shape[1]) for h in heads])
        total = zero_like(heads[0])
        for h, logits in enumerate(heads):
            t = focal_terms(logits, target[:, h], self.gamma)
            if t.numel():
                total = total + weights[h] * t.mean()
        return total
