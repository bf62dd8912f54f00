"""Segmentation losses: ``dice`` (MONAI ``DiceLoss``) and ``seg_ce`` (per-pixel cross-entropy).

Both take ``out["seg_logits"]`` (B, S, *spatial) and ``batch["mask"]`` (B, 1, *spatial) holding class indices.
``S == 1``: binary (sigmoid), the mask is binarised (``> 0``); ``S > 1``: softmax over S classes, mask values
in [0, S). ``target_map`` ({value: new_value}) relabels the mask first, so one ternary mask (0 background,
1 kidney, 2 tumour) can drive a binary head (``{2: 1}``) and a ternary head of a multi-task model (SCNet).
Pixels < 0 are "unknown": ignored by ``seg_ce``; rows whose mask is entirely < 0 are left out of ``dice``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss as MonaiDiceLoss
from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives.classification import resolve_class_weights
from cadx.objectives.registry import Loss, both, register_loss, zero_like


def _prepare(out, batch, out_b, batch_b, out_key: str, target_key: str, what: str,  # type: ignore[no-untyped-def]
             target_map: Mapping[int, int] | None) -> tuple[Tensor, Tensor]:
    logits, mask = both(out, batch, out_b, batch_b, out_key, target_key, what)
    if mask.ndim == logits.ndim - 1:
        mask = mask.unsqueeze(1)
    if mask.shape[0] != logits.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != logits.shape[2:]:
        raise CadxDataError(f"{what}: mask {tuple(mask.shape)} does not fit seg_logits {tuple(logits.shape)} "
                            "(want (B, 1, *spatial))", field=target_key)
    mask = mask.long()
    if target_map:
        src = mask.clone()
        for k, v in target_map.items():
            mask = torch.where(src == int(k), torch.full_like(mask, int(v)), mask)
    s = logits.shape[1]
    if s == 1:
        mask = torch.where(mask > 0, torch.ones_like(mask), mask)
    elif (mask >= s).any():
        raise CadxDataError(f"{what}: mask values must be < {s} (got max {int(mask.max())})", field=target_key)
    return logits, mask


@register_loss("dice", "soft Dice loss (monai.losses.DiceLoss) on seg_logits (B,S,*sp) vs mask (B,1,*sp)")
class DiceLoss(Loss):
    """``1 − (2 Σ p·g + smooth_nr) / (Σ p + Σ g + smooth_dr)`` per sample and class (``batch=False``) or over
    the batch (``batch=True``), averaged — ``monai.losses.DiceLoss`` with ``sigmoid`` (S = 1) or ``softmax`` +
    one-hot (S > 1). Options pass through: ``include_background`` (True), ``batch`` (False), ``smooth_nr``,
    ``smooth_dr`` (1e-5), ``squared_pred`` (False), ``jaccard`` (False). The Keras code of thesis A.3 (smooth 1,
    whole batch) is ``batch=True, smooth_nr=1, smooth_dr=1``.
    """

    def __init__(self, context: Mapping[str, Any] | None = None, include_background: bool = True,
                 batch: bool = False, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, squared_pred: bool = False,
                 jaccard: bool = False, target_map: Mapping[int, int] | None = None, out_key: str = "seg_logits",
                 target_key: str = "mask") -> None:
        super().__init__(context)
        kw: dict[str, Any] = dict(include_background=bool(include_background), batch=bool(batch),
                                  smooth_nr=float(smooth_nr), smooth_dr=float(smooth_dr),
                                  squared_pred=bool(squared_pred), jaccard=bool(jaccard))
        self.binary = MonaiDiceLoss(sigmoid=True, **kw)
        self.multi = MonaiDiceLoss(softmax=True, to_onehot_y=True, **kw)
        self.target_map = dict(target_map or {})
        self.out_key, self.target_key = out_key, target_key

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        logits, mask = _prepare(out, batch, out_b, batch_b, self.out_key, self.target_key, "dice", self.target_map)
        known = (mask >= 0).flatten(1).any(dim=1)
        if not bool(known.any()):
            return zero_like(logits)
        logits, mask = logits[known].float(), mask[known].clamp_min(0)
        fn = self.binary if logits.shape[1] == 1 else self.multi
        return fn(logits, mask.to(logits))


@register_loss("seg_ce", "per-pixel cross-entropy (BCE for 1 channel) on seg_logits vs mask, pixels < 0 ignored")
class SegCrossEntropy(Loss):
    """Mean over known pixels of softmax CE (S > 1) or BCE-with-logits (S = 1). ``class_weights`` (S > 1): a
    list, or ``"balanced"`` (inverse pixel frequency from the context's ``class_counts``); weighted mean as
    ``F.cross_entropy``."""

    class_weights: Tensor | None

    def __init__(self, context: Mapping[str, Any] | None = None, class_weights: Sequence[float] | str | None = None,
                 target_map: Mapping[int, int] | None = None, out_key: str = "seg_logits",
                 target_key: str = "mask") -> None:
        super().__init__(context)
        w = None if class_weights is None else resolve_class_weights(class_weights, self.context, "seg_ce", True)
        self.register_buffer("class_weights", w, persistent=False)
        self.target_map = dict(target_map or {})
        self.out_key, self.target_key = out_key, target_key

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        logits, mask = _prepare(out, batch, out_b, batch_b, self.out_key, self.target_key, "seg_ce",
                                self.target_map)
        known = mask >= 0
        if not bool(known.any()):
            return zero_like(logits)
        if logits.shape[1] == 1:
            if self.class_weights is not None:
                raise CadxConfigError("seg_ce: class_weights need S > 1 output channels")
            return F.binary_cross_entropy_with_logits(logits[known].float(), mask[known].float())
        w = None if self.class_weights is None else self.class_weights.to(logits)
        return F.cross_entropy(logits.float(), mask[:, 0].masked_fill(~known[:, 0], -1), weight=w, ignore_index=-1)


__all__ = ["DiceLoss", "SegCrossEntropy"]
