"""``hc_svm``: DMRN's hand-crafted baseline (LBP 531 + HOG 1296 features → SVM), declared here for its options.

It is not a network: ``model.name: hc_svm`` selects the ``handcrafted`` run kind (:mod:`cadx.runs.handcrafted`),
which computes the features and fits :class:`cadx.classical.HandcraftedSVM` per fold. The registry entry makes
``hc_svm`` a known model name whose ``model.kwargs`` are checked when a config is loaded and listed by
``cadx models list``; :func:`create_model` refuses it with a one-line error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from cadx.classical.features import HC_SIZE
from cadx.errors import CadxConfigError
from cadx.models.registry import register_model
from cadx.registry import Options

HC_NAME = "hc_svm"


class HCSVMOptions(Options):
    """Options of ``hc_svm``: SVM ``kernel`` and ``C``, LBP/HOG patch sizes (px) and the common input ``size``."""

    kernel: Literal["linear", "rbf"] = "linear"
    C: float = Field(1.0, gt=0)
    lbp_patch: int = Field(64, ge=1)
    hog_patch: int = Field(32, ge=1)
    size: int = Field(HC_SIZE, ge=1)


@register_model(HC_NAME, "LBP + HOG features → SVM (DMRN's HC baseline; not a network: the handcrafted run kind)",
                options=HCSVMOptions)
def hc_svm(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, **options: object
           ) -> nn.Module:
    """Refuses: ``hc_svm`` is cross-validated by the ``handcrafted`` run kind, it has no network to build."""
    raise CadxConfigError(f"{HC_NAME} is not a network: run it with `cadx cv` (the handcrafted run kind), "
                          "it cannot be built with create_model")


__all__ = ["HC_NAME", "HCSVMOptions", "hc_svm"]
