"""The trace in access order, a block of steps at a time: what every replay consumes.

A block holds steps [a, b) of every request as int32 [steps, layers, requests, k] (-1 where a
slot is empty or a request has no such step), so a kernel that loops t -> layer -> request ->
slot walks the accesses in the trace's access order. Keys (request, layer, token) map to dense
ids key_offset[r] + layer * max_context[r] + token, so per-key state is a flat array.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dsacache.trace.model import RequestTrace, Trace

# Slot entries (int32) held in one block by default: 4 M entries = 16 MB of indices.
DEFAULT_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class KeySpace:
    """Dense ids of the keys (request, layer, token) of one trace."""

    layers: int
    max_context: np.ndarray  # int64 [requests]
    key_offset: np.ndarray  # int64 [requests]

    @classmethod
    def of(cls, trace: Trace) -> KeySpace:
        max_ctx = np.array([max(r.max_context, 1) for r in trace.requests], dtype=np.int64)
        offset = np.zeros(len(max_ctx), dtype=np.int64)
        offset[1:] = np.cumsum(max_ctx * trace.geometry.layers)[:-1]
        return cls(trace.geometry.layers, max_ctx, offset)

    @property
    def size(self) -> int:
        return int((self.max_context * self.layers).sum())

    def key(self, request: int, layer: int, token: int) -> int:
        return int(self.key_offset[request] + layer * self.max_context[request] + token)

    def decode(self, key: int) -> tuple[int, int, int]:
        """(request, layer, token) of a dense key."""
        r = int(np.searchsorted(self.key_offset, key, side="right") - 1)
        layer, token = divmod(key - int(self.key_offset[r]), int(self.max_context[r]))
        return r, int(layer), int(token)


class _RowReader:
    """Rows [a, b) of one request's array; keeps the last storage chunk it decoded."""

    def __init__(self, req: RequestTrace, array: object) -> None:
        self.array = array
        self.steps = req.steps
        self.lazy = not isinstance(array, np.ndarray)
        self.chunk = req.default_chunk_steps()
        self._start = -1
        self._rows: np.ndarray | None = None

    def rows(self, a: int, b: int) -> np.ndarray:
        b = min(b, self.steps)
        if not self.lazy:
            return np.asarray(self.array[a:b])
        parts = []
        t = a
        while t < b:
            c0 = (t // self.chunk) * self.chunk
            if c0 != self._start:
                self._rows = np.asarray(self.array[c0 : min(c0 + self.chunk, self.steps)])
                self._start = c0
            stop = min(b, c0 + self.chunk)
            parts.append(self._rows[t - c0 : stop - c0])
            t = stop
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(frozen=True)
class StepBlock:
    start: int  # absolute step of row 0
    indices: np.ndarray  # int32 [steps, layers, requests, k]
    near_miss: np.ndarray | None  # int32 [steps, layers, requests, m] (when asked for)

    @property
    def stop(self) -> int:
        return self.start + self.indices.shape[0]


class StepBlocks:
    """Iterate a trace in interleaved step blocks (forwards or backwards)."""

    def __init__(
        self,
        trace: Trace,
        block_elements: int = DEFAULT_BLOCK_ELEMENTS,
        near_miss: bool = False,
    ) -> None:
        self.trace = trace
        self.keys = KeySpace.of(trace)
        g = trace.geometry
        self.layers, self.requests, self.k = g.layers, len(trace.requests), g.top_k
        self.steps = trace.steps
        self._readers = [_RowReader(r, r.indices) for r in trace.requests]
        self.near_miss_width = 0
        self._near: list[_RowReader | None] = []
        if near_miss:
            widths = [
                0 if r.near_miss is None else int(r.near_miss.shape[2]) for r in trace.requests
            ]
            self.near_miss_width = max(widths, default=0)
            self._near = [
                None if r.near_miss is None else _RowReader(r, r.near_miss) for r in trace.requests
            ]
        per_step = max(1, self.layers * self.requests * self.k)
        n = max(1, block_elements // per_step)
        chunk = max(rd.chunk for rd in self._readers)
        if n >= chunk:  # whole storage chunks per block when they fit
            n -= n % chunk
        self.block_steps = n
        bounds = list(range(0, self.steps, n)) + [self.steps]
        self.bounds = list(zip(bounds[:-1], bounds[1:], strict=True))

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self) -> Iterator[StepBlock]:
        for a, b in self.bounds:
            yield self.read(a, b)

    def reversed(self) -> Iterator[StepBlock]:
        for a, b in reversed(self.bounds):
            yield self.read(a, b)

    def read(self, a: int, b: int) -> StepBlock:
        idx = _interleave(self._readers, a, b, self.layers, self.k)
        near = None
        if self.near_miss_width:
            near = _interleave(self._near, a, b, self.layers, self.near_miss_width)
        return StepBlock(a, idx, near)


def _interleave(
    readers: list[_RowReader | None], a: int, b: int, layers: int, width: int
) -> np.ndarray:
    """Steps [a, b) of every request as int32 [steps, layers, requests, width], -1 if absent."""
    block = np.full((b - a, layers, len(readers), width), -1, dtype=np.int32)
    for r, rd in enumerate(readers):
        if rd is None or a >= rd.steps:
            continue
        rows = rd.rows(a, b)
        block[: rows.shape[0], :, r, : rows.shape[2]] = rows
    return block
