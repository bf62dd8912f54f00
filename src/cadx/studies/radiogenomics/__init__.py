"""Thesis A.3/A.4 on LGG: shape features vs genomic subtypes (10 Fisher tests, Table 3 AUCs), Dice, A.4 transfer."""

from cadx.studies.radiogenomics.study import run_radiogenomics_study
from cadx.studies.radiogenomics.variants import (
    DEFAULT_HYPOTHESES,
    Hypothesis,
    RadiogenomicsConfig,
    load_radiogenomics_config,
)

DESCRIPTION = (__doc__ or "").strip()
run = run_radiogenomics_study
Config = RadiogenomicsConfig

__all__ = ["DEFAULT_HYPOTHESES", "DESCRIPTION", "Config", "Hypothesis", "RadiogenomicsConfig",
           "load_radiogenomics_config", "run", "run_radiogenomics_study"]
