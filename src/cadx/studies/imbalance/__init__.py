"""Thesis A.2 class imbalance: grid (step/linear, rho, mu) x methods x seeds; AUC/accuracy plots, winners."""

from cadx.studies.imbalance.study import rewrite_outputs, run_imbalance_study
from cadx.studies.imbalance.variants import MethodSpec, StudyConfig, StudySettings, load_study_config

DESCRIPTION = (__doc__ or "").strip()
run = run_imbalance_study
Config = StudyConfig

__all__ = ["DESCRIPTION", "Config", "MethodSpec", "StudyConfig", "StudySettings", "load_study_config",
           "rewrite_outputs", "run", "run_imbalance_study"]
