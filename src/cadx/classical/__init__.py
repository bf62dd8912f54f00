"""Classical (non-deep) CADx: handcrafted LBP/HOG/ROI features, SVMs, LASSO/elastic-net attribute regressors,
RFE attribute relatedness and covariate fusion (DMRN HC baseline; MTMR-Net Tables III-IV)."""

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
from cadx.classical.regressors import AttributeRegressor, absolute_error
from cadx.classical.rfe import attribute_relatedness, inter_reader_abe, nested_rfe_importance
from cadx.classical.svm import EmbeddingSVM, HandcraftedFeatures, HandcraftedSVM

__all__ = [
    "HC_SIZE", "HOG_DIM", "LBP_DIM", "ROI_FEATURE_NAMES", "AttributeRegressor", "EmbeddingSVM",
    "HandcraftedFeatures", "HandcraftedSVM", "absolute_error", "attribute_relatedness", "covariate_fusion",
    "handcrafted_features",
    "hog_features", "inter_reader_abe", "lbp_features", "nested_rfe_importance", "roi_feature_matrix",
    "roi_features",
]
