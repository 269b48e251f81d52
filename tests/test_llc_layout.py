"""Address layout: a token's lines and sectors, lines shared by neighbours, paged blocks."""

from __future__ import annotations

import numpy as np
import pytest

from dsacache.errors import DsacacheError
from dsacache.sim.llc.layout import Layout, allocate_blocks, line_span, line_span_nb
from dsacache.trace import Geometry


def test_line_span_by_hand():
    # DeepSeek-V3.2 KV rows of 656 B packed from byte 0: token 0 is bytes 0..655.
    assert [int(x) for x in line_span(0, 656)] == [0, 5, 0b1111, 0b0001]
    # token 1 (656..1311) shares line 5 with token 0 and line 10 with token 2
    assert [int(x) for x in line_span(656, 656)] == [5, 10, 0b1111, 0b0001]
    assert [int(x) for x in line_span(1312, 656)] == [10, 15, 0b1110, 0b0011]
    # inside one line: both masks are that line's
    assert [int(x) for x in line_span(128 + 40, 50)] == [1, 1, 0b0110, 0b0110]
    assert [int(x) for x in line_span(128, 128)] == [1, 1, 0b1111, 0b1111]
    assert [int(x) for x in line_span(127, 2)] == [0, 1, 0b1000, 0b0001]


def test_line_span_vectorised_equals_compiled():
    rng = np.random.default_rng(0)
    start = rng.integers(0, 1 << 40, 500)
    nbytes = rng.integers(1, 5000, 500)
    vec = line_span(start, nbytes)
    for i in range(0, 500, 7):
        assert tuple(int(v[i]) for v in vec) == tuple(
            int(x) for x in line_span_nb(int(start[i]), int(nbytes[i]))
        )
    first, last, m0, m1 = vec
    assert (first == start >> 7).all() and (last == (start + nbytes - 1) >> 7).all()
    assert ((m0 > 0) & (m0 <= 15) & (m1 > 0) & (m1 <= 15)).all()


def test_block_allocation_order():
    # bt = 4; context_len counts the token being decoded, so step t appends token ctx[t] - 1.
    # r0 ctx [8, 9, 10]: prompt tokens 0..6 (blocks 0, 1); step 0 appends 7 (block 1), step 1
    # appends 8 -> block 2 at step 1. r1 ctx [2, 5, 6]: prompt token 0 (block 0); step 1
    # appends 4 -> block 1 at step 1, after r0's (step, then request order).
    table = allocate_blocks([np.array([8, 9, 10]), np.array([2, 5, 6])], 4)
    assert table.tolist() == [[0, 1, 3], [2, 4, -1]]
    # ctx 8 -> 9 at step 1 only: token 8 opens block 2 at step 1; r1 stays in its prompt block.
    assert allocate_blocks([np.array([8, 9]), np.array([2, 3, 4])], 4).tolist() == [
        [0, 1, 3],
        [2, -1, -1],
    ]
    # A context that grows by several tokens at once allocates every block it reaches.
    assert allocate_blocks([np.array([1, 10])], 4).tolist() == [[0, 1, 2]]
    assert allocate_blocks([np.array([0, 0])], 4).shape == (1, 0)  # nothing cached, no block


def test_layout_addresses():
    g = Geometry(
        layers=2, top_k=4, kv_bytes_per_token=656, index_bytes_per_token=132, block_tokens=4
    )
    lay = Layout.build(g, [np.array([8, 9]), np.array([2, 3, 5])], weights_bytes=1000, align=4096)
    assert lay.n_blocks == 5
    assert lay.weights_base.tolist() == [0, 4096]
    # KV pool: 5 blocks x 4 tokens x 656 B = 13120 B, aligned to 16384
    assert lay.kv_base.tolist() == [8192, 8192 + 16384]
    assert lay.index_base.tolist() == [8192 + 2 * 16384, 8192 + 2 * 16384 + 4096]
    assert lay.end == lay.index_base[1] + 4096
    # token 9 of request 0 in layer 1: logical block 2 -> physical 3, slot 1
    assert int(lay.kv_row_start(1, 0, 9)) == lay.kv_base[1] + 3 * 4 * 656 + 656
    assert int(lay.index_key_start(0, 1, 4)) == lay.index_base[0] + 4 * 4 * 132
    # tokens of one page are packed: consecutive rows, neighbours share a line
    first, last, _, _ = lay.kv_row_lines(0, 0, np.arange(4))
    starts = lay.kv_row_start(0, 0, np.arange(4))
    assert (np.diff(starts) == 656).all()
    assert (first[1:] == last[:-1]).all()
    # a page boundary jumps to the next physical block of the request
    assert int(lay.kv_row_start(0, 1, 4)) == lay.kv_base[0] + 4 * 4 * 656
    # broadcasting over (layer, request, token)
    assert lay.kv_row_start(np.arange(2)[:, None], 0, np.arange(3)[None, :]).shape == (2, 3)
    assert lay.weights_lines(1) == (32, 39, 15, 15)  # bytes 4096..5095: 999 = 7 * 128 + 103
    with pytest.raises(DsacacheError, match="weights bytes"):
        Layout.build(g, [np.array([3])], weights_bytes=-1)
    with pytest.raises(DsacacheError, match="align"):
        Layout.build(g, [np.array([3])], weights_bytes=0, align=100)


def test_prompt_blocks_are_contiguous():
    # With one request, the prompt's pages are consecutive physical blocks: the index scan
    # of the prompt is one contiguous address range.
    g = Geometry(1, 4, 656, 132, 64)
    lay = Layout.build(g, [np.arange(1000, 1010)], weights_bytes=0)
    assert lay.block_table[0, :16].tolist() == list(range(16))
    starts = lay.index_key_start(0, 0, np.arange(1000))
    assert (np.diff(starts) == 132).all()
