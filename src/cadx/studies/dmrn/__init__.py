"""DMRN (Bi et al.) Tables 2-4: DMRN, its ablation and the baselines in the same folds, t-SNE."""

from cadx.config import ExperimentConfig
from cadx.studies.dmrn.partial import evaluate_checkpoint
from cadx.studies.dmrn.study import run_dmrn_study
from cadx.studies.dmrn.variants import DEFAULT_MODELS, VARIANTS, variant_config

DESCRIPTION = (__doc__ or "").strip()
run = run_dmrn_study
Config = ExperimentConfig

__all__ = ["DEFAULT_MODELS", "DESCRIPTION", "VARIANTS", "Config", "evaluate_checkpoint", "run", "run_dmrn_study",
           "variant_config"]
