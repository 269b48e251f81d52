"""`line-lru`: LRU over 128-byte lines instead of whole tokens (the ablation).

Layout (where a token's KV row lives). KV is paged, `block_tokens` (B) tokens per page, rows
packed within a page, the pages of one (request, layer) contiguous. The (request, layer) areas
lie back to back in the order request -> layer, each area starting on a 128-byte boundary (its
size rounded up to whole lines, so no line holds rows of two (request, layer) pairs and regions
never share a line). Token t of (r, l) occupies bytes

    [area(r, l) + (t // B) * B * kv + (t % B) * kv,  + kv)      (= area(r, l) + t * kv)

with kv = geometry.kv_bytes_per_token and the area sized for the request's largest context.
Its lines are floor(start / 128) .. floor((end - 1) / 128): neighbouring tokens share their
first/last line when kv is not a multiple of 128.

Replay. A token access touches each of its lines in order, each an LRU access of that line in
the layer's region (a miss inserts the line at the MRU end, evicting the LRU line when full).
The token access is a HIT iff all its lines hit. Region capacity in lines is
capacity_tokens * kv // 128 (floor). Counters.hits/misses count token accesses; the policy sets
counts_lines, so the driver also gives it per-layer line tallies (Counters.line_hits /
line_misses) and the traffic it reports is lines x 128 B (a token miss may fetch only some of
its lines; a shared line is fetched once for two tokens). A layer that bypasses the reservation
misses every token and every line.

Not bounded by `min`: when kv is not a multiple of 128, a line holds parts of neighbouring
tokens, so fetching one token's lines brings in (part of) its neighbours: a free prefetch at
line granularity. line-lru can then miss fewer *tokens* than MIN over whole tokens with the
same bytes (e.g. kv = 64, capacity 2 tokens = 1 line, accesses 0 1 0 1: line-lru misses once,
MIN twice). When kv is a multiple of 128 every row is whole lines of its own, line-lru equals
token-lru, and MIN <= line-lru holds (tests/test_sim_policies_extra.py checks both).

On the driver: token-lru's hooks (lru.py) over line ids instead of keys, with a `span` hook
that names the lines of a token's row; the driver walks them, counts line hits and misses, and
keeps each region's occupancy in lines.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

from dsacache.sim.policies.base import register
from dsacache.sim.policies.driver import make_replay
from dsacache.sim.policies.lru import LIST_HOOKS, SLOTTED, ListPolicy, ListState
from dsacache.trace.blocks import StepBlock
from dsacache.units import LINE_BYTES, LINE_SHIFT


@njit(inline="always")
def _span(st: ListState, r: int, layer: int, tok: int) -> tuple:
    area, kv = st.extra  # byte base of each (request, layer); bytes of one token's row
    start = area[r, layer] + tok * kv
    return start >> LINE_SHIFT, (start + kv - 1) >> LINE_SHIFT


line_replay = make_replay("line_list", LIST_HOOKS._replace(span=_span, variant=SLOTTED))


def line_areas(max_context: np.ndarray, layers: int, kv: int) -> tuple[np.ndarray, int]:
    """Byte base of every (request, layer) area (int64 [requests, layers]) and total bytes."""
    size = np.asarray(max_context, np.int64) * kv
    size = -(-size // LINE_BYTES) * LINE_BYTES  # whole lines
    per = np.repeat(size, layers)  # request -> layer order
    base = np.zeros(per.shape[0], np.int64)
    base[1:] = np.cumsum(per)[:-1]
    return base.reshape(len(size), layers), int(per.sum())


@register
class LineLRU(ListPolicy):
    name = "line-lru"
    summary = "LRU over 128-byte lines of the paged KV rows (a token hits iff all its lines hit)"
    online = True
    prefetches = False  # fetches only lines of requested tokens (see the module doc)
    counts_lines = True
    emits_hit_mask = False  # the LLC's token region in front stores whole tokens, not lines
    kernel = line_replay

    @functools.cached_property
    def kv(self) -> int:
        return self.geometry.kv_bytes_per_token

    @functools.cached_property
    def layout(self) -> tuple[np.ndarray, int]:
        """(byte base of each (request, layer), total bytes): line_areas of this trace."""
        return line_areas(self.blocks.keys.max_context, self.blocks.layers, self.kv)

    def n_units(self) -> int:
        return self.layout[1] // LINE_BYTES

    def unit_capacity(self, tokens: np.ndarray) -> np.ndarray:
        return tokens * self.kv // LINE_BYTES

    def pair_units(self) -> np.ndarray:
        lines = -(-(self.blocks.keys.max_context * self.kv) // LINE_BYTES)  # per request
        return np.repeat(lines[:, None], self.blocks.layers, axis=1)

    def row_units(self) -> int:
        # a row starts gcd(kv, 128)-aligned within its line: at worst 128 - gcd bytes in
        worst = LINE_BYTES - math.gcd(self.kv, LINE_BYTES) + self.kv
        return self.blocks.k * -(-worst // LINE_BYTES)

    def extra(self, block: StepBlock) -> tuple:
        return self.layout[0], self.kv
