"""Where every byte of the decode stream lives: weights, paged KV, paged index keys.

Address space (bytes, each region aligned to `align`, 2 MiB by default: ASSUMED, the large-page
granularity of GPU allocations)::

    weights[layer 0] .. weights[layer L-1]    weights_bytes per layer, contiguous per layer
    kv_pool[layer 0] .. kv_pool[layer L-1]    n_blocks x (block_tokens x kv_bytes_per_token)
    idx_pool[layer 0] .. idx_pool[layer L-1]  n_blocks x (block_tokens x index_bytes_per_token)

KV is paged: a physical block holds `block_tokens` consecutive tokens of one request, packed
(token j of a block starts j x kv_bytes after the block's start, no padding), and blocks follow
each other without padding, so a token's row spans several 128-byte lines and may share its first
and last line with its neighbours (or with the next block). Every layer uses the same block table
(as vLLM and SGLang do), in its own pool.

Block allocation order: first every request's prompt blocks (the blocks holding tokens below
its first step's context length - 1: what was cached before step 0), request by request; then,
as decode runs, a block is allocated at the first step whose append writes into it, ordered by
(step, request, logical block). Physical block ids count up from 0 in that order. A step's
context_len counts the token being decoded (see docs/trace-format.md), so the append of step t
writes token context_len[t] - 1 and a request uses tokens [0, max_t context_len[t]).

Line ids are byte addresses >> 7. `line_span` maps a byte range to its first and last line and
the 32-byte-sector masks (bit i = sector i) of those two lines; it is written with plain integer
operators so the same function works on numpy arrays (vectorised) and, compiled, inside kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError
from dsacache.trace.geometry import Geometry
from dsacache.units import LINE_BYTES, LINE_SHIFT, MIB, SECTOR_SHIFT

FULL_MASK = 0xF
DEFAULT_ALIGN = 2 * MIB
MAX_ADDRESS = 1 << 62  # addresses are int64
IntOrArray = int | np.integer | np.ndarray  # line_span works on scalars and arrays alike


def line_span(start: IntOrArray, nbytes: IntOrArray) -> tuple[IntOrArray, ...]:
    """(first line, last line, sector mask of the first line, of the last line) of bytes
    [start, start + nbytes); nbytes >= 1. With one line, both masks are that line's mask."""
    end = start + nbytes - 1
    first = start >> LINE_SHIFT
    last = end >> LINE_SHIFT
    m_first = (FULL_MASK << ((start >> SECTOR_SHIFT) & 3)) & FULL_MASK
    m_last = FULL_MASK >> (3 - ((end >> SECTOR_SHIFT) & 3))
    several = (last != first) * FULL_MASK  # 0 when the range is inside one line
    return first, last, m_first & (m_last | several), m_last & (m_first | several)


line_span_nb = njit(cache=True)(line_span)


