"""MTMR-Net (Liu et al. 2019) on LIDC-IDRI: ablations, attribute ABE vs regressors and readers, RFE, t-SNE, cards."""

from cadx.config import ExperimentConfig
from cadx.studies.mtmr.study import run_mtmr_study
from cadx.studies.mtmr.variants import VARIANTS, variant_config

DESCRIPTION = (__doc__ or "").strip()
run = run_mtmr_study
Config = ExperimentConfig

__all__ = ["DESCRIPTION", "VARIANTS", "Config", "run", "run_mtmr_study", "variant_config"]
