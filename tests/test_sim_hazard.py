"""The online learned policies `hazard` and `hazard-plus` (sim/policies/hazard.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import BLOCK_TOKENS, INDEX_BYTES, KV_BYTES, make_trace
from dsacache.errors import DsacacheError, TraceError
from dsacache.sim import POLICIES, SimConfig, simulate
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies.base import Counters
from dsacache.sim.policies.hazard import Hazard
from dsacache.sim.simulate import replay
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.blocks import StepBlocks

NAMES = ["hazard", "hazard-plus"]
PARTITIONS = ["global", "per-layer", "pinned:0,2"]

# ------------------------------------------------------------------ plain-Python reference


def reference(trace: Trace, cls: type[Hazard], capacity: int, partition: str) -> list[int]:
    """Hit (1) or miss (0) of every access in access order, by the policy's definition, with
    dicts and lists: per-token (last selection, streak, class), per-region buckets oldest
    first, per-(request, layer) population tables and the hazard tables."""
    g = trace.geometry
    nl, k = g.layers, g.top_k
    part = parse_partition(partition, nl, capacity)
    edges = [round(f * k) for f in cls.rank_edges]
    nq = (len(edges) + 1) * (2 if cls.use_below else 1)
    ns, na, hz = cls.streaks * nq, cls.ages, cls.horizon
    nt = nl if cls.per_layer_tables else 1
    sel = [[[0.0] * na for _ in range(ns)] for _ in range(nt)]
    exp = [[[0.0] * na for _ in range(ns)] for _ in range(nt)]

    def prio(tb: int) -> list[list[float]]:
        out = []
        for c in range(ns):
            haz: list[float] = []
            for a in range(na):
                h = (sel[tb][c][a] + 1.0) / (exp[tb][c][a] + 2.0)
                haz.append(min(h, haz[-1]) if haz else h)
            row = []
            for a in range(na):
                miss = 1.0
                for j in range(hz):
                    miss *= 1.0 - haz[min(a + j, na - 1)]
                row.append(1.0 - miss)
            out.append(row)
        return out

    pr = [prio(tb) for tb in range(nt)]
    last: dict = {}
    streak: dict = {}
    klass: dict = {}
    resident: list[dict] = [{} for _ in range(part.regions)]  # key -> class
    order = [[[] for _ in range(ns)] for _ in range(part.regions)]  # oldest first
    pop: dict = {}
    flags = []
    steps = max(r.steps for r in trace.requests)
    nreq = len(trace.requests)
    for t in range(steps):
        for layer in range(nl):
            p = int(part.of_layer[layer])
            rows = [r.indices[t, layer] for r in trace.requests if t < r.steps]
            rids = [i for i, r in enumerate(trace.requests) if t < r.steps]
            if p < 0 or part.capacity[p] == 0:
                flags += [0] * sum(int((row >= 0).sum()) for row in rows)
                continue
            tb = layer if cls.per_layer_tables else 0
            for r, row in zip(rids, rows, strict=True):
                now = (t * nl + layer) * nreq + r
                xrow = [[0] * na for _ in range(ns)]
                nsel = [0] * ns
                toks = [(s, int(x)) for s, x in enumerate(row) if x >= 0]
                for s, tok in toks:  # pass 1: metadata, residents to their new bucket
                    key = (r, layer, tok)
                    sn = 1
                    if key in last:
                        a = (now - last[key]) // (nl * nreq)
                        xrow[klass[key]][min(a, na) - 1] += 1
                        if a == 1:
                            sn = min(streak[key] + 1, 255)
                    q = sum(s >= e for e in edges)
                    if cls.use_below and last.get((r, layer - 1, tok)) == now - nreq:
                        q += nq // 2  # the layer below picked it at this step
                    b = (min(sn, cls.streaks) - 1) * nq + q
                    last[key], streak[key], klass[key] = now, sn, b
                    nsel[b] += 1
                    if key in resident[p]:
                        order[p][resident[p][key]].remove(key)
                        order[p][b].append(key)
                        resident[p][key] = b
                for _, tok in toks:  # pass 2: gathers
                    key = (r, layer, tok)
                    if key in resident[p]:
                        flags.append(1)
                        continue
                    flags.append(0)
                    b = klass[key]
                    if len(resident[p]) >= part.capacity[p]:
                        best, victim = pr[tb][b][0] * (1.0 - cls.margin), None
                        for vb in range(ns):
                            if not order[p][vb]:
                                continue
                            v = order[p][vb][0]
                            if last[v] == now:
                                continue
                            av = min((now - last[v]) // (nl * nreq) + 1, na)
                            pv = pr[v[1] if cls.per_layer_tables else 0][vb][av - 1]
                            if pv < best:
                                best, victim = pv, v
                        if victim is None:
                            continue
                        order[p][resident[p].pop(victim)].remove(victim)
                    resident[p][key] = b
                    order[p][b].append(key)
                pp = pop.setdefault((r, layer), [[0] * na for _ in range(ns)])
                for c in range(ns):
                    for a in range(na):
                        if toks:  # an empty row ages the population but exposes nothing
                            exp[tb][c][a] += pp[c][a]
                            sel[tb][c][a] += xrow[c][a]
                    tail = pp[c][na - 1] - xrow[c][na - 1]
                    new = [nsel[c]] + [pp[c][a - 1] - xrow[c][a - 1] for a in range(1, na)]
                    new[na - 1] += tail
                    pp[c] = new
                if toks:
                    pr[tb] = prio(tb)
    return flags


def policy_flags(trace: Trace, name: str, capacity: int, partition: str, block=None) -> list:
    """The policy's hit flags in access order (from its hit mask), and its counters."""
    cls = POLICIES[name]
    cls.warmup()
    g = trace.geometry
    kw = {} if block is None else {"block_elements": block}
    blocks = StepBlocks(trace, **kw)
    pol = cls(blocks, parse_partition(partition, g.layers, capacity), g)
    counters = Counters.zeros(g.layers)
    flags = []
    for blk in blocks:
        counters.hit_mask = np.zeros(blk.indices.shape, np.uint8)
        pol.run_block(blk, counters)
        valid = blk.indices >= 0
        flags += counters.hit_mask[valid].tolist()  # C order = step, layer, request, slot
    return flags, counters


