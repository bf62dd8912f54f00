"""Reading an ``svm.pkl`` (a fitted :class:`cadx.classical.svm.EmbeddingSVM`) without importing scikit-learn up
front: the prediction path (:func:`cadx.runs.inference.load_predictor`) calls :func:`read_svm` only when a model
folder holds an ``svm.pkl``, and unpickling it imports :mod:`cadx.classical.svm` (and scikit-learn) then, as pickle
imports any class it restores. :meth:`EmbeddingSVM.load <cadx.classical.svm.EmbeddingSVM.load>` is this function
plus its type check (one reader).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from cadx.errors import CadxDataError

__all__ = ["SVM_CLASS", "read_svm"]

#: ``(module, class)`` of the estimator an ``svm.pkl`` holds.
SVM_CLASS = ("cadx.classical.svm", "EmbeddingSVM")
#: Where the engine's earlier ``EmbeddingSVM(num_classes, c, seed)`` lived → the class that reads it back
#: (:class:`cadx.classical.svm._LegacyEmbeddingSVM`, whose ``convert()`` gives today's estimator).
_LEGACY = {("cadx.engine.classifiers", "EmbeddingSVM"), ("cadx.classical.embedding_svm", "EmbeddingSVM")}
_LEGACY_READER = ("cadx.classical.svm", "_LegacyEmbeddingSVM")


class _SVMUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _LEGACY:
            return super().find_class(*_LEGACY_READER)
        return super().find_class(module, name)


def read_svm(path: str | Path, expected: tuple[str, str] | None = SVM_CLASS) -> Any:
    """The estimator pickled in ``path``: e.g. an ``EmbeddingSVM`` saved by ``EmbeddingSVM.save``, or an
    ``svm.pkl`` of the engine's earlier ``EmbeddingSVM`` converted to it (same fitted pipeline, same
    probabilities). An unreadable file, or (``expected`` = ``(module, class)``, default :data:`SVM_CLASS`; None:
    any) one holding another class → CadxDataError naming the file."""
    try:
        with open(path, "rb") as fh:
            obj = _SVMUnpickler(fh).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise CadxDataError(f"cannot read a cadx SVM file ({err})", path=path) from None
    if (type(obj).__module__, type(obj).__name__) == _LEGACY_READER:
        obj = obj.convert()
    if expected is not None and (type(obj).__module__, type(obj).__name__) != expected:
        raise CadxDataError(f"not a cadx {expected[1]} file (holds a {type(obj).__name__})", path=path)
    return obj
