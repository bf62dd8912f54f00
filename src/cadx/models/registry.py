"""Model registry: ``@register_model("name")`` on a factory, ``create_model(name, ...)`` to build one (timm-style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cadx.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str, description: str = "") -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``f(num_classes, in_channels=1, spatial_dims=2, num_attributes=0, **kw) -> nn.Module``."""
    return MODELS.register(name, description)


def create_model(name: str, num_classes: int, in_channels: int = 1, spatial_dims: int = 2,
                 num_attributes: int = 0, **kwargs: Any) -> nn.Module:
    """Build a registered model. Every model has ``forward_features(x) -> (B, D)`` and ``forward(x) -> dict``.

    Args:
        name: registry name (``cadx models list``).
        num_classes: classifier outputs (0 for a segmentation-only or regression-only model).
        in_channels: image channels ``C`` of inputs ``(B, C, *spatial)``.
        spatial_dims: 2 or 3.
        num_attributes: attribute-regression outputs, for models that have such a head.
    """
    import cadx.models  # noqa: F401  (registers the built-in models)

    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, spatial_dims=spatial_dims,
                            num_attributes=num_attributes, **kwargs)