def persistent_trace(steps, layers, k, context, requests=1, keep=0.6, seed=0, core=0.0) -> Trace:
    """A random trace where each row keeps a `keep` share of the row before (DSA-like reuse).
    With `core` > 0, that share of each row is a sticky core: each core token stays with
    probability 0.95 (real traces mix long-lived and short-lived selections)."""
    rng = np.random.default_rng(seed)
    n_core = int(core * k)
    reqs = []
    for _ in range(requests):
        ctx = context + np.arange(steps, dtype=np.int64)
        idx = np.full((steps, layers, k), -1, np.int32)
        for layer in range(layers):
            prev = rng.choice(context, size=k, replace=False)
            for t in range(steps):
                sticky = prev[:n_core][rng.random(n_core) < 0.95] if t else prev[:0]
                rest = prev[n_core:]
                n_keep = int(rng.binomial(k - n_core, keep)) if t else 0
                kept = np.concatenate([sticky, rng.permutation(rest)[:n_keep]])
                fresh = np.setdiff1d(np.arange(ctx[t]), kept)
                new = rng.choice(fresh, size=k - kept.size, replace=False)
                n_new_core = n_core - sticky.size
                row = np.concatenate(
                    [sticky, new[:n_new_core], kept[sticky.size :], new[n_new_core:]]
                )
                prev = row.astype(np.int32)
                idx[t, layer] = rng.permutation(prev)
        reqs.append(RequestTrace(idx, ctx))
    geometry = Geometry(layers, k, KV_BYTES, INDEX_BYTES, BLOCK_TOKENS)
    return Trace(reqs, geometry, {"source_model": "test"})


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("capacity", [0, 5, 17, 60])
def test_equals_python_reference(name, partition, capacity):
    trace = persistent_trace(14, 3, 8, 24, requests=2, seed=capacity)
    flags, counters = policy_flags(trace, name, capacity, partition, block=3 * 2 * 8 * 4)
    assert flags == reference(trace, POLICIES[name], capacity, partition)
    assert sum(flags) == counters.hits.sum()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    capacity=st.integers(0, 40),
    steps=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    keep=st.floats(0.0, 1.0),
    name=st.sampled_from(NAMES),
    partition=st.sampled_from(PARTITIONS),
)
def test_equals_python_reference_hypothesis(seed, capacity, steps, keep, name, partition):
    rng = np.random.default_rng(seed)
    trace = make_trace(
        steps,
        3,
        6,
        [int(x) for x in rng.integers(3, 20, len(steps))],
        requests=len(steps),
        seed=seed,
    )
    if keep > 0.5:  # half the examples: DSA-like persistence instead of independent rows
        trace = persistent_trace(max(steps), 3, 6, 12, requests=len(steps), keep=keep, seed=seed)
    flags, _ = policy_flags(trace, name, capacity, partition, block=1 + seed % 200)
    assert flags == reference(trace, POLICIES[name], capacity, partition)


