"""The in-memory trace: per-request top-k indices plus the geometry and provenance."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsacache import __version__
from dsacache.errors import DsacacheError
from dsacache.trace.geometry import Geometry

DEFAULT_CHUNK_STEPS = 64


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive decode steps of one request, as numpy arrays."""

    start: int  # absolute step of row 0
    indices: np.ndarray  # int32 [steps, layers, k]
    context_lens: np.ndarray  # int64 [steps]
    near_miss: np.ndarray | None  # int32 [steps, layers, m]
    scores: np.ndarray | None = None  # float32 [steps, layers, k], NaN where a slot is empty


class RequestTrace:
    """One request's recording. `indices`/`near_miss`/`scores` may be numpy or lazy arrays.

    scores (optional): the indexer's score of each selection, float32 shaped like `indices`,
    NaN exactly where a slot is empty.
    """

    def __init__(
        self,
        indices: Any,
        context_lens: Any,
        near_miss: Any | None = None,
        scores: Any | None = None,
    ) -> None:
        self.indices = indices
        self.context_lens = np.asarray(context_lens)
        self.near_miss = near_miss
        self.scores = scores

    @property
    def steps(self) -> int:
        return int(self.indices.shape[0])

    @property
    def max_context(self) -> int:
        return int(self.context_lens.max()) if self.steps else 0

    @property
    def is_lazy(self) -> bool:
        return not isinstance(self.indices, np.ndarray)

    def default_chunk_steps(self) -> int:
        chunks = getattr(self.indices, "chunks", None)
        return int(chunks[0]) if chunks else DEFAULT_CHUNK_STEPS

    def iter_chunks(self, chunk_steps: int | None = None) -> Iterator[Chunk]:
        """Yield the request in step order, `chunk_steps` steps at a time (numpy arrays)."""
        n = chunk_steps or self.default_chunk_steps()
        if n < 1:
            raise DsacacheError(f"chunk_steps must be a positive integer, got {n}")
        for start in range(0, self.steps, n):
            stop = min(start + n, self.steps)
            yield Chunk(
                start,
                np.asarray(self.indices[start:stop]),
                self.context_lens[start:stop],
                _rows(self.near_miss, start, stop),
                _rows(self.scores, start, stop),
            )

    def materialize(self) -> RequestTrace:
        """This request with every array in memory."""
        return RequestTrace(
            np.asarray(self.indices[:]),
            self.context_lens.copy(),
            _rows(self.near_miss, 0, self.steps),
            _rows(self.scores, 0, self.steps),
        )


def _rows(array: Any | None, start: int, stop: int) -> np.ndarray | None:
    return None if array is None else np.asarray(array[start:stop])


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
        from dsacache.trace.validate import validate_trace

        validate_trace(self)

    def materialize(self) -> Trace:
        return Trace(
            [r.materialize() for r in self.requests],
            self.geometry,
            self.meta,
            source=self.source,
            validate=False,
        )

    def save(self, path: str | Path, chunk_steps: int = DEFAULT_CHUNK_STEPS) -> None:
        from dsacache.trace.store import save_trace

        save_trace(self, path, chunk_steps=chunk_steps)

    @classmethod
    def load(cls, path: str | Path, *, lazy: bool = False, validate: bool = True) -> Trace:
        """Read a trace store (or a plain .npz of indices); lazy keeps arrays on disk."""
        from dsacache.trace.io import open_trace

        return open_trace(path, lazy=lazy, validate=validate)

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"Trace({len(self.requests)} request(s), {self.steps} steps, {g.layers} layers, "
            f"k={g.top_k}, source={self.source!r})"
        )


def default_context_lens(indices: np.ndarray) -> np.ndarray:
    """Context length implied by the indices alone: max index + 1 per step."""
    if indices.ndim < 2 or indices.shape[0] == 0:
        return np.zeros(indices.shape[:1], dtype=np.int64)
    flat = indices.reshape(indices.shape[0], -1)
    if flat.shape[1] == 0:
        return np.zeros(indices.shape[0], dtype=np.int64)
    return (flat.max(axis=1).astype(np.int64) + 1).clip(min=0)
