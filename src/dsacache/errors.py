"""Errors the CLI turns into one line and exit code 2 (never a traceback)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class DsacacheError(Exception):
    """A user-facing error: bad input, bad configuration."""


class TraceError(DsacacheError):
    """A trace file or array that breaks the format: names the file, the field and the value."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """`table[name.lower()]`, or one line naming what is known: the presets' shared lookup."""
    try:
        return table[name.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(table)
        raise DsacacheError(f"unknown {what} {name!r} (known: {known})") from None
