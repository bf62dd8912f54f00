"""Model registry: ``@register_model("name", options=XOptions)`` on a factory, ``create_model(name, ...)`` to build
one (timm-style).

Every model declares its keyword options as an :class:`~cadx.registry.Options` model; ``create_model`` validates
the keyword arguments against it (strings coerced, unknown keys and wrong types raise ``CadxConfigError`` naming
the option) and calls the factory with every option filled in, so the defaults live in the options class only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cadx.registry import Options, PathText, Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


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
