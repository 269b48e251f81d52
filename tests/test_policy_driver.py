"""Properties every registered token policy must have, and the shared replay driver's options.

The generic tests are parametrized over POLICIES and read only the flags a policy declares
(online, prefetches, max_occupancy_factor, settings), never its name, so a policy added to the
package is covered as soon as it is registered: hits + misses = accesses, MIN bounds every
demand policy, every online policy decides from the past only (its hits on the first n steps of
a trace are those of its run over the whole trace), 64-bit ids change nothing, and the row rules
of an HBM hot buffer hold. The driver's own options (partitions per request, row rules, cold
misses, hooks that see the request and slot) are checked with a policy written here on the
driver, against a plain-Python reference.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numba import njit

from conftest import BLOCK_TOKENS, INDEX_BYTES, make_trace, reference_accesses
from dsacache.errors import DsacacheError, TraceError
from dsacache.sim import SimConfig, simulate
from dsacache.sim.partition import SCOPES, Partition, parse_partition, scoped
from dsacache.sim.policies import POLICIES, Counters, TokenPolicy
from dsacache.sim.policies import list_moves as moves
from dsacache.sim.policies.base import HISPARSE, NO_RULES, RowRules
from dsacache.sim.policies.driver import DrivenPolicy, Hooks, make_replay, no_row
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.blocks import StepBlocks

ALL = sorted(POLICIES)
ONLINE = [n for n in ALL if POLICIES[n].online]
BOUND = [n for n in ALL if not POLICIES[n].online]  # MIN: the bound
DEMAND = [n for n in ONLINE if not POLICIES[n].prefetches]
SPECS = ["global", "per-layer", "pinned:0"]
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

trace_params = st.fixed_dictionaries(
    {
        "steps": st.integers(1, 8),
        "layers": st.integers(1, 3),
        "k": st.integers(1, 6),
        "context": st.integers(1, 14),
        "requests": st.integers(1, 3),
        "near_miss": st.sampled_from([0, 2]),
        "seed": st.integers(0, 2**16),
    }
)


def random_trace(p: dict, kv: int = 656) -> Trace:
    """Requests of different lengths (a request that ends early frees its keep-previous share)."""
    steps = [max(1, p["steps"] - r) for r in range(p["requests"])]
    g = Geometry(p["layers"], p["k"], kv, INDEX_BYTES, BLOCK_TOKENS)
    return make_trace(
        steps, p["layers"], p["k"], p["context"], p["requests"], p["near_miss"], p["seed"],
        geometry=g,
    )  # fmt: skip


def prefix(trace: Trace, n: int) -> Trace:
    """The first n steps of every request."""
    reqs = [
        RequestTrace(
            r.indices[:n], r.context_lens[:n], None if r.near_miss is None else r.near_miss[:n]
        )
        for r in trace.requests
    ]
    return Trace(reqs, trace.geometry, trace.meta)


def configs(name: str, cap: int, spec: str) -> list[SimConfig]:
    """One SimConfig per combination of the values of the policy's settings."""
    cls = POLICIES[name]
    values = itertools.product(*(s.values for s in cls.settings))
    return [
        SimConfig(name, capacity_tokens=cap, partition=spec,
                  **{s.field: v for s, v in zip(cls.settings, vs, strict=True)})
        for vs in values
    ]  # fmt: skip


def runs(name: str, trace: Trace, cap: int, spec: str) -> list:
    """simulate() under every setting the trace can serve (at least one)."""
    out = []
    for cfg in configs(name, cap, spec):
        try:
            out.append(simulate(trace, cfg))
        except DsacacheError as e:  # a setting that needs what this trace lacks, nothing else
            if "needs near-miss rows" not in str(e):
                raise
    assert out
    return out


def run_policy(
    cls: type[TokenPolicy],
    trace: Trace,
    partition: Partition,
    block_elements: int = 1 << 22,
    rules: RowRules = NO_RULES,
    cold: bool = False,
) -> tuple[np.ndarray, np.ndarray, Counters, TokenPolicy]:
    """(per-layer hits after each block [blocks, layers], the hit mask of the whole trace, the
    counters, the policy). block_elements=1 makes every block one step."""
    g = trace.geometry
    cls.warmup()
    blocks = StepBlocks(trace, block_elements, near_miss=cls.uses_near_miss)
    policy = cls(blocks, partition, g, rules)
    counters = Counters.zeros(g.layers, lines=cls.counts_lines, cold=cold)
    after, masks = [], []
    for block in blocks.reversed() if cls.needs_backward_pass else []:
        policy.prepare_block(block)
    policy.prepare()
    for block in blocks:
        counters.hit_mask = np.zeros(block.indices.shape, np.uint8)
        policy.run_block(block, counters)
        after.append(counters.hits.copy())
        masks.append(counters.hit_mask)
    return np.array(after), np.concatenate(masks), counters, policy


