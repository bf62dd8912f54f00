"""``sdl``: the synergic deep learning loss (Zhang et al., SDL; DMRN Table 2 baseline).

Per ``SDL.forward`` output: ``CE(logits_a) + CE(logits_b) + λ · CE(synergic_logits, same-class)`` from
:func:`cadx.models.attention.sdl_loss_terms`. With a Siamese batch (``out_b``/``batch_b`` given, engine
``pairs: balanced|random``) each member is one ``SDL.forward`` call, so the loss is the **mean** of the two
members' losses (every image counts once, as for per-sample losses). ``λ`` (``synergic_weight``) defaults to 3,
the value SDL reports using (our reading of the paper; configurable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models.attention import sdl_loss_terms
from cadx.objectives.registry import Loss, need, register_loss

DEFAULT_SYNERGIC_WEIGHT = 3.0


@register_loss("sdl", "SDL synergic loss: CE of both branches + λ·synergic CE (mean over pair members)")
class SynergicLoss(Loss):
    """Needs ``out["logits_a"]``, ``out["logits_b"]``, ``out["synergic_logits"]`` (an ``sdl`` model) and
    ``batch["label"]``. Returns the unweighted scalar ``ce_a + ce_b + λ · synergic`` (averaged over ``out`` and
    ``out_b`` when a second member is given)."""

    def __init__(self, context: Mapping[str, Any] | None = None,
                 synergic_weight: float = DEFAULT_SYNERGIC_WEIGHT) -> None:
        super().__init__(context)
        if float(synergic_weight) < 0:
            raise CadxConfigError(f"sdl: synergic_weight must be >= 0, got {synergic_weight}")
        self.synergic_weight = float(synergic_weight)

    def member(self, out: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        """Loss of one ``SDL.forward`` output against its batch."""
        for key in ("logits_a", "logits_b", "synergic_logits"):
            need(out, key, "sdl")
        label = need(batch, "label", "sdl").reshape(-1).long()
        label_b = batch.get("label_b")
        parts = sdl_loss_terms(dict(out), label, label_b)
        return parts["ce_a"] + parts["ce_b"] + self.synergic_weight * parts["synergic"]

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        if (out_b is None) != (batch_b is None):
            raise CadxDataError("sdl: give both out_b and batch_b, or neither")
        loss = self.member(out, batch)
        if out_b is not None and batch_b is not None:
            loss = 0.5 * (loss + self.member(out_b, batch_b))
        return loss


__all__ = ["DEFAULT_SYNERGIC_WEIGHT", "SynergicLoss"]
