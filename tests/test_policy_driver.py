"""Properties every registered token policy must have, the shared replay driver, registration
and `dsacache simulate --list-policies`.

The generic tests are parametrized over POLICIES, so a policy added to the package is covered
by them as soon as it is registered: hits + misses = accesses, MIN bounds every demand policy,
and every policy flagged online decides from the past only (its hits on the first n steps of a
trace are those of its run over the whole trace).
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from conftest import BLOCK_TOKENS, INDEX_BYTES, make_trace
from dsacache.cli.app import run
from dsacache.errors import TraceError
from dsacache.sim import SimConfig, simulate
from dsacache.sim.partition import Partition, parse_partition
from dsacache.sim.policies import POLICIES, Counters, TokenPolicy, register
from dsacache.sim.policies import list_moves as moves
from dsacache.sim.policies.driver import DrivenPolicy, Hooks, make_replay, replay, same_g
from dsacache.sim.policies.lru import TokenLRU
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.blocks import StepBlocks

ALL = sorted(POLICIES)
ONLINE = [n for n in ALL if POLICIES[n].online]
DEMAND = [n for n in ALL if not POLICIES[n].prefetches and n != "min"]
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


def run_policy(
    cls: type[TokenPolicy], trace: Trace, cap: int, spec: str, block_elements: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray | None]:
    """(per-layer hits after each block [blocks, layers], the hit mask of the whole trace or
    None). block_elements=1 makes every block one step."""
    g = trace.geometry
    cls.warmup()
    blocks = StepBlocks(trace, block_elements, near_miss=cls.uses_near_miss)
    policy = cls(blocks, parse_partition(spec, g.layers, cap), g)
    counters = Counters.zeros(g.layers, lines=cls.counts_lines)
    after, masks = [], []
    for block in blocks.reversed() if cls.needs_backward_pass else []:
        policy.prepare_block(block)
    policy.prepare()
    for block in blocks:
        if cls.emits_hit_mask:
            counters.hit_mask = np.zeros(block.indices.shape, np.uint8)
        policy.run_block(block, counters)
        after.append(counters.hits.copy())
        masks.append(counters.hit_mask)
    mask = np.concatenate(masks) if cls.emits_hit_mask else None
    return np.array(after), mask


def online_violation(cls: type[TokenPolicy], trace: Trace, cap: int, spec: str) -> str | None:
    """Where `cls`'s decisions on a prefix of `trace` differ from its run over the whole trace
    (per-layer hits after each step; the per-access hit mask when it emits one), else None."""
    per_step, mask = run_policy(cls, trace, cap, spec, block_elements=1)
    for n in range(1, trace.steps + 1):
        hits_n, mask_n = run_policy(cls, prefix(trace, n), cap, spec)
        if not np.array_equal(hits_n[-1], per_step[n - 1]):
            return f"hits of the first {n} steps: {hits_n[-1]} alone, {per_step[n - 1]} in all"
        if mask is not None and not np.array_equal(mask_n, mask[:n]):
            return f"hit mask of the first {n} steps differs"
    return None


# ------------------------------------------------------------------ every registered policy


def config(name: str, cap: int, spec: str) -> SimConfig:
    """The policy's SimConfig; near-miss must name its source (these traces carry none)."""
    source = "layer-below" if name == "near-miss" else None
    return SimConfig(name, capacity_tokens=cap, partition=spec, near_miss_source=source)


@pytest.mark.parametrize("name", ALL)
@FEW
@given(p=trace_params, cap=st.integers(0, 40), spec=st.sampled_from(SPECS))
def test_hits_plus_misses_is_accesses(name, p, cap, spec):
    trace = random_trace(p)
    res = simulate(trace, config(name, cap, spec))
    assert res.hits + res.misses == res.accesses == trace.count_accesses()
    assert ((res.per_layer_hits >= 0) & (res.per_layer_misses >= 0)).all()
    assert res.per_layer_hits.sum() + res.per_layer_misses.sum() == res.accesses


@pytest.mark.parametrize("name", DEMAND)
@FEW
@given(p=trace_params, spec=st.sampled_from(SPECS))
def test_min_bounds_every_demand_policy_at_every_capacity(name, p, spec):
    # kv = 256 B: whole 128-byte lines per row, so line-lru fetches nothing beyond the token
    # (with a line shared by two tokens it prefetches part of the neighbour; see line_lru.py).
    # MIN is optimal per region (its layers together), not per layer of a shared region.
    # keep-previous checks a row against the previous step's kept tokens while it keeps the
    # current row's: it holds up to twice its capacity, so MIN at twice the capacity bounds it.
    trace = random_trace(p, kv=256)
    g = trace.geometry
    scale = 2 if name == "keep-previous" else 1
    for cap in range(0, g.layers * g.top_k * 2 + 2):
        of_layer = parse_partition(spec, g.layers, cap).of_layer
        best = simulate(trace, config("min", scale * cap, spec))
        res = simulate(trace, config(name, cap, spec))
        for region in set(of_layer.tolist()):
            layers = of_layer == region
            mine, bound = res.per_layer_misses[layers].sum(), best.per_layer_misses[layers].sum()
            assert bound <= mine, (cap, spec, region)