def online_violation(cls: type[TokenPolicy], trace: Trace, cap: int, spec: str) -> str | None:
    """Where `cls`'s decisions on a prefix of `trace` differ from its run over the whole trace
    (per-layer hits after each step, and the per-access hit mask), else None."""
    g = trace.geometry
    part = parse_partition(spec, g.layers, cap)
    per_step, mask, _, _ = run_policy(cls, trace, part, block_elements=1)
    for n in range(1, trace.steps + 1):
        hits_n, mask_n, _, _ = run_policy(cls, prefix(trace, n), part)
        if not np.array_equal(hits_n[-1], per_step[n - 1]):
            return f"hits of the first {n} steps: {hits_n[-1]} alone, {per_step[n - 1]} in all"
        if not np.array_equal(mask_n, mask[:n]):
            return f"hit mask of the first {n} steps differs"
    return None


# ------------------------------------------------------------------ every registered policy


@pytest.mark.parametrize("name", ALL)
@FEW
@given(p=trace_params, cap=st.integers(0, 40), spec=st.sampled_from(SPECS))
def test_hits_plus_misses_is_accesses(name, p, cap, spec):
    trace = random_trace(p)
    for res in runs(name, trace, cap, spec):
        assert res.hits + res.misses == res.accesses == trace.count_accesses()
        assert ((res.per_layer_hits >= 0) & (res.per_layer_misses >= 0)).all()
        assert res.per_layer_hits.sum() + res.per_layer_misses.sum() == res.accesses


@pytest.mark.parametrize("name", DEMAND)
@FEW
@given(p=trace_params, spec=st.sampled_from(SPECS))
def test_min_bounds_every_demand_policy_at_every_capacity(name, p, spec):
    # kv = 256 B: whole 128-byte lines per row, so a line-granular policy fetches nothing beyond
    # the token (with a line shared by two tokens it prefetches part of the neighbour).
    # MIN is optimal per region (its layers together), not per layer of a shared region, and
    # a policy that may hold m x its capacity is bounded by MIN at m x the capacity.
    trace = random_trace(p, kv=256)
    g = trace.geometry
    scale = POLICIES[name].max_occupancy_factor
    for cap in range(0, g.layers * g.top_k * 2 + 2):
        of_layer = parse_partition(spec, g.layers, cap).of_layer
        bounds = [simulate(trace, SimConfig(b, scale * cap, partition=spec)) for b in BOUND]
        for res in runs(name, trace, cap, spec):
            for best in bounds:
                for region in set(of_layer.tolist()):
                    layers = of_layer == region
                    mine = res.per_layer_misses[layers].sum()
                    assert best.per_layer_misses[layers].sum() <= mine, (cap, spec, region)


@pytest.mark.parametrize("name", ONLINE)
@FEW
@given(p=trace_params, cap=st.integers(0, 30), spec=st.sampled_from(SPECS))
def test_online_policies_decide_from_the_past_only(name, p, cap, spec):
    trace = random_trace(p)
    assert online_violation(POLICIES[name], trace, cap, spec) is None


@pytest.mark.parametrize("name", ALL)
def test_wide_ids_change_nothing(name):
    """64-bit ids (what a huge key space gets) decide exactly as 32-bit ones."""
    cls = POLICIES[name]
    wide = type("Wide", (cls,), {"wide": True})
    trace = make_trace([9, 6], layers=3, k=5, context=[12, 9], requests=2, near_miss=2, seed=3)
    hits = 0
    for cap in (4, 40):
        part = parse_partition("per-layer", 3, cap)
        a = run_policy(cls, trace, part)
        b = run_policy(wide, trace, part)
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
        hits += int(a[0][-1].sum())
    assert hits > 0


@pytest.mark.parametrize("name", ALL)
def test_an_index_out_of_range_is_reported_with_its_step(name):
    rows = np.array([[[0, 1]], [[1, 2]], [[2, 5]]], np.int32)  # context 4: token 5 at step 2
    trace = Trace([RequestTrace(rows, np.full(3, 4))], Geometry(1, 2, 656, 132, 4), validate=False)
    for rules, cap in ((NO_RULES, 2), (RowRules(True, True, False), 100), (HISPARSE, 100)):
        with pytest.raises(TraceError, match="step 2"):
            run_policy(POLICIES[name], trace, parse_partition("global", 1, cap), rules=rules)


