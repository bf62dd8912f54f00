"""A small name → factory registry (timm-style ``register``/``create``) used for datasets, models, losses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cadx.errors import CadxConfigError

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    description: str


class Registry(Generic[T]):
    """Maps names to factories. ``@reg.register("name", "what it is")`` adds one; ``reg.get(name)`` finds it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        def deco(factory: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = description or (factory.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, factory, doc)
            return factory

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name].factory
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise CadxConfigError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())
