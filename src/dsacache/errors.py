"""Errors the CLI turns into one line and exit code 2 (never a traceback)."""

from __future__ import annotations


class DsacacheError(Exception):
    """A user-facing error: bad input, bad configuration."""


class TraceError(DsacacheError):
    """A trace file or array that breaks the format: names the file, the field and the value."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}")