# ------------------------------------------------------------------ row rules, every policy


def repeated(trace: Trace) -> Trace:
    """Every step twice in a row (the second copy's context as the first's)."""
    reqs = [
        RequestTrace(np.repeat(r.indices[:], 2, axis=0), np.repeat(r.context_lens[:], 2))
        for r in trace.requests
    ]
    return Trace(reqs, trace.geometry, trace.meta)


@pytest.mark.parametrize("name", ALL)
@FEW
@given(p=trace_params, extra=st.integers(0, 6))
def test_row_rules_hold_for_every_policy(name, p, extra):
    """A buffer per (request, layer) of N >= k slots under the HBM buffer's rules: (a) + (b)
    a row's tokens are all resident after it, so a step selected twice in a row hits every
    access the second time; (c) N >= the request's context: no miss at all."""
    trace = repeated(random_trace(p, kv=256))
    g = trace.geometry
    cls = POLICIES[name]
    part = scoped("per-request-layer", g.layers, g.top_k + extra)
    _, mask, counters, _ = run_policy(cls, trace, part, rules=HISPARSE)
    valid = np.concatenate([b.indices for b in StepBlocks(trace)]) >= 0
    second = valid[1::2]
    assert (mask[1::2][second] == 1).all()
    assert counters.hits.sum() + counters.misses.sum() == valid.sum()
    whole = scoped("per-request-layer", g.layers, max(r.max_context for r in trace.requests))
    _, mask, counters, _ = run_policy(cls, trace, whole, rules=HISPARSE)
    assert counters.misses.sum() == 0 and (mask[valid] == 1).all()


@pytest.mark.parametrize("name", DEMAND)
@FEW
@given(p=trace_params, extra=st.integers(0, 8), scope=st.sampled_from(SCOPES))
def test_min_bounds_every_demand_policy_under_the_row_rules(name, p, extra, scope):
    """MIN without bypass, evicting the furthest next use among the residents the row does not
    select, misses no more than any demand policy under the same rules."""
    trace = random_trace(p, kv=256)
    g = trace.geometry
    cls = POLICIES[name]
    n = g.top_k + extra  # every region holds a row
    rules = RowRules(protect_row=True, no_bypass=True)
    mine = run_policy(cls, trace, scoped(scope, g.layers, n), rules=rules)[2]
    cap = n * cls.max_occupancy_factor
    for b in BOUND:
        best = run_policy(POLICIES[b], trace, scoped(scope, g.layers, cap), rules=rules)[2]
        assert best.misses.sum() <= mine.misses.sum()


@pytest.mark.parametrize("name", ALL)
def test_a_region_smaller_than_a_row_is_refused_under_protect_row(name):
    trace = make_trace(3, 1, 4, 8)
    blocks = StepBlocks(trace)
    with pytest.raises(DsacacheError, match="cannot hold a row"):
        POLICIES[name](blocks, scoped("per-request-layer", 1, 3), trace.geometry, HISPARSE)


@pytest.mark.parametrize("name", ALL)
@FEW
@given(p=trace_params, cap=st.integers(0, 30), spec=st.sampled_from(SPECS))
def test_cold_misses_are_first_accesses_that_miss(name, p, cap, spec):
    """Cold misses per layer = the accesses that are the first of their key and miss (from the
    hit mask, by plain Python), and counting them changes no decision."""
    trace = random_trace(p)
    g = trace.geometry
    part = parse_partition(spec, g.layers, cap)
    _, mask, counters, _ = run_policy(POLICIES[name], trace, part, cold=True)
    _, mask0, _, _ = run_policy(POLICIES[name], trace, part)
    assert np.array_equal(mask, mask0)
    want = np.zeros(g.layers, np.int64)
    seen = set()
    for t, layer, r, s in np.ndindex(*mask.shape):
        tok = trace.requests[r].indices[t, layer, s] if t < trace.requests[r].steps else -1
        if tok >= 0 and (r, layer, tok) not in seen:
            seen.add((r, layer, tok))
            want[layer] += 1 - mask[t, layer, r, s]
    assert counters.cold_misses.tolist() == want.tolist()


# ------------------------------------------------------------------ a policy written on the driver


# MRU eviction, defined here only: a full region evicts its MOST recently used token (with
# protect_row: the most recent one the row does not select).


class MRUState(NamedTuple):
    link: np.ndarray
    sent0: int
    mark: np.ndarray


@njit(inline="always")
def _mru_begin(st, row, sel, u):
    return st.sent0 + row.p, row.now, row.protect


