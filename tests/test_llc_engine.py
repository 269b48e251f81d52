"""Line-level engine validation: libCacheSim, per-set LRU, SRRIP by hand, properties, errors."""

from __future__ import annotations

from collections import OrderedDict

import libcachesim as lcs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsacache.errors import DsacacheError
from dsacache.sim.llc.engine import EngineConfig, LLCEngine
from dsacache.sim.llc.hardware import CacheShape
from dsacache.sim.llc.reservation import Reservation
from dsacache.sim.llc.stream import KV_GATHER, N_CLASSES, Runs
from dsacache.trace.export_libcachesim import RECORD_DTYPE
from test_llc_reference import random_runs


def engine(sets, ways, policy="lru", set_hash="modulo", sectors=False, res=None):
    shape = CacheShape(sets, ways)
    resolved = (res or Reservation()).resolve(shape, shape.capacity_bytes)
    return LLCEngine(EngineConfig(shape, policy, set_hash, sectors), resolved)


def line_stream(rng, n, span):
    """Line ids with reuse: a random walk with jumps, plus a hot set."""
    hot = rng.integers(0, span, 8)
    walk = np.cumsum(rng.integers(-3, 4, n)) % span
    jump = rng.integers(0, span, n)
    pick = rng.random(n)
    return np.where(pick < 0.2, hot[rng.integers(0, 8, n)], np.where(pick < 0.6, walk, jump))


# ------------------------------------------------------------------ libCacheSim


