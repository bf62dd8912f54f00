"""Grad-CAM (Selvaraju et al. 2017) for any cadx model, 2D or 3D, and an overlay figure.

The map itself is :class:`monai.visualize.GradCAM`: for a target layer with activations ``A (B, K, *s)`` and the
class score ``y_c`` (the model's ``"logits"``, before softmax), ``w_k = mean_s dy_c/dA_k``,
``cam = ReLU(sum_k w_k A_k)``, upsampled (bi/tri-linear, MONAI's ``default_upsampler``) to the input's spatial size.
cadx adds on top: the layer choice (default: the deepest spatial map the score depends on,
:func:`default_cam_layer`, so any cadx model works without naming a layer; :func:`last_conv_layer` gives the
classic "last convolution"), dict model outputs, a per-sample class score (MONAI's own ``logits[:, idx]`` mixes
the targets of a batch), min-max normalisation per sample to [0, 1] (an all-zero map stays 0; MONAI's default
flips it to [1, 0]), cadx errors, the overlay figure, and leaving the model as it was (mode, hooks, ``inplace``
flags, parameters' ``requires_grad`` and ``.grad``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from monai.visualize import GradCAM
from monai.visualize.class_activation_maps import ModelWithHooks
from monai.visualize.visualizer import default_upsampler
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


def _default_layer(model: nn.Module, xt: Tensor, target: int | Sequence[int] | None, output_key: str) -> str:
    """The layer :func:`default_cam_layer` picks (model already in eval): every sub-module is hooked and those
    whose output is ``(B, K, *s)`` with more than one spatial position are kept; the chosen one is the last to
    finish in the forward pass on which the class score (of ``target``) depends. Modules that run more than once
    in a forward pass (e.g. one ``nn.ReLU`` applied twice) are skipped: a layer hook sees one activation and one
    gradient, which would then come from different calls."""
    records: list[tuple[str, Tensor]] = []
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def fn(_m: nn.Module, _i: Any, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            try:
                t = _first_tensor(out)
            except CadxConfigError:
                return
            if t.ndim == xt.ndim and t.shape[2:].numel() > 1 and t.requires_grad:
                records.append((name, t))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.enable_grad():
            logits = _logits(model(xt.clone().requires_grad_(True)), output_key)
            if logits.ndim != 2:
                raise CadxConfigError(f"{output_key!r} must be (B, K), got {tuple(logits.shape)}")
            records = [(n, t) for n, t in records if calls[n] == 1]
            if not records:
                raise CadxConfigError(f"{type(model).__name__} has no layer with a spatial output; pass layer=")
            score = logits.gather(1, _targets(logits, target)[:, None]).sum()
            grads = torch.autograd.grad(score, [t for _, t in records], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    for (name, _), g in zip(reversed(records), reversed(grads), strict=True):
        if g is not None:
            return name
    raise CadxConfigError(f"the {output_key!r} output depends on no spatial layer of {type(model).__name__}")


def default_cam_layer(model: nn.Module, x: Tensor | np.ndarray, output_key: str = "logits") -> str:
    """The layer :func:`grad_cam` explains by default: the last module (in forward completion order) whose output
    is a spatial map ``(B, K, *s)`` with more than one position and on which the class score depends — e.g.
    ``layer4`` of a ResNet, the last inception block of GoogLeNet, not a segmentation decoder."""
    xt = _as_batch(model, x)
    was_training = model.training
    model.eval()
    try:
        with _frozen_params(model):
            return _default_layer(model, xt, None, output_key)
    finally:
        model.train(was_training)


class _Logits(nn.Module):
    """A cadx model seen as MONAI's CAM classes expect it: ``x -> (B, K)`` class scores (``output_key``)."""

    def __init__(self, model: nn.Module, output_key: str) -> None:
        super().__init__()
        self.model = model
        self.output_key = output_key

    def forward(self, x: Tensor) -> Tensor:
        logits = _logits(self.model(x), self.output_key)
        if logits.ndim != 2:
            raise CadxConfigError(f"{self.output_key!r} must be (B, K), got {tuple(logits.shape)}")
        return logits


