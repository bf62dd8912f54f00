"""Multi-run studies built on the engine: the thesis A.2 class-imbalance study (``cadx imbalance-study``)."""

from cadx.studies.imbalance.study import StudyConfig, load_study_config, rewrite_outputs, run_imbalance_study

__all__ = ["StudyConfig", "load_study_config", "rewrite_outputs", "run_imbalance_study"]
