"""Evaluation: metrics (pure functions of predictions), bootstrap CIs, aggregation, decision rules."""

from cadx.evaluation.aggregation import aggregate_predictions
from cadx.evaluation.bootstrap import (
    BootstrapCI,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_mean_ci,
    paired_bootstrap_pvalue,
)
from cadx.evaluation.metrics import (
    abe,
    accuracy,
    binary_metrics,
    confusion_matrix,
    f1_score,
    ovr_auc,
    per_class_metrics,
    precision,
    roc_auc,
    roc_curve_points,
    sensitivity,
    specificity,
)
from cadx.evaluation.overlap import dice, dice_per_volume, largest_connected_component
from cadx.evaluation.summary import evaluate_predictions
from cadx.evaluation.thresholds import class_priors, decide, youden_threshold

__all__ = [
    "BootstrapCI",
    "abe",
    "accuracy",
    "aggregate_predictions",
    "binary_metrics",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_mean_ci",
    "class_priors",
    "confusion_matrix",
    "decide",
    "dice",
    "dice_per_volume",
    "evaluate_predictions",
    "f1_score",
    "largest_connected_component",
    "ovr_auc",
    "paired_bootstrap_pvalue",
    "per_class_metrics",
    "precision",
    "roc_auc",
    "roc_curve_points",
    "sensitivity",
    "specificity",
    "youden_threshold",
]