def align_up(n: int, align: int) -> int:
    return -(-n // align) * align


def allocate_blocks(context_lens: Sequence[np.ndarray], block_tokens: int) -> np.ndarray:
    """Block table int64 [requests, max logical blocks] of physical ids (-1 past the end).

    Request r needs tokens [0, max_t context_len[t]) (step t appends token
    context_len[t] - 1); see the module docstring for the order ids are given in.
    """
    keys_t, keys_r, keys_b = [], [], []
    widths = []
    for r, ctx in enumerate(context_lens):
        ctx = np.asarray(ctx, dtype=np.int64)
        if ctx.size == 0:
            widths.append(0)
            continue
        if (ctx < 0).any():
            raise DsacacheError(f"request {r}: negative context length")
        n = -(-int(ctx.max()) // block_tokens)
        widths.append(n)
        b = np.arange(n, dtype=np.int64)
        reach = np.maximum.accumulate(ctx) - 1  # highest token written or read so far
        t = np.searchsorted(reach, b * block_tokens, side="left")  # first step reaching block b
        t = np.where(b * block_tokens < ctx[0] - 1, -1, t)  # prompt blocks: before step 0
        keys_t.append(t)
        keys_r.append(np.full(n, r, dtype=np.int64))
        keys_b.append(b)
    table = np.full((len(context_lens), max(widths, default=0)), -1, dtype=np.int64)
    if not keys_t:
        return table
    t, r, b = (np.concatenate(x) for x in (keys_t, keys_r, keys_b))
    order = np.lexsort((b, r, t))  # by step, then request, then logical block
    table[r[order], b[order]] = np.arange(order.size, dtype=np.int64)
    return table


@dataclass(frozen=True)
class Layout:
    """Byte addresses of one trace's decode stream (see the module docstring)."""

    geometry: Geometry
    weights_bytes: int  # per layer
    block_table: np.ndarray  # int64 [requests, logical blocks] -> physical block
    weights_base: np.ndarray  # int64 [layers]
    kv_base: np.ndarray  # int64 [layers]
    index_base: np.ndarray  # int64 [layers]
    end: int  # first byte past the layout

    @classmethod
    def build(
        cls,
        geometry: Geometry,
        context_lens: Sequence[np.ndarray],
        weights_bytes: int,
        align: int = DEFAULT_ALIGN,
    ) -> Layout:
        if isinstance(weights_bytes, bool) or not isinstance(weights_bytes, int | np.integer):
            raise DsacacheError(f"weights bytes must be an integer, got {weights_bytes!r}")
        if weights_bytes < 0:
            raise DsacacheError(f"weights bytes per layer must be >= 0, got {weights_bytes}")
        if align < LINE_BYTES or align % LINE_BYTES:
            raise DsacacheError(f"align must be a positive multiple of 128, got {align}")
        g = geometry
        table = allocate_blocks(context_lens, g.block_tokens)
        n_blocks = int(table.max()) + 1 if table.size else 0
        layers = np.arange(g.layers, dtype=np.int64)
        w_stride = align_up(int(weights_bytes), align)
        kv_stride = align_up(max(n_blocks * g.block_tokens * g.kv_bytes_per_token, 1), align)
        ix_stride = align_up(max(n_blocks * g.block_tokens * g.index_bytes_per_token, 1), align)
        end = g.layers * (w_stride + kv_stride + ix_stride)
        if end > MAX_ADDRESS:
            raise DsacacheError(
                f"address space of {end:,} bytes (weights {int(weights_bytes):,} B per layer) "
                f"exceeds the model's limit of 2**62 bytes"
            )
        weights_base = layers * w_stride
        kv_base = g.layers * w_stride + layers * kv_stride
        index_base = g.layers * (w_stride + kv_stride) + layers * ix_stride
        return cls(g, int(weights_bytes), table, weights_base, kv_base, index_base, end)

    @property
    def kv_block_bytes(self) -> int:
        return self.geometry.block_tokens * self.geometry.kv_bytes_per_token

    @property
    def index_block_bytes(self) -> int:
        return self.geometry.block_tokens * self.geometry.index_bytes_per_token

    @property
    def n_blocks(self) -> int:
        return int(self.block_table.max()) + 1 if self.block_table.size else 0

    def _block(self, request: IntOrArray, token: IntOrArray) -> tuple[np.ndarray, np.ndarray]:
        bt = self.geometry.block_tokens
        request, token = np.asarray(request, np.int64), np.asarray(token, np.int64)
        return self.block_table[request, token // bt], token % bt

    def kv_row_start(self, layer: IntOrArray, request: IntOrArray, token: IntOrArray) -> np.ndarray:
        """First byte of the KV row of (layer, request, token); numpy broadcasting."""
        phys, within = self._block(request, token)
        kv = self.geometry.kv_bytes_per_token
        return self.kv_base[np.asarray(layer)] + phys * self.kv_block_bytes + within * kv

    def index_key_start(
        self, layer: IntOrArray, request: IntOrArray, token: IntOrArray
    ) -> np.ndarray:
        """First byte of the index key of (layer, request, token); numpy broadcasting."""
        phys, within = self._block(request, token)
        ib = self.geometry.index_bytes_per_token
        return self.index_base[np.asarray(layer)] + phys * self.index_block_bytes + within * ib

    def kv_row_lines(
        self, layer: IntOrArray, request: IntOrArray, token: IntOrArray
    ) -> tuple[np.ndarray, ...]:
        """line_span of each KV row: (first, last, first mask, last mask)."""
        start = self.kv_row_start(layer, request, token)
        return line_span(start, np.int64(self.geometry.kv_bytes_per_token))

    def index_key_lines(
        self, layer: IntOrArray, request: IntOrArray, token: IntOrArray
    ) -> tuple[np.ndarray, ...]:
        start = self.index_key_start(layer, request, token)
        return line_span(start, np.int64(self.geometry.index_bytes_per_token))

    def weights_lines(self, layer: int) -> tuple[int, int, int, int]:
        """line_span of a layer's weights (weights_bytes must be > 0)."""
        first, last, m0, m1 = line_span(int(self.weights_base[layer]), self.weights_bytes)
        return int(first), int(last), int(m0), int(m1)

    def index_block_starts(self) -> np.ndarray:
        """int64 [requests, logical blocks]: offset of each index block in a layer's pool
        (-1 past the end); the stream adds index_base[layer]."""
        t = self.block_table
        return np.where(t >= 0, t * self.index_block_bytes, -1)
