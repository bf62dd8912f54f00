"""How the MTMR-Net study derives its configs: the three variants of one experiment config (Table II rows).

* ``mtmr`` — the config as given (CE + attribute MSE + margin ranking on random Siamese pairs);
* ``no_rank`` — without L_rank: ``margin_ranking`` removed from the objective and ``pairs: none``;
* ``no_reg`` — without L_reg: ``attribute_mse`` removed **and** the attribute branch dropped
  (``model.kwargs.attribute_branch: false``, the classifier sees the image features only). The paper's "without
  L_reg" leaves it open whether the branch stays; an untrained branch feeding the classifier would only add noise,
  so the branch goes.
"""

from __future__ import annotations

from typing import Any

from cadx.config import ExperimentConfig, derive
from cadx.errors import CadxConfigError

__all__ = ["PAPER_CHOICES", "VARIANTS", "variant_config"]

#: variant → display name (Table II rows).
VARIANTS: dict[str, str] = {
    "mtmr": "MTMR-Net",
    "no_rank": "MTMR-Net w/o L_rank",
    "no_reg": "MTMR-Net w/o L_reg (no attribute branch)",
}

#: Where this implementation departs from or interprets the paper (written into the study's notes.md).
PAPER_CHOICES = (
    "The paper resizes each diameter-adaptive ROI to 256 and takes a random 224 crop; here the ROI is resized to "
    "``input.size`` and shifted at random by up to ``translate × size`` pixels (border replicated), and inference "
    "uses the whole ROI — a random crop without the size change. The minority class gets heavier augmentation by "
    "oversampling (``sampler: oversample``): every duplicate is augmented independently (flips, quarter turns, "
    "shift). One prediction per nodule from one branch of the Siamese net; each crop is the nodule's largest slice "
    "(the shared export holds one slice per nodule), whereas the paper averages over all of a nodule's slices."
)


def _loss(entry: Any) -> str:
    """The loss of an objective entry (``{name: w}`` or ``{part: {"loss": name, ...}}``)."""
    return str(entry.get("loss")) if isinstance(entry, dict) and "loss" in entry else ""


def variant_config(cfg: ExperimentConfig, variant: str) -> ExperimentConfig:
    """``cfg`` for one of :data:`VARIANTS` (``mtmr`` returns an equal copy); named ``<cfg.name>_<variant>``.

    Raises CadxConfigError for an unknown variant or an objective without the term the variant removes."""
    if variant not in VARIANTS:
        raise CadxConfigError(f"unknown MTMR variant {variant!r}; choose from {sorted(VARIANTS)}")
    drop = {"no_rank": "margin_ranking", "no_reg": "attribute_mse"}.get(variant)
    if drop is None:
        return derive(cfg, source=f"<{variant}>")
    objective = {k: v for k, v in cfg.objective.items() if k != drop and _loss(v) != drop}
    if len(objective) == len(cfg.objective):
        raise CadxConfigError(f"variant {variant}: the objective has no {drop!r} term to remove")
    updates: dict[str, Any] = {"objective": objective, "name": f"{cfg.name}_{variant}"}
    if variant == "no_rank":
        updates["pairs"] = "none"
    else:
        updates["model"] = {"kwargs": {**cfg.model.kwargs, "attribute_branch": False}}
    return derive(cfg, source=f"<{variant}>", **updates)
