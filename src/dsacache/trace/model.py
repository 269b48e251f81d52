"""The trace: per-request top-k indices plus the geometry and provenance.

`Trace` sits above the modules that validate, store and import its arrays and calls them; none
of them imports it (request <- validate <- store, npz <- model <- io).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsacache import __version__
from dsacache.errors import DsacacheError, TraceError
from dsacache.trace.geometry import Geometry
from dsacache.trace.npz import read_npz
from dsacache.trace.request import (
    DEFAULT_CHUNK_STEPS,
    Chunk,
    RequestTrace,
    default_context_lens,
)
from dsacache.trace.store import describe_error, read_store, write_store
from dsacache.trace.validate import validate_requests

__all__ = [
    "DEFAULT_CHUNK_STEPS",
    "Chunk",
    "RequestTrace",
    "Trace",
    "default_context_lens",
]


class Trace:
    """A DSA trace: one or more requests sharing one model geometry.

    Access order (what simulators replay): step -> layer -> request -> slot, every valid slot
    (index >= 0) one access of the key (request, layer, token).
    """

    def __init__(
        self,
        requests: Sequence[RequestTrace],
        geometry: Geometry,
        meta: dict[str, Any] | None = None,
        *,
        source: str = "<memory>",
        validate: bool = True,
    ) -> None:
        if not requests:
            raise DsacacheError(f"{source}: requests: a trace needs at least one request")
        self.requests = list(requests)
        self.geometry = geometry
        self.meta = {"tool_version": __version__, **(meta or {})}
        self.source = source
        if validate:
            self.validate()

    @classmethod
    def from_arrays(
        cls,
        indices: np.ndarray,
        context_lens: np.ndarray | None,
        geometry: Geometry,
        meta: dict[str, Any] | None = None,
        near_miss: np.ndarray | None = None,
        *,
        scores: np.ndarray | None = None,
        source: str = "<memory>",
    ) -> Trace:
        """A single-request trace from arrays (context_lens None: max index + 1 per step)."""
        if context_lens is None:
            context_lens = default_context_lens(np.asarray(indices))
        request = RequestTrace(indices, context_lens, near_miss, scores)
        return cls([request], geometry, meta, source=source)

    # Single-request conveniences; a batch is read through `requests`.
    def _only(self) -> RequestTrace:
        if len(self.requests) != 1:
            raise DsacacheError(
                f"{self.source}: holds {len(self.requests)} requests; use trace.requests[i]"
            )
        return self.requests[0]

    @property
    def indices(self) -> Any:
        return self._only().indices

    @property
    def context_lens(self) -> np.ndarray:
        return self._only().context_lens

    @property
    def near_miss(self) -> Any | None:
        return self._only().near_miss

    @property
    def scores(self) -> Any | None:
        return self._only().scores

    @property
    def has_scores(self) -> bool:
        """Every request carries the indexer's scores of its selections."""
        return all(r.scores is not None for r in self.requests)

    @property
    def steps(self) -> int:
        """Decode steps of the longest request."""
        return max(r.steps for r in self.requests)

    def count_accesses(self) -> int:
        """Valid slots over the whole trace (one pass over the indices)."""
        return sum(
            int(np.count_nonzero(c.indices >= 0)) for r in self.requests for c in r.iter_chunks()
        )

    def validate(self) -> None:
        validate_requests(self.requests, self.geometry, self.source)

    def materialize(self) -> Trace:
        return Trace(
            [r.materialize() for r in self.requests],
            self.geometry,
            self.meta,
            source=self.source,
            validate=False,
        )

    def save(self, path: str | Path, chunk_steps: int = DEFAULT_CHUNK_STEPS) -> None:
        write_store(path, self.requests, self.geometry, self.meta, chunk_steps)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        lazy: bool = False,
        validate: bool = True,
        **geometry_overrides: int | None,
    ) -> Trace:
        """Read a trace store or a plain .npz of indices; lazy keeps a store's arrays on disk.

        geometry_overrides (kv_bytes_per_token, index_bytes_per_token, block_tokens) set the
        geometry of an .npz import and override a store's recorded values (None: keep). An
        .npz is always in memory and always validated.
        """
        p = Path(path)
        src = str(p)
        if not p.exists():
            raise TraceError(src, "file", "does not exist")
        if p.is_file() and (p.suffix == ".npz" or zipfile.is_zipfile(p)):
            parts, lazy, validate = read_npz(p), False, True
        else:
            parts = read_store(p, lazy=lazy)
        geometry = parts.geometry.with_overrides(**geometry_overrides)
        try:
            return cls(parts.requests, geometry, parts.meta, source=src, validate=validate)
        except DsacacheError:
            raise
        except Exception as e:  # noqa: BLE001 - last resort: never a traceback for a bad file
            raise TraceError(src, "data", f"unreadable ({describe_error(e)})") from None

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"Trace({len(self.requests)} request(s), {self.steps} steps, {g.layers} layers, "
            f"k={g.top_k}, source={self.source!r})"
        )
