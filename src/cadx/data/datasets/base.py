"""The dataset registry and helpers for adapter options that may arrive as strings from the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError
from cadx.registry import Registry
from cadx.utils import coerce_bool

__all__ = ["DATASETS", "coerce_bool", "coerce_float", "coerce_int", "load_dataset", "parse_options",
           "register_dataset"]

Loader = Callable[..., Cohort]
DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str, description: str = "") -> Callable[[Loader], Loader]:
    """Register ``load(root: Path, **options) -> Cohort`` under ``name``."""
    return DATASETS.register(name, description)


def load_dataset(name: str, root: str | Path, **options: Any) -> Cohort:
    """Load a cohort by dataset name. ``medmnist:<flag>`` is short for ``medmnist`` with ``flag=<flag>``."""
    if ":" in name:
        name, flag = name.split(":", 1)
        options.setdefault("flag", flag)
    loader = DATASETS.get(name)
    root = Path(root)
    if name not in ("synthetic",) and not root.exists():
        raise CadxDataError("does not exist", path=root, field="root")
    return loader(root, **options)


def coerce_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CadxConfigError(f"option {name}: expected an integer, got {value!r}") from None


def coerce_float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CadxConfigError(f"option {name}: expected a number, got {value!r}") from None


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` → ``{k: v}`` (values stay strings; adapters coerce them)."""
    out: dict[str, str] = {}
    for p in pairs or []:
        if "=" not in p:
            raise CadxConfigError(f"option {p!r}: expected key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out
