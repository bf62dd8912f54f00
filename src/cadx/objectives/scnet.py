"""``scnet``: the SCNet loss (Pan et al. 2019, Eqs. 2–4), ``L = L_binary + L_ternary + L_cls``, all cross-entropy.

- ``L_binary``: pixel CE of Φ1's ``out["seg_binary_logits"]`` (B, 2, H, W) vs foreground = any non-background
  label (``mask > 0``). Skipped (0) when the model has no binary output (``scnet(two_step=False)``, the
  "ternary loss" ablation).
- ``L_ternary``: pixel CE of ``out["seg_logits"]`` (B, S, H, W) vs ``batch["mask"]`` (B, 1, H, W) (or (B, H, W))
  with values in ``{0..S−1}`` (background / kidney / tumour for S = 3).
- ``L_cls``: CE of ``out["logits"]`` (B, K) vs ``batch["label"]`` (B,); label −1 (e.g. a slice the engine
  marks as unlabelled) is ignored; no labelled row → 0.

Pixel CEs are means over the known pixels of the batch (mask values < 0 are ignored; none known → 0). Every
empty term is a zero connected to the graph. With a Siamese pair (``out_b``/``batch_b``) both halves count.

``Loss`` values are scalars, so the parts are exposed two ways: ``part="binary"|"ternary"|"cls"`` makes the loss
return one term (use :func:`scnet_objective_spec` to get an objective whose parts are named ``binary``,
``ternary``, ``cls``), and the default ``part="all"`` returns the sum and keeps the detached terms in
``last_parts`` (and :meth:`SCNetLoss.parts` computes them on demand).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives.classification import labelled
from cadx.objectives.multitask import term
from cadx.objectives.registry import Loss, both, register_loss, zero_like

__all__ = ["PARTS", "SCNetLoss", "pixel_ce", "scnet_objective_spec"]

PARTS = ("binary", "ternary", "cls")


def pixel_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Mean softmax CE over pixels with ``target >= 0``: logits (B, S, *sp), target (B, *sp) long; 0 if none."""
    known = target >= 0
    if not bool(known.any()):
        return zero_like(logits)
    return F.cross_entropy(logits.float(), target.masked_fill(~known, -1), ignore_index=-1)


def _mask(mask: Tensor, logits: Tensor, what: str, check_range: bool = True) -> Tensor:
    """``(B, 1, *sp)`` or ``(B, *sp)`` mask → ``(B, *sp)`` long, checked against logits ``(B, S, *sp)``
    (values < S unless ``check_range=False``)."""
    if mask.ndim == logits.ndim:
        if mask.shape[1] != 1:
            raise CadxDataError(f"{what}: mask must have 1 channel, got {tuple(mask.shape)}", field="mask")
        mask = mask[:, 0]
    if mask.shape[0] != logits.shape[0] or mask.shape[1:] != logits.shape[2:]:
        raise CadxDataError(f"{what}: mask {tuple(mask.shape)} does not fit {tuple(logits.shape)} "
                            "(want (B, 1, *spatial))", field="mask")
    mask = mask.long()
    if check_range and (mask >= logits.shape[1]).any():
        raise CadxDataError(f"{what}: mask values must be < {logits.shape[1]} (got max {int(mask.max())})",
                            field="mask")
    return mask


@register_loss("scnet", "SCNet: CE(Φ1 fg/bg) + CE(Φ2 ternary) + CE(class, −1 ignored); part=all|binary|ternary|cls")
class SCNetLoss(Loss):
    """``L_binary + L_ternary + L_cls`` (``part="all"``) or one of the terms (module docstring).

    Options: ``part``; ``out_key`` (``"seg_logits"``), ``binary_key`` (``"seg_binary_logits"``), ``logits_key``
    (``"logits"``), ``target_key`` (``"mask"``), ``label_key`` (``"label"``). A model without ``"logits"``
    raises ``CadxDataError`` for the cls term (use ``seg_ce`` for segmentation-only models).
    """

    def __init__(self, context: Mapping[str, Any] | None = None, part: str = "all", out_key: str = "seg_logits",
                 binary_key: str = "seg_binary_logits", logits_key: str = "logits", target_key: str = "mask",
                 label_key: str = "label") -> None:
        super().__init__(context)
        if part not in ("all", *PARTS):
            raise CadxConfigError(f"scnet: part must be 'all' or one of {PARTS}, got {part!r}")
        self.part = part
        self.out_key, self.binary_key, self.logits_key = out_key, binary_key, logits_key
        self.target_key, self.label_key = target_key, label_key
        self.last_parts: dict[str, Tensor] = {}

    def _binary(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        if self.binary_key not in out or out[self.binary_key] is None:
            return zero_like(out[self.out_key]) if self.out_key in out else torch.zeros(())
        logits, mask = both(out, batch, out_b, batch_b, self.binary_key, self.target_key, "scnet")
        if logits.shape[1] != 2:
            raise CadxConfigError(f"scnet: {self.binary_key} must have 2 channels, got {tuple(logits.shape)}")
        m = _mask(mask, logits, "scnet binary", check_range=False)
        return pixel_ce(logits, torch.where(m > 0, torch.ones_like(m), m))

    def _ternary(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        logits, mask = both(out, batch, out_b, batch_b, self.out_key, self.target_key, "scnet")
        if logits.shape[1] < 2:
            raise CadxConfigError(f"scnet: {self.out_key} needs S >= 2 channels, got {tuple(logits.shape)}")
        return pixel_ce(logits, _mask(mask, logits, "scnet ternary"))

    def _cls(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        logits, labels = both(out, batch, out_b, batch_b, self.logits_key, self.label_key, "scnet")
        x, y = labelled(logits, labels, "scnet")
        return zero_like(logits) if y.numel() == 0 else F.cross_entropy(x.float(), y)

    def parts(self, out: Mapping[str, Any], batch: Mapping[str, Any], out_b: Mapping[str, Any] | None = None,
              batch_b: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        """``{"binary", "ternary", "cls"}`` unweighted terms (``binary`` is 0 without a binary output)."""
        return {"binary": self._binary(out, batch, out_b, batch_b),
                "ternary": self._ternary(out, batch, out_b, batch_b),
                "cls": self._cls(out, batch, out_b, batch_b)}

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        if self.part != "all":
            fn = {"binary": self._binary, "ternary": self._ternary, "cls": self._cls}[self.part]
            return fn(out, batch, out_b, batch_b)
        parts = self.parts(out, batch, out_b, batch_b)
        self.last_parts = {k: v.detach() for k, v in parts.items()}
        return parts["binary"] + parts["ternary"] + parts["cls"]


def scnet_objective_spec(binary: float = 1.0, ternary: float = 1.0, cls: float = 1.0) -> dict[str, Any]:
    """Spec for :func:`~cadx.objectives.build_objective` with parts named ``binary``, ``ternary``, ``cls``
    (weights 1 = SCNet Eq. 2–3). Works for ``two_step=False`` models too (``binary`` is then 0)."""
    return {"binary": term("scnet", binary, part="binary"), "ternary": term("scnet", ternary, part="ternary"),
            "cls": term("scnet", cls, part="cls")}
