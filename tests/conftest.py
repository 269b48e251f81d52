"""Shared fixtures: small, valid, random traces for any test that needs one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from dsacache.trace import Geometry, RequestTrace, Trace

# Geometry of the small test traces (bytes per token as DeepSeek-V3.2, pages of 4 tokens).
KV_BYTES = 656
INDEX_BYTES = 132
BLOCK_TOKENS = 4


def make_request_arrays(
    steps: int,
    layers: int,
    k: int,
    context: int,
    near_miss: int = 0,
    pad: float = 0.2,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Arrays of one valid request: (indices, context_lens, near_miss or None).

    The context starts at `context` tokens and grows by one token per step (decode). Each
    (step, layer) row holds distinct tokens below the step's context length, with about a `pad`
    fraction of its slots set to -1 (always where the context is shorter than k). The near-miss
    row (m = `near_miss` slots) holds tokens disjoint from the top-k row, -1 where none are left.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    if context < 1:
        raise ValueError("context must be >= 1")
    ctx = context + np.arange(steps, dtype=np.int64)
    indices = np.full((steps, layers, k), -1, dtype=np.int32)
    near = None if not near_miss else np.full((steps, layers, near_miss), -1, dtype=np.int32)
    for s in range(steps):
        for layer in range(layers):
            n = min(k + near_miss, int(ctx[s]))
            tokens = rng.choice(int(ctx[s]), size=n, replace=False).astype(np.int32)
            top, rest = tokens[:k], tokens[k:]
            keep = rng.random(top.shape[0]) >= pad
            row = np.where(keep, top, -1).astype(np.int32)
            indices[s, layer, : row.shape[0]] = row
            indices[s, layer] = rng.permutation(indices[s, layer])
            if near is not None:
                near[s, layer, : rest.shape[0]] = rest
    return indices, ctx, near


def make_scores(indices: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Valid scores for `indices`: float32, random where a slot holds a token, NaN elsewhere."""
    rng = np.random.default_rng(0) if rng is None else rng
    values = rng.standard_normal(indices.shape).astype(np.float32)
    return np.where(indices >= 0, values, np.float32(np.nan)).astype(np.float32)


def make_trace(
    steps: int | Sequence[int],
    layers: int,
    k: int,
    context: int | Sequence[int],
    requests: int = 1,
    near_miss: int = 0,
    seed: int = 0,
    *,
    pad: float = 0.2,
    scores: bool = False,
    geometry: Geometry | None = None,
    meta: dict | None = None,
) -> Trace:
    """A valid random in-memory trace (validated on construction), with scores if asked.

    `steps` and `context` may be one value for every request or one value per request.
    """
    rng = np.random.default_rng(seed)
    steps_per = [steps] * requests if isinstance(steps, int) else list(steps)
    ctx_per = [context] * requests if isinstance(context, int) else list(context)
    if len(steps_per) != requests or len(ctx_per) != requests:
        raise ValueError("steps/context sequences must have one entry per request")
    reqs = []
    for n, c in zip(steps_per, ctx_per, strict=True):
        idx, ctx, near = make_request_arrays(n, layers, k, c, near_miss, pad, rng)
        reqs.append(RequestTrace(idx, ctx, near, make_scores(idx, rng) if scores else None))
    geometry = geometry or Geometry(layers, k, KV_BYTES, INDEX_BYTES, BLOCK_TOKENS)
    return Trace(reqs, geometry, meta if meta is not None else {"source_model": "test"})


def assert_traces_equal(a: Trace, b: Trace) -> None:
    """Same geometry, meta and arrays (lazy arrays are read)."""
    assert a.geometry == b.geometry
    assert a.meta == b.meta
    assert len(a.requests) == len(b.requests)
    for ra, rb in zip(a.requests, b.requests, strict=True):
        ma, mb = ra.materialize(), rb.materialize()
        assert ma.indices.dtype == mb.indices.dtype == np.int32
        np.testing.assert_array_equal(ma.indices, mb.indices)
        np.testing.assert_array_equal(ma.context_lens, mb.context_lens)
        assert (ma.near_miss is None) == (mb.near_miss is None)
        if ma.near_miss is not None:
            np.testing.assert_array_equal(ma.near_miss, mb.near_miss)
        assert (ma.scores is None) == (mb.scores is None)
        if ma.scores is not None:
            assert ma.scores.dtype == mb.scores.dtype == np.float32
            np.testing.assert_array_equal(ma.scores, mb.scores)  # NaN == NaN here


@pytest.fixture
def small_trace() -> Trace:
    """Two requests of different lengths, 3 layers, k=4, with a near-miss row of 2."""
    return make_trace([6, 9], layers=3, k=4, context=[5, 12], requests=2, near_miss=2, seed=1)


@pytest.fixture
def small_store(tmp_path, small_trace):  # noqa: ANN201
    """`small_trace` saved as a store with 2-step chunks; returns its path."""
    path = tmp_path / "small.zarr"
    small_trace.save(path, chunk_steps=2)
    return path


def reference_accesses(trace: Trace) -> list[tuple[int, int, int, int]]:
    """(step, layer, request, token) of every access, step -> layer -> request -> slot, in
    plain Python: the independent reference of the access order that kernels are checked on."""
    out = []
    idx = [np.asarray(r.indices[:]) for r in trace.requests]
    for t in range(trace.steps):
        for layer in range(trace.geometry.layers):
            for r, a in enumerate(idx):
                if t < a.shape[0]:
                    out.extend((t, layer, r, int(v)) for v in a[t, layer] if v >= 0)
    return out


def slow_block_reads(monkeypatch, module, seconds: float = 0.02) -> list[int]:  # noqa: ANN001
    """Make every StepBlocks.read sleep `seconds` and `module` read one step per block, so an
    engine clock that counted reading would show it; returns the list of block starts read."""
    from functools import partial

    from dsacache.trace.blocks import StepBlocks

    read = StepBlocks.read
    reads: list[int] = []

    def slow_read(self, a, b):  # noqa: ANN001, ANN202
        reads.append(a)
        time.sleep(seconds)
        return read(self, a, b)

    monkeypatch.setattr(StepBlocks, "read", slow_read)
    monkeypatch.setattr(module, "StepBlocks", partial(StepBlocks, block_elements=1))
    return reads


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Every matplotlib figure saved while the test runs, by file name (its artists keep the
    plotted data after plt.close)."""
    from matplotlib.figure import Figure

    saved: dict[str, object] = {}
    original = Figure.savefig

    def spy(self, fname, *args, **kwargs):  # noqa: ANN001, ANN202
        saved[Path(fname).name] = self
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved
