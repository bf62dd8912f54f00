"""Khan & Yong 2017 Table II on MedNIST: the anatomy CNN vs LeNet, AlexNet, GoogLeNet on a grouped split."""

from cadx.config import ExperimentConfig
from cadx.studies.anatomy.curve import render_learning_curve, run_learning_curve
from cadx.studies.anatomy.study import run_anatomy_study
from cadx.studies.anatomy.variants import NETS, PAPER_ORDER, InputMode, naive_config, net_config

DESCRIPTION = (__doc__ or "").strip()
run = run_anatomy_study
Config = ExperimentConfig

__all__ = ["DESCRIPTION", "NETS", "PAPER_ORDER", "Config", "InputMode", "naive_config", "net_config",
           "render_learning_curve", "run", "run_anatomy_study", "run_learning_curve"]