def test_keep_previous_can_beat_min_at_equal_capacity():
    # By hand, one layer, capacity 1: accesses 0 2 | 3 0 | 3 1. keep-previous keeps 0, then 3:
    # hits 0 (step 1) and 3 (step 2), 4 misses. MIN with bypass in one slot: keeps 0 for step 1,
    # bypasses 3 twice, 5 misses. With two slots MIN keeps 0 and 3: 4 misses.
    rows = np.array([[[0, 2]], [[3, 0]], [[3, 1]]], np.int32)
    trace = Trace([RequestTrace(rows, np.full(3, 4))], Geometry(1, 2, 256, 132, 4))
    kp = simulate(trace, config("keep-previous", 1, "global"))
    assert (kp.hits, kp.misses) == (2, 4)
    assert simulate(trace, config("min", 1, "global")).misses == 5
    assert simulate(trace, config("min", 2, "global")).misses == 4


@pytest.mark.parametrize("name", ONLINE)
@FEW
@given(p=trace_params, cap=st.integers(0, 30), spec=st.sampled_from(SPECS))
def test_online_policies_decide_from_the_past_only(name, p, cap, spec):
    trace = random_trace(p)
    assert online_violation(POLICIES[name], trace, cap, spec) is None


def test_flags_are_as_documented():
    assert not POLICIES["min"].online and POLICIES["near-miss"].prefetches
    assert all(POLICIES[n].online for n in ("token-lru", "fifo", "keep-previous", "line-lru"))
    assert not any(POLICIES[n].prefetches for n in ("token-lru", "fifo", "keep-previous", "min"))


class PeeksAtTheLength(TokenLRU):
    """A cheat the online check must catch: its capacity depends on how long the trace is."""

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        if blocks.steps > 3:
            partition = Partition(partition.spec, partition.of_layer, partition.capacity // 2)
        super().__init__(blocks, partition, geometry)


def test_the_online_check_catches_a_peek_into_the_future():
    trace = make_trace(6, 1, 4, 6, seed=1, pad=0.0)
    assert online_violation(TokenLRU, trace, 4, "global") is None
    assert "hits of the first" in online_violation(PeeksAtTheLength, trace, 4, "global")


# ------------------------------------------------------------------ registration


def test_register_requires_every_flag_and_a_fresh_name():
    class NoFlags(TokenLRU):
        name = "no-flags"
        summary = "x"

    with pytest.raises(TypeError, match="online, prefetches"):
        register(NoFlags)

    class Twin(TokenLRU):
        name = "token-lru"
        summary = "x"
        online = True
        prefetches = False

    with pytest.raises(ValueError, match="token-lru"):
        register(Twin)
    assert POLICIES["token-lru"] is TokenLRU and "no-flags" not in POLICIES


def test_every_module_of_the_package_is_imported():
    import pkgutil
    import sys

    import dsacache.sim.policies as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__)]
    assert {"lru", "fifo", "keep_previous", "belady", "line_lru", "near_miss"} <= set(names)
    assert all(f"dsacache.sim.policies.{n}" in sys.modules for n in names)
    assert {c.__module__.rsplit(".", 1)[1] for c in POLICIES.values()} <= set(names)


# ------------------------------------------------------------------ a policy written on the driver


# MRU eviction, defined here only: a full region evicts its MOST recently used token.
# st = (link, size, sent0); g = (fill level, capacity, sentinel).
@njit(inline="always")
def _mru_begin(st, t, step, layer, p, c):
    return st[1][p], c, st[2] + p


@njit(inline="always")
def _mru_find(st, key, g):
    return st[0][2 * key] >= 0


@njit(inline="always")
def _mru_hit(st, key, g, i):
    moves.to_front(st[0], key, g[2])
    return g


@njit(inline="always")
def _mru_miss(st, key, g, i):
    link = st[0]
    sz, c, head = g
    if sz >= c:
        victim = link[2 * head + 1]  # the front: most recently used
        moves.unlink(link, victim)
        link[2 * victim] = -1
    else:
        sz += 1
    moves.push_front(link, key, head)
    return sz, c, head


@njit(inline="always")
def _mru_end(st, p, g):
    st[1][p] = g[0]


MRU_HOOKS = Hooks(_mru_begin, same_g, _mru_find, _mru_hit, _mru_miss, _mru_end)
mru_replay = make_replay("test_mru", MRU_HOOKS, cache=False)


class MRU(DrivenPolicy):
    name = "test-mru"
    summary = "evicts the most recently used token"
    online = True
    prefetches = False
    kernel = mru_replay

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        self.link = moves.new_lists(blocks.keys.size, partition.regions, True)
        self.size = np.zeros(partition.regions, np.int64)

    def state(self, block):
        return self.link, self.size, self.blocks.keys.size


