"""Training objectives by name: ``LOSSES`` registry and ``build_objective(spec, **context) -> Objective``.

Registered losses: ``ce``, ``weighted_ce``, ``focal``, ``aux_ce`` (classification), ``contrastive`` (DMRN),
``margin_ranking`` (MTMR-Net), ``attribute_mse``, ``dice``, ``seg_ce``, ``sdl`` (SDL synergic),
``feature_focal`` (A.6 categorical feature heads).
See ``docs/contracts.md`` "Objectives".
"""

from cadx.objectives import (  # noqa: F401  (each module registers its losses)
    classification,
    contrastive,
    detection,
    feature_heads,
    ranking,
    regression,
    scnet,
    seg_losses,
    synergic,
)
from cadx.objectives.multitask import Objective, build_objective, term
from cadx.objectives.registry import LOSSES, Loss, register_loss

__all__ = ["LOSSES", "Loss", "Objective", "build_objective", "register_loss", "term"]
