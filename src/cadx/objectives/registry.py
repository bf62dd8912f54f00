"""Loss registry (``LOSSES``) and the :class:`Loss` base every registered loss derives from.

A registered loss is a class ``Loss(context=None, **kwargs)``; calling the instance as
``loss(out, batch, out_b=None, batch_b=None)`` returns a scalar tensor (the *unweighted* value).
``out``/``out_b`` are model output dicts (``docs/contracts.md`` "Models"), ``batch``/``batch_b`` batch dicts with
``label`` (B,) long (−1 = missing), ``attributes`` (B, A) (NaN = missing), ``score`` (B,) in [0, 1],
``mask`` (B, 1, *spatial). ``context`` carries run facts: ``class_weights``, ``class_counts``, ``priors``,
``num_classes``.

Per-sample losses (``pairwise = False``) use both branches of a Siamese batch when ``out_b``/``batch_b`` are given
(the two halves are concatenated, so every image counts once). Pairwise losses (``pairwise = True``) compare
``out`` with ``out_b`` row by row; without a second branch they pair the first half of the batch with the second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.registry import Registry

LossFactory = Callable[..., "Loss"]
LOSSES: Registry[LossFactory] = Registry("loss")


def register_loss(name: str, description: str = "") -> Callable[[LossFactory], LossFactory]:
    """Register a :class:`Loss` subclass (or factory ``f(context=None, **kwargs) -> Loss``) under ``name``."""
    return LOSSES.register(name, description)


class Loss(nn.Module):
    """Base of registered losses; subclasses implement ``compute(out, batch, out_b, batch_b) -> scalar``."""

    pairwise: bool = False

    def __init__(self, context: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.context: dict[str, Any] = dict(context or {})

    def compute(self, out: Mapping[str, Any], batch: Mapping[str, Any], out_b: Mapping[str, Any] | None,
                batch_b: Mapping[str, Any] | None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, out: Mapping[str, Any], batch: Mapping[str, Any], out_b: Mapping[str, Any] | None = None,
                batch_b: Mapping[str, Any] | None = None) -> Tensor:
        return self.compute(out, batch, out_b, batch_b)


# -- helpers shared by the loss modules ---------------------------------------------------------------------------
def need(d: Mapping[str, Any], key: str, what: str) -> Any:
    """``d[key]`` or a ``CadxDataError`` naming the loss (``what``) that needs it."""
    if key not in d or d[key] is None:
        raise CadxDataError(f"loss {what!r} needs {key!r} (have: {', '.join(sorted(d)) or 'nothing'})", field=key)
    return d[key]


def both(out: Mapping[str, Any], batch: Mapping[str, Any], out_b: Mapping[str, Any] | None,
         batch_b: Mapping[str, Any] | None, out_key: str, batch_key: str, what: str) -> tuple[Tensor, Tensor]:
    """Prediction ``out[out_key]`` and target ``batch[batch_key]``, concatenated with the second branch's when
    both ``out_b`` and ``batch_b`` carry them (per-sample losses then see every image of a pair batch)."""
    pred, target = need(out, out_key, what), need(batch, batch_key, what)
    if out_b is not None and batch_b is not None and out_key in out_b and batch_key in batch_b:
        pred = torch.cat([pred, out_b[out_key]], dim=0)
        target = torch.cat([target, batch_b[batch_key]], dim=0)
    if pred.shape[0] != target.shape[0]:
        raise CadxDataError(f"loss {what!r}: {out_key} has {pred.shape[0]} rows but {batch_key} has "
                            f"{target.shape[0]}", field=batch_key)
    return pred, target


def pair_halves(a: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor]:
    """Rows to compare: ``(a, b)`` when ``b`` is given, else the first vs the second half of ``a``
    (an odd last row is left out)."""
    if b is not None:
        if a.shape[0] != b.shape[0]:
            raise CadxDataError(f"paired branches have {a.shape[0]} and {b.shape[0]} rows")
        return a, b
    h = a.shape[0] // 2
    return a[:h], a[h:2 * h]


def zero_like(t: Tensor) -> Tensor:
    """A zero scalar connected to ``t``'s graph (so ``backward`` works when nothing contributes)."""
    return t.sum() * 0.0 + 0.0  # "+ 0.0" turns −0.0 into 0.0 for the logs


def as_float_tensor(value: Any, name: str) -> Tensor:
    """A 1-D float tensor from a list/array/tensor option (``CadxConfigError`` when impossible)."""
    try:
        t = torch.as_tensor(value, dtype=torch.float32).flatten()
    except (TypeError, ValueError) as e:
        raise CadxConfigError(f"{name} must be a list of numbers, got {value!r}") from e
    if not torch.isfinite(t).all() or (t < 0).any():
        raise CadxConfigError(f"{name} must be finite and non-negative, got {t.tolist()}")
    return t


__all__ = ["LOSSES", "Loss", "as_float_tensor", "both", "need", "pair_halves", "register_loss", "zero_like"]
