"""Run kinds by name: each kind cross-validates a config into a standard run folder. ``network`` (a registry
model trained per fold), ``segmentation`` (a config with a ``segmentation`` section), ``handcrafted``
(``model.name: hc_svm``); the thesis systems add theirs with ``@register_run_kind``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cadx.config import ExperimentConfig
from cadx.registry import Registry

RunKind = Callable[[ExperimentConfig, "str | Path", bool], dict[str, Any]]
RUN_KINDS: Registry[Any] = Registry("run kind")
register_run_kind = RUN_KINDS.register


def kind_of(cfg: ExperimentConfig) -> str:
    """The run kind of ``cfg``: ``detection`` when it has a ``detection`` section (thesis A.8), ``segmentation``
    when it has a ``segmentation`` section, ``handcrafted`` for
    ``model.name: hc_svm``, else ``network``."""
    if cfg.detection is not None:
        return "detection"
    if cfg.segmentation is not None:
        return "segmentation"
    if cfg.model.name == "hc_svm":
        return "handcrafted"
    return "network"