class _PerLayerHorizon(Hazard):
    name = "hazard-test-variant"
    summary = "test"
    per_layer_tables = True
    horizon = 3
    margin = 0.3
    streaks = 3
    ages = 4
    rank_edges = (0.5,)
    use_below = False


def test_variant_knobs_equal_python_reference():
    from dsacache.sim.policies.base import POLICIES as REG

    REG[_PerLayerHorizon.name] = _PerLayerHorizon
    try:
        trace = persistent_trace(16, 3, 8, 20, requests=2, keep=0.7, seed=3)
        for cap in (6, 20):
            flags, _ = policy_flags(trace, _PerLayerHorizon.name, cap, "global", block=200)
            assert flags == reference(trace, _PerLayerHorizon, cap, "global")
    finally:
        del REG[_PerLayerHorizon.name]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("partition", PARTITIONS)
def test_counts_and_min_bound(name, partition):
    trace = persistent_trace(30, 3, 16, 64, requests=2, keep=0.6, seed=7)
    for cap in (4, 16, 48, 96, 200, 1000):
        r = simulate(trace, SimConfig(name, capacity_tokens=cap, partition=partition))
        best = simulate(trace, SimConfig("min", capacity_tokens=cap, partition=partition))
        assert r.hits + r.misses == r.accesses == best.accesses
        assert r.prefetches == 0
        assert best.hits >= r.hits


@pytest.mark.parametrize("name", NAMES)
def test_online_prefix_property(name):
    """Hits on the first n steps of a trace = the first n steps of its hits on the whole trace:
    a policy that peeked at later steps would differ."""
    trace = persistent_trace(24, 3, 12, 40, requests=2, keep=0.6, seed=11)
    full, _ = policy_flags(trace, name, 30, "global")
    for n in (1, 5, 13, 23):
        head = Trace(
            [RequestTrace(r.indices[:n], r.context_lens[:n]) for r in trace.requests],
            trace.geometry,
            trace.meta,
        )
        part, _ = policy_flags(head, name, 30, "global")
        assert part == full[: len(part)]


def test_beats_both_baselines_below_and_above_one_footprint():
    """The point of the policy: below one step's footprint it is not the 0 of token-lru, above
    it not the ceiling of keep-previous."""
    trace = persistent_trace(60, 4, 32, 200, requests=1, keep=0.4, seed=2, core=0.3)
    fp = 4 * 32
    rate = {}
    for name in ("hazard", "token-lru", "keep-previous", "min"):
        rate[name] = [
            simulate(trace, SimConfig(name, capacity_tokens=int(f * fp))).hit_rate
            for f in (0.5, 2.0)
        ]
    assert rate["token-lru"][0] == 0 and rate["hazard"][0] > rate["keep-previous"][0]
    assert rate["hazard"][1] > rate["keep-previous"][1] + 0.05
    assert all(rate["min"][i] >= rate["hazard"][i] for i in range(2))


