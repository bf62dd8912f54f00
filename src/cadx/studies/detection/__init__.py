"""Thesis A.8 lesion detector on LGG and BUSI: FROC sensitivity at 1/2/4/8 FP with CIs, the four objectness losses."""

from cadx.config import ExperimentConfig
from cadx.studies.detection.study import run_detection_study
from cadx.studies.detection.variants import LOSSES, loss_variants

DESCRIPTION = (__doc__ or "").strip()
run = run_detection_study
Config = ExperimentConfig

__all__ = ["DESCRIPTION", "LOSSES", "Config", "loss_variants", "run", "run_detection_study"]
