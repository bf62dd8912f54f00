"""Models by name (``create_model``); each paper system in its own module, each declaring its options.

Importing this package loads no network: the registry imports the model modules
(:data:`cadx.models.registry.MODEL_MODULES`) on its first lookup, so ``cadx models list`` (which reads the static
:data:`cadx.models.catalog.CATALOG`) and ``cadx --help`` stay fast.
"""

from cadx.models.catalog import CATALOG, catalog_rows
from cadx.models.registry import MODEL_MODULES, MODELS, PretrainedOptions, create_model, register_model

__all__ = ["CATALOG", "MODELS", "MODEL_MODULES", "PretrainedOptions", "catalog_rows", "create_model",
           "register_model"]
