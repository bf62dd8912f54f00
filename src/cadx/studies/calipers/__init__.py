"""Thesis A.5 on BUSI: caliper detection, approximate masks from calipers, three U-Net modes, learning curve."""

from cadx.studies.calipers.study import (
    build_items,
    evaluate_detector,
    read_annotations,
    run_calipers_study,
    run_learning_curve,
    run_modes,
    train_unet,
)
from cadx.studies.calipers.variants import MODES, CalipersConfig, load_calipers_config

DESCRIPTION = (__doc__ or "").strip()
run = run_calipers_study
Config = CalipersConfig

__all__ = ["DESCRIPTION", "MODES", "CalipersConfig", "Config", "build_items", "evaluate_detector",
           "load_calipers_config", "read_annotations", "run", "run_calipers_study", "run_learning_curve",
           "run_modes", "train_unet"]
