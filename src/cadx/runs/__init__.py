"""The experiment engine: preprocessing → Lightning training → cross-validation, prediction, external evaluation.

Functions the CLI calls: :func:`run_cv`, :func:`train_final`, :func:`predict_study`, :func:`evaluate_run`,
:func:`run_demo` (configs come from :func:`cadx.config.load_config`).
"""

from cadx.runs.cv import run_cv
from cadx.runs.demo import run_demo
from cadx.runs.evaluate import evaluate_run
from cadx.runs.predict import predict_study, train_final

__all__ = ["evaluate_run", "predict_study", "run_cv", "run_demo", "train_final"]
