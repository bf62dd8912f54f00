"""The experiment engine: preprocessing → Lightning training → cross-validation, prediction, external evaluation.

Functions the CLI calls: :func:`run_cv`, :func:`train_final`, :func:`predict_study`, :func:`evaluate_run`,
:func:`run_demo` (configs come from :func:`cadx.config.load_config`). They are resolved on first access (PEP 562),
so importing one submodule (e.g. ``cadx.runs.predict``) does not import every run kind and Lightning with it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"run_cv": "cadx.runs.cv", "run_demo": "cadx.runs.demo", "evaluate_run": "cadx.runs.evaluate",
            "predict_study": "cadx.runs.predict", "train_final": "cadx.runs.final"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """``cadx.runs.run_cv`` etc.: import the defining module on first use."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cadx.runs' has no attribute {name!r}")
