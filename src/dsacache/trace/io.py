"""Open whatever a user hands us as a trace: a trace store or a plain .npz of indices."""

from __future__ import annotations

import zipfile
from pathlib import Path

from dsacache.errors import TraceError
from dsacache.trace.model import Trace


def open_trace(
    path: str | Path,
    *,
    lazy: bool = True,
    validate: bool = True,
    **geometry_overrides: int | None,
) -> Trace:
    """Load a trace store or an .npz.

    geometry_overrides (kv_bytes_per_token, index_bytes_per_token, block_tokens) set the
    geometry of an .npz import and override a store's recorded values (None: keep).
    """
    p = Path(path)
    if not p.exists():
        raise TraceError(str(p), "file", "does not exist")
    if p.is_file() and (p.suffix == ".npz" or zipfile.is_zipfile(p)):
        from dsacache.trace.npz import load_npz

        return load_npz(p, **geometry_overrides)
    from dsacache.trace.store import load_store

    trace = load_store(p, lazy=lazy, validate=validate)
    trace.geometry = trace.geometry.with_overrides(**geometry_overrides)
    return trace
