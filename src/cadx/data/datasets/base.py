"""The dataset registry: ``@register_dataset("name", options=XOptions)`` on a loader, ``load_dataset(name, root,
**options)`` to read a cohort.

Every adapter declares its options as an :class:`~cadx.registry.Options` model; ``load_dataset`` validates the
given options against it (strings from ``--option k=v`` coerced, unknown keys and wrong types raise
``CadxConfigError`` naming the option and the dataset) and calls the loader with every option filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError
from cadx.registry import Options, Registry

__all__ = ["DATASETS", "load_dataset", "parse_options", "register_dataset", "split_name"]

Loader = Callable[..., Cohort]
DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str, description: str = "", *, options: type[Options]) -> Callable[[Loader], Loader]:
    """Register ``load(root: Path, **options) -> Cohort`` under ``name``; ``options`` declares its options."""
    return DATASETS.register(name, description, options=options)


def split_name(name: str, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``medmnist:<flag>`` is short for ``medmnist`` with option ``flag=<flag>``: ``(name, options)``."""
    opts = dict(options or {})
    if ":" in name:
        name, flag = name.split(":", 1)
        opts.setdefault("flag", flag)
    return name, opts


def load_dataset(name: str, root: str | Path, **options: Any) -> Cohort:
    """Load a cohort by dataset name (``medmnist:<flag>`` = ``medmnist`` with ``flag=<flag>``)."""
    name, options = split_name(name, options)
    opts = DATASETS.options(name, options)
    loader = DATASETS.get(name)
    root = Path(root)
    if name not in ("synthetic",) and not root.exists():
        raise CadxDataError("does not exist", path=root, field="root")
    return loader(root, **opts.kwargs())


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` → ``{k: v}`` (values stay strings; the adapter's options class coerces them)."""
    out: dict[str, str] = {}
    for p in pairs or []:
        if "=" not in p:
            raise CadxConfigError(f"option {p!r}: expected key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out
