"""One request's arrays, and the parts a reader hands to `Trace`.

The bottom of trace/'s format modules: request <- validate <- store, npz <- model <- io. Nothing
here imports another trace module but geometry, so the dependencies run one way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


@dataclass
class TraceParts:
    """What a reader found: the requests, geometry and meta of a trace, not yet validated."""

    requests: list[RequestTrace]
    geometry: Geometry
    meta: dict[str, Any] = field(default_factory=dict)


def default_context_lens(indices: np.ndarray) -> np.ndarray:
    """Context length implied by the indices alone: max index + 1 per step."""
    if indices.ndim < 2 or indices.shape[0] == 0:
        return np.zeros(indices.shape[:1], dtype=np.int64)
    flat = indices.reshape(indices.shape[0], -1)
    if flat.shape[1] == 0:
        return np.zeros(indices.shape[0], dtype=np.int64)
    return (flat.max(axis=1).astype(np.int64) + 1).clip(min=0)