@njit(inline="always")
def _mru_find(st, x, g, s):
    return st.link[2 * x] >= 0


@njit(inline="always")
def _mru_hit(st, x, g, i, s):
    moves.to_front(st.link, x, g[0])
    return g


@njit(inline="always")
def _mru_admit(st, x, g, i, s, u, full):
    link = st.link
    head, now, protect = g
    if full:
        victim = link[2 * head + 1]  # the front: most recently used
        while protect and victim != head and st.mark[victim] == now:
            victim = link[2 * victim + 1]
        if victim == head:
            return g, False
        moves.unlink(link, victim)
        link[2 * victim] = -1
    moves.push_front(link, x, head)
    return g, True


# its victim choice reads the driver's marks: marks=True
mru_replay = make_replay("test_mru", Hooks(_mru_begin, _mru_find, _mru_hit, _mru_admit, no_row,
                                           marks=True), cache=False)  # fmt: skip


class MRU(DrivenPolicy):
    name = "test-mru"
    summary = "evicts the most recently used token"
    online = True
    prefetches = False
    kernel = mru_replay

    def build_state(self):
        self.link = moves.new_lists(self.n_units(), self.n_regions, True)

    def state(self, block):
        return MRUState(self.link, self.n_units(), self.mark)


def py_mru(
    trace: Trace, part: Partition, rules: RowRules = NO_RULES
) -> tuple[list[int], list[int], np.ndarray]:
    """Per-layer hits and misses and the hit mask of MRU eviction, by plain dicts, with the
    regions of `part` and the row rules."""
    g = trace.geometry
    region_of, cap = part.region_map(len(trace.requests))
    ctx = [max(r.max_context, 1) for r in trace.requests]
    keys = np.zeros(len(cap), np.int64)  # keys each region can ever hold
    for r, layer in np.ndindex(*region_of.shape):
        if region_of[r, layer] >= 0:
            keys[region_of[r, layer]] += ctx[r]
    regions = [OrderedDict() for _ in cap]  # last = most recent
    hits, misses = [0] * g.layers, [0] * g.layers
    idx = [np.asarray(r.indices[:]) for r in trace.requests]
    mask = np.zeros((trace.steps, g.layers, len(idx), g.top_k), np.uint8)
    for t in range(trace.steps):
        for layer in range(g.layers):
            for r, a in enumerate(idx):
                if t >= a.shape[0]:
                    continue
                p = int(region_of[r, layer])
                row = {(r, layer, int(x)) for x in a[t, layer] if x >= 0}
                for s, tok in enumerate(a[t, layer]):
                    if tok < 0:
                        continue
                    key = (r, layer, int(tok))
                    whole = p >= 0 and cap[p] > 0 and rules.whole_hits and cap[p] >= keys[p]
                    if whole or (p >= 0 and key in regions[p]):
                        hits[layer] += 1
                        mask[t, layer, r, s] = 1
                        if not whole:
                            regions[p].move_to_end(key)
                        continue
                    misses[layer] += 1
                    if p < 0 or cap[p] == 0:
                        continue
                    if len(regions[p]) >= cap[p]:
                        others = [x for x in reversed(regions[p]) if x not in row]
                        victim = others[0] if rules.protect_row else next(reversed(regions[p]))
                        del regions[p][victim]
                    regions[p][key] = True
    return hits, misses, mask


@FEW
@given(
    p=trace_params,
    cap=st.integers(0, 30),
    spec=st.sampled_from(SPECS + list(SCOPES)),
    rules=st.sampled_from([NO_RULES, HISPARSE]),
)
def test_a_policy_on_the_driver_matches_its_reference(p, cap, spec, rules):
    """Hooks written in this file, on the driver, equal a plain-Python MRU for every
    partition (per request and per (request, layer) too) and with the row rules."""
    trace = random_trace(p)
    g = trace.geometry
    part = scoped(spec, g.layers, cap) if spec in SCOPES else parse_partition(spec, g.layers, cap)
    if rules.protect_row:
        cap_of = part.region_map(len(trace.requests))[1]
        assume(((cap_of == 0) | (cap_of >= g.top_k)).all())
    after, mask, counters, _ = run_policy(MRU, trace, part, block_elements=1, rules=rules)
    hits, misses, ref_mask = py_mru(trace, part, rules)
    assert counters.hits.tolist() == hits and counters.misses.tolist() == misses
    assert after[-1].tolist() == hits
    np.testing.assert_array_equal(mask, ref_mask)
    if not rules.protect_row and spec in SPECS:
        assert online_violation(MRU, trace, cap, spec) is None


