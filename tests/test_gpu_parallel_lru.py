"""The parallel token LRU equals the simulator's token-lru (per-layer) hit by hit and the serial
slot-table LRU state by state (resident keys in recency order); its slots serve the copy/gather
contract; the Triton kernels (interpreter on CPU) equal the torch path, state included."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_trace
from dsacache.gpu.bench import batch_of
from dsacache.gpu.slot_lru import SlotLRU
from dsacache.trace import Geometry, RequestTrace, Trace
from test_gpu_slot_lru import sim_hit_mask

torch = pytest.importorskip("torch")

from dsacache.gpu.parallel_lru import ParallelTokenLRU  # noqa: E402


def serial_recency(lru: SlotLRU, layer: int) -> list[int]:
    """The serial LRU's resident keys, most recent first (its linked list, walked here)."""
    link, head, out = lru.link[layer].tolist(), lru.slots, []
    node = link[2 * head + 1]
    while node != head:
        out.append(int(lru.slot_key[layer, node]))
        node = link[2 * node + 1]
    return out


def reference_lru(batch, slots: int) -> tuple[np.ndarray, list[list[list[int]]]]:
    """Plain-Python LRU (a list per layer, MRU first): hits [steps, layers, requests, k] and
    each step's resident keys per layer; independent of both implementations."""
    stacks = [[] for _ in range(batch.layers)]
    hits = np.zeros(batch.indices.shape, np.uint8)
    states = []
    for t in range(batch.steps):
        for layer in range(batch.layers):
            st_ = stacks[layer]
            for r in range(batch.requests):
                for s, tok in enumerate(batch.indices[t, layer, r]):
                    if tok < 0 or slots == 0:
                        continue
                    key = r * batch.max_context + int(tok)
                    if key in st_:
                        hits[t, layer, r, s] = 1
                        st_.remove(key)
                    st_.insert(0, key)
                    del st_[slots:]
        states.append([list(s) for s in stacks])
    return hits, states


def run_parallel(trace: Trace, slots: int, backend: str = "torch", check_slots: bool = True):
    """Step the parallel LRU over the trace; check the slot contract on a simulated buffer
    (copy rows with hit == 0 and slot >= 0, then every access with a slot must find its own
    key there) and return hits [steps, layers, requests, k] and the LRU."""
    batch = batch_of(trace)
    lru = ParallelTokenLRU(batch.layers, batch.requests, batch.max_context, slots, backend=backend)
    buffer = np.full((batch.layers, max(slots, 1)), -1, np.int64)
    hits = []
    for t in range(batch.steps):
        idx = batch.indices[t]
        keys = np.arange(batch.requests)[None, :, None] * batch.max_context + idx
        res = lru.step(torch.from_numpy(idx))
        hit, slot = res.hit.numpy(), res.slot.numpy()
        hits.append(hit.copy())
        if not check_slots:
            continue
        assert ((slot >= 0) <= (idx >= 0)).all() and (slot < max(slots, 1)).all()
        for layer in range(batch.layers):
            used = slot[layer][slot[layer] >= 0]
            assert len(np.unique(used)) == len(used) <= int(lru.size[layer]) <= slots
            held = hit[layer].astype(bool) & (slot[layer] >= 0)  # hits read the row in place
            assert (buffer[layer, slot[layer][held]] == keys[layer][held]).all()
            fill = res.fill.numpy()[layer]
            buffer[layer, slot[layer][fill]] = keys[layer][fill]
            mine = slot[layer] >= 0
            assert (buffer[layer, slot[layer][mine]] == keys[layer][mine]).all()
            # state consistency: table, slot_key, rank permutation agree
            n = int(lru.size[layer])
            perm = lru.rank_slot[layer].numpy()
            assert sorted(perm.tolist()) == list(range(slots))
            assert (lru.slot_rank[layer].numpy()[perm] == np.arange(slots)).all()
            for s in perm[:n]:
                kk = int(lru.slot_key[layer, s])
                assert int(lru.table[layer].view(-1)[kk]) == s
            assert (lru.slot_key[layer].numpy()[perm[n:]] == -1).all()
            assert int((lru.table[layer] >= 0).sum()) == n
    return np.stack(hits), lru


@pytest.mark.parametrize("slots", [0, 1, 3, 7, 8, 12, 16, 40, 10_000])
def test_hits_and_state_equal_serial_lru_and_simulator(slots):
    # k=8 per request, 2 ragged requests, -1 slots: one step of a layer is up to 16 accesses
    tr = make_trace([7, 5], layers=3, k=8, context=[12, 20], requests=2, seed=4)
    batch = batch_of(tr)
    ours, lru = run_parallel(tr, slots)
    np.testing.assert_array_equal(ours, sim_hit_mask(tr, slots))
    serial = SlotLRU(batch.layers, batch.requests, batch.max_context, slots)
    ref_hits, states = reference_lru(batch, slots)
    np.testing.assert_array_equal(ours, ref_hits)
    for t in range(batch.steps):
        serial.step(torch.from_numpy(batch.indices[t]))
    for layer in range(batch.layers):
        assert lru.recency_keys(layer) == serial_recency(serial, layer) == states[-1][layer]
    if slots >= 16:  # a region that keeps a whole step: tokens are reused across steps
        assert ours.sum() > 0


