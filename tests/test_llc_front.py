"""The `token` reservation: a token-level region in front of the shared LLC (sim/llc/front.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_trace
from dsacache.cli.app import run
from dsacache.errors import DsacacheError
from dsacache.sim import SimConfig, simulate
from dsacache.sim.llc import LLCConfig, simulate_llc
from dsacache.sim.llc.stream import CLASSES, KV_GATHER
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies import POLICIES, Counters
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.blocks import StepBlocks

SETS, WAYS = 64, 8
WAY_MIB = SETS * 128 / 2**20


@pytest.fixture(scope="module")
def trace() -> Trace:
    g = Geometry(3, 16, 192, 132, 4)  # 192-byte rows: 2 or 3 lines each
    return make_trace([12, 9], layers=3, k=16, context=[60, 40], requests=2, seed=5, geometry=g)


def token_cfg(ways: float, **kw) -> LLCConfig:
    base = dict(
        hardware="h100",
        sets=SETS,
        ways=WAYS,
        weights_bytes=20_000,
        reservation="token",
        reserve_mib=ways * WAY_MIB,
    )
    return LLCConfig(**{**base, **kw})


@pytest.mark.parametrize("policy", ["token-lru", "fifo", "keep-previous"])
@pytest.mark.parametrize("partition", ["global", "per-layer", "pinned:0,2"])
@pytest.mark.parametrize("ways", [1, 3])
def test_region_equals_token_simulator(trace, policy, partition, ways):
    res = simulate_llc(
        trace, token_cfg(ways, front_policy=policy, front_partition=partition), block_elements=80
    )
    tokens = ways * SETS * 128 // trace.geometry.kv_bytes_per_token
    ref = simulate(trace, SimConfig(policy, capacity_tokens=tokens, partition=partition))
    tr = res.token_region
    assert 0 < tr.hits and tr.hits == ref.hits and tr.misses == ref.misses
    assert tr.region_misses.sum() == ref.misses
    np.testing.assert_array_equal(res.blocking_per_step.sum(), res.counters[KV_GATHER, 2])
    assert res.reservation.ways == ways and tr.shared_ways == WAYS - ways
    assert tr.capacity_tokens == ref.effective_tokens


def test_hit_mask_matches_counters(trace):
    cls = POLICIES["token-lru"]
    cls.warmup()
    blocks = StepBlocks(trace, 100)
    pol = cls(blocks, parse_partition("per-layer", 3, 90), trace.geometry)
    counters = Counters.zeros(3)
    for blk in blocks:
        before = counters.hits.copy()
        counters.hit_mask = np.zeros(blk.indices.shape, np.uint8)
        pol.run_block(blk, counters)
        per_layer = counters.hit_mask.sum(axis=(0, 2, 3))
        np.testing.assert_array_equal(per_layer, counters.hits - before)
        assert not counters.hit_mask[blk.indices < 0].any()
    assert counters.hits.sum() > 0


def test_zero_reserve_is_a_region_of_nothing(trace):
    # Decision: --reserve-mb 0 is valid: 0 ways, 0 tokens, every gather misses the region and
    # goes on to the shared LLC, which keeps all its ways: the same as --reservation none.
    res = simulate_llc(trace, token_cfg(0))
    tr = res.token_region
    accesses = sum(int((r.indices >= 0).sum()) for r in trace.requests)
    assert tr.ways == 0 and tr.shared_ways == WAYS and tr.capacity_tokens == 0
    assert tr.hits == 0 and tr.misses == accesses
    none = simulate_llc(trace, token_cfg(0, reservation="none"))
    np.testing.assert_array_equal(res.counters, none.counters)
    np.testing.assert_array_equal(res.blocking_per_step, none.blocking_per_step)
    assert res.counters[KV_GATHER, 1] > 0  # the shared LLC serves some gathers


def _region_misses_only(trace: Trace, tokens: int, policy: str = "token-lru") -> Trace:
    """The trace with every gather the region (global, `tokens`) hits blanked out."""
    cls = POLICIES[policy]
    cls.warmup()
    blocks = StepBlocks(trace, 10**9)
    pol = cls(blocks, parse_partition("global", trace.geometry.layers, tokens), trace.geometry)
    counters = Counters.zeros(trace.geometry.layers)
    blk = blocks.read(0, trace.steps)
    counters.hit_mask = np.zeros(blk.indices.shape, np.uint8)
    pol.run_block(blk, counters)
    hit = counters.hit_mask.view(bool)
    reqs = []
    for r, q in enumerate(trace.requests):
        n = q.indices.shape[0]
        reqs.append(RequestTrace(np.where(hit[:n, :, r], -1, q.indices), q.context_lens))
    return Trace(reqs, trace.geometry)


@pytest.mark.parametrize("policy", ["lru", "srrip"])
def test_shared_llc_sees_the_region_misses(trace, policy):
    # The region is checked before the shared LLC: the shared LLC replays the ordinary stream
    # with only the region's misses gathered (independently built here from the token policy).
    r = 3
    res = simulate_llc(trace, token_cfg(r, policy=policy), block_elements=80)
    tokens = r * SETS * 128 // trace.geometry.kv_bytes_per_token
    plain = simulate_llc(
        _region_misses_only(trace, tokens),
        LLCConfig(sets=SETS, ways=WAYS - r, weights_bytes=20_000, policy=policy),
        block_elements=80,
    )
    others = [c for c in range(len(CLASSES)) if c != KV_GATHER]
    np.testing.assert_array_equal(res.counters[others], plain.counters[others])
    np.testing.assert_array_equal(res.counters[KV_GATHER, 2:], plain.counters[KV_GATHER, 2:])
    np.testing.assert_array_equal(res.blocking_per_step, plain.blocking_per_step)
    assert plain.counters[KV_GATHER, 1] > 0  # some region misses hit the shared LLC
    assert res.shape.ways == WAYS and res.to_dict()["llc"]["ways"] == WAYS


def test_recent_token_reuse_not_worse_than_way():
    # Each step gathers the token appended the step before (step t appends token ctx[t] - 1,
    # so that is ctx[t] - 2): the append put its line in the LLC, so the shared LLC serves the
    # region's misses (a region that bypassed the LLC got 0 hits).
    T = 20
    ctx = 64 + np.arange(T)
    idx = (ctx - 2).astype(np.int32).reshape(T, 1, 1)
    tr = Trace.from_arrays(idx, ctx, Geometry(1, 1, 656, 132, 64))
    base = dict(sets=64, ways=8, weights_bytes=0, reserve_mib=64 * 128 / 2**20)
    way = simulate_llc(tr, LLCConfig(**base, reservation="way"))
    tok = simulate_llc(tr, LLCConfig(**base, reservation="token"))
    assert tok.counters[KV_GATHER, 1] >= way.counters[KV_GATHER, 1] > 100
    assert tok.blocking_per_step.sum() <= way.blocking_per_step.sum()
    assert tok.to_dict()["blocking_unit"] == way.to_dict()["blocking_unit"] == "lines"


def test_hand_computed():
    # One layer, one request, k=2; 256-byte rows = 2 aligned lines each. Reserve 600 B in a
    # 1-set cache: rounded down to 4 ways = 512 B = 2 tokens. token-lru:
    #   step 0: 0 miss, 1 miss            order (MRU first) 1 0
    #   step 1: 1 hit, 2 miss (evicts 0)  order 2 1
    #   step 2: 0 miss (evicts 1), 2 hit  order 2 0
    idx = np.array([[[0, 1]], [[1, 2]], [[0, 2]]], dtype=np.int32)
    tr = Trace.from_arrays(idx, np.full(3, 4), Geometry(1, 2, 256, 132, 16))
    cfg = LLCConfig(sets=1, ways=8, weights_bytes=0, reservation="token", reserve_mib=600 / 2**20)
    res = simulate_llc(tr, cfg)
    d = res.to_dict()
    assert d["reservation"]["effective_bytes"] == 512 and d["reservation"]["ways"] == 4
    assert d["reservation"]["requested_bytes"] == 600
    t = d["token_region"]
    assert (t["capacity_tokens"], t["hits"], t["misses"], t["shared_ways"]) == (2, 2, 4, 4)
    assert t["misses_per_step"] == [2, 1, 1] and d["blocking_unit"] == "lines"
    # The 4 missed rows (8 lines) go to the shared LLC (4 ways of one set). Every step first
    # scans the 4 index keys (528 B: 5 lines) and ends by appending token 3's row (2 lines) and
    # index key (1-2 lines), so the missed rows are never resident: 8 line misses.
    g = d["classes"]["kv-gather"]
    assert (g["accesses"], g["hits"], g["misses"], g["hbm_bytes"]) == (12, 4, 8, 1024)
    assert t["hbm_bytes"] == 1024 and d["gather_misses_per_step"] == [4, 2, 2]


def test_rounds_down_to_whole_ways():
    # the one rule for every reservation: down to the unit, requested and effective both kept
    _, _, res = token_cfg(WAYS - 0.5).resolve()
    assert res.ways == WAYS - 1
    assert res.effective_bytes == (WAYS - 1) * SETS * 128
    assert res.requested_bytes == int((WAYS - 0.5) * WAY_MIB * 2**20) > res.effective_bytes
    _, _, way = token_cfg(2.5, reservation="way").resolve()
    assert (way.ways, way.effective_bytes) == (2, 2 * SETS * 128)


def test_errors(trace):
    with pytest.raises(DsacacheError, match="leave at least one"):
        token_cfg(WAYS).resolve()
    with pytest.raises(DsacacheError, match="less than one way"):
        token_cfg(0.99).resolve()  # rounds down to no way at all
    with pytest.raises(DsacacheError, match="cannot report per-access hits"):
        token_cfg(1, front_policy="min").resolve()
    with pytest.raises(DsacacheError, match="unknown front policy"):
        token_cfg(1, front_policy="nope").resolve()
    with pytest.raises(DsacacheError, match="kv-gather only"):
        token_cfg(1, reserved_classes=("weights",)).resolve()
    with pytest.raises(DsacacheError, match="partition"):
        simulate_llc(trace, token_cfg(1, front_partition="pinned:7"))


def test_cli(tmp_path, trace, capsys):
    store = tmp_path / "t.zarr"
    trace.save(store, chunk_steps=4)
    args = ["llc", str(store), "--sets", str(SETS), "--ways", str(WAYS), "--weights-mb", "0.02"]
    args += ["--reservation", "token", "--reserve-mb", str(2 * WAY_MIB)]
    assert run(args + ["--json", "--front-partition", "per-layer"]) == 0
    d = json.loads(capsys.readouterr().out)
    t = d["token_region"]
    cap = 2 * SETS * 128 // 192
    ref = simulate(trace, SimConfig("token-lru", capacity_tokens=cap, partition="per-layer"))
    assert (t["hits"], t["misses"]) == (ref.hits, ref.misses)
    assert t["policy"] == "token-lru" and t["partition"] == "per-layer" and t["ways"] == 2
    assert t["hit_rate"] == ref.hits / ref.accesses
    assert run(args + ["--json", "--steps", "5"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["steps"] == 5 and len(d["gather_misses_per_step"]) == 5
    assert sum(d["gather_misses_per_step"]) == d["classes"]["kv-gather"]["misses"]
    assert sum(d["token_region"]["misses_per_step"]) == d["token_region"]["misses"]
    assert run(args) == 0
    assert "token region: token-lru" in capsys.readouterr().out
    assert run(args + ["--front-policy", "min"]) == 2
    err = capsys.readouterr().err.strip()
    assert "min" in err and "\n" not in err


def test_front_policies_are_those_that_report_hits_and_the_help_lists_them(capsys):
    from dsacache.sim.llc.front import front_policies

    able = front_policies()
    assert {"token-lru", "fifo", "keep-previous", "hazard", "hazard-plus"} <= set(able)
    assert "min" not in able and all(POLICIES[n].emits_hit_mask for n in able)
    with pytest.raises(DsacacheError, match="cannot report per-access hits"):
        LLCConfig(reservation="token", reserve_mib=1, front_policy="min").resolve()
    assert run(["llc", "--help"]) == 0
    # rich wraps the help inside a box: compare with every space and box edge taken out
    help_text = "".join(capsys.readouterr().out.replace("\u2502", " ").split())
    assert "reportsper-accesshits:" + ",".join(able) + ")" in help_text
