"""Errors cadx raises for bad user input."""

from __future__ import annotations

from pathlib import Path


class CadxError(Exception):
    """Base class of cadx's own errors (the CLI prints them as one line, no traceback)."""


class CadxDataError(CadxError, ValueError):
    """Bad input data: names the file (or source) and the field that is wrong.

    ``str(err)`` is ``"<path>: <field>: <message>"`` (parts that are unknown are left out), always one line: line
    breaks in ``message`` (a library's multi-line text, a CSV cell) become spaces.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None) -> None:
        self.message = " ".join(message.splitlines())
        self.path = str(path) if path is not None else None
        self.field = field
        parts = [p for p in (self.path, field) if p]
        super().__init__(": ".join([*parts, self.message]))


class CadxConfigError(CadxError, ValueError):
    """An invalid experiment configuration or command-line option."""
