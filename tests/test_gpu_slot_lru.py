"""The hot buffer's slot-table LRU equals the simulator's token-lru (per-layer), access by
access; the Triton kernel (interpreter on CPU) equals the CPU walk."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_trace
from dsacache.gpu.bench import batch_of, cpu_lru
from dsacache.gpu.slot_lru import SlotLRU
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies import POLICIES, Counters
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.blocks import StepBlocks

torch = pytest.importorskip("torch")


def sim_hit_mask(trace: Trace, slots: int) -> np.ndarray:
    """uint8 [steps, layers, requests, k]: the simulator's per-access hits."""
    g = trace.geometry
    part = parse_partition("per-layer", g.layers, slots * g.layers)
    blocks = StepBlocks(trace)
    policy = POLICIES["token-lru"](blocks, part, g)
    counters = Counters.zeros(g.layers)
    out = []
    for b in blocks:
        counters.hit_mask = np.zeros(b.indices.shape, np.uint8)
        policy.run_block(b, counters)
        out.append(counters.hit_mask)
    return np.concatenate(out)


def lru_hits(trace: Trace, slots: int) -> tuple[np.ndarray, list]:
    batch = batch_of(trace)
    lru = SlotLRU(batch.layers, batch.requests, batch.max_context, slots)
    hits, results = [], []
    for t in range(batch.steps):
        res = lru.step(torch.from_numpy(batch.indices[t]))
        hits.append(res.hit.numpy().copy())
        results.append((batch.indices[t], res))
    return np.stack(hits), results


@pytest.mark.parametrize("slots", [0, 1, 3, 7, 12, 40, 10_000])
def test_hits_equal_simulator_access_by_access(slots):
    # k=8 per request, 2 requests: slots 3 and 7 are below one step's accesses of a layer
    tr = make_trace([7, 5], layers=3, k=8, context=[12, 20], requests=2, seed=4)
    ours, results = lru_hits(tr, slots)
    np.testing.assert_array_equal(ours, sim_hit_mask(tr, slots))
    if slots == 0 or slots >= 12:  # none, or a region big enough to keep tokens between steps
        assert (ours.sum() > 0) == (slots > 0)
    for idx, res in results:  # final slots: resident tokens hold distinct slots < S
        resident = res.slot.numpy()
        assert (resident < max(slots, 1)).all()
        assert ((resident >= 0) <= (idx >= 0)).all()
        for layer in range(idx.shape[0]):
            used = resident[layer][resident[layer] >= 0]
            assert len(np.unique(used)) == len(used)
            assert len(used) <= slots


def test_inserted_then_evicted_in_the_same_step_ends_outside():
    # one request, S=2, a step of 4 distinct tokens: the first two are evicted again
    g = Geometry(1, 4, 656, 132, 4)
    tr = Trace([RequestTrace(np.array([[[0, 1, 2, 3]], [[2, 0, -1, 3]]], np.int32), [4, 4])], g)
    hits, results = lru_hits(tr, 2)
    np.testing.assert_array_equal(results[0][1].slot.numpy()[0, 0], [-1, -1, 0, 1])
    np.testing.assert_array_equal(hits[1, 0, 0], [1, 0, 0, 0])  # 3 was evicted by 0
    np.testing.assert_array_equal(hits, sim_hit_mask(tr, 2))
    assert results[0][1].fill.numpy().sum() == 2  # only the two survivors are copied


@settings(max_examples=25, deadline=None)
@given(
    steps=st.integers(1, 5),
    layers=st.integers(1, 3),
    k=st.integers(1, 6),
    requests=st.integers(1, 3),
    context=st.integers(1, 12),
    slots=st.integers(0, 20),
    seed=st.integers(0, 1000),
)
def test_property_equal_simulator(steps, layers, k, requests, context, slots, seed):
    tr = make_trace(steps, layers=layers, k=k, context=context, requests=requests, seed=seed)
    ours, _ = lru_hits(tr, slots)
    np.testing.assert_array_equal(ours, sim_hit_mask(tr, slots))


def test_cpu_lru_counts_match_simulator_totals():
    from dsacache.gpu.bench import sim_prediction

    tr = make_trace([6, 6], layers=2, k=8, context=[10, 12], requests=2, seed=9)
    truth = cpu_lru(batch_of(tr), 20)
    sim = sim_prediction(tr, 20)
    assert sim["hits"] == truth["hits"].sum() > 0
    assert sim["accesses"] == truth["accesses"].sum()


def test_bad_indices_are_refused():
    from dsacache.errors import DsacacheError

    lru = SlotLRU(1, 1, 4, 2)
    with pytest.raises(DsacacheError, match="max_context"):
        lru.step(torch.tensor([[[0, 4]]], dtype=torch.int32))
    with pytest.raises(DsacacheError, match="shape"):
        lru.step(torch.zeros(2, 1, 2, dtype=torch.int32))


@pytest.mark.parametrize("slots", [0, 3, 9, 100])
def test_triton_kernel_equals_cpu_walk(slots):
    from dsacache.gpu.slot_lru_triton import lru_step_triton

    tr = make_trace([4, 3], layers=2, k=6, context=[8, 10], requests=2, seed=2)
    batch = batch_of(tr)
    cpu = SlotLRU(batch.layers, batch.requests, batch.max_context, slots)
    tri = SlotLRU(batch.layers, batch.requests, batch.max_context, slots)
    for t in range(batch.steps):
        idx = torch.from_numpy(batch.indices[t])
        ref = cpu.step(idx)
        hit = torch.full(idx.shape, 7, dtype=torch.uint8)
        slot = torch.full(idx.shape, 7, dtype=torch.int32)
        lru_step_triton(tri, idx.contiguous(), hit, slot)
        assert torch.equal(hit, ref.hit) and torch.equal(slot, ref.slot), (slots, t)
    for name in ("table", "slot_key", "link", "size"):
        assert torch.equal(getattr(cpu, name), getattr(tri, name)), name