class _Hooks(ModelWithHooks):
    """MONAI's forward/backward hooks on one layer, with a per-sample class score, cadx errors, and
    :meth:`remove` (MONAI keeps its hooks, and the target's ``inplace=False``, on the model for good)."""

    def __init__(self, net: _Logits, name: str) -> None:
        self.name = name  # in the cadx model; MONAI sees the wrapper, where it is model.<name>
        self.layer = f"model.{name}" if name else "model"
        self._module = dict(net.named_modules())[self.layer]
        self._old_hooks = (set(self._module._forward_hooks), set(self._module._backward_hooks))
        self._old_inplace = self._module.__dict__.get("inplace")
        self.calls = 0  # forward calls of the layer in the current pass
        super().__init__(net, self.layer, register_forward=True, register_backward=True)

    def remove(self) -> None:
        for hooks, old in zip((self._module._forward_hooks, self._module._backward_hooks), self._old_hooks,
                              strict=True):
            for key in set(hooks) - old:
                del hooks[key]
        if self._old_inplace is not None:
            self._module.__dict__["inplace"] = self._old_inplace

    def forward_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        store = super().forward_hook(name)

        def _hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.calls += 1
            store(module, inputs, output)
        return _hook

    def class_score(self, logits: Tensor, class_idx: Any) -> Tensor:
        """``(B,)`` score of each sample's own target: ``class_idx`` is MONAI's argmax ``(B,)`` or cadx's
        ``target`` (int for all / one per sample)."""
        tgt = class_idx if isinstance(class_idx, Tensor) else _targets(logits, class_idx)
        return logits.gather(1, tgt.reshape(-1, 1).long())[:, 0]

    def __call__(self, x: Tensor, class_idx: Any = None, retain_graph: bool = False,
                 **kwargs: Any) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        self.activations.clear()
        self.gradients.clear()
        self.calls = 0
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Backward hook for", UserWarning)
                logits, acti, grad = super().__call__(x, class_idx, retain_graph, **kwargs)
        except KeyError:
            raise CadxConfigError(f"layer {self.name!r} did not run in the forward pass") from None
        if self.calls > 1:
            raise CadxConfigError(f"layer {self.name!r} runs {self.calls} times in one forward pass (its hooks would "
                                  "pair the activation of one call with the gradient of another); pass a layer "
                                  "that runs once, e.g. its parent module")
        act = acti[0]
        if not isinstance(act, Tensor) or act.ndim != x.ndim:
            shape = tuple(act.shape) if isinstance(act, Tensor) else type(act).__name__
            raise CadxConfigError(f"layer {self.name!r} output {shape} has no matching spatial axes")
        if not grad:
            raise CadxConfigError(f"the {self.model.output_key!r} output does not depend on layer {self.name!r}")
        return logits, acti, grad


@contextmanager
def _frozen_params(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad (the maps need input-side gradients only); on exit their ``requires_grad``
    and ``.grad`` are as before (MONAI calls ``zero_grad`` and ``backward``)."""
    saved = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    for p, _, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, req, g in saved:
            p.requires_grad_(req)
            p.grad = g


@contextmanager
def _no_inplace(model: nn.Module) -> Iterator[None]:
    """``inplace=False`` on every module that has the flag (an in-place op on a hooked layer's output breaks
    PyTorch's full backward hooks), restored on exit."""
    flagged = [m for m in model.modules() if isinstance(m.__dict__.get("inplace"), bool) and m.__dict__["inplace"]]
    for m in flagged:
        m.__dict__["inplace"] = False
    try:
        yield
    finally:
        for m in flagged:
            m.__dict__["inplace"] = True


def _minmax(cam: Tensor) -> Tensor:
    """Per-sample min-max scaling of ``(B, 1, *s)`` to [0, 1]; a constant map becomes 0."""
    flat = cam.reshape(cam.shape[0], -1)
    shape = (-1, *[1] * (cam.ndim - 1))
    lo = flat.min(dim=1).values.view(shape)
    span = flat.max(dim=1).values.view(shape) - lo
    return torch.where(span > 0, (cam - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(cam))


def grad_cam(model: nn.Module, x: Tensor | np.ndarray, target: int | Sequence[int] | None = None,
             layer: str | None = None, output_key: str = "logits") -> np.ndarray:
    """Grad-CAM heatmaps ``(B, *spatial)`` in [0, 1] at the input resolution (core: ``monai.visualize.GradCAM``).

    Args:
        model: a cadx model (``forward`` returns a dict with ``output_key``) or any module returning logits.
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` (a single unbatched ``(C, *spatial)`` sample is accepted
            when the model has ``spatial_dims``).
        target: class index per sample (an int for all), default = the predicted class.
        layer: ``model.named_modules()`` name of the layer to explain (e.g. :func:`last_conv_layer`); default =
            :func:`default_cam_layer`. Its output must be a tensor ``(B, K, *s)``.
        output_key: the output dict entry holding the class scores ``(B, K)``.
    The model runs in eval mode; afterwards its training flag, hooks, ``inplace`` flags and parameters (values,
    ``requires_grad``, ``.grad``) are as before. A map that is constant over space (e.g. a 1 x 1 layer) is
    returned as zeros.
    """
    xt = _as_batch(model, x)
    modules = dict(model.named_modules())
    if layer is not None and layer not in modules:
        raise CadxConfigError(f"no layer named {layer!r} in {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        with _frozen_params(model), _no_inplace(model):
            name = layer if layer is not None else _default_layer(model, xt, target, output_key)
            net = _Logits(model, output_key)
            hooks = _Hooks(net, name)
            try:
                # MONAI's CAMBase takes a ModelWithHooks in place of the module (its annotation says nn.Module)
                cam = GradCAM(hooks, hooks.layer,  # type: ignore[arg-type]
                              upsampler=default_upsampler, postprocessing=_minmax)(
                    xt.clone().requires_grad_(True), class_idx=target)
            finally:
                hooks.remove()
    finally:
        model.train(was_training)
    return cam[:, 0].detach().cpu().numpy().astype(np.float64)


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
