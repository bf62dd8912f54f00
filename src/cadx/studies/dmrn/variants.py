"""How the DMRN study derives its runs: each model of Bi et al.'s Tables 2–4 as updates of the DMRN base config.

:data:`VARIANTS` maps a model key to section updates of the base config (``configs/papers/dmrn_adrenal.yaml``),
applied by :func:`variant_config` through :func:`cadx.config.derive`. A variant that names another model gives its
``model.kwargs`` whole; one that keeps the base model (``dmrn_noms``) updates the base's kwargs. On a base whose
input is already ``volume3d`` (AdrenalMNIST3D) the 3D variants keep the base's ``input`` section.

CPU choices (stated in notes.md): networks at width 16 (VGG-19 at width 8 with a 256-unit head) instead of
the papers' 64, small stems for the 32 px slices; ResNet-101/152 are the same architecture at that width.
``cnn3d`` gets the lesion's 3D box resized to 16×32×32 (``input.kind: volume3d``). SDL trains on in-batch random
pairs (first half vs second half of a shuffled batch, as in SDL), λ = 3.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cadx.config import ExperimentConfig, derive
from cadx.errors import CadxConfigError
from cadx.runs.handcrafted import HC_NAME

__all__ = ["DEFAULT_MODELS", "TSNE_MODELS", "VARIANTS", "shared_data_root", "variant_config"]

#: a plain classification head instead of DMRN's pairs + SVM
_HEAD: dict[str, Any] = {"objective": {"ce": 1.0}, "pairs": "none", "eval": {"classifier": "head"}}
_VOLUME: dict[str, Any] = {"input": {"kind": "volume3d", "size": [16, 32, 32], "augment": {"rot90": True}}}


def _net(name: str, kwargs: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"model": {"name": name, "kwargs": kwargs}, **_HEAD, **more}


def _resnet(depth: int) -> dict[str, Any]:
    return _net(f"resnet{depth}", {"width": 16, "stem": "small"})


#: model key → section updates of the DMRN base config (paper table in the comment).
VARIANTS: dict[str, dict[str, Any]] = {
    "dmrn": {},                                                                           # Tables 2-4
    "dmrn_noms": {"model": {"kwargs": {"multiscale": False}}},                            # Table 4: w.o. MS
    HC_NAME: _net(HC_NAME, {"kernel": "linear", "C": 1.0}),                               # Table 2: HC
    "vgg19": _net("vgg19", {"width": 8, "pool_size": 1, "fc_dim": 256}),
    "resnet18": _resnet(18),                                                              # Fig. 5 ResNet
    "resnet50": _resnet(50),
    "resnet101": _resnet(101),
    "resnet152": _resnet(152),
    "cnn3d": _net("cnn3d", {"width": 8, "fc_dims": [128, 64]}, **_VOLUME),
    "cnn3d_small": _net("cnn3d_small", {}, **_VOLUME),
    "arl": _net("arl", {"depth": 50, "width": 16, "stem": "small"}),
    "sdl": {**_net("sdl", {"depth": 50, "width": 16, "stem": "small"}), "objective": {"sdl": 1.0}},
}
DEFAULT_MODELS = ["dmrn", "dmrn_noms", "resnet18", "resnet50", HC_NAME]
TSNE_MODELS = ("dmrn", "resnet18")


def variant_config(base: ExperimentConfig, model: str,
                   network_kwargs: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """The config of ``model``: ``base`` updated by :data:`VARIANTS` ``[model]``, named ``model``.

    ``network_kwargs`` (e.g. ``{"width": 4}`` for a quick run) update the model kwargs of every network variant;
    ``hc_svm`` ignores them. Raises CadxConfigError for an unknown model or kwargs its model rejects."""
    if model not in VARIANTS:
        raise CadxConfigError(f"dmrn study: unknown model {model!r} (known: {', '.join(VARIANTS)})")
    updates = {k: v for k, v in VARIANTS[model].items() if not (k == "input" and base.input.kind == "volume3d")}
    own = dict(updates.get("model", {}))
    kwargs = dict(own.get("kwargs", {})) if "name" in own else {**base.model.kwargs, **own.get("kwargs", {})}
    if model != HC_NAME:
        kwargs.update(network_kwargs or {})
    updates["model"] = {"name": own.get("name", base.model.name), "kwargs": kwargs}
    return derive(base, source=f"dmrn study [{model}]", name=model, **updates)


def shared_data_root(cfg: ExperimentConfig, out: Path) -> ExperimentConfig:
    """``cfg`` with a generated synthetic cohort's root at ``out/data`` (made once, not once per run); other
    configs unchanged."""
    if cfg.data.root is None and cfg.data.dataset.split(":")[0] == "synthetic":
        return derive(cfg, data={"root": str((out / "data").resolve())})
    return cfg
