"""Weighted sums of named losses: :class:`Objective`, :func:`build_objective` and :func:`term`.

A spec maps part names to weights or option dicts::

    {"ce": 1.0, "attribute_mse": 1.0, "margin_ranking": 0.5}               # MTMR-Net Eq. 5 (λ = 1, β = 0.5)
    {"ce": {"weight": 1, "label_smoothing": 0.1}}
    {"bin": term("dice", out_key="seg_bin", target_map={2: 1}),            # multi-task heads (SCNet):
     "tern": term("dice", out_key="seg_tern"), "cls": term("ce")}          # L = L_bin + L_tern + L_cls

The part name is the registry name unless the entry says ``"loss": <registry name>`` (then the same loss can
appear several times, on different heads). The MTMR η·R (L2 on the weights) is **not** a loss here: it is the
optimiser's ``weight_decay`` (the gradient of ``η/2·‖W‖²`` is SGD's ``η·W``); asking for ``weight_decay`` /
``l2`` in a spec raises ``CadxConfigError`` saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cadx.errors import CadxConfigError
from cadx.objectives.registry import LOSSES, Loss

_REGULARISERS = ("weight_decay", "l2", "regularization", "regularisation")


def term(loss: str, weight: float = 1.0, **kwargs: Any) -> dict[str, Any]:
    """A spec entry ``{"loss": loss, "weight": weight, **kwargs}`` (use a free part name as its key)."""
    return {"loss": loss, "weight": weight, **kwargs}


class Objective(nn.Module):
    """``objective(out, batch, out_b=None, batch_b=None) -> (total, parts)``.

    ``total = Σ_n weight_n · parts[n]``; ``parts`` maps each part name to its unweighted scalar tensor (still in
    the graph — call ``.detach()``/``.item()`` to log). ``pairwise`` is True when some part compares the two
    branches of a Siamese batch (then feed ``out_b``/``batch_b``, or the halves of one batch are paired).
    An ``nn.Module``, so ``.to(device)`` moves class-weight buffers.
    """

    def __init__(self, losses: Mapping[str, Loss], weights: Mapping[str, float]) -> None:
        super().__init__()
        if not losses:
            raise CadxConfigError("objective: at least one loss is needed")
        self.losses = nn.ModuleDict(dict(losses))
        self.weights = {n: float(weights[n]) for n in losses}

    @property
    def names(self) -> list[str]:
        return list(self.losses.keys())

    @property
    def pairwise(self) -> bool:
        return any(getattr(m, "pairwise", False) for m in self.losses.values())

    def forward(self, out: Mapping[str, Any], batch: Mapping[str, Any], out_b: Mapping[str, Any] | None = None,
                batch_b: Mapping[str, Any] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        for name, loss in self.losses.items():
            value = loss(out, batch, out_b, batch_b)
            parts[name] = value
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        assert total is not None
        return total, parts

    def extra_repr(self) -> str:
        return ", ".join(f"{n}×{w:g}" for n, w in self.weights.items())


def _entries(spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        return {spec: 1.0}
    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(spec, Sequence):
        return {str(n): 1.0 for n in spec}
    raise CadxConfigError(f"objective spec must be a dict, a list of names or a name, got {type(spec).__name__}")


def build_objective(spec: Any, **context: Any) -> Objective:
    """Build an :class:`Objective` from ``{name: weight}`` / ``{name: {"weight": w, "loss": reg_name, **kw}}``
    (also a plain name or a list of names, weight 1). ``context`` (``class_weights``, ``class_counts``,
    ``priors``, ``num_classes``, …) is handed to every loss, which uses what it needs. An ``Objective`` passes
    through unchanged. Unknown loss names or options raise ``CadxConfigError``.
    """
    if isinstance(spec, Objective):
        return spec
    losses: dict[str, Loss] = {}
    weights: dict[str, float] = {}
    for name, entry in _entries(spec).items():
        name = str(name)
        if name.lower() in _REGULARISERS:
            raise CadxConfigError(f"objective: {name!r} is not a loss — set the optimiser's weight_decay "
                                  "(MTMR-Net's η·R, η = 1e-3) instead")
        if "." in name or not name:
            raise CadxConfigError(f"objective: part name {name!r} must be non-empty and contain no '.'")
        opts = dict(entry) if isinstance(entry, Mapping) else {"weight": entry}
        try:
            weight = float(opts.pop("weight", 1.0))
        except (TypeError, ValueError) as e:
            raise CadxConfigError(f"objective {name!r}: weight must be a number, got {entry!r}") from e
        if not torch.isfinite(torch.tensor(weight)):
            raise CadxConfigError(f"objective {name!r}: weight must be finite, got {weight}")
        reg_name = str(opts.pop("loss", name))
        factory = LOSSES.get(reg_name)
        try:
            losses[name] = factory(context=context, **opts)
        except TypeError as e:
            raise CadxConfigError(f"objective {name!r} ({reg_name}): bad option(s) {sorted(opts)}: {e}") from e
        weights[name] = weight
    return Objective(losses, weights)


__all__ = ["Objective", "build_objective", "term"]
