"""Classical (non-deep) CADx: handcrafted LBP/HOG/ROI features, SVMs, LASSO/elastic-net attribute regressors,
RFE attribute relatedness and covariate fusion (DMRN HC baseline; MTMR-Net Tables III-IV); point systems (ACR / AI
TI-RADS) and their genetic-algorithm optimisation (thesis A.7)."""

from cadx.classical.features import (
    HC_SIZE,
    HOG_DIM,
    LBP_DIM,
    ROI_FEATURE_NAMES,
    handcrafted_features,
    hog_features,
    lbp_features,
    roi_feature_matrix,
    roi_features,
)
from cadx.classical.fusion import covariate_fusion
from cadx.classical.points import PointSystem, design_matrix, level_of, load_system, recommend, totals
from cadx.classical.points_ga import GAParams, integer_auc, optimise_points, tune_and_fit
from cadx.classical.regressors import AttributeRegressor, absolute_error
from cadx.classical.rfe import attribute_relatedness, inter_reader_abe, nested_rfe_importance
from cadx.classical.svm import EmbeddingSVM, HandcraftedFeatures, HandcraftedSVM

__all__ = [
    "HC_SIZE", "HOG_DIM", "LBP_DIM", "ROI_FEATURE_NAMES", "AttributeRegressor", "EmbeddingSVM", "GAParams",
    "HandcraftedFeatures", "HandcraftedSVM", "PointSystem", "absolute_error", "attribute_relatedness",
    "covariate_fusion", "design_matrix", "handcrafted_features",
    "hog_features", "integer_auc", "inter_reader_abe", "lbp_features", "level_of", "load_system",
    "nested_rfe_importance", "optimise_points", "recommend", "roi_feature_matrix",
    "roi_features", "totals", "tune_and_fit",
]
