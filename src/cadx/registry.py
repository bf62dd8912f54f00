"""A small name → factory registry (timm-style ``register``/``create``) used for datasets, models, losses.

An entry may declare its keyword options as an :class:`Options` model (pydantic, unknown keys forbidden);
:meth:`Registry.options` then validates a mapping of option values against it: strings from the command line
(``--set``/``--option``) are coerced (``"3"`` → 3, ``"true"`` → True), a typo or a wrong type raises one
:class:`~cadx.errors.CadxConfigError` line naming the option, the entry and (when given) the config file.

:func:`lookup` finds a registry by kind. The model and dataset registries live in packages above the
configuration layer; ``lookup("model")`` / ``lookup("dataset")`` import their package by name (:data:`HOMES`,
plugin discovery as with entry points), so :func:`cadx.config.load_config` can check ``model.kwargs`` and
``data.options`` when a config is loaded without a static upward import.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from cadx.errors import CadxConfigError

T = TypeVar("T", bound=Callable[..., Any])

__all__ = ["Entry", "IntText", "IntTuple", "Lower", "NoneText", "Options", "PathText", "Registry", "TextList", "lookup"]


class Options(BaseModel):
    """Base of a registered entry's declared options: unknown keys are errors, CLI strings are coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    def kwargs(self) -> dict[str, Any]:
        """Every option as a keyword argument (field values as validated, nested models kept)."""
        return {k: getattr(self, k) for k in type(self).model_fields}


def _split_commas(value: Any) -> Any:
    """``"2,4,8"`` / ``"2 4 8"`` / ``"28x64x64"`` → ``["2", "4", "8"]`` (lists and tuples pass through)."""
    if isinstance(value, str):
        return [v for v in value.replace("×", ",").replace("x", ",").replace(" ", ",").split(",") if v]
    return value


def _lower(value: Any) -> Any:
    return str(value).strip().lower() if isinstance(value, str | int) and not isinstance(value, bool) else value


def _int_text(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.strip().lstrip("-").isdigit() else value


def _none_text(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in ("none", "null", "") else value


#: A tuple of ints that may arrive as a comma string from the command line (``"256,128"``).
IntTuple = Annotated[tuple[int, ...], BeforeValidator(_split_commas)]
def _text_list(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value


#: A list of names that may arrive as a comma string from the command line (``classes=malignant,benign``).
TextList = Annotated[list[str] | None, BeforeValidator(_text_list)]
#: A choice compared case-insensitively (``"MTMR"`` = ``"mtmr"``; ints become their text, ``1`` → ``"1"``).
Lower = BeforeValidator(_lower)
def _path_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


#: A file path kept as text (``pathlib.Path`` objects accepted).
PathText = Annotated[str | None, BeforeValidator(_path_text)]
#: Digit text becomes an int before validation (for ``Literal`` choices of ints, which pydantic never coerces).
IntText = BeforeValidator(_int_text)
#: ``"none"``/``"null"`` from the command line mean ``None``.
NoneText = BeforeValidator(_none_text)


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    description: str
    options: type[Options] | None = None


def _type_text(ann: Any) -> str:
    """``Literal['a', 'b']`` → ``'a'|'b'``, ``int | None`` → ``int|None``, ``tuple[int, ...]`` → ``ints``."""
    origin, args = get_origin(ann), get_args(ann)
    if origin is Literal:
        return "|".join(repr(a) for a in args)
    if origin is Annotated:
        return _type_text(args[0])
    if origin in (Union, UnionType):
        return "|".join(_type_text(a) for a in args)
    if origin is tuple:
        return f"{_type_text(args[0])}s"
    return "None" if ann is type(None) else getattr(ann, "__name__", str(ann))


def _loc(err: Any) -> str:
    return ".".join(str(p) for p in err["loc"]) or "<options>"


class Registry(Generic[T]):
    """Maps names to factories. ``@reg.register("name", "what it is", options=XOptions)`` adds one;
    ``reg.get(name)`` finds it; ``reg.options(name, values)`` validates option values."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        _REGISTRIES[kind] = self

    def register(self, name: str, description: str = "", options: type[Options] | None = None
                 ) -> Callable[[T], T]:
        def deco(factory: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = description or (factory.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, factory, doc, options)
            return factory

        return deco

    def get(self, name: str) -> T:
        return self.entry(name).factory

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise CadxConfigError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def options(self, name: str, values: Mapping[str, Any] | None = None, source: str = "", name_key: str = "",
                options_key: str = "") -> Options:
        """``values`` validated against the options ``name`` declares (defaults filled in).

        Raises one-line :class:`CadxConfigError`
        ``"<source>: <options_key>: <kind> '<name>': option '<key>': <problem>"`` (empty parts left out) for an
        unknown key (listing the known ones) or a value of the wrong type, and
        ``"<source>: <name_key>: unknown <kind> '<name>' (known: ...)"`` for an unknown name. An entry without
        declared options accepts none.
        """
        try:
            entry = self.entry(name)
        except CadxConfigError as e:
            raise CadxConfigError(": ".join(p for p in (source, name_key, str(e)) if p)) from None
        cls = entry.options or Options
        try:
            return cls.model_validate(dict(values or {}))
        except ValidationError as e:
            known = ", ".join(cls.model_fields) or "none"
            parts = []
            for err in e.errors():
                if err["type"] == "extra_forbidden":
                    parts.append(f"option {_loc(err)!r}: unknown option (known: {known})")
                else:
                    got = f" (got {err['input']!r})" if not isinstance(err.get("input"), dict) else ""
                    parts.append(f"option {_loc(err)!r}: {err['msg']}{got}")
            where = "".join(f"{p}: " for p in (source, options_key) if p)
            raise CadxConfigError(f"{where}{self.kind} {name!r}: " + "; ".join(parts)) from None

    def describe_options(self, name: str) -> str:
        """``"width: int = 64, stem: 'imagenet'|'small'|'pool' = 'imagenet'"`` for listings."""
        cls = self.entry(name).options
        if cls is None:
            return ""
        return ", ".join(f"{k}: {_type_text(f.annotation)} = {f.default!r}" for k, f in cls.model_fields.items())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())


_REGISTRIES: dict[str, Registry[Any]] = {}
#: The packages whose import creates the registries a config refers to and registers their built-in entries.
HOMES = {"model": "cadx.models", "dataset": "cadx.data.datasets"}


def lookup(kind: str) -> Registry[Any]:
    """The registry of ``kind`` (``"model"``, ``"dataset"``, or any already created), its entries registered."""
    if kind in HOMES:
        importlib.import_module(HOMES[kind])  # plugin discovery by name: a no-op once imported
    try:
        return _REGISTRIES[kind]
    except KeyError:
        raise CadxConfigError(f"no {kind} registry") from None
