"""Models by name (``create_model``); each paper system in its own module."""

import importlib

from cadx.models.registry import MODELS, create_model, register_model

# Modules that register models. Each is imported if present (helpers add theirs to this list).
_MODULES = ["resnet", "vgg", "cnn3d", "dmrn", "mtmr", "attention", "lenet_alexnet", "anatomy_cnn", "googlenet",
            "unet", "pspnet", "scnet"]
for _m in _MODULES:
    try:
        importlib.import_module(f"cadx.models.{_m}")
    except ModuleNotFoundError as _e:  # only a module not written yet is skipped, never a missing dependency
        if _e.name != f"cadx.models.{_m}":
            raise

__all__ = ["MODELS", "create_model", "register_model"]
