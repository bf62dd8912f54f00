"""Thesis A.6 multi-task CNN with categorical feature heads on LIDC: single vs multi-task AUC, readers, risk levels."""

from cadx.studies.multitask.study import run_multitask_study
from cadx.studies.multitask.variants import VARIANTS, StudyConfig, load_study_config, variant_config

DESCRIPTION = (__doc__ or "").strip()
run = run_multitask_study
Config = StudyConfig

__all__ = ["DESCRIPTION", "VARIANTS", "Config", "StudyConfig", "load_study_config", "run", "run_multitask_study",
           "variant_config"]
