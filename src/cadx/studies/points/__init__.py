"""Thesis A.7 point systems on LIDC: equal-point baseline vs GA-optimised points vs logistic regression, patient CV."""

from cadx.studies.points.study import (
    compare_systems,
    holdout_mask,
    lidc_cohort,
    lidc_table,
    read_points_table,
    run_points_fit,
    run_points_lidc,
    run_points_score,
    synthetic_points_table,
)
from cadx.studies.points.variants import VARIANTS, PointsConfig, lidc_system_path, load_points_config

DESCRIPTION = (__doc__ or "").strip()
run = run_points_lidc
Config = PointsConfig

__all__ = [
    "DESCRIPTION",
    "VARIANTS",
    "Config",
    "PointsConfig",
    "compare_systems",
    "holdout_mask",
    "lidc_cohort",
    "lidc_system_path",
    "lidc_table",
    "load_points_config",
    "read_points_table",
    "run",
    "run_points_fit",
    "run_points_lidc",
    "run_points_score",
    "synthetic_points_table",
]
