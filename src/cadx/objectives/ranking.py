"""``margin_ranking``: the MTMR-Net margin ranking loss (Liu et al., Eqs. 3–4), γ = 0.1.

The paper ranks the *predicted malignancy scores* ``p ∈ [0, 1]`` of the two Siamese branches against the
continuous ground-truth malignancy ``t ∈ [0, 1]`` (mean radiologist rating rescaled):
``L = 1/(2N) Σ max(0, γ − δ(p_i, p_j)·(t_i − t_j))``, ``δ = +1 if p_i ≥ p_j else −1``.
Read literally, Eq. 3 is piecewise constant in ``p`` (``δ`` is a sign), so it has no gradient. The authors'
released code (``nn.MarginRankingLoss(margin=0.1)`` on the two outputs, target ±1 from the ordering of the
ground truths) uses the roles the other way round, which is what we implement:

    ``L_ij = max(0, γ − sign(t_i − t_j)·(p_i − p_j))``

Both forms are zero exactly when the predicted order agrees with the true one by more than the margin (for the
sign form: ``p_i − p_j ≥ γ`` when ``t_i > t_j``), and the second is differentiable in ``p``.

Choices: ``p`` = softmax probability of the last class (malignant) of ``out["logits"]`` (B, K ≥ 2), or
sigmoid for (B, 1) logits; ``score_key`` reads a ready (B,) score instead. Pairs with equal targets
(``t_i = t_j``: no order to learn) contribute 0 but stay in the mean's denominator, as in the released code
(sum over ordered pairs / number of pairs — Eq. 3's ``1/(2N)`` over both orders of N pairs is the same mean).
Pairs with a NaN target are left out. No valid pair → 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives.registry import Loss, need, pair_halves, register_loss, zero_like


def malignancy_probability(logits: Tensor) -> Tensor:
    """``(B,)`` probability of the last (malignant) class from logits ``(B, K ≥ 2)``, or sigmoid of ``(B, 1)``."""
    if logits.ndim != 2:
        raise CadxDataError(f"margin_ranking: logits must be (B, K), got {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=1)[:, -1]


def margin_ranking_pairs(p_i: Tensor, p_j: Tensor, t_i: Tensor, t_j: Tensor, margin: float = 0.1) -> Tensor:
    """Per-pair loss ``(P,)``: ``max(0, γ − sign(t_i − t_j)·(p_i − p_j))``, 0 where ``t_i == t_j``."""
    s = torch.sign(t_i - t_j).to(p_i)
    return torch.where(s != 0, (margin - s * (p_i - p_j)).clamp_min(0.0), torch.zeros_like(p_i))


@register_loss("margin_ranking", "MTMR-Net margin ranking loss on predicted malignancy of paired images, γ = 0.1")
class MarginRankingLoss(Loss):
    """Pairwise: ``out`` vs ``out_b`` row by row (without ``out_b``: first half vs second half of the batch).

    Options: ``margin`` γ (0.1, MTMR-Net §IV), ``out_key`` (``"logits"``), ``score_key`` (an output already in
    [0, 1], overrides the logits), ``target_key`` (``"score"``).
    """

    pairwise = True

    def __init__(self, context: Mapping[str, Any] | None = None, margin: float = 0.1, out_key: str = "logits",
                 score_key: str | None = None, target_key: str = "score") -> None:
        super().__init__(context)
        if float(margin) < 0:
            raise CadxConfigError(f"margin_ranking: margin must be ≥ 0, got {margin}")
        self.margin = float(margin)
        self.out_key, self.score_key, self.target_key = out_key, score_key, target_key

    def _p(self, out: Mapping[str, Any]) -> Tensor:
        if self.score_key is not None:
            return need(out, self.score_key, "margin_ranking").reshape(-1)
        return malignancy_probability(need(out, self.out_key, "margin_ranking"))

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        if (out_b is None) != (batch_b is None):
            raise CadxDataError("margin_ranking: give both out_b and batch_b, or neither")
        pa = self._p(out)
        pb = None if out_b is None else self._p(out_b)
        ta = need(batch, self.target_key, "margin_ranking").reshape(-1).to(pa)
        tb = None if batch_b is None else need(batch_b, self.target_key, "margin_ranking").reshape(-1).to(pa)
        p_i, p_j = pair_halves(pa, pb)
        t_i, t_j = pair_halves(ta, tb)
        valid = ~(torch.isnan(t_i) | torch.isnan(t_j))
        if not bool(valid.any()):
            return zero_like(pa)
        return margin_ranking_pairs(p_i[valid], p_j[valid], t_i[valid], t_j[valid], self.margin).mean()


__all__ = ["MarginRankingLoss", "malignancy_probability", "margin_ranking_pairs"]