def py_mru(trace: Trace, cap: int, spec: str) -> tuple[list[int], list[int], np.ndarray]:
    """Per-layer hits and misses and the hit mask of MRU eviction, by plain dicts."""
    g = trace.geometry
    part = parse_partition(spec, g.layers, cap)
    regions = [OrderedDict() for _ in range(part.regions)]  # last = most recent
    hits, misses = [0] * g.layers, [0] * g.layers
    idx = [np.asarray(r.indices[:]) for r in trace.requests]
    mask = np.zeros((trace.steps, g.layers, len(idx), g.top_k), np.uint8)
    for t in range(trace.steps):
        for layer in range(g.layers):
            p = int(part.of_layer[layer])
            for r, a in enumerate(idx):
                if t >= a.shape[0]:
                    continue
                for s, tok in enumerate(a[t, layer]):
                    if tok < 0:
                        continue
                    key = (r, layer, int(tok))
                    if p >= 0 and key in regions[p]:
                        hits[layer] += 1
                        mask[t, layer, r, s] = 1
                        regions[p].move_to_end(key)
                        continue
                    misses[layer] += 1
                    if p < 0 or part.capacity[p] == 0:
                        continue
                    if len(regions[p]) >= part.capacity[p]:
                        regions[p].popitem(last=True)
                    regions[p][key] = True
    return hits, misses, mask


@FEW
@given(p=trace_params, cap=st.integers(0, 30), spec=st.sampled_from(SPECS))
def test_a_policy_on_the_driver_matches_its_reference(p, cap, spec):
    trace = random_trace(p)
    after, mask = run_policy(MRU, trace, cap, spec, block_elements=1)
    hits, misses, ref_mask = py_mru(trace, cap, spec)
    g = trace.geometry
    blocks = StepBlocks(trace)
    counters = Counters.zeros(g.layers)
    replay(MRU(blocks, parse_partition(spec, g.layers, cap), g), blocks, counters)
    assert counters.hits.tolist() == hits and counters.misses.tolist() == misses
    assert after[-1].tolist() == hits
    np.testing.assert_array_equal(mask, ref_mask)
    assert online_violation(MRU, trace, cap, spec) is None


def test_driver_reports_an_index_out_of_range_with_its_step():
    rows = np.array([[[0, 1]], [[1, 2]], [[2, 5]]], np.int32)  # context 4: token 5 at step 2
    trace = Trace([RequestTrace(rows, np.full(3, 4))], Geometry(1, 2, 656, 132, 4), validate=False)
    for policy in (MRU, *(POLICIES[n] for n in ("token-lru", "keep-previous", "min"))):
        with pytest.raises(TraceError, match="step 2"):
            run_policy(policy, trace, 2, "global")


# ------------------------------------------------------------------ --list-policies


def test_list_policies_json(capsys):
    assert run(["simulate", "--list-policies", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ALL
    for r in rows:
        assert set(r) == {"name", "description", "online", "prefetches"}
        cls = POLICIES[r["name"]]
        assert (r["description"], r["online"], r["prefetches"]) == (
            cls.summary,
            cls.online,
            cls.prefetches,
        )
    by_name = {r["name"]: r for r in rows}
    assert by_name["min"]["online"] is False and by_name["near-miss"]["prefetches"] is True


def test_list_policies_text(capsys):
    assert run(["simulate", "--list-policies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["policy", "online", "prefetches", "description"]
    assert len(lines) == 1 + len(ALL)
    for line, name in zip(lines[1:], ALL, strict=True):
        cls = POLICIES[name]
        words = line.split()
        yes = {True: "yes", False: "no"}
        assert words[:3] == [name, yes[cls.online], yes[cls.prefetches]]
        assert line.endswith(cls.summary)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate"], "missing argument TRACE"),
        (["simulate", "t.npz"], "missing option --policy"),
    ],
)
def test_simulate_without_trace_or_policy_is_one_line(capsys, args, message):
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_driven_kernels_load_from_numba_cache(tmp_path):
    """A kernel made by make_replay is found in numba's on-disk cache by the next process (a
    closure over the hooks would not be: its cache key differs in every process)."""
    import os
    import subprocess
    import sys

    code = (
        "from dsacache.sim.policies import POLICIES, lru, keep_previous as kp\n"
        "POLICIES['token-lru'].warmup(); POLICIES['keep-previous'].warmup()\n"
        "s = [lru.list_replay.stats, kp.keep_previous_replay.stats]\n"
        "print(sum(sum(x.cache_misses.values()) for x in s), "
        "sum(sum(x.cache_hits.values()) for x in s))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    (miss1, hit1), (miss2, hit2) = (map(int, r.stdout.split()) for r in runs)
    assert miss1 > 0 and hit1 == 0  # compiled the first time
    assert miss2 == 0 and hit2 == miss1  # loaded the second time
