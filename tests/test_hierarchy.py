"""The HBM level of `dsacache hierarchy` (sim/hierarchy.py, on the policy driver) against the
plain-Python reference of the rules (hbm_reference.py): hits, misses, cold misses and misses per
step on hypothesis-generated traces and on a recording of the bundled backbone; a buffer that
holds every context never misses; MIN bounds every demand policy; the LLC region in front
decides as `simulate` does and serves only rows the buffer holds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import load_recording, make_trace
from dsacache.errors import DsacacheError
from dsacache.sim import SimConfig, simulate
from dsacache.sim.hierarchy import (
    HierarchyConfig,
    level_policies,
    simulate_hierarchy,
    step_stats,
)
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.units import MIB
from hbm_reference import POLICIES as REF_POLICIES
from hbm_reference import reference_hbm, reference_llc_lru
from test_hierarchy_reference import ROWS, one_row_trace, traces


def run(trace: Trace, n: int, policy: str, **kw: object):  # noqa: ANN201
    return simulate_hierarchy(trace, HierarchyConfig(n, policy, **kw))


def assert_matches_reference(trace: Trace, n: int, policy: str) -> None:
    got = run(trace, n, policy)
    ref = reference_hbm(trace, n, policy)
    assert (got.hits, got.misses, got.cold_misses) == (ref.hits, ref.misses, ref.cold_misses)
    assert got.misses_per_step.tolist() == ref.misses_per_step
    kv = trace.geometry.kv_bytes_per_token
    assert got.host_bytes == ref.misses * kv
    assert got.host_bytes_per_step == step_stats(np.array(ref.misses_per_step) * kv)


def test_hand_computed_cases():
    # the cases worked by hand in test_hierarchy_reference.py
    want = {"token-lru": (4, 6, 4), "fifo": (5, 5, 4), "min": (5, 5, 4), "keep-previous": (3, 7, 4)}
    for policy, counts in want.items():
        r = run(one_row_trace(ROWS), 3, policy)
        assert (r.hits, r.misses, r.cold_misses) == counts, policy


@pytest.mark.parametrize("policy", REF_POLICIES)
@settings(max_examples=60, deadline=None)
@given(trace=traces(), extra=st.integers(0, 6))
def test_equals_the_reference_on_random_traces(policy, trace, extra):
    assert_matches_reference(trace, trace.geometry.top_k + extra, policy)


@pytest.mark.parametrize("policy", REF_POLICIES)
def test_equals_the_reference_on_a_batch_with_partial_rows(policy):
    # three requests of different lengths and contexts (one fits N = 24), -1 slots
    trace = make_trace([9, 14, 6], layers=3, k=6, context=[10, 30, 20], requests=3, seed=4)
    for n in (6, 9, 12, 24):
        assert_matches_reference(trace, n, policy)


@pytest.fixture(scope="module")
def recording() -> Trace:
    """Two requests decoded by the bundled backbone (`dsacache record --model tiny`, k = 16)."""
    return load_recording()


@pytest.mark.parametrize("policy", REF_POLICIES)
def test_equals_the_reference_on_a_recording(recording, policy):
    k = recording.geometry.top_k
    for n in (k, 3 * k // 2, 2 * k, 3 * k):
        assert_matches_reference(recording, n, policy)


@pytest.mark.parametrize("policy", level_policies())
def test_a_buffer_that_holds_every_context_never_misses(recording, policy):
    n = max(r.max_context for r in recording.requests)
    r = run(recording, n, policy)
    assert (r.misses, r.cold_misses, r.host_bytes) == (0, 0, 0)
    assert r.hits == r.accesses > 0 and r.whole_requests == 2
    # one row below the largest context, that request misses again
    assert run(recording, n - 1, policy).misses > 0


@settings(max_examples=40, deadline=None)
@given(trace=traces(), extra=st.integers(0, 6))
def test_min_bounds_every_demand_policy(trace, extra):
    n = trace.geometry.top_k + extra
    best = run(trace, n, "min")
    for policy in level_policies():
        r = run(trace, n, policy)
        assert r.misses >= best.misses, policy
        assert r.cold_misses == best.cold_misses  # first selections miss under any policy


def test_min_bounds_every_demand_policy_on_a_recording(recording):
    k = recording.geometry.top_k
    for n in (k, 2 * k, 3 * k):
        best = run(recording, n, "min").misses
        for policy in level_policies():
            assert run(recording, n, policy).misses >= best, (policy, n)


def test_at_n_equal_k_every_policy_keeps_the_last_selection():
    # full rows (no -1 slots) and N = k: every policy holds exactly the previous selection
    trace = make_trace(12, layers=2, k=5, context=40, requests=2, seed=2, pad=0.0)
    got = {p: run(trace, 5, p) for p in level_policies()}
    assert len({(r.hits, tuple(r.misses_per_step)) for r in got.values()}) == 1


def test_the_llc_region_decides_as_simulate_and_serves_only_buffered_rows():
    trace = make_trace([10, 7], layers=2, k=6, context=[25, 30], requests=2, seed=5)
    kv = trace.geometry.kv_bytes_per_token
    for tokens in (0, 5, 20, 60):
        mib = tokens * kv / MIB
        got = run(trace, 8, "token-lru", llc_reserve_mib=mib, llc_policy="token-lru")
        sim = simulate(trace, SimConfig("token-lru", capacity_mib=mib))
        assert got.llc is not None and got.llc.capacity_tokens == tokens == sim.capacity_tokens
        assert got.llc.region_hits == sim.hits
        region = reference_llc_lru(trace, tokens)
        buffer = reference_hbm(trace, 8, "token-lru").hit_flags
        assert got.llc.hits == sum(a and b for a, b in zip(region, buffer, strict=True))
        assert got.llc.accesses == len(region) == got.accesses
        # the buffer decides the host reads, whatever the LLC holds
        assert got.misses == run(trace, 8, "token-lru").misses


def test_reference_llc_by_hand():
    # capacity 2, one region: t0 [0,1] miss miss; t1 [2,0]: 2 evicts 0, then 0 evicts 1
    assert reference_llc_lru(one_row_trace(ROWS[:2]), 2) == [False] * 4
    assert reference_llc_lru(one_row_trace(ROWS[:2]), 3) == [False, False, False, True]


def test_to_dict_has_the_issue_keys():
    trace = make_trace(6, layers=2, k=4, context=12, seed=1)
    d = run(trace, 4, "fifo", llc_reserve_mib=0.01).to_dict()
    assert {"hits", "misses", "cold_misses", "hit_rate"} <= set(d["hbm"])
    assert {"hits", "misses", "hit_rate"} <= set(d["llc"])
    assert set(d["host_bytes_per_step"]) == {"mean", "p50", "p99", "max"}
    assert d["host_bytes"] == d["hbm"]["misses"] * 656
    assert run(trace, 4, "fifo").to_dict()["llc"] is None


def test_step_stats_by_hand():
    s = step_stats(np.array([0, 10, 20, 30, 40]))
    assert s == {"mean": 20.0, "p50": 20.0, "p99": 39.6, "max": 40.0}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"buffer_tokens": 0}, "integer >= 1"),
        ({"buffer_tokens": -4}, "integer >= 1"),
        ({"buffer_tokens": 4, "buffer_policy": "lfu"}, "cannot run this level"),
        ({"buffer_tokens": 4, "buffer_policy": "near-miss"}, "prefetches"),
        ({"buffer_tokens": 4, "llc_policy": "line-lru"}, "cannot run this level"),
        ({"buffer_tokens": 4, "hardware": "tpu"}, "unknown hardware"),
        ({"buffer_tokens": 4, "llc_reserve_mib": 61}, "larger than the NVIDIA H200's LLC"),
        ({"buffer_tokens": 4, "llc_reserve_mib": -1}, ">= 0"),
        ({"buffer_tokens": 4, "llc_reserve_mib": float("nan")}, ">= 0"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(DsacacheError, match=match):
        HierarchyConfig(**kw)


def test_buffer_below_top_k_and_a_region_in_tokens_larger_than_the_llc():
    trace = Trace([RequestTrace(np.zeros((1, 1, 4), np.int32) - 1, [8])], Geometry(1, 4, 8, 4, 4))
    with pytest.raises(DsacacheError, match="below the trace's top-k 4"):
        simulate_hierarchy(trace, HierarchyConfig(3))
    h100 = 50 * MIB // 8  # tokens of 8 B in the H100's 50 MiB
    simulate_hierarchy(trace, HierarchyConfig(4, llc_reserve_tokens=h100, hardware="h100"))
    with pytest.raises(DsacacheError, match="larger than the NVIDIA H100 SXM's LLC"):
        simulate_hierarchy(trace, HierarchyConfig(4, llc_reserve_tokens=h100 + 1, hardware="h100"))
    with pytest.raises(DsacacheError, match="not both"):
        HierarchyConfig(4, llc_reserve_tokens=1, llc_reserve_mib=1.0)
