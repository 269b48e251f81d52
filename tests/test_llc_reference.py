"""The compiled LLC engine against a plain-Python model of the same semantics.

`RefLLC` is written from engine.py / reservation.py's documented rules, independently of the
kernels: dict lookups, explicit candidate lists, RRIP ageing one round at a time. Random line
sequences over every policy x hash x sectors x reservation must give identical per-class
counters, blocking misses per step and final state.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from dsacache.sim.llc.engine import EngineConfig, LLCEngine
from dsacache.sim.llc.hardware import CacheShape
from dsacache.sim.llc.reservation import Reservation
from dsacache.sim.llc.stream import KV_GATHER, N_CLASSES, Runs


class RefLLC:
    """Plain-Python LLC: lines/rrpv/sect/pers as lists of lists; LRU as one recency list per
    set (ways, most recent first; it starts as ways - 1, ..., 1, 0, so way 0 is the oldest)."""

    def __init__(
        self,
        sets,
        ways,
        policy="lru",
        set_hash="modulo",
        sectors=False,
        res_mode="none",
        res_ways=0,
        quota=None,
        reserved=(KV_GATHER,),
    ):
        self.S, self.W = sets, ways
        self.policy, self.hash, self.sectors = policy, set_hash, sectors
        self.res_mode, self.res_ways = res_mode, res_ways
        self.quota = list(quota) if quota is not None else [0] * sets
        self.reserved = set(reserved) if res_mode != "none" else set()
        self.tags = [[-1] * ways for _ in range(sets)]
        self.recency = [list(range(ways - 1, -1, -1)) for _ in range(sets)]
        self.rrpv = [[3] * ways for _ in range(sets)]
        self.sect = [[0] * ways for _ in range(sets)]
        self.pers = [[0] * ways for _ in range(sets)]
        self.psel = 512
        self.brrip = 0
        self.spacing = max(2, sets // 32)
        self.counts = np.zeros((N_CLASSES, 4), dtype=np.int64)

    def set_of(self, line):
        bits = self.S.bit_length() - 1
        if self.hash == "modulo" or bits == 0:
            return line % self.S
        x = 0
        while line:
            x ^= line % self.S
            line >>= bits
        return x

    def candidates(self, s, reserved):
        ways = range(self.W)
        if self.res_mode == "way":
            ways = range(self.res_ways) if reserved else range(self.res_ways, self.W)
        elif self.res_mode == "set-aside":
            ways = [w for w in ways if not self.pers[s][w]]
            if reserved and not ways:  # every way persisting
                ways = list(range(self.W))
        return list(ways)

    def touch(self, s, w):
        self.recency[s].remove(w)
        self.recency[s].insert(0, w)

    def ages(self):
        return [[rec.index(w) for w in range(self.W)] for rec in self.recency]

    def access(self, line, mask, cls):
        s = self.set_of(line)
        reserved = cls in self.reserved
        row = self.tags[s]
        if line in row:
            w = row.index(line)
            cost = 0
            if self.sectors:
                cost = 32 * bin(mask & ~self.sect[s][w] & 15).count("1")
                self.sect[s][w] |= mask
            if self.policy == "lru":
                self.touch(s, w)
            else:
                self.rrpv[s][w] = 0
            if self.res_mode == "set-aside" and reserved and not self.pers[s][w]:
                if sum(self.pers[s]) < self.quota[s]:
                    self.pers[s][w] = 1
            return cost
        cost = 32 * bin(mask).count("1") if self.sectors else 128
        lead = 0
        if self.policy == "drrip":
            lead = {0: 1, 1: 2}.get(s % self.spacing, 0)
            if lead == 1:
                self.psel = min(self.psel + 1, 1023)
            elif lead == 2:
                self.psel = max(self.psel - 1, 0)
        newpers = self.res_mode == "set-aside" and reserved
        newpers = newpers and (sum(self.pers[s]) < self.quota[s] or all(self.pers[s]))
        cands = self.candidates(s, reserved)
        if not cands:
            return cost
        invalid = [w for w in cands if row[w] < 0]
        if invalid:
            v = invalid[0]
        elif self.policy == "lru":
            v = max(cands, key=self.recency[s].index)
        else:
            while not any(self.rrpv[s][w] == 3 for w in cands):
                for w in cands:
                    self.rrpv[s][w] += 1
            v = next(w for w in cands if self.rrpv[s][w] == 3)
        row[v] = line
        self.sect[s][v] = mask
        self.pers[s][v] = int(newpers)
        if self.policy == "lru":
            self.touch(s, v)
        else:
            ins = 2
            if self.policy == "drrip" and (lead == 2 or (lead == 0 and self.psel >= 512)):
                self.brrip += 1
                if self.brrip % 32:
                    ins = 3
            self.rrpv[s][v] = ins
        return cost

    def run(self, runs: Runs):
        blocking = np.zeros(runs.steps, dtype=np.int64)
        for t in range(runs.steps):
            for i in range(runs.step_start[t], runs.step_start[t + 1]):
                f, n, c = int(runs.first[i]), int(runs.count[i]), int(runs.cls[i])
                for j in range(n):
                    mask = int(runs.m0[i]) if j == 0 else int(runs.m1[i]) if j == n - 1 else 15
                    cost = self.access(f + j, mask, c)
                    self.counts[c] += (1, cost == 0, cost > 0, cost)
                    if c == KV_GATHER:
                        blocking[t] += cost > 0
        return blocking


def random_runs(rng, steps, runs_per_step, span, max_len, sectors=True) -> Runs:
    """Runs over lines [0, span): mostly short, some long (sweeps), random classes/masks."""
    n = steps * runs_per_step
    long = rng.random(n) < 0.15
    count = np.where(long, rng.integers(1, max_len + 1, n), rng.integers(1, 8, n))
    first = rng.integers(0, span, n)
    cls = rng.integers(0, N_CLASSES, n).astype(np.int8)
    if sectors:
        lo = rng.integers(0, 4, n)
        hi = rng.integers(0, 4, n)
        m0 = ((15 << lo) & 15).astype(np.uint8)
        m1 = (15 >> (3 - hi)).astype(np.uint8)
        one = count == 1
        m0[one] = m1[one] = m0[one] & m1[one] | (m0[one] & m1[one] == 0) * 1
    else:
        m0 = np.full(n, 15, np.uint8)
        m1 = m0.copy()
    step_start = np.arange(0, n + 1, runs_per_step, dtype=np.int64)
    return Runs(0, first.astype(np.int64), count.astype(np.int64), cls, m0, m1, step_start)


def make_pair(sets, ways, policy, set_hash, sectors, res_mode, reserve_lines, shortcut_min=0):
    shape = CacheShape(sets, ways)
    res = Reservation(res_mode, reserve_lines * 128).resolve(shape, shape.capacity_bytes)
    eng = LLCEngine(EngineConfig(shape, policy, set_hash, sectors), res, shortcut_min)
    ref = RefLLC(sets, ways, policy, set_hash, sectors, res_mode, res.ways, res.quota)
    return eng, ref


def assert_same_state(eng: LLCEngine, ref: RefLLC, policy):
    np.testing.assert_array_equal(eng.lines(), np.array(ref.tags))
    if eng.config.sectors:
        np.testing.assert_array_equal(eng.sect, np.array(ref.sect))
    if ref.res_mode == "set-aside":
        np.testing.assert_array_equal(eng.pers, np.array(ref.pers))
    if policy == "lru":
        np.testing.assert_array_equal(eng.age, np.array(ref.ages()))
    else:
        np.testing.assert_array_equal(eng.rrpv, np.array(ref.rrpv))


CASES = [
    # sets, ways, reservation, reserved lines (way: multiples of sets)
    (1, 4, "none", 0),
    (4, 3, "none", 0),
    (8, 4, "way", 8),
    (8, 4, "set-aside", 13),
    (16, 2, "set-aside", 16),
    (64, 4, "none", 0),
]


@pytest.mark.parametrize("policy", ["lru", "srrip", "drrip"])
@pytest.mark.parametrize("sets,ways,res_mode,res_lines", CASES)
def test_engine_matches_reference(policy, sets, ways, res_mode, res_lines):
    # crc32, not hash(): str hashes are salted per process, so a failure would not reproduce
    rng = np.random.default_rng(zlib.crc32(repr((policy, sets, ways, res_mode)).encode()))
    for set_hash, sectors in itertools.product(["modulo", "xor"], [False, True]):
        eng, ref = make_pair(sets, ways, policy, set_hash, sectors, res_mode, res_lines)
        runs = random_runs(
            rng, 5, 40, span=sets * ways * 3, max_len=sets * ways * 2, sectors=sectors
        )
        got = eng.run(runs)
        want = ref.run(runs)
        np.testing.assert_array_equal(eng.counters, ref.counts)
        np.testing.assert_array_equal(got, want)
        assert_same_state(eng, ref, policy)
        if policy == "drrip":
            assert eng.st[0] == ref.psel and eng.st[1] == ref.brrip
    assert ref.counts[:, 1].sum() > 0 and ref.counts[:, 2].sum() > 0  # hits and misses seen


def test_drrip_followers_switch_to_brrip():
    # 128 sets: leaders 0, 4, 8, ... (SRRIP) and 1, 5, 9, ... (BRRIP) with spacing 4. A cyclic
    # sweep of 1.5x the cache thrashes SRRIP (all misses), BRRIP keeps part of it: PSEL rises
    # and followers insert at RRPV 3, like BRRIP leaders.
    eng, ref = make_pair(128, 4, "drrip", "modulo", False, "none", 0)
    lines = np.tile(np.arange(128 * 6), 6)
    runs = Runs.from_lines(lines)
    eng.run(runs)
    ref.run(runs)
    np.testing.assert_array_equal(eng.counters, ref.counts)
    assert ref.psel > 512
    assert_same_state(eng, ref, "drrip")
