"""Model registry: ``@register_model("name", options=XOptions)`` on a factory, ``create_model(name, ...)`` to build
one (timm-style).

The registry is lazy: importing :mod:`cadx.models` loads no network (no torch, no MONAI). The first lookup of an
entry (``create_model``, ``MODELS.options``/``get``/``names``, ``in``, iteration) imports every module of
:data:`MODEL_MODULES`, which register their models. Listing (``cadx models list``) reads the static
:data:`cadx.models.catalog.CATALOG` instead; a test checks it equals the registry.

Every model declares its keyword options as an :class:`~cadx.registry.Options` model; ``create_model`` validates
the keyword arguments against it (strings coerced, unknown keys and wrong types raise ``CadxConfigError`` naming
the option) and calls the factory with every option filled in, so the defaults live in the options class only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cadx.models.catalog import model_module
from cadx.registry import Entry, Options, PathText, Registry

if TYPE_CHECKING:
    from torch import nn  # typing only: importing the registry must not load torch (lazy listing)

ModelFactory = Callable[..., "nn.Module"]
#: The modules of ``cadx.models`` that register the built-in models (imported on the first lookup).
MODEL_MODULES = ("anatomy_cnn", "attention", "cnn3d", "dmrn", "googlenet", "handcrafted", "inpaint", "lenet_alexnet",
                 "mtmr", "multihead", "pspnet", "resnet", "scnet", "unet", "unet_encoder", "vgg", "yolo_dense")


class LazyRegistry(Registry[ModelFactory]):
    """A :class:`~cadx.registry.Registry` that imports :data:`MODEL_MODULES` before its first lookup (registering
    needs no import, so the modules' own ``@register_model`` calls do not recurse)."""

    _loaded = False

    def load(self) -> None:
        """Import every built-in model module (once)."""
        if not LazyRegistry._loaded:
            LazyRegistry._loaded = True
            for name in MODEL_MODULES:
                importlib.import_module(f"cadx.models.{name}")

    def entry(self, name: str) -> Entry[ModelFactory]:
        """The entry of ``name``, importing first only the module :data:`~cadx.models.catalog.CATALOG` names for it
        (so loading one run's model does not import every network, and MONAI only when that network uses it);
        a name the catalogue lacks (or that its module did not register) imports them all."""
        module = model_module(name)
        if name not in self._entries and module is not None:
            importlib.import_module(module)
        if name not in self._entries:
            self.load()
        return super().entry(name)

    def names(self) -> list[str]:
        self.load()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self.load()
        return super().__contains__(name)

    def __iter__(self) -> Iterator[Entry[ModelFactory]]:
        self.load()
        return super().__iter__()


MODELS: Registry[ModelFactory] = LazyRegistry("model")


class PretrainedOptions(Options):
    """Options every trainable cadx model takes: ``pretrained_path`` = a local state_dict (None = random init)."""

    pretrained_path: PathText = None


def register_model(name: str, description: str = "", *, options: type[Options]
                   ) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``f(num_classes, in_channels, spatial_dims, num_attributes, **options) -> nn.Module``; ``options``
    declares the keyword options (each is passed, validated, by :func:`create_model`)."""
    return MODELS.register(name, description, options=options)


def create_model(name: str, num_classes: int, in_channels: int = 1, spatial_dims: int = 2,
                 num_attributes: int = 0, **kwargs: Any) -> nn.Module:
    """Build a registered model. Every model has ``forward_features(x) -> (B, D)`` and ``forward(x) -> dict``.

    Args:
        name: registry name (``cadx models list``).
        num_classes: classifier outputs (0 for a segmentation-only or regression-only model).
        in_channels: image channels ``C`` of inputs ``(B, C, *spatial)``.
        spatial_dims: 2 or 3.
        num_attributes: attribute-regression outputs, for models that have such a head.
        kwargs: the model's options (``model.kwargs`` of a config), validated against its options class.
    """
    opts = MODELS.options(name, kwargs)
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, spatial_dims=spatial_dims,
                            num_attributes=num_attributes, **opts.kwargs())
