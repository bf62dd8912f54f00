"""Detection losses of thesis A.8: four objectness losses and the MSE box loss, on a YOLO grid.

Every loss reads ``out["det_logits"]`` (B, 5, Gh, Gw) (:mod:`cadx.models.yolo_dense`) and ``batch["det_target"]``
(B, 5, Gh, Gw): channel 0 = 1 in the cell holding a box centre else 0, channels 1–2 the centre offset from the
cell centre in half-cells (in [−1, 1]), channels 3–4 the log-scale ``log(size / anchor)`` of height and width.

Normalisation (as the authors' ``loss.py`` and Lin et al.): each loss is the **sum over cells divided by the
number of positive cells** in the batch (at least 1, so an all-negative batch gives the plain sum).

Objectness (p = sigmoid(logit), y ∈ {0, 1}, p_t = p if y = 1 else 1 − p):

* ``det_bce``: −log p_t.
* ``det_weighted_bce``: −w_y log p_t with w_1 = 1 − π and w_0 = π, times 2 (weights by class prevalence π =
  ``prior``, the expected fraction of positive cells; the authors' code uses π = 1/77, one box in an 11×7 grid).
* ``det_focal``: −α_t (1 − p_t)^γ log p_t, α_t = α for y = 1 and 1 − α for y = 0 (Lin et al.; α = 0.25, γ = 2 by
  default; the authors' code uses one α for both classes — pass ``alpha=None`` for that, weight 1).
* ``det_reduced_focal``: −α_t w log p_t with w = 1 when p_t < ``threshold`` (0.5) else
  ((1 − p_t) / (1 − threshold))^γ (Sergievskiy & Ponamarev 2019): BCE for badly classified cells, focal-like
  down-weighting after the threshold (continuous at it). ``alpha=None`` (default) = no class weight.

Box: ``det_box_mse`` = Σ over positive cells of (tanh(offset logits) − offset)² + (log-scale logits −
log-scale)², both coordinates, / positive cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives.registry import Loss, both, register_loss

__all__ = ["BoxMSE", "Objectness", "objectness_loss"]

KINDS = ("bce", "weighted_bce", "focal", "reduced_focal")


def objectness_loss(logits: Tensor, target: Tensor, kind: str, *, prior: float = 1 / 64, alpha: float | None = 0.25,
                    gamma: float = 2.0, threshold: float = 0.5) -> Tensor:
    """Objectness loss of ``logits`` vs ``target`` (same shape, target ∈ {0, 1}): sum / max(1, positives)."""
    y = target.float()
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")  # = −log p_t, numerically stable
    if kind == "bce":
        loss = ce
    elif kind == "weighted_bce":
        loss = 2.0 * torch.where(y > 0.5, torch.full_like(ce, 1.0 - prior), torch.full_like(ce, prior)) * ce
    elif kind in ("focal", "reduced_focal"):
        pt = torch.exp(-ce)
        if kind == "focal":
            w = (1.0 - pt) ** gamma
        else:
            w = torch.where(pt < threshold, torch.ones_like(pt), ((1.0 - pt) / (1.0 - threshold)) ** gamma)
        loss = w * ce
        if alpha is not None:
            loss = torch.where(y > 0.5, alpha * loss, (1.0 - alpha) * loss)
    else:
        raise CadxConfigError(f"objectness loss kind must be one of {KINDS}, got {kind!r}")
    return loss.sum() / y.sum().clamp(min=1.0)


def _pair(out: Mapping[str, Any], batch: Mapping[str, Any], out_b: Mapping[str, Any] | None,
          batch_b: Mapping[str, Any] | None, what: str) -> tuple[Tensor, Tensor]:
    pred, target = both(out, batch, out_b, batch_b, "det_logits", "det_target", what)
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 5:
        raise CadxDataError(f"{what}: det_logits {tuple(pred.shape)} and det_target {tuple(target.shape)} must both "
                            "be (B, 5, Gh, Gw)", field="det_target")
    return pred, target


class Objectness(Loss):
    """One objectness loss (``kind``); see the module docstring for each formula and its options."""

    kind = "bce"

    def __init__(self, context: Mapping[str, Any] | None = None, prior: float = 1 / 64,
                 alpha: float | None = 0.25, gamma: float = 2.0, threshold: float = 0.5) -> None:
        super().__init__(context)
        if not 0 < prior < 1 or gamma < 0 or not 0 < threshold < 1 or (alpha is not None and not 0 <= alpha <= 1):
            raise CadxConfigError(f"det_{self.kind}: need 0 < prior < 1, gamma >= 0, 0 < threshold < 1, "
                                  "alpha in [0, 1] or null")
        self.prior, self.alpha, self.gamma, self.threshold = float(prior), alpha, float(gamma), float(threshold)

    def compute(self, out: Mapping[str, Any], batch: Mapping[str, Any], out_b: Mapping[str, Any] | None,
                batch_b: Mapping[str, Any] | None) -> Tensor:
        pred, target = _pair(out, batch, out_b, batch_b, f"det_{self.kind}")
        return objectness_loss(pred[:, 0], target[:, 0], self.kind, prior=self.prior, alpha=self.alpha,
                               gamma=self.gamma, threshold=self.threshold)


@register_loss("det_bce", "A.8 objectness: binary cross-entropy per grid cell / positive cells")
class ObjectnessBCE(Objectness):
    kind = "bce"


@register_loss("det_weighted_bce", "A.8 objectness: BCE weighted by class prevalence (1-prior, prior) / positives")
class ObjectnessWeightedBCE(Objectness):
    kind = "weighted_bce"


@register_loss("det_focal", "A.8 objectness: focal loss (alpha 0.25, gamma 2) / positive cells")
class ObjectnessFocal(Objectness):
    kind = "focal"


@register_loss("det_reduced_focal", "A.8 objectness: reduced focal loss (BCE below p_t 0.5, focal above)")
class ObjectnessReducedFocal(Objectness):
    kind = "reduced_focal"

    def __init__(self, context: Mapping[str, Any] | None = None, prior: float = 1 / 64, alpha: float | None = None,
                 gamma: float = 2.0, threshold: float = 0.5) -> None:
        super().__init__(context, prior, alpha, gamma, threshold)


@register_loss("det_box_mse", "A.8 box loss: MSE of centre offset and log-scale over positive cells")
class BoxMSE(Loss):
    """Σ_positive cells Σ_{4 channels} (decoded offset / log-scale − target)² / max(1, positive cells)."""

    def compute(self, out: Mapping[str, Any], batch: Mapping[str, Any], out_b: Mapping[str, Any] | None,
                batch_b: Mapping[str, Any] | None) -> Tensor:
        pred, target = _pair(out, batch, out_b, batch_b, "det_box_mse")
        pos = (target[:, 0] > 0.5).float().unsqueeze(1)
        p = torch.cat([torch.tanh(pred[:, 1:3]), pred[:, 3:5]], dim=1)
        return (((p - target[:, 1:5].float()) ** 2) * pos).sum() / pos.sum().clamp(min=1.0)
