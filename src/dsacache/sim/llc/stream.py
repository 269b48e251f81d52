"""The memory stream of decode steps, as runs of consecutive 128-byte lines.

Per step, per layer, in order (docs/architecture.md "The memory stream of one decode step"):

1. weights:    the layer's weights, one run (streaming, once per step, shared by the batch);
2. index-scan: per request, the index keys of all context_len tokens, one run per KV block,
               except that a block physically right after the previous block and starting on
               a line boundary joins its run (the same lines in the same order, so exact; long
               runs take the streaming shortcut);
3. kv-gather:  per request, the KV row of every top-k token in slot order, one run per token
               (data-dependent: these are the blocking misses);
4. kv-append:  per request, the decoded token's KV row, then its index key (token
               context_len - 1: context_len counts the token being decoded, as the recorder
               stores it; docs/trace-format.md), modelled as write-allocate accesses after the
               layer's reads (one row per request, step and layer; a step with context_len 0
               decodes nothing and appends nothing).

A request takes part in the steps it has (shorter requests drop out). A run is (first line,
line count, class, sector mask of its first line, of its last line): every line between them is
read whole. Runs come a step block at a time in flat arrays with per-step offsets, which is what
the engine consumes. Addresses come from `Layout` (vectorised numpy); the interleaving is one
compiled pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit

from dsacache.sim.llc.layout import Layout, line_span, line_span_nb
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.model import Trace
from dsacache.units import LINE_BYTES

WEIGHTS, INDEX_SCAN, KV_GATHER, KV_APPEND = 0, 1, 2, 3
CLASSES = ("weights", "index-scan", "kv-gather", "kv-append")
N_CLASSES = len(CLASSES)
BLOCKING_CLASS = KV_GATHER
# Slots (int32) per step block the driver reads; a block's runs take ~14 B per slot.
DEFAULT_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Runs:
    """Runs of lines in access order for steps [start, start + steps)."""

    start: int
    first: np.ndarray  # int64 [n] first line id
    count: np.ndarray  # int64 [n] lines in the run (>= 1)
    cls: np.ndarray  # int8 [n] class id (CLASSES)
    m0: np.ndarray  # uint8 [n] sector mask of the first line
    m1: np.ndarray  # uint8 [n] sector mask of the last line
    step_start: np.ndarray  # int64 [steps + 1] offsets of each step's runs

    @property
    def steps(self) -> int:
        return self.step_start.shape[0] - 1

    def __len__(self) -> int:
        return int(self.first.shape[0])

    @classmethod
    def from_lines(
        cls,
        lines: np.ndarray,
        classes: np.ndarray | int = KV_GATHER,
        masks: np.ndarray | None = None,
    ) -> Runs:
        """One run per line, all in one step (for tests and benchmarks)."""
        lines = np.asarray(lines, dtype=np.int64)
        n = lines.shape[0]
        c = np.broadcast_to(np.asarray(classes, dtype=np.int8), (n,)).copy()
        m = np.full(n, 0xF, np.uint8) if masks is None else np.asarray(masks, np.uint8).copy()
        return cls(0, lines, np.ones(n, np.int64), c, m, m.copy(), np.array([0, n], np.int64))


def context_table(trace: Trace, a: int, b: int) -> np.ndarray:
    """int64 [b - a, requests]: each request's context length at steps [a, b), -1 if absent."""
    out = np.full((b - a, len(trace.requests)), -1, dtype=np.int64)
    for r, req in enumerate(trace.requests):
        ctx = np.asarray(req.context_lens[a:b], dtype=np.int64)
        out[: ctx.shape[0], r] = ctx
    return out


