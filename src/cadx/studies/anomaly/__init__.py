"""Thesis A.9 normal-only inpainting GAN on LGG and BUSI: MSE/critic/DMSE heatmaps, inside/outside box ratio, AUROC."""

from cadx.studies.anomaly.study import build_gan, run_anomaly_study, study_splits
from cadx.studies.anomaly.variants import VARIANTS, AnomalyConfig, load_study_config, train_config

DESCRIPTION = (__doc__ or "").strip()
run = run_anomaly_study
Config = AnomalyConfig

__all__ = ["DESCRIPTION", "VARIANTS", "AnomalyConfig", "Config", "build_gan", "load_study_config", "run",
           "run_anomaly_study", "study_splits", "train_config"]
