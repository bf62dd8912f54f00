"""A trained model back from its checkpoint, without Lightning: :func:`build_model` (spec → network) and
:func:`load_module` (checkpoint → network in eval mode + its spec).

The prediction path (``cadx predict``, :mod:`cadx.runs.inference`) loads fold models through here, so it imports
torch and the model registry but not Lightning (≈ 2 s of a predict's start); :mod:`cadx.training.trainer` imports
both functions from this module (one implementation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cadx.errors import CadxDataError
from cadx.models import create_model

__all__ = ["build_model", "load_module"]


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    """The model a :func:`cadx.training.trainer.model_spec` describes (its ``kwargs`` validated against the model's
    options)."""
    return create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                        spatial_dims=spec["spatial_dims"], num_attributes=spec["num_attributes"], **spec["kwargs"])


def load_module(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a cadx checkpoint (weights + the spec it was built from), in eval mode on CPU. A missing,
    truncated or foreign file (not a cadx Lightning checkpoint, or weights that do not fit its spec) raises one
    :class:`CadxDataError` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CadxDataError("checkpoint missing", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip (RuntimeError), bad pickle, EOF, an unknown class ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise CadxDataError(f"unreadable checkpoint (truncated or not a torch file: {type(err).__name__}: "
                            f"{first[:160]})", path=path) from None
    spec = state.get("cadx_model") if isinstance(state, dict) else None
    if not isinstance(spec, dict) or not spec:
        raise CadxDataError("not a cadx checkpoint (no cadx model spec; was it written by cadx cv / train?)",
                            path=path, field="cadx_model")
    weights = state.get("state_dict")
    if not isinstance(weights, dict):
        raise CadxDataError("not a cadx checkpoint (no state_dict)", path=path, field="state_dict")
    try:
        model = build_model(spec)
        model.load_state_dict({k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")})
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CadxDataError(f"model {spec.get('name', '?')!r} does not load from it: {first[:160]}",
                            path=path, field="state_dict") from None
    return model.eval(), spec
