"""Classification losses: ``ce``, ``weighted_ce``, ``focal``, ``aux_ce``.

All take ``out["logits"]`` (B, K ≥ 2) and ``batch["label"]`` (B,) long; labels −1 (missing) are ignored and the
mean runs over the labelled rows only; a batch without any label gives 0 (connected to the graph, zero gradient).
Labels ≥ K raise ``CadxDataError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives.registry import Loss, as_float_tensor, both, register_loss, zero_like

BALANCED = ("balanced", "inverse_frequency", "auto")


def inverse_frequency_weights(counts: Sequence[float] | Tensor) -> Tensor:
    """``w_c = N / (K · n_c)`` (scikit-learn "balanced": the mean weight over the training samples is 1).

    A class with ``n_c = 0`` gets weight 0 (it never occurs as a target, so the value is irrelevant but finite).
    """
    n = as_float_tensor(counts, "class_counts")
    if n.sum() <= 0:
        raise CadxConfigError(f"class_counts must contain a positive count, got {n.tolist()}")
    w = n.sum() / (n.numel() * n)
    return torch.where(n > 0, w, torch.zeros_like(w))


def resolve_class_weights(value: Any, context: Mapping[str, Any], what: str, required: bool) -> Tensor | None:
    """Per-class weights (K,) from an explicit list, or ``"balanced"``/``None`` → the run context:
    ``class_weights`` as given, else inverse frequency of ``class_counts``, else of ``priors`` (``1 / (K p_c)``)."""
    if value is not None and not isinstance(value, str):
        return as_float_tensor(value, f"{what}: class_weights")
    if isinstance(value, str) and value.lower() not in BALANCED:
        raise CadxConfigError(f"{what}: class_weights must be a list or one of {BALANCED}, got {value!r}")
    if value is None and context.get("class_weights") is not None:
        return as_float_tensor(context["class_weights"], f"{what}: context class_weights")
    if context.get("class_counts") is not None:
        return inverse_frequency_weights(context["class_counts"])
    if context.get("priors") is not None:
        return inverse_frequency_weights(as_float_tensor(context["priors"], "priors"))
    if required:
        raise CadxConfigError(f"loss {what!r} needs class weights: pass class_weights=[...] or build the "
                              "objective with context class_weights / class_counts / priors")
    return None


def labelled(logits: Tensor, labels: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Rows with a label (≠ −1): ``(logits (n, K), labels (n,))``; checks shapes and label range."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise CadxConfigError(f"loss {what!r} needs logits (B, K ≥ 2), got {tuple(logits.shape)}")
    labels = labels.reshape(-1).long()
    if labels.shape[0] != logits.shape[0]:
        raise CadxDataError(f"loss {what!r}: {logits.shape[0]} logit rows but {labels.shape[0]} labels",
                            field="label")
    keep = labels >= 0
    if (labels[keep] >= logits.shape[1]).any() or (labels < -1).any():
        raise CadxDataError(f"loss {what!r}: labels must be in [0, {logits.shape[1] - 1}] or −1, "
                            f"got {sorted(set(labels.tolist()))}", field="label")
    return logits[keep], labels[keep]


class _CE(Loss):
    weight: Tensor | None

    def __init__(self, context: Mapping[str, Any] | None, weight: Tensor | None, label_smoothing: float,
                 out_key: str, target_key: str, name: str) -> None:
        super().__init__(context)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise CadxConfigError(f"{name}: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.out_key, self.target_key, self.name = out_key, target_key, name
        self.register_buffer("weight", weight, persistent=False)

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        logits, labels = both(out, batch, out_b, batch_b, self.out_key, self.target_key, self.name)
        x, y = labelled(logits, labels, self.name)
        if y.numel() == 0:
            return zero_like(logits)
        w = None if self.weight is None else self.weight.to(x)
        if w is not None and w.numel() != x.shape[1]:
            raise CadxConfigError(f"{self.name}: {w.numel()} class weights for {x.shape[1]} classes")
        if w is not None and float(w[y].sum()) == 0.0:
            return zero_like(logits)
        return F.cross_entropy(x, y, weight=w, label_smoothing=self.label_smoothing)


@register_loss("ce", "cross-entropy on logits (B,K) vs label (B,), −1 ignored; optional label_smoothing")
class CrossEntropy(_CE):
    """Mean softmax cross-entropy over labelled rows; ``label_smoothing`` ε as in PyTorch:
    ``(1 − ε)·(−log p_y) + ε·mean_k(−log p_k)``."""

    def __init__(self, context: Mapping[str, Any] | None = None, label_smoothing: float = 0.0,
                 out_key: str = "logits", target_key: str = "label") -> None:
        super().__init__(context, None, label_smoothing, out_key, target_key, "ce")


@register_loss("weighted_ce", "class-weighted cross-entropy, weights = inverse class frequency (context) or given")
class WeightedCrossEntropy(_CE):
    """``Σ_i w_{y_i}·CE_i / Σ_i w_{y_i}`` (PyTorch's weighted mean, so the weights' overall scale cancels).

    ``class_weights``: a list, or ``"balanced"``/``None`` = from the context (``class_weights``; else
    ``N / (K n_c)`` from ``class_counts``; else ``1 / (K p_c)`` from ``priors``). ``class_counts`` may also be
    passed directly. The thesis (A.2) notes cost-sensitive weighting is equivalent to oversampling.
    """

    def __init__(self, context: Mapping[str, Any] | None = None, class_weights: Any = None,
                 class_counts: Sequence[float] | None = None, label_smoothing: float = 0.0,
                 out_key: str = "logits", target_key: str = "label") -> None:
        ctx = dict(context or {})
        if class_counts is not None:
            ctx["class_counts"], ctx["class_weights"] = class_counts, None
        w = resolve_class_weights(class_weights, ctx, "weighted_ce", required=True)
        super().__init__(context, w, label_smoothing, out_key, target_key, "weighted_ce")


@register_loss("focal", "softmax focal loss (Lin et al. 2017): −α_y (1 − p_y)^γ log p_y, mean over labelled rows")
class FocalLoss(Loss):
    """Multi-class focal loss, mean over labelled rows ``i``: ``−α_{y_i} (1 − p_{i,y_i})^γ log p_{i,y_i}``.

    ``gamma`` (default 2); ``alpha``: per-class list, a scalar (same for every class), ``"balanced"`` (inverse
    frequency from the context, as ``weighted_ce``) or ``None`` (= 1). γ = 0 and α = None give plain CE.
    Equals ``K ×`` ``monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True)`` (MONAI averages over B·K
    one-hot entries, of which only the target class is non-zero) — tested.
    """

    alpha: Tensor | None

    def __init__(self, context: Mapping[str, Any] | None = None, gamma: float = 2.0, alpha: Any = None,
                 out_key: str = "logits", target_key: str = "label") -> None:
        super().__init__(context)
        if float(gamma) < 0:
            raise CadxConfigError(f"focal: gamma must be ≥ 0, got {gamma}")
        self.gamma = float(gamma)
        a: Tensor | None
        if alpha is None:
            a = None
        elif isinstance(alpha, int | float) and not isinstance(alpha, bool):
            a = as_float_tensor([alpha], "focal: alpha")
        else:
            a = resolve_class_weights(alpha, self.context, "focal", required=True)
        self.register_buffer("alpha", a, persistent=False)
        self.out_key, self.target_key = out_key, target_key

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        logits, labels = both(out, batch, out_b, batch_b, self.out_key, self.target_key, "focal")
        x, y = labelled(logits, labels, "focal")
        if y.numel() == 0:
            return zero_like(logits)
        logp_t = F.log_softmax(x.float(), dim=1).gather(1, y[:, None])[:, 0]
        loss = -((1.0 - logp_t.exp()).clamp_min(0.0) ** self.gamma) * logp_t
        if self.alpha is not None:
            a = self.alpha.to(loss)
            if a.numel() not in (1, x.shape[1]):
                raise CadxConfigError(f"focal: {a.numel()} alpha values for {x.shape[1]} classes")
            loss = loss * (a if a.numel() == 1 else a[y])
        return loss.mean()


@register_loss("aux_ce", "GoogLeNet auxiliary heads: 0.3 × Σ CE(aux_logits_h, label) (Szegedy et al. 2015)")
class AuxCrossEntropy(Loss):
    """``head_weight · Σ_h CE(out["aux_logits"][h], label)`` with ``head_weight = 0.3`` (Szegedy et al.: "the
    losses of the auxiliary classifiers were weighted by 0.3"); the part value already contains the 0.3.

    Models return ``aux_logits`` only in training mode, so in evaluation this loss is 0 (``val_loss`` then is the
    main loss only, as at inference).
    """

    def __init__(self, context: Mapping[str, Any] | None = None, head_weight: float = 0.3,
                 out_key: str = "aux_logits", target_key: str = "label") -> None:
        super().__init__(context)
        self.head_weight = float(head_weight)
        self.out_key, self.target_key = out_key, target_key

    def compute(self, out, batch, out_b, batch_b) -> Tensor:  # type: ignore[no-untyped-def]
        heads = out.get(self.out_key)
        if not heads:
            ref = out.get("logits", out.get("features"))
            if ref is None:
                raise CadxDataError("aux_ce: model output has neither aux_logits nor logits", field="aux_logits")
            return zero_like(ref)
        heads_b = None if out_b is None else out_b.get(self.out_key)
        total: Tensor | None = None
        for h, logits in enumerate(heads):
            o = {"x": logits}
            ob = {"x": heads_b[h]} if heads_b else None
            x, y = labelled(*both(o, batch, ob, batch_b, "x", self.target_key, "aux_ce"), "aux_ce")
            term = F.cross_entropy(x, y) if y.numel() else zero_like(logits)
            total = term if total is None else total + term
        assert total is not None
        return self.head_weight * total


__all__ = ["AuxCrossEntropy", "CrossEntropy", "FocalLoss", "WeightedCrossEntropy", "inverse_frequency_weights",
           "resolve_class_weights"]
