"""Shared base class and helpers of cadx models (2D/3D layer factories, input checks, lenient weight loading).

Every model maps a tensor ``(B, C, *spatial)`` (``spatial`` = ``(H, W)`` or ``(D, H, W)``) to a dict with
``"features"`` ``(B, D)`` (= ``forward_features(x)``) and, when ``num_classes > 0``, ``"logits"`` ``(B, K)``.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cadx.errors import CadxConfigError, CadxDataError

log = logging.getLogger(__name__)

__all__ = [
    "CadxModel", "check_spatial_dims", "conv_nd", "load_state_dict_leniently", "maybe_load_pretrained",
    "norm_nd", "pool_nd",
]


def check_spatial_dims(spatial_dims: int, model: str, supported: tuple[int, ...] = (2, 3)) -> int:
    """Validate ``spatial_dims`` for ``model``; raises ``CadxConfigError`` naming the supported values."""
    if spatial_dims not in supported:
        hint = ""
        if 2 not in supported:
            hint = " (a 3D model: pass spatial_dims=3 and (B, C, D, H, W) inputs)"
        elif 3 not in supported:
            hint = " (for 2.5D input pass in_channels=k adjacent slices with spatial_dims=2)"
        raise CadxConfigError(f"model {model!r} supports spatial_dims in {supported}, got {spatial_dims}{hint}")
    return spatial_dims


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` (what MONAI's ``Conv[Conv.CONV, d]`` factory returns; looked up
    here so that the models which need no MONAI block do not import MONAI)."""
    return _torch_layer("Conv", spatial_dims)


