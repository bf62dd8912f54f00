"""U-Net (thesis A.3) and SCNet on LGG and BUSI: Dice with CIs, the 2-step SegNet ablation, grouped vs naive CV."""

from cadx.config import ExperimentConfig
from cadx.studies.segmentation.study import run_segmentation_study
from cadx.studies.segmentation.variants import GROUPS, RUNS, run_config

DESCRIPTION = (__doc__ or "").strip()
run = run_segmentation_study
Config = ExperimentConfig

__all__ = ["DESCRIPTION", "GROUPS", "RUNS", "Config", "run", "run_config", "run_segmentation_study"]