def test_learns_that_long_streaks_persist():
    """Tokens selected at every step (long streaks) end with a higher priority than tokens
    picked once: the learned table, not a hand-set rule."""
    rng = np.random.default_rng(0)
    steps, k = 40, 8
    idx = np.empty((steps, 1, k), np.int32)
    for t in range(steps):  # tokens 0..3 always; 4 fresh tokens every step
        idx[t, 0, :4] = np.arange(4)
        idx[t, 0, 4:] = 4 + t * 4 + np.arange(4)
        idx[t, 0] = rng.permutation(idx[t, 0])
    ctx = np.full(steps, 4 + 4 * steps, np.int64)
    base = make_trace(1, 1, k, 8)
    trace = Trace([RequestTrace(idx, ctx)], base.geometry, base.meta)
    cls = POLICIES["hazard"]
    cls.warmup()
    blocks = StepBlocks(trace)
    pol = cls(blocks, parse_partition("global", 1, 4), trace.geometry)
    counters = Counters.zeros(1)
    replay(pol, blocks, counters)
    assert pol.prio[0, cls.streaks - 1, 0] > 0.9 > 0.1 > pol.prio[0, 0, 0]
    # with room for exactly the 4 persistent tokens, it keeps them: 4 hits a step after warm-up
    assert counters.hits[0] >= 4 * (steps - 10)


def test_too_long_trace_is_refused(monkeypatch):
    trace = make_trace(3, 2, 4, 8)
    blocks = StepBlocks(trace)
    monkeypatch.setattr(blocks, "steps", 2**30)
    with pytest.raises(DsacacheError, match="steps x layers x requests"):
        POLICIES["hazard"](blocks, parse_partition("global", 2, 4), trace.geometry)


def test_out_of_range_index_is_an_error():
    trace = make_trace(3, 2, 4, 8)
    blocks = StepBlocks(trace)
    pol = POLICIES["hazard"](blocks, parse_partition("global", 2, 4), trace.geometry)
    blk = next(iter(blocks))
    blk.indices[1, 0, 0, 0] = 10_000
    with pytest.raises(TraceError, match="step 1"):
        pol.run_block(blk, Counters.zeros(2))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("partition", ["global", "per-layer"])
def test_llc_token_front_equals_token_simulator(name, partition):
    """`dsacache llc --reservation token --front-policy hazard`: the region in front of the
    shared LLC hits exactly where the token simulator does."""
    from dsacache.sim.llc import LLCConfig, simulate_llc

    sets, ways = 64, 8
    trace = persistent_trace(14, 3, 16, 60, requests=2, keep=0.5, seed=4, core=0.25)
    cfg = LLCConfig(hardware="h100", sets=sets, ways=ways, weights_bytes=20_000,
                    reservation="token", reserve_mib=2 * sets * 128 / 2**20,
                    front_policy=name, front_partition=partition)  # fmt: skip
    res = simulate_llc(trace, cfg, block_elements=100)
    tokens = 2 * sets * 128 // trace.geometry.kv_bytes_per_token
    ref = simulate(trace, SimConfig(name, capacity_tokens=tokens, partition=partition))
    assert 0 < res.token_region.hits == ref.hits
    assert res.token_region.misses == ref.misses


def test_cli_simulate_and_llc_accept_hazard(tmp_path, capsys):
    from dsacache.cli.app import run

    trace = persistent_trace(10, 2, 8, 30, seed=1)
    store = tmp_path / "t.zarr"
    trace.save(store)
    assert run(["simulate", str(store), "--policy", "hazard", "--capacity-tokens", "8",
                "--json"]) == 0  # fmt: skip
    assert '"policy": "hazard"' in capsys.readouterr().out
    args = ["llc", str(store), "--sets", "64", "--ways", "8", "--weights-mib", "0.02",
            "--reservation", "token", "--front-policy", "hazard-plus",
            "--reserve-mib", "0.01"]  # fmt: skip
    assert run(args) == 0


@pytest.mark.parametrize("name", NAMES)
def test_empty_rows_age_the_population(name):
    """A row whose slots are all empty is still a step for the row time; the population tables
    must age with it (they once went negative here) and match the reference."""
    trace = make_trace(5, 2, 2, 2, seed=2385)  # k=2, 20 % padding: some rows are all -1
    assert any((r.indices < 0).all(axis=-1).any() for r in trace.requests)
    for cap in range(0, 10):
        flags, _ = policy_flags(trace, name, cap, "global")
        assert flags == reference(trace, POLICIES[name], cap, "global")
    blocks = StepBlocks(trace)
    pol = POLICIES[name](blocks, parse_partition("global", 2, 3), trace.geometry)
    replay(pol, blocks, Counters.zeros(2))
    assert (pol.pop >= 0).all() and (pol.exp >= 0).all()