def norm_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d`` (MONAI's ``Norm[Norm.BATCH, d]``)."""
    return _torch_layer("BatchNorm", spatial_dims)


#: Pooling kinds by MONAI factory name → torch class prefix.
_POOLS = {"max": "MaxPool", "avg": "AvgPool", "adaptivemax": "AdaptiveMaxPool", "adaptiveavg": "AdaptiveAvgPool"}


def pool_nd(kind: str, spatial_dims: int) -> type[nn.Module]:
    """Pooling class by MONAI name: ``"max"``, ``"avg"``, ``"adaptivemax"``, ``"adaptiveavg"`` (case-insensitive,
    as MONAI's ``Pool[kind, d]``); another name raises ValueError."""
    if kind.lower() not in _POOLS:
        raise ValueError(f"unknown pooling {kind!r} (known: {', '.join(_POOLS)})")
    return _torch_layer(_POOLS[kind.lower()], spatial_dims)


def _torch_layer(prefix: str, spatial_dims: int) -> type[nn.Module]:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    layer: type[nn.Module] = getattr(nn, f"{prefix}{spatial_dims}d")
    return layer


class CadxModel(nn.Module):
    """Base of cadx classifiers.

    Subclasses set ``feature_dim`` and implement ``forward_features(x) -> (B, feature_dim)``; ``_init_head()``
    adds ``self.head`` (``nn.Linear(feature_dim, num_classes)``, or ``None`` when ``num_classes == 0``).
    The default ``forward`` returns ``{"features", "logits"?}``; models with more outputs extend the dict.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2) -> None:
        super().__init__()
        if num_classes < 0 or in_channels < 1:
            raise CadxConfigError(f"need num_classes >= 0 and in_channels >= 1, got {num_classes}, {in_channels}")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.spatial_dims = int(spatial_dims)
        self.feature_dim = 0
        self.head: nn.Module | None = None

    def _init_head(self, in_features: int | None = None) -> None:
        """Create the linear classifier head on ``in_features`` (default ``feature_dim``) inputs."""
        d = self.feature_dim if in_features is None else in_features
        self.head = nn.Linear(d, self.num_classes) if self.num_classes > 0 else None

    def check_input(self, x: Tensor) -> None:
        """Raise ``CadxDataError`` unless ``x`` is ``(B, in_channels, *spatial)`` with ``spatial_dims`` axes."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            want = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
            raise CadxDataError(f"{type(self).__name__} expects {want} with C={self.in_channels}, "
                                f"got shape {tuple(x.shape)}", field="image")

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Image → feature vector ``(B, feature_dim)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``{"features": (B, D), "logits": (B, K)}`` (no ``"logits"`` when ``num_classes == 0``)."""
        f = self.forward_features(x)
        out: dict[str, Tensor] = {"features": f}
        if self.head is not None:
            out["logits"] = self.head(f)
        return out

    def pretrained_prefixes(self) -> list[str]:
        """Key prefixes under which an external state_dict (e.g. a plain ResNet's) may be loaded.

        ``""`` = the model itself; wrappers return e.g. ``["", "backbone."]`` (the best-matching prefix wins),
        or several branch prefixes with ``load_pretrained(..., all_prefixes=True)``.
        """
        return [""]

    def load_pretrained(self, path: str | Path, all_prefixes: bool = False) -> dict[str, Any]:
        """Load a local state_dict leniently (nothing is downloaded).

        Accepts a raw state_dict, or a checkpoint dict with ``"state_dict"``/``"model"``; strips ``module.``/
        ``model.`` wrappers. Tensors of the wrong shape are skipped, except a first conv with a different
        input-channel count, which is adapted (RGB → grey: channel sum; otherwise repeated and rescaled).
        Returns ``{"loaded": [...], "missing": [...], "unexpected": [...], "mismatched": [...]}`` and logs it.
        """
        p = Path(path)
        if not p.is_file():
            raise CadxConfigError(f"pretrained weights not found: {p}")
        obj = _safe_load(p)
        src = _unwrap_state_dict(obj, p)
        prefixes = self.pretrained_prefixes()
        if all_prefixes:
            report = load_state_dict_leniently(self, src, prefixes)
        else:
            own = self.state_dict()
            best = max(prefixes, key=lambda pre: sum((pre + k) in own for k in src))
            report = load_state_dict_leniently(self, src, [best])
        log.info("loaded %d tensors from %s (missing %d, unexpected %d, mismatched %d)", len(report["loaded"]),
                 p, len(report["missing"]), len(report["unexpected"]), len(report["mismatched"]))
        if report["mismatched"]:
            log.warning("skipped tensors with mismatched shapes: %s", ", ".join(report["mismatched"]))
        return report


def _numpy_safe_globals(path: Path) -> list[Any]:
    """numpy reconstruction functions and dtype classes named in (or needed by) the checkpoint."""
    objs: list[Any] = [np.ndarray, np.dtype]
    objs += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    for n in torch.serialization.get_unsafe_globals_in_checkpoint(path):
        mod, _, attr = n.rpartition(".")
        if mod.split(".")[0] != "numpy":
            raise CadxConfigError(f"{path}: refuses to unpickle {n}")
        objs.append(getattr(importlib.import_module(mod), attr))
    return objs


def _safe_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; numpy arrays/RNG states (as in cadx's Lightning checkpoints) are
    allow-listed, any other pickled object is refused (nothing is executed)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals(path)):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            pass
        raise CadxConfigError(f"{path}: cannot be read as a tensor-only checkpoint ({type(e).__name__}); save "
                              f"the weights with torch.save(model.state_dict(), path)") from e


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The tensor dict inside a checkpoint, with ``module.``/``model.`` prefixes removed."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CadxConfigError(f"{path}: not a state_dict (expected a dict of tensors)")
    sd: dict[str, Tensor] = dict(obj)
    for wrap in ("module.", "model."):
        if sd and all(k.startswith(wrap) for k in sd):
            sd = {k[len(wrap):]: v for k, v in sd.items()}
    return sd


def _adapt_in_channels(w: Tensor, target: torch.Size) -> Tensor | None:
    """Adapt a conv weight ``(O, Cs, *k)`` to ``(O, Ct, *k)``; ``None`` when other dims differ."""
    if w.ndim < 3 or w.shape[0] != target[0] or w.shape[2:] != target[2:]:
        return None
    summed = w.sum(dim=1, keepdim=True)  # grey = sum of the RGB filters (the response to a grey image is kept)
    ct = target[1]
    return summed.repeat(1, ct, *([1] * (w.ndim - 2))) / ct


def load_state_dict_leniently(model: nn.Module, src: dict[str, Tensor], prefixes: list[str]) -> dict[str, Any]:
    """Copy every tensor of ``src`` whose ``prefix + key`` exists in ``model`` with a compatible shape."""
    own = model.state_dict()
    new: dict[str, Tensor] = {}
    used: set[str] = set()
    mismatched: list[str] = []
    for pre in prefixes:
        for k, v in src.items():
            tk = pre + k
            if tk not in own:
                continue
            used.add(k)
            if own[tk].shape == v.shape:
                new[tk] = v
            elif (a := _adapt_in_channels(v, own[tk].shape)) is not None:
                new[tk] = a
            else:
                mismatched.append(f"{tk} {tuple(v.shape)}->{tuple(own[tk].shape)}")
    model.load_state_dict(new, strict=False)
    return {"loaded": sorted(new), "missing": sorted(k for k in own if k not in new),
            "unexpected": sorted(k for k in src if k not in used), "mismatched": mismatched}


def maybe_load_pretrained(model: CadxModel, pretrained_path: str | Path | None) -> CadxModel:
    """Factories call this with their ``pretrained_path=`` kwarg (``None`` = random init)."""
    if pretrained_path:
        model.load_pretrained(pretrained_path)
    return model
