"""The streaming shortcuts (LRU and SRRIP) are exact: same counters, blocking misses and final
state as the line-by-line engine, on random run streams full of long sweeps.

"Same final state": for SRRIP, way for way. For LRU, every set holds the same lines with the
same recency ranks, sector masks and persisting flags, in the same way partition; the order of
ways inside a partition may differ (LRU never looks at it: see sweep.sweep_lru). `canonical`
sorts it away; the later batches, replayed from each engine's own state, check that the
difference changes nothing later.
"""

from __future__ import annotations

import numpy as np
import pytest

from dsacache.sim.llc.engine import EngineConfig, LLCEngine
from dsacache.sim.llc.hardware import CacheShape
from dsacache.sim.llc.kernels import S_SHORTCUT
from dsacache.sim.llc.reservation import Reservation
from dsacache.sim.llc.stream import KV_GATHER, WEIGHTS, Runs
from test_llc_reference import RefLLC, random_runs

CASES = [
    (1, 4, "none", 0),
    (2, 1, "none", 0),
    (4, 3, "none", 0),
    (8, 4, "way", 8),
    (8, 5, "way", 32),
    (8, 4, "set-aside", 13),
    (16, 2, "set-aside", 16),
    (32, 8, "none", 0),
    (64, 3, "way", 64),
]


def canonical(eng: LLCEngine, res_ways: int = 0) -> dict[str, np.ndarray]:
    """State with each way partition's ways sorted by tag."""
    state = eng.state()
    out = {name: [] for name in ("lines", "age", "rrpv", "sect", "pers")}
    bounds = [(0, res_ways), (res_ways, eng.tags.shape[1])] if res_ways else [(0, None)]
    for lo, hi in bounds:
        order = np.argsort(state["lines"][:, lo:hi], axis=1, kind="stable")
        for name in out:
            out[name].append(np.take_along_axis(state[name][:, lo:hi], order, axis=1))
    return {name: np.concatenate(parts, axis=1) for name, parts in out.items()}


def engines(sets, ways, set_hash, sectors, res_mode, res_lines, policy="lru"):
    shape = CacheShape(sets, ways)
    res = Reservation(res_mode, res_lines * 128).resolve(shape, shape.capacity_bytes)
    cfg = EngineConfig(shape, policy, set_hash, sectors)
    return LLCEngine(cfg, res, shortcut_min=1), LLCEngine(cfg, res, shortcut_min=0), res


@pytest.mark.parametrize("sets,ways,res_mode,res_lines", CASES)
@pytest.mark.parametrize("set_hash", ["modulo", "xor"])
@pytest.mark.parametrize("sectors", [False, True])
@pytest.mark.parametrize("policy", ["lru", "srrip"])
def test_shortcut_equals_line_by_line(sets, ways, res_mode, res_lines, set_hash, sectors, policy):
    fast, slow, res = engines(sets, ways, set_hash, sectors, res_mode, res_lines, policy)
    rng = np.random.default_rng(sets * 1000 + ways * 10 + len(res_mode))
    for _ in range(4):  # several batches: state carries over
        runs = random_runs(
            rng, 6, 30, span=sets * ways * 6, max_len=sets * ways * 5, sectors=sectors
        )
        np.testing.assert_array_equal(fast.run(runs), slow.run(runs))
        np.testing.assert_array_equal(fast.counters, slow.counters)
        if policy == "lru":
            a, b = canonical(fast, res.ways), canonical(slow, res.ways)
        else:
            a, b = fast.state(), slow.state()
            a["st"], b["st"] = a["st"][:S_SHORTCUT], b["st"][:S_SHORTCUT]
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert fast.st[S_SHORTCUT] > 0  # the closed form did decide lines
    assert slow.st[S_SHORTCUT] == 0


def test_srrip_shortcut_equals_reference_model():
    fast, _, res = engines(8, 4, "modulo", True, "set-aside", 11, "srrip")
    ref = RefLLC(8, 4, "srrip", "modulo", True, "set-aside", res.ways, res.quota)
    rng = np.random.default_rng(9)
    runs = random_runs(rng, 4, 25, span=8 * 4 * 8, max_len=8 * 4 * 6, sectors=True)
    np.testing.assert_array_equal(fast.run(runs), ref.run(runs))
    np.testing.assert_array_equal(fast.counters, ref.counts)
    np.testing.assert_array_equal(fast.lines(), np.array(ref.tags))
    np.testing.assert_array_equal(fast.rrpv, np.array(ref.rrpv))
    np.testing.assert_array_equal(fast.sect, np.array(ref.sect))
    np.testing.assert_array_equal(fast.pers, np.array(ref.pers))
    assert fast.st[S_SHORTCUT] > 0


