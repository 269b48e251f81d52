"""token-lru and fifo give exactly libCacheSim's LRU and FIFO hit counts on the same stream.

Each trace is exported with object_size=1 (so libCacheSim's cache_size counts tokens) and
replayed by libcachesim.LRU / FIFO. Per-layer partitions are checked by running libCacheSim once
per layer on that layer's sub-stream (the records whose obj_id has that layer) with capacity
floor(N / layers), and comparing with the per-layer counters.
"""

from __future__ import annotations

import libcachesim as lcs
import numpy as np
import pytest

from conftest import make_trace
from dsacache.sim import SimConfig, simulate
from dsacache.trace import Geometry, Trace
from dsacache.trace.export_libcachesim import LAYER_SHIFT, export_libcachesim, read_oracle_general
from dsacache.trace.synth import synthesize

LCS = {"token-lru": lcs.LRU, "fifo": lcs.FIFO}


def _reader(path) -> lcs.TraceReader:
    return lcs.TraceReader(trace=str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)


def lcs_misses(path, policy: str, capacity: int, n: int) -> int:
    """libCacheSim's miss count of `policy` on the n-record file at `path`."""
    if capacity == 0:
        return n  # libCacheSim cannot build an empty cache; every access misses
    ratio, _ = LCS[policy](cache_size=capacity, hashpower=12).process_trace(_reader(path))
    return round(ratio * n)


TRACES = {
    # one request, 4 layers, heavy padding
    "one-request": lambda: make_trace(50, layers=4, k=24, context=48, seed=11, pad=0.4),
    # three requests of different lengths and contexts (a request ends while others go on)
    "batch": lambda: make_trace(
        [30, 45, 12], layers=3, k=16, context=[20, 60, 33], requests=3, seed=5
    ),
    # no padding, context below k at first (short rows padded with -1)
    "short-context": lambda: make_trace(40, layers=2, k=32, context=10, seed=2, pad=0.0),
    # calibrated synthetic DSA trace (new lookups, inter-layer overlap, revisits), 2 requests
    "synth": lambda: synthesize(Geometry(4, 64, 656, 132, 64), 80, 1024, seed=3, requests=2),
}


@pytest.fixture(scope="module", params=sorted(TRACES))
def exported(request, tmp_path_factory) -> tuple[Trace, np.ndarray, object]:
    trace = TRACES[request.param]()
    path = tmp_path_factory.mktemp("lcs") / f"{request.param}.oracleGeneral"
    n = export_libcachesim(trace, path, object_size=1)
    rec = read_oracle_general(path)
    assert n == rec.shape[0] > 1000
    return trace, rec, path


def _capacities(rec: np.ndarray) -> list[int]:
    distinct = np.unique(rec["obj_id"]).shape[0]
    return [1, 7, 64, distinct // 4, distinct // 2, distinct]


@pytest.mark.parametrize("policy", sorted(LCS))
def test_global_region_matches_libcachesim(exported, policy):
    trace, rec, path = exported
    n = rec.shape[0]
    seen = set()
    for cap in _capacities(rec):
        res = simulate(trace, SimConfig(policy, capacity_tokens=cap))
        assert res.accesses == n
        assert res.misses == lcs_misses(path, policy, cap, n), f"capacity {cap}"
        seen.add(res.misses)
    assert len(seen) >= 4  # the capacities exercise different regimes


@pytest.mark.parametrize("policy", sorted(LCS))
def test_per_layer_regions_match_libcachesim(exported, policy, tmp_path):
    trace, rec, _ = exported
    layers = trace.geometry.layers
    layer_of = (rec["obj_id"] >> np.uint64(LAYER_SHIFT)) & np.uint64(0xFFFF)
    subs = []
    for layer in range(layers):
        sub = rec[layer_of == layer]
        # next_access_vtime now points into the full file; LRU and FIFO never read it.
        path = tmp_path / f"layer{layer}.oracleGeneral"
        sub.tofile(path)
        subs.append((path, sub.shape[0]))
    for cap in _capacities(rec):
        res = simulate(trace, SimConfig(policy, capacity_tokens=cap, partition="per-layer"))
        for layer, (path, n) in enumerate(subs):
            want = lcs_misses(path, policy, cap // layers, n)
            assert int(res.per_layer_misses[layer]) == want, f"capacity {cap}, layer {layer}"
            assert int(res.per_layer_hits[layer]) == n - want


def test_lru_and_fifo_differ(exported):
    """The comparison can tell the two policies apart on every trace."""
    trace, rec, _ = exported
    cap = np.unique(rec["obj_id"]).shape[0] // 4
    lru = simulate(trace, SimConfig("token-lru", capacity_tokens=cap))
    fifo = simulate(trace, SimConfig("fifo", capacity_tokens=cap))
    assert lru.misses != fifo.misses