@pytest.mark.parametrize("ways", [1, 4, 16, 64, 255])
def test_fully_associative_lru_equals_libcachesim(tmp_path, ways):
    rng = np.random.default_rng(ways)
    lines = line_stream(rng, 20_000, 4 * ways + 16)
    rec = np.zeros(lines.size, dtype=RECORD_DTYPE)
    rec["obj_id"] = lines
    rec["obj_size"] = 1
    rec["next_access_vtime"] = -1
    path = tmp_path / "lines.oracleGeneral"
    rec.tofile(path)
    reader = lcs.TraceReader(trace=str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
    miss_ratio = lcs.LRU(cache_size=ways, hashpower=12).process_trace(reader)[0]
    eng = engine(1, ways)
    eng.run(Runs.from_lines(lines))
    accesses, hits, misses, _ = eng.counters[KV_GATHER]
    assert accesses == lines.size
    assert misses == round(miss_ratio * lines.size)
    assert 0 < hits < accesses


# ------------------------------------------------------------------ per-set LRU


def per_set_lru(lines, sets, ways, set_of):
    cache = [OrderedDict() for _ in range(sets)]
    hits = 0
    for y in lines:
        c = cache[set_of(int(y))]
        if y in c:
            hits += 1
            c.move_to_end(y)
        else:
            c[y] = None
            if len(c) > ways:
                c.popitem(last=False)
    return hits, [set(c) for c in cache]


def xor_fold(sets):
    bits = sets.bit_length() - 1

    def f(y):
        x = 0
        while y:
            x ^= y & (sets - 1)
            y >>= bits
        return x

    return f


@pytest.mark.parametrize("sets,ways", [(2, 4), (16, 2), (64, 8), (256, 1)])
@pytest.mark.parametrize("set_hash", ["modulo", "xor"])
def test_set_associative_lru_is_independent_lrus(sets, ways, set_hash):
    rng = np.random.default_rng(sets + ways)
    lines = line_stream(rng, 20_000, sets * ways * 3)
    set_of = (lambda y: y % sets) if set_hash == "modulo" else xor_fold(sets)
    hits, contents = per_set_lru(lines, sets, ways, set_of)
    eng = engine(sets, ways, set_hash=set_hash)
    eng.run(Runs.from_lines(lines))
    assert eng.counters[KV_GATHER, 1] == hits
    got = eng.lines()
    assert [set(int(x) for x in row if x >= 0) for row in got] == contents
    if set_hash == "xor" and sets > 2:  # the hash spreads consecutive chunks differently
        assert any(set_of(y) != y % sets for y in range(sets, 4 * sets))


# ------------------------------------------------------------------ SRRIP by hand


def test_srrip_by_hand():
    # One set of 3 ways; A..E = lines 0..4. Insert at RRPV 2, hit -> 0, victim: first way at 3
    # after ageing all ways until one is at 3.
    #   A B C    -> A2 B2 C2            (3 misses)
    #   A        -> A0 B2 C2            hit
    #   D        -> age +1: A1 B3 C3 -> evict B: A1 D2 C3
    #   E        -> C is at 3: A1 D2 E2
    #   A        -> A0 D2 E2            hit
    #   B        -> age +1: A1 D3 E3 -> evict D: A1 B2 E3
    #   D        -> evict E: A1 B2 D2
    #   E        -> age +1: A2 B3 D3 -> evict B: A2 E2 D3
    #   A        -> A0 E2 D3            hit
    A, B, C, D, E = range(5)
    seq = [A, B, C, A, D, E, A, B, D, E, A]
    eng = engine(1, 3, policy="srrip")
    eng.run(Runs.from_lines(np.array(seq)))
    assert eng.counters[KV_GATHER, :3].tolist() == [11, 3, 8]
    assert eng.lines()[0].tolist() == [A, E, D]
    assert eng.rrpv[0].tolist() == [0, 2, 3]
    # LRU on the same sequence: A B C A D(-B) E(-C) A B(-D) D(-E) E(-A) A(-B): 2 hits
    lru = engine(1, 3)
    lru.run(Runs.from_lines(np.array(seq)))
    assert lru.counters[KV_GATHER, 1] == 2


def test_srrip_resists_a_scan_that_flushes_lru():
    # A hot line hit often, then a one-off scan of 4 new lines through a 4-way set.
    seq = [0, 0, 0] + [10, 11, 12, 13] + [0]
    got = {}
    for policy in ("lru", "srrip"):
        eng = engine(1, 4, policy=policy)
        eng.run(Runs.from_lines(np.array(seq)))
        got[policy] = int(eng.counters[KV_GATHER, 1])
    assert got == {"lru": 2, "srrip": 3}


def test_sectors():
    eng = engine(1, 2, sectors=True)
    runs = Runs.from_lines(np.array([5, 5, 5, 6]), masks=np.array([0b0011, 0b0001, 0b1100, 15]))
    eng.run(runs)
    # miss (2 sectors), hit, sector miss (2 more sectors), miss (4 sectors)
    assert eng.counters[KV_GATHER].tolist() == [4, 1, 3, (2 + 2 + 4) * 32]
    assert eng.sect[0].tolist() == [15, 15]
    plain = engine(1, 2)
    plain.run(runs)
    assert plain.counters[KV_GATHER].tolist() == [4, 2, 2, 2 * 128]


# ------------------------------------------------------------------ properties


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sets=st.sampled_from([1, 2, 8, 32]),
    ways=st.integers(1, 6),
    policy=st.sampled_from(["lru", "srrip", "drrip"]),
    set_hash=st.sampled_from(["modulo", "xor"]),
    sectors=st.booleans(),
    res_mode=st.sampled_from(["none", "way", "set-aside"]),
    shortcut=st.booleans(),
)
def test_counts_add_up(seed, sets, ways, policy, set_hash, sectors, res_mode, shortcut):
    rng = np.random.default_rng(seed)
    shape = CacheShape(sets, ways)
    if res_mode == "way" and ways < 2:
        res_mode = "none"
    reserve = {"none": 0, "way": sets * 128, "set-aside": max(1, sets * ways // 2) * 128}
    res = Reservation(res_mode, reserve[res_mode]).resolve(shape, shape.capacity_bytes)
    eng = LLCEngine(EngineConfig(shape, policy, set_hash, sectors), res, 1 if shortcut else 0)
    runs = random_runs(rng, 3, 20, span=sets * ways * 4, max_len=sets * ways * 3, sectors=sectors)
    blocking = eng.run(runs)
    acc, hits, misses, nbytes = eng.counters.T
    assert (hits + misses == acc).all()
    want = np.bincount(runs.cls, weights=runs.count, minlength=N_CLASSES)
    assert acc.tolist() == want.astype(int).tolist()
    assert blocking.sum() == misses[KV_GATHER]
    unit = 32 if sectors else 128
    assert (nbytes >= misses * unit).all() and (nbytes <= misses * 128).all()
    assert (eng.age.astype(int).sum(axis=1) == ways * (ways - 1) // 2).all()  # permutations


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ways=st.integers(1, 12))
def test_lru_inclusion(seed, ways):
    """Fully associative LRU: one more way never gives more misses."""
    lines = line_stream(np.random.default_rng(seed), 2000, 40)
    misses = []
    for w in (ways, ways + 1):
        eng = engine(1, w)
        eng.run(Runs.from_lines(lines))
        misses.append(int(eng.counters[KV_GATHER, 2]))
    assert misses[1] <= misses[0]


# ------------------------------------------------------------------ bad configurations


def test_bad_configs():
    shape = CacheShape(16, 4)
    cap = shape.capacity_bytes
    cases = [
        (lambda: EngineConfig(shape, "mru"), "unknown policy 'mru'"),
        (lambda: EngineConfig(shape, set_hash="crc"), "unknown set hash"),
        (
            lambda: Reservation("cat", 128).resolve(shape, cap),
            r"unknown reservation 'cat' \(known: none, way, set-aside, token\)",
        ),
        (lambda: Reservation("way", cap + 128).resolve(shape, cap), "exceeds the LLC"),
        (lambda: Reservation("way", 128).resolve(shape, cap), "less than one way"),
        (lambda: Reservation("way", cap).resolve(shape, cap), "takes all 4 ways"),
        (lambda: Reservation("set-aside", cap // 2).resolve(shape, cap // 4), "limit"),
        (lambda: Reservation("set-aside", 100).resolve(shape, cap), "less than one"),
        (lambda: Reservation("none", 1024).resolve(shape, cap), "choose 'way' or 'set-aside'"),
        (lambda: Reservation.from_mib("way", -1.0), ">= 0"),
        (lambda: Reservation.from_mib("way", float("nan")), "finite"),
        (lambda: Reservation.from_mib("way", 1.0, ("kv-gather", "tlb")), "unknown class 'tlb'"),
        (lambda: Reservation.from_mib("way", 1.0, ()), "at least one class"),
    ]
    for make, msg in cases:
        with pytest.raises(DsacacheError, match=msg):
            make()
    eng = engine(4, 2)
    with pytest.raises(DsacacheError, match="line ids"):
        eng.run(Runs.from_lines(np.array([-1])))
    with pytest.raises(DsacacheError, match="line ids"):
        eng.run(Runs.from_lines(np.array([1 << 40])))


def test_reservation_quota_and_ways():
    shape = CacheShape(16, 4)
    way = Reservation("way", 2 * 16 * 128 + 100).resolve(shape, shape.capacity_bytes)
    assert way.ways == 2 and way.effective_bytes == 2 * 16 * 128
    sa = Reservation("set-aside", 21 * 128 + 5).resolve(shape, shape.capacity_bytes)
    assert sa.quota.sum() == 21 and sa.quota.tolist() == [2] * 5 + [1] * 11
    assert sa.effective_bytes == 21 * 128
    assert sa.to_dict()["classes"] == ["kv-gather"]


@pytest.mark.parametrize("policy", ["lru", "srrip", "drrip"])
def test_small_set_aside_never_worse_than_none(policy):
    # 32 KV lines reused 10 times fit easily in a 64-line cache. A reserved miss at quota
    # (quota 0 included) falls back to a normal fill instead of bypassing the cache.
    lines = np.tile(np.arange(32), 10)
    none = engine(16, 4, policy)
    none.run(Runs.from_lines(lines, KV_GATHER))
    base = none.counters[KV_GATHER, 1]
    assert base == 320 - 32
    for rl in (1, 8, 16, 31, 32, 48, 64):
        e = engine(16, 4, policy, res=Reservation("set-aside", rl * 128))
        e.run(Runs.from_lines(lines, KV_GATHER))
        assert e.counters[KV_GATHER, 1] >= base, rl
        assert e.pers.sum() == min(rl, 32), rl  # persisting up to the quota, the rest normal


def test_set_aside_at_quota_keeps_persisting_lines():
    # One set, 4 ways, quota 1: the first reserved line persists; later reserved misses are
    # normal fills that LRU-evict each other, never the persisting line.
    e = engine(1, 4, "lru", res=Reservation("set-aside", 128))
    e.run(Runs.from_lines(np.arange(10), KV_GATHER))
    assert sorted(e.lines()[0].tolist()) == [0, 7, 8, 9]
    assert e.pers[0, e.lines()[0].tolist().index(0)] == 1 and e.pers.sum() == 1


def test_drrip_followers_use_brrip_when_psel_msb_set():
    # PSEL starts at 512 (MSB set): a follower set's first insertion is BRRIP's, at RRPV 3
    # (the BRRIP counter's first insertion is not a 1-in-32 long one). 128 sets: set 2 follows.
    e = engine(128, 1, "drrip")
    assert e.st[0] == 512
    e.run(Runs.from_lines(np.array([2]), KV_GATHER))
    assert e.rrpv[2, 0] == 3 and e.st[1] == 1
    e.st[0] = 511  # MSB clear: SRRIP's insertion at 2
    e.run(Runs.from_lines(np.array([2 + 128]), KV_GATHER))
    assert e.rrpv[2, 0] == 2