def build_runs(layout: Layout, block: StepBlock, ctx: np.ndarray) -> Runs:
    """The runs of one step block (indices [steps, layers, requests, k]; ctx [steps, requests],
    -1 where a request has no such step)."""
    g = layout.geometry
    idx = block.indices
    T, L, R, _ = idx.shape
    li = np.arange(L, dtype=np.int64)
    ri = np.arange(R, dtype=np.int64)

    # kv-gather: one run per valid slot.
    valid = idx >= 0
    tok = np.where(valid, idx, 0).astype(np.int64)
    g_first, g_last, g_m0, g_m1 = layout.kv_row_lines(
        li[None, :, None, None], ri[None, None, :, None], tok
    )
    g_count = np.where(valid, g_last - g_first + 1, 0)

    # kv-append: the decoded token (position context_len - 1) of each present request.
    present = ctx >= 0  # [T, R]
    p = np.where(ctx > 0, ctx - 1, 0)[:, None, :]  # [T, 1, R]
    a_kv = layout.kv_row_lines(li[None, :, None], ri[None, None, :], p)
    a_ix = layout.index_key_lines(li[None, :, None], ri[None, None, :], p)

    # index-scan: one run per block holding tokens [0, context_len).
    bt = g.block_tokens
    n_scan = np.where(present, -(-np.maximum(ctx, 0) // bt), 0)  # [T, R]
    has_w = layout.weights_bytes > 0
    w = [layout.weights_lines(layer) for layer in range(L)] if has_w else [(0, 0, 0, 0)] * L
    w_arr = np.array(w, dtype=np.int64).reshape(L, 4)

    per_step = (
        L * int(has_w)
        + L * n_scan.sum(axis=1)
        + np.count_nonzero(valid.reshape(T, -1), axis=1)
        + 2 * L * present.sum(axis=1)
    )
    step_start = np.zeros(T + 1, dtype=np.int64)
    np.cumsum(per_step, out=step_start[1:])
    n = int(step_start[-1])  # an upper bound: consecutive index blocks merge into one run
    out_first = np.empty(n, np.int64)
    out_count = np.empty(n, np.int64)
    out_cls = np.empty(n, np.int8)
    out_m0 = np.empty(n, np.uint8)
    out_m1 = np.empty(n, np.uint8)
    filled = _emit(
        has_w,
        w_arr,
        ctx,
        layout.index_base,
        layout.index_block_starts(),
        bt,
        g.index_bytes_per_token,
        g_first,
        g_count,
        g_m0.astype(np.uint8),
        g_m1.astype(np.uint8),
        np.stack([x.astype(np.int64) for x in a_kv], axis=-1),  # [T, L, R, 4]
        np.stack([x.astype(np.int64) for x in a_ix], axis=-1),
        out_first,
        out_count,
        out_cls,
        out_m0,
        out_m1,
        step_start,
    )
    n = filled
    return Runs(
        block.start, out_first[:n], out_count[:n], out_cls[:n], out_m0[:n], out_m1[:n], step_start
    )


@njit(cache=True)
def _put(
    i: int,
    f: int,
    last: int,
    m0: int,
    m1: int,
    c: int,
    of: np.ndarray,
    oc: np.ndarray,
    ocls: np.ndarray,
    om0: np.ndarray,
    om1: np.ndarray,
) -> int:
    of[i] = f
    oc[i] = last - f + 1
    ocls[i] = c
    om0[i] = m0
    om1[i] = m1
    return i + 1


@njit(cache=True, inline="always")
def _put_append(
    i: int,
    a: np.ndarray,
    t: int,
    layer: int,
    r: int,
    of: np.ndarray,
    oc: np.ndarray,
    ocls: np.ndarray,
    om0: np.ndarray,
    om1: np.ndarray,
) -> int:
    """`_put` the KV_APPEND run a[t, layer, r] = (first, last, m0, m1)."""
    return _put(
        i, a[t, layer, r, 0], a[t, layer, r, 1], a[t, layer, r, 2], a[t, layer, r, 3],
        KV_APPEND, of, oc, ocls, om0, om1,
    )  # fmt: skip


@njit(cache=True)
def _emit(
    has_w: bool,
    w: np.ndarray,
    ctx: np.ndarray,
    index_base: np.ndarray,
    index_block_off: np.ndarray,
    bt: int,
    ib: int,
    g_first: np.ndarray,
    g_count: np.ndarray,
    g_m0: np.ndarray,
    g_m1: np.ndarray,
    a_kv: np.ndarray,
    a_ix: np.ndarray,
    of: np.ndarray,
    oc: np.ndarray,
    ocls: np.ndarray,
    om0: np.ndarray,
    om1: np.ndarray,
    step_start: np.ndarray,
) -> int:
    """Write the runs of every step into the out arrays; step_start gets each step's offset.
    Returns the number of runs written (at most the upper bound the arrays were sized for)."""
    T, L, R, K = g_first.shape
    i = 0
    step_start[0] = 0
    for t in range(T):
        if t > 0:
            step_start[t] = i
        for layer in range(L):
            if has_w:
                i = _put(
                    i,
                    w[layer, 0],
                    w[layer, 1],
                    w[layer, 2],
                    w[layer, 3],
                    WEIGHTS,
                    of,
                    oc,
                    ocls,
                    om0,
                    om1,
                )
            for r in range(R):
                c = ctx[t, r]
                if c <= 0:
                    continue
                base = index_base[layer]
                nb = (c + bt - 1) // bt
                pf, pl, pm0, pm1 = np.int64(0), np.int64(0), np.int64(0), np.int64(0)
                for b in range(nb):
                    ntok = min(bt, c - b * bt)
                    start = base + index_block_off[r, b]
                    f, last, m0, m1 = line_span_nb(start, ntok * ib)
                    # a block right after the previous (full) one, starting on a line boundary,
                    # extends its run: the same lines in the same order, none shared
                    if b > 0 and index_block_off[r, b] == index_block_off[r, b - 1] + bt * ib:
                        if start & (LINE_BYTES - 1) == 0:
                            pl, pm1 = last, m1
                            continue
                    if b > 0:
                        i = _put(i, pf, pl, pm0, pm1, INDEX_SCAN, of, oc, ocls, om0, om1)
                    pf, pl, pm0, pm1 = f, last, m0, m1
                if nb > 0:
                    i = _put(i, pf, pl, pm0, pm1, INDEX_SCAN, of, oc, ocls, om0, om1)
            for r in range(R):
                for s in range(K):
                    n = g_count[t, layer, r, s]
                    if n > 0:
                        f = g_first[t, layer, r, s]
                        i = _put(
                            i,
                            f,
                            f + n - 1,
                            g_m0[t, layer, r, s],
                            g_m1[t, layer, r, s],
                            KV_GATHER,
                            of,
                            oc,
                            ocls,
                            om0,
                            om1,
                        )
            for r in range(R):
                if ctx[t, r] <= 0:  # absent, or nothing cached: no token decoded
                    continue
                i = _put_append(i, a_kv, t, layer, r, of, oc, ocls, om0, om1)
                i = _put_append(i, a_ix, t, layer, r, of, oc, ocls, om0, om1)
    step_start[T] = i
    return i


def iter_runs(
    trace: Trace,
    layout: Layout,
    steps: int | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Iterator[Runs]:
    """The trace's stream (its first `steps` steps), one step block of runs at a time."""
    blocks = StepBlocks(trace, block_elements)
    limit = blocks.steps if steps is None else min(steps, blocks.steps)
    for a, b in blocks.bounds:
        if a >= limit:
            break
        blk = blocks.read(a, min(b, limit))
        yield build_runs(layout, blk, context_table(trace, blk.start, blk.stop))


__all__ = [
    "CLASSES",
    "BLOCKING_CLASS",
    "INDEX_SCAN",
    "KV_APPEND",
    "KV_GATHER",
    "N_CLASSES",
    "WEIGHTS",
    "Runs",
    "build_runs",
    "context_table",
    "iter_runs",
    "line_span",
]
