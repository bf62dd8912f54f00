"""Classical (non-deep) CADx: handcrafted LBP/HOG/ROI features, SVMs, LASSO/elastic-net attribute regressors,
RFE attribute relatedness and covariate fusion (DMRN HC baseline; MTMR-Net Tables III-IV); point systems (ACR / AI
TI-RADS) and their genetic-algorithm optimisation (thesis A.7).

The names below are resolved on first access (PEP 562), so importing one submodule (e.g.
:mod:`cadx.classical.svm_file` on the prediction path) does not import scikit-learn, scikit-image and DEAP with
every other submodule.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AttributeRegressor": "cadx.classical.regressors",
    "EmbeddingSVM": "cadx.classical.svm",
    "GAParams": "cadx.classical.points_ga",
    "HC_SIZE": "cadx.classical.features",
    "HOG_DIM": "cadx.classical.features",
    "HandcraftedFeatures": "cadx.classical.svm",
    "HandcraftedSVM": "cadx.classical.svm",
    "LBP_DIM": "cadx.classical.features",
    "PointSystem": "cadx.classical.points",
    "ROI_FEATURE_NAMES": "cadx.classical.features",
    "absolute_error": "cadx.classical.regressors",
    "attribute_relatedness": "cadx.classical.rfe",
    "covariate_fusion": "cadx.classical.fusion",
    "design_matrix": "cadx.classical.points",
    "handcrafted_features": "cadx.classical.features",
    "hog_features": "cadx.classical.features",
    "integer_auc": "cadx.classical.points_ga",
    "inter_reader_abe": "cadx.classical.rfe",
    "lbp_features": "cadx.classical.features",
    "level_of": "cadx.classical.points",
    "load_system": "cadx.classical.points",
    "nested_rfe_importance": "cadx.classical.rfe",
    "optimise_points": "cadx.classical.points_ga",
    "recommend": "cadx.classical.points",
    "roi_feature_matrix": "cadx.classical.features",
    "roi_features": "cadx.classical.features",
    "totals": "cadx.classical.points",
    "tune_and_fit": "cadx.classical.points_ga",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """``cadx.classical.<name>``: import the defining submodule on first use."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cadx.classical' has no attribute {name!r}")
