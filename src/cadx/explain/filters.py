"""First-layer filter grids and feature-map grids (anatomy-CNN paper, Figs. 7-11), via forward hooks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.explain.gradcam import _first_tensor
from cadx.explain.tsne import save_figure

__all__ = ["feature_maps", "feature_maps_figure", "first_conv", "first_layer_filters", "first_layer_filters_figure"]


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d | nn.Conv3d]:
    """``(name, module)`` of the first ``Conv2d``/``Conv3d`` in registration order (the input convolution of
    every cadx model). Raises ``CadxConfigError`` when there is none."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            return name, m
    raise CadxConfigError(f"{type(model).__name__} has no convolution layer")


def _unit(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.full_like(a, 0.5)


def first_layer_filters(model: nn.Module, max_filters: int = 96) -> np.ndarray:
    """The first convolution's kernels as display images, each min-max scaled to [0, 1].

    Weights ``(O, I, kh, kw)`` (3D: ``(O, I, kd, kh, kw)``, the central depth slice is shown). ``I == 3`` gives
    RGB ``(n, kh, kw, 3)``; otherwise the mean over input channels ``(n, kh, kw)``. ``n = min(O, max_filters)``.
    """
    _, conv = first_conv(model)
    w = conv.weight.detach().cpu().double().numpy()
    if w.ndim == 5:
        w = w[:, :, w.shape[2] // 2]
    w = w[:max_filters]
    if w.shape[1] == 3:
        return np.stack([_unit(np.moveaxis(k, 0, -1)) for k in w])
    return np.stack([_unit(k.mean(axis=0)) for k in w])


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _tile_figure(tiles: np.ndarray, title: str, cmap: str | None) -> Figure:
    rows, cols = _grid(len(tiles))
    fig = Figure(figsize=(1.1 * cols + 0.4, 1.1 * rows + 0.6))
    for i, t in enumerate(tiles):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(t, cmap=cmap if t.ndim == 2 else None, interpolation="nearest")
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def first_layer_filters_figure(model: nn.Module, path: str | Path, max_filters: int = 96, title: str = "") -> Path:
    """Save the grid of first-layer kernels (:func:`first_layer_filters`) to ``path``; returns the path."""
    name, conv = first_conv(model)
    tiles = first_layer_filters(model, max_filters)
    shape = "x".join(str(s) for s in conv.weight.shape[2:])
    fig = _tile_figure(tiles, title or f"first-layer filters: {name} ({conv.weight.shape[0]} x {shape})", "gray")
    return save_figure(fig, path)


def feature_maps(model: nn.Module, x: Tensor | np.ndarray, layer_name: str) -> np.ndarray:
    """Activations of ``layer_name`` for one input: ``(K, h, w)`` (3D layers: ``(K, d, h, w)``).

    ``x`` is one sample ``(C, *spatial)`` or a batch of one ``(1, C, *spatial)``. Runs in eval mode without
    gradients (the training flag is restored).
    """
    modules = dict(model.named_modules())
    if layer_name not in modules:
        raise CadxConfigError(f"no layer named {layer_name!r} in {type(model).__name__}")
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).float()
    sd = getattr(model, "spatial_dims", None)
    if (sd is not None and xt.ndim == sd + 1) or (sd is None and xt.ndim == 3):
        xt = xt[None]
    if xt.ndim not in (4, 5) or xt.shape[0] != 1:
        raise CadxDataError(f"expected one sample (C, *spatial) or (1, C, *spatial), got {tuple(xt.shape)}",
                            field="image")
    param = next(model.parameters(), None)
    if param is not None:
        xt = xt.to(param.device)
    store: dict[str, Tensor] = {}
    handle = modules[layer_name].register_forward_hook(lambda _m, _i, o: store.__setitem__("a", _first_tensor(o)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(xt)
    finally:
        handle.remove()
        model.train(was_training)
    if "a" not in store:
        raise CadxConfigError(f"layer {layer_name!r} did not run in the forward pass")
    act = store["a"][0].detach().cpu().double().numpy()
    if act.ndim < 3:
        raise CadxConfigError(f"layer {layer_name!r} output {tuple(store['a'].shape)} has no spatial axes")
    return act


def feature_maps_figure(model: nn.Module, x: Tensor | np.ndarray, layer_name: str, path: str | Path,
                        max_maps: int = 32, title: str = "") -> np.ndarray:
    """Save a grid of the first ``max_maps`` channels of ``layer_name``'s activation for input ``x``.

    Each map is min-max scaled on its own (a constant/dead map is drawn mid-grey); 3D maps show their central
    depth slice. Returns the displayed maps ``(n, h, w)`` before scaling.
    """
    act = feature_maps(model, x, layer_name)
    if act.ndim == 4:
        act = act[:, act.shape[1] // 2]
    shown = act[:max_maps]
    fig = _tile_figure(np.stack([_unit(a) for a in shown]),
                       title or f"feature maps: {layer_name} ({act.shape[0]} x {act.shape[1]}x{act.shape[2]})",
                       "viridis")
    save_figure(fig, path)
    return shown