class LogState(NamedTuple):
    log: np.ndarray  # int64 [accesses of the block, 5]: step, layer, request, slot, region
    rows: np.ndarray  # int64 [rows, 3]: step, layer, request of every end_row
    n_rows: np.ndarray  # int64 [1]


@njit(inline="always")
def _log_begin(st, row, sel, u):
    return row.step, row.layer, row.r, row.p


@njit(inline="always")
def _log_find(st, x, g, s):
    return False


@njit(inline="always")
def _log_hit(st, x, g, i, s):
    return g


@njit(inline="always")
def _log_admit(st, x, g, i, s, u, full):
    st.log[i, 0], st.log[i, 1], st.log[i, 2], st.log[i, 4] = g
    st.log[i, 3] = s
    return g, False


@njit(inline="always")
def _log_end(st, row, sel, g, u):
    n = st.n_rows[0]
    st.rows[n, 0], st.rows[n, 1], st.rows[n, 2] = row.step, row.layer, row.r
    st.n_rows[0] = n + 1


log_replay = make_replay(
    "test_log", Hooks(_log_begin, _log_find, _log_hit, _log_admit, _log_end), cache=False
)


class Logger(DrivenPolicy):
    """Misses everything and logs where each access and each row end was seen."""

    name = "test-log"
    summary = "logs the walk"
    online = True
    prefetches = False
    kernel = log_replay

    def build_state(self):
        self.logs, self.row_logs = [], []

    def state(self, block):
        n = int((block.indices >= 0).sum())
        self.logs.append((block, np.full((n, 5), -1, np.int64)))
        self.row_logs.append(np.full((block.indices[..., 0].size, 3), -1, np.int64))
        return LogState(self.logs[-1][1], self.row_logs[-1], np.zeros(1, np.int64))


class PeeksAtTheLength(MRU):
    """A cheat the online check must catch: its capacity depends on how long the trace is."""

    def __init__(self, blocks, partition, geometry, rules=NO_RULES):
        if blocks.steps > 3:
            partition = Partition(partition.spec, partition.of_layer, partition.capacity // 2)
        super().__init__(blocks, partition, geometry, rules)


def test_the_online_check_catches_a_peek_into_the_future():
    trace = make_trace(6, 1, 4, 6, seed=1, pad=0.0)
    assert online_violation(MRU, trace, 4, "global") is None
    assert "hits of the first" in online_violation(PeeksAtTheLength, trace, 4, "global")


@pytest.mark.parametrize("spec", ["per-request", "per-request-layer", "global"])
def test_hooks_see_the_step_layer_request_slot_and_region(spec):
    """Every access reaches admit with its number i, step, layer, request, slot and region, in
    the trace's access order; end_row runs once per (step, layer, request) row."""
    trace = make_trace([3, 2], layers=2, k=3, context=[6, 5], requests=2, seed=1)
    part = scoped(spec, 2, 100)
    region_of, _ = part.region_map(2)
    _, _, counters, policy = run_policy(Logger, trace, part, block_elements=1)
    got, rows = [], []
    for (block, log), row_log in zip(policy.logs, policy.row_logs, strict=True):
        for step, layer, r, s, p in log.tolist():
            assert p == region_of[r, layer]
            got.append((step, layer, r, int(block.indices[step - block.start, layer, r, s])))
        rows += [tuple(x) for x in row_log.tolist() if x[0] >= 0]
    assert got == reference_accesses(trace)
    assert rows == [(t, layer, r) for t in range(3) for layer in range(2) for r in range(2)]
    assert counters.misses.sum() == len(got)


def test_scoped_partitions_and_their_region_map():
    part = scoped("per-request-layer", 3, 7)
    region_of, cap = part.region_map(2)
    assert region_of.tolist() == [[0, 1, 2], [3, 4, 5]] and cap.tolist() == [7] * 6
    region_of, cap = scoped("per-request", 3, 7).region_map(2)
    assert region_of.tolist() == [[0, 0, 0], [1, 1, 1]] and cap.tolist() == [7, 7]
    region_of, cap = scoped("per-layer", 3, 7).region_map(2)
    assert region_of.tolist() == [[0, 1, 2]] * 2 and cap.tolist() == [7] * 3
    region_of, cap = parse_partition("pinned:1", 3, 7).region_map(2)
    assert region_of.tolist() == [[-1, 0, -1]] * 2 and cap.tolist() == [7]
    with pytest.raises(DsacacheError, match="unknown partition scope"):
        scoped("per-token", 3, 7)