def test_stack_distance_by_hand():
    # S=3, one request, resident before step 1 (MRU first): 3, 2, 1.
    # step 1 = [1, 4, 2, 3]: 1 (rank 2, d = 0 + 2 - 0) hits; 4 misses and evicts 2; 2 (rank 1)
    # has d = 2 + 1 - 0 = 3: miss; 3 is access 3 >= S: miss (evicted by 2).
    g = Geometry(1, 4, 656, 132, 4)
    steps = np.array([[[1, 2, 3, -1]], [[1, 4, 2, 3]], [[3, 2, -1, 4]]], np.int32)
    tr = Trace([RequestTrace(steps, [5, 5, 5])], g)
    hits, lru = run_parallel(tr, 3)
    np.testing.assert_array_equal(hits[1, 0, 0], [1, 0, 0, 0])
    # after step 1: 3, 2, 4 -> step 2: 3 hits (rank 0), 2 hits (d = 1 + 1 - 1 = 1), 4 hits
    np.testing.assert_array_equal(hits[2, 0, 0], [1, 1, 0, 1])
    assert lru.recency_keys(0) == [4, 2, 3]
    np.testing.assert_array_equal(hits, sim_hit_mask(tr, 3))


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    layers=st.integers(1, 3),
    k=st.integers(1, 9),
    context=st.integers(1, 14),
    slots=st.integers(0, 24),
    pad=st.sampled_from([0.0, 0.2, 0.6]),
    seed=st.integers(0, 1000),
    backend=st.sampled_from(["torch", "triton"]),
)
def test_property_equal_simulator(steps, layers, k, context, slots, pad, seed, backend):
    tr = make_trace(steps, layers=layers, k=k, context=context, requests=len(steps), seed=seed,
                    pad=pad)  # fmt: skip
    ours, lru = run_parallel(tr, slots, backend)
    np.testing.assert_array_equal(ours, sim_hit_mask(tr, slots))
    _, states = reference_lru(batch_of(tr), slots)
    for layer in range(layers):
        assert lru.recency_keys(layer) == states[-1][layer]


def test_bad_input_is_refused():
    from dsacache.errors import DsacacheError

    lru = ParallelTokenLRU(1, 1, 4, 2)
    with pytest.raises(DsacacheError, match="max_context"):
        lru.step(torch.tensor([[[0, 4]]], dtype=torch.int32))
    with pytest.raises(DsacacheError, match="shape"):
        lru.step(torch.zeros(2, 1, 2, dtype=torch.int32))
    with pytest.raises(DsacacheError, match="backend"):
        ParallelTokenLRU(1, 1, 4, 2, backend="cuda")


STATE = ("table", "slot_key", "rank_slot", "slot_rank", "size")  # without the scratch column


@pytest.mark.parametrize(
    ("slots", "requests", "k", "pad"),
    [(0, 2, 6, 0.2), (3, 2, 6, 0.2), (9, 2, 6, 0.0), (100, 2, 6, 0.2), (5, 3, 70, 0.3),
     (150, 3, 70, 0.1), (300, 1, 200, 0.0)],
)  # fmt: skip
def test_triton_kernels_equal_torch_path(slots, requests, k, pad):
    # k = 70 x 3 requests and k = 200 span several dominance tiles (BI = 128, BJ = 64)
    tr = make_trace([4] + [3] * (requests - 1), layers=2, k=k, context=2 * k, requests=requests,
                    seed=2, pad=pad)  # fmt: skip
    batch = batch_of(tr)
    ref = ParallelTokenLRU(batch.layers, batch.requests, batch.max_context, slots)
    tri = ParallelTokenLRU(batch.layers, batch.requests, batch.max_context, slots, backend="triton")
    hits = []
    for t in range(batch.steps):
        idx = torch.from_numpy(batch.indices[t])
        a, b = ref.step(idx), tri.step(idx)
        assert torch.equal(a.hit, b.hit) and torch.equal(a.slot, b.slot), (slots, t)
        for name in STATE:
            assert torch.equal(getattr(ref, name), getattr(tri, name)), (name, t)
        hits.append(b.hit.numpy())
    np.testing.assert_array_equal(np.stack(hits), sim_hit_mask(tr, slots))


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 70), layers=st.integers(1, 3), seed=st.integers(0, 1000))
def test_smaller_before_counts_by_brute_force(m, layers, seed):
    from dsacache.gpu.parallel_lru import NOT_RESIDENT, _smaller_before

    rng = np.random.default_rng(seed)
    x = np.stack([rng.permutation(2 * m)[:m] for _ in range(layers)])
    x[rng.random(x.shape) < 0.3] = NOT_RESIDENT  # non-residents: equal, and above all ranks
    got = _smaller_before(torch.from_numpy(x)).numpy()
    for row, cnt in zip(x, got, strict=True):
        for i in range(m):
            if row[i] != NOT_RESIDENT:  # the count the hit test reads
                assert cnt[i] == sum(row[j] < row[i] for j in range(i))
