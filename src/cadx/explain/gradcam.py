"""Grad-CAM (Selvaraju et al. 2017) for any cadx model, 2D or 3D, and an overlay figure.

For a target layer with activations ``A (B, K, *s)`` and the class score ``y_c`` (the model's ``"logits"``, before
softmax): ``w_k = mean_s dy_c/dA_k``, ``cam = ReLU(sum_k w_k A_k)``, upsampled (bi/tri-linear) to the input's
spatial size and min-max normalised per sample to [0, 1] (an all-zero map stays 0). The default layer is the
deepest spatial map the score depends on (:func:`default_cam_layer`), found with forward hooks, so any cadx model
works without naming a layer; :func:`last_conv_layer` gives the classic "last convolution" choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor, nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.explain.tsne import save_figure

__all__ = ["default_cam_layer", "grad_cam", "last_conv_layer", "overlay_figure"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _first_tensor(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, dict):
        for key in ("logits", "features"):
            if isinstance(out.get(key), Tensor):
                return out[key]
    raise CadxConfigError(f"cannot take a tensor from a layer output of type {type(out).__name__}")


def _logits(out: Any, output_key: str) -> Tensor:
    if isinstance(out, dict):
        if output_key not in out:
            raise CadxConfigError(f"model output has no {output_key!r} (keys: {sorted(out)})")
        return out[output_key]
    return _first_tensor(out)


def last_conv_layer(model: nn.Module, x: Tensor) -> str:
    """Name of the convolution executed last in ``model(x)`` (found with forward hooks; ``x`` is any valid input).

    Raises ``CadxConfigError`` when the model runs no convolution.
    """
    order: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, n=name: order.append(n))
               for name, m in model.named_modules() if isinstance(m, _CONV)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise CadxConfigError(f"{type(model).__name__} has no convolution layer; pass layer= explicitly")
    return order[-1]


def _as_batch(model: nn.Module, x: Tensor | np.ndarray) -> Tensor:
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).float()
    param = next(model.parameters(), None)
    if param is not None:
        xt = xt.to(param.device)
    spatial_in = getattr(model, "spatial_dims", None)
    if spatial_in is not None and xt.ndim == spatial_in + 1:
        xt = xt[None]
    if xt.ndim not in (4, 5):
        raise CadxDataError(f"expected (B, C, H, W) or (B, C, D, H, W), got {tuple(xt.shape)}", field="image")
    return xt


def _targets(logits: Tensor, target: int | Sequence[int] | None) -> Tensor:
    b, k = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    tgt = torch.as_tensor([target] * b if isinstance(target, int) else list(target), device=logits.device).long()
    if tgt.shape != (b,) or (tgt < 0).any() or (tgt >= k).any():
        raise CadxDataError(f"target {target} invalid for {b} samples x {k} classes", field="target")
    return tgt


def _cam_layer_and_grads(model: nn.Module, xt: Tensor, target: int | Sequence[int] | None, layer: str | None,
                         output_key: str) -> tuple[str, Tensor, Tensor]:
    """Forward + backward with hooks; returns ``(layer name, activation A, dscore/dA)`` (model already in eval).

    ``layer=None`` hooks every sub-module and keeps those whose output is ``(B, K, *s)`` with more than one spatial
    position; the chosen one is the last to finish in the forward pass that the class score depends on.
    """
    modules = dict(model.named_modules())
    if layer is not None and layer not in modules:
        raise CadxConfigError(f"no layer named {layer!r} in {type(model).__name__}")
    watched = [(layer, modules[layer])] if layer is not None else [(n, m) for n, m in modules.items() if n]
    records: list[tuple[str, Tensor]] = []

    def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def fn(_m: nn.Module, _i: Any, out: Any) -> None:
            try:
                t = _first_tensor(out)
            except CadxConfigError:
                if layer is not None:
                    raise
                return
            if layer is not None or (t.ndim == xt.ndim and t.shape[2:].numel() > 1 and t.requires_grad):
                records.append((name, t))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in watched]
    try:
        with torch.enable_grad():
            logits = _logits(model(xt.clone().requires_grad_(True)), output_key)
            if logits.ndim != 2:
                raise CadxConfigError(f"{output_key!r} must be (B, K), got {tuple(logits.shape)}")
            score = logits.gather(1, _targets(logits, target)[:, None]).sum()
            if not records:
                raise CadxConfigError(f"layer {layer!r} did not run in the forward pass" if layer else
                                      f"{type(model).__name__} has no layer with a spatial output; pass layer=")
            for name, t in records:
                if t.ndim != xt.ndim:
                    raise CadxConfigError(f"layer {name!r} output {tuple(t.shape)} has no matching spatial axes")
            grads = torch.autograd.grad(score, [t for _, t in records], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    for (name, act), g in zip(reversed(records), reversed(grads), strict=True):
        if g is not None:
            return name, act.detach(), g
    raise CadxConfigError(f"the {output_key!r} output does not depend on layer {layer!r}" if layer else
                          f"the {output_key!r} output depends on no spatial layer of {type(model).__name__}")


def default_cam_layer(model: nn.Module, x: Tensor | np.ndarray, output_key: str = "logits") -> str:
    """The layer :func:`grad_cam` explains by default: the last module (in forward completion order) whose output
    is a spatial map ``(B, K, *s)`` with more than one position and on which the class score depends — e.g.
    ``layer4`` of a ResNet, the last inception block of GoogLeNet, not a segmentation decoder."""
    xt = _as_batch(model, x)
    was_training = model.training
    model.eval()
    try:
        return _cam_layer_and_grads(model, xt, None, None, output_key)[0]
    finally:
        model.train(was_training)


def grad_cam(model: nn.Module, x: Tensor | np.ndarray, target: int | Sequence[int] | None = None,
             layer: str | None = None, output_key: str = "logits") -> np.ndarray:
    """Grad-CAM heatmaps ``(B, *spatial)`` in [0, 1] at the input resolution.

    Args:
        model: a cadx model (``forward`` returns a dict with ``output_key``) or any module returning logits.
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` (a single unbatched ``(C, *spatial)`` sample is accepted
            when the model has ``spatial_dims``).
        target: class index per sample (an int for all), default = the predicted class.
        layer: ``model.named_modules()`` name of the layer to explain (e.g. :func:`last_conv_layer`); default =
            :func:`default_cam_layer`.
        output_key: the output dict entry holding the class scores ``(B, K)``.
    The model runs in eval mode (its training flag is restored); parameters and their ``.grad`` are untouched.
    A map that is constant over space (e.g. a 1 x 1 layer) is returned as zeros.
    """
    xt = _as_batch(model, x)
    was_training = model.training
    model.eval()
    try:
        _, act, grads = _cam_layer_and_grads(model, xt, target, layer, output_key)
    finally:
        model.train(was_training)
    weights = grads.mean(dim=tuple(range(2, act.ndim)), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    mode = "bilinear" if cam.ndim == 4 else "trilinear"
    cam = F.interpolate(cam, size=tuple(xt.shape[2:]), mode=mode, align_corners=False)[:, 0]
    flat = cam.reshape(cam.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, *[1] * (cam.ndim - 1))
    span = flat.max(dim=1).values.view(-1, *[1] * (cam.ndim - 1)) - lo
    cam = torch.where(span > 0, (cam - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(cam))
    return cam.detach().cpu().numpy().astype(np.float64)


def _display_slice(image: np.ndarray, heatmap: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """2-D image (grey ``(H, W)`` or RGB ``(H, W, 3)``) and heatmap to draw; 3D → axial slice of peak heat."""
    img = np.asarray(image, dtype=np.float64)
    hm = np.asarray(heatmap, dtype=np.float64)
    note = ""
    if hm.ndim == 3:
        z = int(np.argmax(hm.reshape(hm.shape[0], -1).sum(axis=1)))
        note = f" (slice {z} of {hm.shape[0]})"
        if img.ndim not in (3, 4) or img.shape[-3:] != hm.shape:
            raise CadxDataError(f"image {img.shape} does not match the 3D heatmap {hm.shape}", field="heatmap")
        img = img[:, z] if img.ndim == 4 else img[z]
        hm = hm[z]
    if img.ndim == 3:
        img = np.moveaxis(img[:3], 0, -1) if img.shape[0] == 3 else img.mean(axis=0)
    if img.shape[:2] != hm.shape:
        raise CadxDataError(f"image {img.shape[:2]} and heatmap {hm.shape} differ", field="heatmap")
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0.0, 1.0)
    img = np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)
    return img, hm, note


def overlay_figure(image: np.ndarray, heatmap: np.ndarray, path: str | Path, alpha: float = 0.45,
                   title: str = "") -> Path:
    """Save image | heatmap | overlay panels to ``path`` (atomic; format from the suffix).

    ``image`` is ``(H, W)``, ``(C, H, W)`` (3 channels drawn as RGB, otherwise averaged) or, with a 3D
    ``heatmap (D, H, W)``, ``(D, H, W)``/``(C, D, H, W)``: the axial slice with the most heat is shown.
    """
    img, hm, note = _display_slice(image, heatmap)
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 3)
    grey = "gray" if img.ndim == 2 else None
    axes[0].imshow(img, cmap=grey)
    axes[0].set_title("image" + note, fontsize=9)
    axes[1].imshow(hm, cmap="jet", vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM", fontsize=9)
    axes[2].imshow(img, cmap=grey)
    axes[2].imshow(colormaps["jet"](hm)[..., :3], alpha=alpha)
    axes[2].set_title("overlay", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
