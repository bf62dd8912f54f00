"""The detection study's variants: the experiment config with each of the paper's four objectness losses (each
with the MSE box loss at the config's weight), derived through :func:`cadx.config.derive`."""

from __future__ import annotations

from collections.abc import Sequence

from cadx.config import ExperimentConfig, derive
from cadx.errors import CadxConfigError

__all__ = ["LOSSES", "loss_variants"]

#: Short name → registered objectness loss (A.8: BCE, weighted BCE, focal, reduced focal), in the paper's order.
LOSSES: dict[str, str] = {"bce": "det_bce", "weighted_bce": "det_weighted_bce", "focal": "det_focal",
                          "reduced_focal": "det_reduced_focal"}


def _box_term(cfg: ExperimentConfig) -> dict[str, object]:
    box = {k: v for k, v in cfg.objective.items() if k == "det_box_mse"}
    return box or {"det_box_mse": 1.0}


def loss_variants(cfg: ExperimentConfig, losses: Sequence[str] | None = None) -> dict[str, ExperimentConfig]:
    """``{short name: config}``: ``cfg`` with ``objective = {<loss>: w, det_box_mse: w_box}`` for each of
    ``losses`` (default all four), named ``<cfg.name>_<short>``. The objectness weight and options are the
    config's own when its objective already holds that loss, else 1.0. Unknown names raise CadxConfigError."""
    if cfg.detection is None:
        raise CadxConfigError(f"{cfg.name}: the detection study needs a config with a 'detection' section")
    names = list(losses or LOSSES)
    bad = [n for n in names if n not in LOSSES]
    if bad:
        raise CadxConfigError(f"detection study: unknown loss(es) {bad}; choose from {list(LOSSES)}")
    out = {}
    for n in names:
        reg = LOSSES[n]
        objective = {reg: cfg.objective.get(reg, 1.0), **_box_term(cfg)}
        out[n] = derive(cfg, source=f"{cfg.name} (loss {n})", name=f"{cfg.name}_{n}", objective=objective)
    return out
