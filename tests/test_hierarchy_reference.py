"""The HBM level's plain-Python reference (hbm_reference.py) on hand-computed cases, and its own
properties: finding a row's hits first (HiSparse's kernel) and walking it slot by slot give the
same decisions under the rules (only residents outside the row are victims)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsacache.trace import Geometry, RequestTrace, Trace
from hbm_reference import POLICIES, reference_hbm

# S0..S4 of one request, one layer, k = 2 (trace below); worked by hand in the comments.
ROWS = [[0, 1], [2, 0], [3, 2], [1, 0], [3, 1]]


def one_row_trace(rows: list[list[int]], context: int = 10, k: int = 2) -> Trace:
    idx = np.full((len(rows), 1, k), -1, np.int32)
    for t, sel in enumerate(rows):
        idx[t, 0, : len(sel)] = sel
    ctx = np.full(len(rows), context, np.int64)
    return Trace([RequestTrace(idx, ctx)], Geometry(1, k, 656, 132, 4))


def test_token_lru_by_hand():
    # N = 3, LRU order oldest first:
    # t0 [0,1]: miss 0, 1 (cold)               -> 0 1
    # t1 [2,0]: hit 0, miss 2 (cold, room)     -> 1 2 0   (2 inserted, then 2, 0 touched)
    # t2 [3,2]: hit 2, miss 3 (cold): evict 1  -> 0 3 2
    # t3 [1,0]: hit 0, miss 1: evict 3         -> 2 1 0
    # t4 [3,1]: hit 1, miss 3: evict 2         -> 0 3 1
    r = reference_hbm(one_row_trace(ROWS), 3, "token-lru")
    assert (r.hits, r.misses, r.cold_misses) == (4, 6, 4)
    assert r.misses_per_step == [2, 1, 1, 1, 1]


def test_fifo_by_hand():
    # N = 3, insertion order oldest first (hits do not reorder):
    # t0 miss 0, 1 -> 0 1; t1 hit 0, miss 2 -> 0 1 2; t2 hit 2, miss 3: evict 0 -> 1 2 3
    # t3 [1,0]: hit 1, miss 0: evict 2 (1 is in the row) -> 1 3 0; t4 [3,1]: two hits
    r = reference_hbm(one_row_trace(ROWS), 3, "fifo")
    assert (r.hits, r.misses, r.cold_misses) == (5, 5, 4)
    assert r.misses_per_step == [2, 1, 1, 1, 0]


def test_min_by_hand():
    # N = 3: t2 [3,2] must evict 0 or 1; both are next used at t3, 0 later (slot 1): evict 0.
    # t3 [1,0]: miss 0 evicts 2 (never used again) rather than 3 (used at t4); t4: two hits.
    r = reference_hbm(one_row_trace(ROWS), 3, "min")
    assert (r.hits, r.misses, r.cold_misses) == (5, 5, 4)
    assert r.misses_per_step == [2, 1, 1, 1, 0]


def test_keep_previous_by_hand():
    # hits are S(t) & S(t-1): {0}, {2}, {}, {1}; whatever N is
    for n in (2, 3, 9):
        r = reference_hbm(one_row_trace(ROWS), n, "keep-previous")
        assert (r.hits, r.misses, r.cold_misses) == (3, 7, 4)
        assert r.misses_per_step == [2, 1, 1, 2, 1]


def test_at_n_equal_k_every_policy_keeps_the_last_selection():
    # full rows and N = k: the misses evict every resident outside the row, so every policy
    # holds exactly the previous selection (what the Ascend port's 1 x k buffer does)
    rng = np.random.default_rng(3)
    rows = [list(rng.choice(12, size=4, replace=False)) for _ in range(30)]
    results = {p: reference_hbm(one_row_trace(rows, 12, 4), 4, p) for p in POLICIES}
    assert len({(r.hits, r.misses, tuple(r.misses_per_step)) for r in results.values()}) == 1


def test_a_request_that_fits_never_misses():
    # context 10 <= N: even the first accesses hit (its KV is on the GPU from the start)
    for p in POLICIES:
        r = reference_hbm(one_row_trace(ROWS, context=10), 10, p)
        assert (r.hits, r.misses, r.cold_misses) == (10, 0, 0)
        r = reference_hbm(one_row_trace(ROWS, context=10), 9, p)
        assert r.misses > 0


def test_empty_slots_are_not_accesses():
    r = reference_hbm(one_row_trace([[0, -1], [-1, -1], [0, 1]]), 2, "token-lru")
    assert (r.hits, r.misses, r.cold_misses, r.misses_per_step) == (1, 2, 2, [1, 0, 1])


def test_buffers_are_per_request_and_layer():
    # the same token in two layers or two requests is two keys: no sharing between buffers
    idx = np.array([[[0, 1], [0, 1]], [[0, 1], [0, 1]]], np.int32)  # steps x layers x k
    req = RequestTrace(idx, np.array([20, 21]))
    trace = Trace([req, RequestTrace(idx.copy(), np.array([20, 21]))], Geometry(2, 2, 8, 4, 4))
    r = reference_hbm(trace, 2, "token-lru")
    assert (r.hits, r.misses, r.cold_misses) == (8, 8, 8)
    assert r.misses_per_step == [8, 0]


@st.composite
def traces(draw):  # noqa: ANN001, ANN201
    k = draw(st.integers(1, 5))
    context = draw(st.integers(k, 16))
    steps = draw(st.integers(1, 12))
    layers = draw(st.integers(1, 2))
    requests = draw(st.integers(1, 2))
    reqs = []
    for _ in range(requests):
        idx = np.full((steps, layers, k), -1, np.int32)
        for t in range(steps):
            for layer in range(layers):
                n = draw(st.integers(0, k))
                row = draw(st.lists(st.integers(0, context - 1), min_size=n, max_size=n,
                                    unique=True))  # fmt: skip
                idx[t, layer, :n] = row
        reqs.append(RequestTrace(idx, np.full(steps, context, np.int64)))
    return Trace(reqs, Geometry(layers, k, 656, 132, 4))


@settings(max_examples=150, deadline=None)
@given(trace=traces(), extra=st.integers(0, 6), policy=st.sampled_from(POLICIES))
def test_batch_and_slot_by_slot_agree(trace, extra, policy):
    n = trace.geometry.top_k + extra
    a = reference_hbm(trace, n, policy, batch=True)
    b = reference_hbm(trace, n, policy, batch=False)
    assert a == b


@settings(max_examples=150, deadline=None)
@given(trace=traces(), extra=st.integers(0, 6))
def test_min_bounds_the_reference_policies_and_cold_misses_do_not_depend_on_them(trace, extra):
    n = trace.geometry.top_k + extra
    best = reference_hbm(trace, n, "min")
    for p in POLICIES:
        r = reference_hbm(trace, n, p)
        assert r.misses >= best.misses
        assert r.cold_misses == best.cold_misses  # a first selection misses under any policy


def test_unknown_policy():
    with pytest.raises(ValueError):
        reference_hbm(one_row_trace(ROWS), 3, "lfu")