def test_shortcut_equals_reference_model():
    """Same check against the independent Python model, with a weights-like stream."""
    fast, _, res = engines(16, 4, "xor", True, "way", 16)
    ref = RefLLC(16, 4, "lru", "xor", True, "way", res.ways, res.quota)
    rng = np.random.default_rng(5)
    runs = random_runs(rng, 4, 25, span=16 * 4 * 8, max_len=16 * 4 * 6, sectors=True)
    np.testing.assert_array_equal(fast.run(runs), ref.run(runs))
    np.testing.assert_array_equal(fast.counters, ref.counts)
    lines, ages, sect = fast.lines(), fast.age, fast.sect
    for lo, hi in [(0, res.ways), (res.ways, 4)]:  # same (line, age, sectors) per partition
        for s in range(16):
            got = sorted(zip(lines[s, lo:hi], ages[s, lo:hi], sect[s, lo:hi], strict=True))
            want = sorted(
                zip(ref.tags[s][lo:hi], ref.ages()[s][lo:hi], ref.sect[s][lo:hi], strict=True)
            )
            assert [tuple(map(int, g)) for g in got] == want
    assert fast.st[S_SHORTCUT] > 0


@pytest.mark.parametrize("policy", ["lru", "srrip"])
def test_long_sweep_touches_only_what_can_hit_or_survive(policy):
    # A 1000x-capacity weights sweep: every line misses, each set ends with the sweep's last
    # `ways` lines in it, and almost no line was replayed one by one.
    sets, ways = 64, 4
    fast, _, _ = engines(sets, ways, "modulo", False, "none", 0, policy)
    n = sets * ways * 1000
    runs = Runs(
        0,
        np.array([7], np.int64),
        np.array([n], np.int64),
        np.array([WEIGHTS], np.int8),
        np.array([15], np.uint8),
        np.array([15], np.uint8),
        np.array([0, 1], np.int64),
    )
    fast.run(runs)
    assert fast.counters[WEIGHTS].tolist() == [n, 0, n, 128 * n]
    assert fast.st[S_SHORTCUT] >= n - 2 * sets * ways  # SRRIP: fills the ways one by one
    tail = np.arange(7 + n - sets * ways, 7 + n)
    lines = fast.lines()
    assert sorted(lines.ravel().tolist()) == tail.tolist()
    assert ((lines & (sets - 1)) == np.arange(sets)[:, None]).all()
    if policy == "srrip":
        return
    # the most recent line of each set is its last sweep line
    assert (
        np.take_along_axis(lines, fast.age.argmin(axis=1)[:, None], 1)[:, 0]
        == tail[-sets:][np.argsort(tail[-sets:] & (sets - 1))]
    ).all()


def test_sweep_keeps_reserved_ways():
    # Way reservation: a sweep of another class never evicts the KV lines in reserved ways,
    # and a later gather of them hits.
    sets, ways = 8, 4
    fast, slow, _ = engines(sets, ways, "modulo", False, "way", 16)  # 2 reserved ways
    kv = np.arange(10_000, 10_000 + 2 * sets)
    for eng in (fast, slow):
        eng.run(Runs.from_lines(kv, KV_GATHER))
        eng.run(
            Runs(
                0,
                np.array([0], np.int64),
                np.array([sets * ways * 50], np.int64),
                np.array([WEIGHTS], np.int8),
                np.array([15], np.uint8),
                np.array([15], np.uint8),
                np.array([0, 1], np.int64),
            )
        )
        eng.run(Runs.from_lines(kv, KV_GATHER))
        assert eng.counters[KV_GATHER].tolist()[:3] == [4 * sets, 2 * sets, 2 * sets]
    np.testing.assert_array_equal(fast.lines()[:, :2], slow.lines()[:, :2])
    assert fast.st[S_SHORTCUT] > 0


@pytest.fixture(scope="module")
def scan_trace():
    from conftest import make_trace
    from dsacache.trace import Geometry

    # index blocks of 16 x 128 B (16 lines, line-aligned): a 150-token scan is one or a few runs
    g = Geometry(2, 8, 200, 128, 16)
    return make_trace([6, 4], layers=2, k=8, context=[150, 90], requests=2, seed=3, geometry=g)


@pytest.mark.parametrize("res_mode,res_kb", [("none", 0), ("way", 2), ("set-aside", 1.5)])
@pytest.mark.parametrize("sectors", [False, True])
@pytest.mark.parametrize("policy", ["lru", "srrip"])
def test_simulator_shortcut_covers_index_scans(scan_trace, res_mode, res_kb, sectors, policy):
    from dsacache.sim.llc import LLCConfig, simulate_llc

    # 16 sets x 4 ways (shortcut from 64 lines); no weights, so only index scans are long
    kw = dict(sets=16, ways=4, weights_bytes=0, policy=policy, sectors=sectors)
    kw |= dict(reservation=res_mode, reserve_mib=res_kb * 1024 / 2**20)
    fast = simulate_llc(scan_trace, LLCConfig(**kw), block_elements=40)
    slow = simulate_llc(scan_trace, LLCConfig(**kw, shortcut=False), block_elements=40)
    np.testing.assert_array_equal(fast.counters, slow.counters)
    np.testing.assert_array_equal(fast.blocking_per_step, slow.blocking_per_step)
    assert slow.shortcut_lines == 0 and fast.shortcut_lines > 0
    assert fast.counters[KV_GATHER, 1] > 0  # some gathers hit: the state matters
