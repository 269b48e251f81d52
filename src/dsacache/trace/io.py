"""Open whatever a user hands us as a trace: a trace store or a plain .npz of indices."""

from __future__ import annotations

from pathlib import Path

from dsacache.trace.model import Trace


def open_trace(
    path: str | Path,
    *,
    lazy: bool = True,
    validate: bool = True,
    **geometry_overrides: int | None,
) -> Trace:
    """Load a trace store (lazily by default) or an .npz.

    geometry_overrides (kv_bytes_per_token, index_bytes_per_token, block_tokens) set the
    geometry of an .npz import and override a store's recorded values (None: keep).
    """
    return Trace.load(path, lazy=lazy, validate=validate, **geometry_overrides)
