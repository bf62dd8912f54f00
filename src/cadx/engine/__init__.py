"""The experiment engine: preprocessing → Lightning training → cross-validation, prediction, external evaluation.

Functions the CLI calls: :func:`run_cv`, :func:`train_final`, :func:`predict_study`, :func:`evaluate_run`,
:func:`run_demo` (configs come from :func:`cadx.config.load_config`).
"""

from cadx.engine.cv import run_cv
from cadx.engine.demo import run_demo
from cadx.engine.external import evaluate_run
from cadx.engine.predict import predict_study, train_final

__all__ = ["evaluate_run", "predict_study", "run_cv", "run_demo", "train_final"]
