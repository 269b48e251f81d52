"""The policies `min`, `line-lru` and `near-miss`, and the synthetic near-miss model."""

from __future__ import annotations

import functools
import json
from collections import OrderedDict

import libcachesim as lcs
import numpy as np
import pytest

from conftest import make_trace, reference_accesses
from dsacache.errors import DsacacheError
from dsacache.sim import POLICIES, SimConfig, simulate
from dsacache.sim.partition import Partition, parse_partition
from dsacache.sim.policies import belady
from dsacache.sim.policies.base import NO_RULES, Counters, RowRules, TokenPolicy
from dsacache.sim.policies.line_lru import line_areas
from dsacache.sim.simulate import replay
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.blocks import StepBlocks
from dsacache.trace.export_libcachesim import export_libcachesim
from dsacache.trace.synth import synthesize
from dsacache.trace.synth_near_miss import near_miss_for

PARTITIONS = ["global", "per-layer", "pinned:0,2"]
NO_BYPASS = RowRules(no_bypass=True)  # MIN as demand paging, libCacheSim's Belady

# ------------------------------------------------------------------ helpers


def drive(
    cls: type[TokenPolicy],
    trace: Trace,
    capacity: int,
    partition: str = "global",
    block_elements: int | None = None,
    rules: RowRules = NO_RULES,
) -> tuple[Counters, TokenPolicy]:
    """Run a policy without simulate() (any block size, row rules); return its counters and
    itself."""
    g = trace.geometry
    kw = {} if block_elements is None else {"block_elements": block_elements}
    blocks = StepBlocks(trace, near_miss=cls.uses_near_miss, **kw)
    policy = cls(blocks, parse_partition(partition, g.layers, capacity), g, rules)
    counters = Counters.zeros(g.layers, lines=cls.counts_lines)
    replay(policy, blocks, counters)
    return counters, policy


def accesses(trace: Trace) -> list[tuple[int, int, int, int]]:
    """(step, layer, request, token) of every access, in access order."""
    return reference_accesses(trace)


def by_region(trace: Trace, part: Partition) -> dict[int, list[tuple[int, int, int]]]:
    """Key sequence (request, layer, token) of each region; bypassed layers left out."""
    seqs: dict[int, list] = {}
    for _, layer, r, tok in accesses(trace):
        p = int(part.of_layer[layer])
        if p >= 0:
            seqs.setdefault(p, []).append((r, layer, tok))
    return seqs


def next_uses(seq: list) -> list[float]:
    nxt, last = [0.0] * len(seq), {}
    for i in range(len(seq) - 1, -1, -1):
        nxt[i] = last.get(seq[i], float("inf"))
        last[seq[i]] = i
    return nxt


def py_lru_misses(seq: list, cap: int) -> int:
    cache: OrderedDict = OrderedDict()
    misses = 0
    for x in seq:
        if x in cache:
            cache.move_to_end(x)
            continue
        misses += 1
        if cap <= 0:
            continue
        cache[x] = None
        if len(cache) > cap:
            cache.popitem(last=False)
    return misses


def py_min_misses(seq: list, cap: int, bypass: bool = True) -> int:
    """Belady's MIN, textbook: evict the furthest next use; with bypass the incoming key is a
    candidate too."""
    nxt = next_uses(seq)
    cache: dict = {}
    misses = 0
    for i, x in enumerate(seq):
        if x in cache:
            cache[x] = nxt[i]
            continue
        misses += 1
        if cap <= 0:
            continue
        if len(cache) < cap:
            cache[x] = nxt[i]
            continue
        far = max(cache, key=cache.__getitem__)
        if bypass and nxt[i] >= cache[far]:
            continue
        del cache[far]
        cache[x] = nxt[i]
    return misses


def brute_force_misses(seq: list, cap: int) -> int:
    """The optimum by exhaustive search: at every miss, bypass or insert (evicting any key)."""

    @functools.cache
    def best(i: int, held: frozenset) -> int:
        if i == len(seq):
            return 0
        x = seq[i]
        if x in held:
            return best(i + 1, held)
        options = [best(i + 1, held)]  # bypass
        if cap > 0:
            if len(held) < cap:
                options.append(best(i + 1, held | {x}))
            else:
                options.extend(best(i + 1, (held - {y}) | {x}) for y in held)
        return 1 + min(options)

    return best(0, frozenset())


def trace_of(rows: list[list[list[int]]], context: int, geometry: Geometry) -> Trace:
    """One request from nested rows [step][layer][slot] (-1 = empty), fixed context."""
    idx = np.array(rows, dtype=np.int32)
    return Trace([RequestTrace(idx, np.full(idx.shape[0], context))], geometry)


def sim(trace: Trace, policy: str, cap: int, part: str = "global"):
    # near-miss takes its source explicitly: here the trace's rows whenever it has them
    source = None
    if policy == "near-miss":
        has = any(r.near_miss is not None for r in trace.requests)
        source = "trace" if has else "layer-below"
    return simulate(trace, SimConfig(policy, cap, None, part, near_miss_source=source))


@pytest.fixture(scope="module")
def random_trace() -> Trace:
    # Two requests of different lengths, 3 layers, k=8, small contexts: lots of reuse.
    return make_trace([30, 22], layers=3, k=8, context=[12, 20], requests=2, seed=5)


# ------------------------------------------------------------------ min


def test_min_hand_case_bypass_beats_demand_paging():
    g = Geometry(1, 1, 656, 132, 4)
    a, b, c = 0, 1, 2
    trace = trace_of([[[x]] for x in (a, b, c, a, b, a, b)], 3, g)
    # Capacity 2. With bypass: A, B miss; C is used never again -> bypassed; A B A B hit.
    res = sim(trace, "min", 2)
    assert (res.hits, res.misses) == (4, 3)
    # Demand paging: C evicts B (next use 4, furthest); B then misses and evicts C.
    counters, _ = drive(POLICIES["min"], trace, 2, rules=NO_BYPASS)
    assert (int(counters.hits.sum()), int(counters.misses.sum())) == (3, 4)


def test_min_hand_case_per_layer():
    g = Geometry(2, 2, 656, 132, 4)
    rows = [
        [[0, 1], [0, -1]],
        [[2, 0], [1, 0]],
        [[1, 2], [0, 1]],
        [[0, -1], [2, -1]],
    ]
    trace = trace_of(rows, 3, g)
    # per-layer, 4 tokens -> 2 per layer.
    # layer 0: 0 1 | 2 0 | 1 2 | 0.  misses 0,1; 2 (next 5) vs held 0@3,1@4 -> bypass; 0 hit
    #   (next 6); 1 hit (never); 2: held 0@6, 1@never -> evict 1; 0 hit.  -> 4 hits, 3 misses
    # layer 1: 0 | 1 0 | 0 1 | 2.  miss 0; miss 1; 0 hit; 0 hit; 1 hit; 2 miss -> 3 hits, 3 misses
    res = sim(trace, "min", 4, "per-layer")
    assert res.per_layer_hits.tolist() == [3, 3]
    assert res.per_layer_misses.tolist() == [4, 3]


@pytest.mark.parametrize("seed", range(12))
def test_min_equals_brute_force_optimum_on_tiny_traces(seed):
    rng = np.random.default_rng(seed)
    layers = 1 + seed % 2  # 4 steps x k=3 or 3 steps x 2 layers x k=2: <= 12 accesses
    steps, k = (4, 3) if layers == 1 else (3, 2)
    trace = make_trace(steps, layers=layers, k=k, context=4, seed=seed, pad=0.1)
    for part in ("global", "per-layer"):
        p = parse_partition(part, layers, 0)
        seqs = by_region(trace, p)
        assert sum(len(s) for s in seqs.values()) <= 12
        for cap in sorted({1, 2, 3, int(rng.integers(1, 6))}):
            res = sim(trace, "min", cap * layers if part == "per-layer" else cap, part)
            want = sum(brute_force_misses(s, cap) for s in seqs.values())
            assert res.misses == want, (part, cap)


@pytest.mark.parametrize("part", PARTITIONS)
def test_min_matches_python_min_and_bounds_every_policy(random_trace, part):
    n = random_trace.count_accesses()
    layers = random_trace.geometry.layers
    bypassed = sum(1 for _, layer, _, _ in accesses(random_trace) if layer == 1)
    demand = ["token-lru", "fifo", "keep-previous", "hazard", "hazard-plus"]
    assert set(demand) | {"min", "line-lru", "near-miss"} == set(POLICIES)
    gaps = 0
    for cap in (0, 6, 24, 60, 200):
        p = parse_partition(part, layers, cap)
        want = sum(
            py_min_misses(s, int(p.capacity[q])) for q, s in by_region(random_trace, p).items()
        )
        if part.startswith("pinned"):
            want += bypassed
        res = sim(random_trace, "min", cap, part)
        assert res.misses == want and res.hits + res.misses == res.accesses == n
        for other in demand:
            assert res.misses <= sim(random_trace, other, cap, part).misses, other
        lru = sim(random_trace, "token-lru", cap, part).misses
        gaps += lru - res.misses
        # A prefetching policy fetches at least as many tokens as MIN misses.
        nm = sim(random_trace, "near-miss", cap, part)
        assert res.misses <= nm.misses + nm.prefetches
    assert gaps > 0  # MIN is strictly better somewhere: the comparison can fail


def test_min_across_many_blocks_and_lazy_store(random_trace, tmp_path):
    ref = [sim(random_trace, "min", cap).misses for cap in (5, 30)]
    for block_elements in (1, 3 * 2 * 8 * 3):  # one step per block; three steps per block
        got = [
            int(drive(POLICIES["min"], random_trace, cap, block_elements=block_elements)[0]
                .misses.sum())
            for cap in (5, 30)
        ]  # fmt: skip
        assert got == ref
    store = tmp_path / "t.dsa"
    random_trace.save(store, chunk_steps=4)
    lazy = Trace.load(store, lazy=True)
    assert [sim(lazy, "min", cap).misses for cap in (5, 30)] == ref


def test_min_without_bypass_equals_libcachesim_belady(random_trace, tmp_path):
    out = tmp_path / "t.oracleGeneral"
    n = export_libcachesim(random_trace, out, object_size=1)
    seq = [(r, layer, tok) for _, layer, r, tok in accesses(random_trace)]
    differs = False
    for cap in (4, 16, 64):
        reader = lcs.TraceReader(trace=str(out), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
        ratio = lcs.Belady(cache_size=cap, hashpower=12).process_trace(reader)[0]
        counters, _ = drive(POLICIES["min"], random_trace, cap, rules=NO_BYPASS)
        misses = int(counters.misses.sum())
        assert misses == round(ratio * n) == py_min_misses(seq, cap, bypass=False)
        with_bypass = sim(random_trace, "min", cap).misses
        assert with_bypass <= misses
        differs |= with_bypass < misses
    assert differs  # bypass matters on this trace


def test_min_out_of_range_index_is_an_error():
    g = Geometry(1, 2, 656, 132, 4)
    bad = np.array([[[0, 1]], [[5, -1]]], np.int32)
    trace = Trace([RequestTrace(bad, np.array([2, 2]))], g, validate=False)
    with pytest.raises(DsacacheError, match="out of range at step 1"):
        sim(trace, "min", 2)


# ------------------------------------------------------------------ line-lru


def line_reference(trace: Trace, capacity: int, part: str) -> tuple[list[int], ...]:
    """Per-layer (hits, misses, line hits, line misses) of an OrderedDict LRU over line ids,
    the lines computed from the layout the module documents (pages, rows packed)."""
    g = trace.geometry
    kv, bt, layers = g.kv_bytes_per_token, g.block_tokens, g.layers
    p = parse_partition(part, layers, capacity)
    # Areas in request -> layer order, each rounded up to whole 128-byte lines.
    base, pos = {}, 0
    for r, req in enumerate(trace.requests):
        for layer in range(layers):
            base[r, layer] = pos
            pos += -(-req.max_context * kv // 128) * 128
    caches = [OrderedDict() for _ in range(p.regions)]
    caps = [int(c) * kv // 128 for c in p.capacity]
    out = tuple([0] * layers for _ in range(4))
    for _, layer, r, tok in accesses(trace):
        start = base[r, layer] + (tok // bt) * bt * kv + (tok % bt) * kv
        lines = range(start // 128, (start + kv - 1) // 128 + 1)
        q = int(p.of_layer[layer])
        if q < 0:
            out[1][layer] += 1
            out[3][layer] += len(lines)
            continue
        all_hit = True
        for line in lines:
            cache = caches[q]
            if line in cache:
                cache.move_to_end(line)
                out[2][layer] += 1
                continue
            all_hit = False
            out[3][layer] += 1
            if caps[q] > 0:
                cache[line] = None
                if len(cache) > caps[q]:
                    cache.popitem(last=False)
        out[0 if all_hit else 1][layer] += 1
    return out


def test_line_layout_hand_case():
    # kv = 656 B: token 0 is bytes [0, 656) = lines 0..5, token 1 [656, 1312) = lines 5..10.
    g = Geometry(1, 1, 656, 132, 4)
    trace = trace_of([[[0]], [[1]], [[0]]], 2, g)
    counters, _ = drive(POLICIES["line-lru"], trace, 100)
    assert counters.line_misses.tolist() == [6 + 5]  # line 5 is shared: a hit for token 1
    assert counters.line_hits.tolist() == [1 + 6]
    assert (counters.hits.tolist(), counters.misses.tolist()) == ([1], [2])
    # Areas start on whole lines: 3 tokens x 100 B = 300 B -> 384 B per (request, layer).
    area, total = line_areas(np.array([3, 1]), 2, 100)
    assert area.tolist() == [[0, 384], [768, 896]] and total == 1024


@pytest.mark.parametrize("part", PARTITIONS)
@pytest.mark.parametrize("kv,bt", [(656, 4), (100, 3), (64, 2)])
def test_line_lru_equals_python_line_lru(part, kv, bt):
    g = Geometry(3, 6, kv, 132, bt)
    trace = make_trace([14, 9], layers=3, k=6, context=[10, 7], requests=2, seed=kv, geometry=g)
    for cap in (0, 3, 10, 40):
        counters, pol = drive(POLICIES["line-lru"], trace, cap, part)
        hits, misses, lhits, lmisses = line_reference(trace, cap, part)
        assert counters.hits.tolist() == hits and counters.misses.tolist() == misses
        assert counters.line_hits.tolist() == lhits
        assert counters.line_misses.tolist() == lmisses
        res = sim(trace, "line-lru", cap, part)
        assert res.misses == sum(misses)
        d = res.to_dict()
        assert d["per_layer"]["line_misses"] == lmisses and d["line_hits"] == sum(lhits)
        assert d["bytes"]["kv_gather_hbm"] == 128 * sum(lmisses)
        assert d["bytes"]["kv_gather_reserved"] == 128 * sum(lhits)


@pytest.mark.parametrize("part", PARTITIONS)
def test_line_lru_equals_token_lru_when_rows_are_whole_lines(random_trace, part):
    g = Geometry(3, 8, 384, 132, 5)  # 3 lines per token, rows never share a line
    trace = Trace(random_trace.requests, g)
    for cap in (0, 4, 17, 50, 400):
        line = sim(trace, "line-lru", cap, part)
        tok = sim(trace, "token-lru", cap, part)
        assert line.per_layer_hits.tolist() == tok.per_layer_hits.tolist()
        assert line.per_layer_misses.tolist() == tok.per_layer_misses.tolist()
        counters, _ = drive(POLICIES["line-lru"], trace, cap, part)
        assert (counters.line_hits + counters.line_misses).sum() == 3 * line.accesses
        # Whole-line rows: line bytes are token bytes.
        assert line.to_dict()["bytes"] == tok.to_dict()["bytes"]


def test_shared_lines_make_line_lru_hit_more():
    # kv = 64 B: tokens 2i and 2i+1 share a line. Capacity 2 tokens = 1 line.
    g = Geometry(1, 1, 64, 132, 4)
    trace = trace_of([[[x]] for x in (0, 1, 0, 1, 2, 3)], 4, g)
    assert sim(trace, "token-lru", 2).misses == 4  # 0 1 miss, 0 1 hit, 2 3 miss
    line = sim(trace, "line-lru", 2)
    assert (line.hits, line.misses) == (4, 2)  # 1 rides on 0's line, 3 on 2's
    # Random traces with half-line rows: line-lru hits more than token-lru.
    g = Geometry(2, 8, 64, 132, 4)
    trace = make_trace(30, layers=2, k=8, context=24, seed=3, geometry=g)
    for cap in (8, 20):
        assert sim(trace, "line-lru", cap).hits > sim(trace, "token-lru", cap).hits


# ------------------------------------------------------------------ near-miss


def near_reference(trace: Trace, capacity: int, part: str) -> tuple[list[int], ...]:
    """Per-layer (hits, misses, prefetches) of the documented near-miss policy, in Python."""
    g = trace.geometry
    layers = g.layers
    p = parse_partition(part, layers, capacity)
    caches = [OrderedDict() for _ in range(p.regions)]
    has_near = any(r.near_miss is not None for r in trace.requests)
    out = tuple([0] * layers for _ in range(3))

    def insert(q: int, key: tuple) -> None:
        cache = caches[q]
        cache[key] = None
        if len(cache) > int(p.capacity[q]):
            cache.popitem(last=False)

    idx = [np.asarray(r.indices[:]) for r in trace.requests]
    near = [None if r.near_miss is None else np.asarray(r.near_miss[:]) for r in trace.requests]
    for t in range(trace.steps):
        for layer in range(layers):
            q = int(p.of_layer[layer])
            for r in range(len(idx)):
                if t >= idx[r].shape[0]:
                    continue
                store = q >= 0 and p.capacity[q] > 0
                if store and not has_near and layer > 0:
                    for tok in idx[r][t, layer - 1]:
                        if tok >= 0 and (r, layer, tok) not in caches[q]:
                            insert(q, (r, layer, tok))
                            out[2][layer] += 1
                for tok in idx[r][t, layer]:
                    if tok < 0:
                        continue
                    key = (r, layer, tok)
                    if q >= 0 and key in caches[q]:
                        caches[q].move_to_end(key)
                        out[0][layer] += 1
                        continue
                    out[1][layer] += 1
                    if store:
                        insert(q, key)
                if store and near[r] is not None:
                    for tok in near[r][t, layer]:
                        if tok >= 0 and (r, layer, tok) not in caches[q]:
                            insert(q, (r, layer, tok))
                            out[2][layer] += 1
    return out


def test_near_miss_hand_case_trace_source():
    g = Geometry(1, 2, 656, 132, 4)
    idx = np.array([[[0, 1]], [[2, 3]], [[0, 2]], [[1, -1]]], np.int32)
    near = np.array([[[2]], [[1]], [[3]], [[0]]], np.int32)
    trace = Trace([RequestTrace(idx, np.full(4, 4), near)], g)
    # Capacity 3, list MRU first:
    # t0: 0 1 miss [1 0]; prefetch 2 [2 1 0]
    # t1: 2 hit [2 1 0]; 3 miss, evicts 0 [3 2 1]; near 1 resident: not touched [3 2 1]
    # t2: 0 miss, evicts 1 [0 3 2]; 2 hit [2 0 3]; near 3 resident [2 0 3]
    # t3: 1 miss, evicts 3 [1 2 0]; near 0 resident.
    res = sim(trace, "near-miss", 3)
    assert (res.hits, res.misses, res.prefetches) == (2, 5, 1)
    counters, pol = drive(POLICIES["near-miss"], trace, 3)
    assert pol.source == "trace" and counters.prefetches.tolist() == [1]
    # Had near 1 been touched at t1 (moved to MRU), 0 would have evicted 2 at t2 and 2 would
    # have missed. token-lru alone: 2 misses at t1 too -> one hit.
    assert sim(trace, "token-lru", 3).hits == 1


def test_near_miss_hand_case_layer_below_source():
    g = Geometry(2, 2, 656, 132, 4)
    rows = [[[0, 1], [1, 2]], [[3, -1], [3, 0]]]
    trace = trace_of(rows, 4, g)
    # Global, capacity 10 (nothing evicted).
    # t0 l0: 0 1 miss. l1: prefetch l0's {0, 1} for layer 1 (2 prefetches); 1 hit, 2 miss.
    # t1 l0: 3 miss. l1: prefetch {3} (1); 3 hit, 0 resident since t0: hit.
    res = sim(trace, "near-miss", 10)
    assert res.per_layer_hits.tolist() == [0, 3]
    assert res.per_layer_misses.tolist() == [3, 1]
    assert res.per_layer_prefetches.tolist() == [0, 3]
    _, pol = drive(POLICIES["near-miss"], trace, 10)
    assert pol.source == "layer-below"


@pytest.mark.parametrize("part", PARTITIONS)
@pytest.mark.parametrize("m", [0, 3])
def test_near_miss_equals_python_reference(part, m):
    trace = make_trace([20, 13], layers=3, k=6, context=[14, 9], requests=2, near_miss=m, seed=m)
    if m == 0:  # make_trace leaves near_miss None for m=0: add width-0 arrays
        trace = Trace(
            [
                RequestTrace(r.indices, r.context_lens, np.zeros((r.steps, 3, 0), np.int32))
                for r in trace.requests
            ],
            trace.geometry,
        )
    plain = Trace([RequestTrace(r.indices, r.context_lens) for r in trace.requests], trace.geometry)
    for tr in (trace, plain):
        for cap in (0, 5, 18, 60):
            res = sim(tr, "near-miss", cap, part)
            hits, misses, pre = near_reference(tr, cap, part)
            assert res.per_layer_hits.tolist() == hits
            assert res.per_layer_misses.tolist() == misses
            assert res.per_layer_prefetches.tolist() == pre
            assert res.hits + res.misses == res.accesses == tr.count_accesses()
    for cap in (5, 18):  # m = 0 (or no near-miss slots at all): exactly token-lru
        if m == 0:
            lru = sim(trace, "token-lru", cap, part)
            res = sim(trace, "near-miss", cap, part)
            assert (res.misses, res.prefetches) == (lru.misses, 0)
        else:
            assert sim(trace, "near-miss", cap, part).prefetches > 0
        assert sim(plain, "near-miss", cap, part).prefetches > 0


def perfect_near(idx: np.ndarray) -> np.ndarray:
    """Near-miss rows that are exactly the next step's new lookups S(t+1) \\ S(t)."""
    steps, layers, k = idx.shape
    near = np.full(idx.shape, -1, np.int32)
    for t in range(steps - 1):
        for layer in range(layers):
            new = np.setdiff1d(idx[t + 1, layer], idx[t, layer])
            near[t, layer, : len(new)] = new
    return near


def test_perfect_prefetch_leaves_only_cold_misses():
    rng = np.random.default_rng(0)
    steps, layers, k, ctx = 25, 2, 5, 400
    g = Geometry(layers, k, 656, 132, 4)
    # (a) Each step keeps some of the previous top-k and adds never-seen tokens.
    idx = np.empty((steps, layers, k), np.int32)
    fresh = 0
    for layer in range(layers):
        row = np.arange(fresh, fresh + k)
        fresh += k
        for t in range(steps):
            idx[t, layer] = row
            keep = rng.choice(row, int(rng.integers(0, k)), replace=False)
            row = rng.permutation(np.concatenate([keep, np.arange(fresh, fresh + k - len(keep))]))
            fresh += k - len(keep)
    trace = Trace([RequestTrace(idx, np.full(steps, ctx), perfect_near(idx))], g)
    # Per layer 2k tokens hold the current top-k plus the prefetched next new lookups.
    res = sim(trace, "near-miss", 2 * k * layers, "per-layer")
    assert res.per_layer_misses.tolist() == [k] * layers  # step 0 only
    assert sim(trace, "token-lru", 2 * k * layers, "per-layer").misses > 10 * k * layers
    # Only k per layer: the prefetches push out tokens kept from step to step.
    assert sim(trace, "near-miss", k * layers, "per-layer").misses > 2 * k * layers
    # (b) Random selections from a small context, a region as large as the context: LRU
    # misses every token's first use, near-miss only step 0.
    idx = np.stack(
        [np.stack([rng.choice(30, k, replace=False) for _ in range(layers)]) for _ in range(steps)]
    ).astype(np.int32)
    trace = Trace([RequestTrace(idx, np.full(steps, 30), perfect_near(idx))], g)
    assert sim(trace, "near-miss", 30 * layers, "per-layer").misses == k * layers
    distinct = sum(len(np.unique(idx[:, layer])) for layer in range(layers))
    assert sim(trace, "token-lru", 30 * layers, "per-layer").misses == distinct > 4 * k * layers


# ------------------------------------------------------------------ synthetic near-miss rows


def test_near_miss_for_gives_valid_rows():
    g = Geometry(3, 16, 656, 132, 4)
    trace = synthesize(g, 40, 200, seed=1, requests=2)
    near = near_miss_for(trace, 12, hit_share=0.5, seed=3)
    # Valid: Trace validation checks distinct, < context, disjoint from the top-k row.
    with_near = Trace(
        [
            RequestTrace(r.indices, r.context_lens, n)
            for r, n in zip(trace.requests, near, strict=True)
        ],
        g,
    )
    assert all(n.shape == (40, 3, 12) and n.dtype == np.int32 for n in near)
    assert all((n[:-1] >= 0).all() for n in near)  # plenty of context: every slot filled
    # About half of each row is selected at the next step.
    for req, n in zip(trace.requests, near, strict=True):
        nxt = 0
        for t in range(39):
            for layer in range(3):
                nxt += len(np.intersect1d(n[t, layer], req.indices[t + 1, layer]))
        share = nxt / (39 * 3 * 12)
        assert 0.4 < share < 0.6  # 6 drawn from S(t+1) \ S(t) when it has 6
    assert all(
        np.array_equal(a, b) for a, b in zip(near, near_miss_for(trace, 12, 0.5, 3), strict=True)
    )
    # hit_share = 1: rows start with min(m, |S(t+1) \ S(t)|) tokens of S(t+1) \ S(t).
    full = near_miss_for(trace, 4, hit_share=1.0)[0]
    idx, ctx = trace.requests[0].indices, trace.requests[0].context_lens
    whole = 0
    for t in range(39):
        new = {x for x in set(idx[t + 1, 0]) - set(idx[t, 0]) if 0 <= x < ctx[t]}
        n = min(4, len(new))
        assert set(full[t, 0, :n].tolist()) <= new
        assert not set(full[t, 0, n:].tolist()) & new or n == 4
        whole += n == 4
    assert whole > 20
    assert with_near.requests[0].near_miss is near[0]


def test_near_miss_for_small_context_and_errors():
    g = Geometry(1, 3, 656, 132, 4)
    trace = trace_of([[[0, 1, -1]], [[2, 0, 1]]], 4, g)
    near = near_miss_for(trace, 5)[0]
    # Step 0: context 4, top-k {0, 1}: only 2 and 3 remain.
    assert sorted(near[0, 0][near[0, 0] >= 0].tolist()) == [2, 3]
    assert (near[0, 0] == -1).sum() == 3
    Trace([RequestTrace(trace.indices, trace.context_lens, near)], g)  # validates
    assert near_miss_for(trace, 0)[0].shape == (2, 1, 0)
    for bad in ({"m": -1}, {"m": 2, "hit_share": 1.5}, {"m": 2.0}):
        with pytest.raises(DsacacheError):
            near_miss_for(trace, **bad)


def test_near_miss_on_synthetic_trace_beats_token_lru():
    g = Geometry(2, 32, 656, 132, 16)
    trace = synthesize(g, 60, 400, seed=2)
    near = near_miss_for(trace, 16, hit_share=0.5, seed=2)
    trace = Trace([RequestTrace(trace.indices, trace.context_lens, near[0])], g)
    cap = 4 * 32 * 2
    nm, lru = sim(trace, "near-miss", cap), sim(trace, "token-lru", cap)
    assert nm.hits > lru.hits and nm.prefetches > 0


# ------------------------------------------------------------------ line-lru traffic, min bound


def test_line_lru_reports_line_traffic(tmp_path, capsys):
    # kv = 64 B: tokens 2i and 2i+1 share line i. Capacity 4 tokens = 256 B = 2 lines.
    # Accesses 0 1 2 3 0 1 2 3: lines 0 0 1 1 0 0 1 1 -> 2 line misses (256 B from HBM),
    # 6 line hits; tokens 0 and 2 miss (128 B if counted as token rows: wrong).
    from dsacache.cli.app import run

    g = Geometry(1, 1, 64, 132, 4)
    trace = trace_of([[[x]] for x in (0, 1, 2, 3, 0, 1, 2, 3)], 4, g)
    res = sim(trace, "line-lru", 4)
    assert (res.hits, res.misses, res.line_hits, res.line_misses) == (6, 2, 6, 2)
    assert (res.hbm_bytes, res.reserved_bytes) == (256, 768)
    store = tmp_path / "t.zarr"
    trace.save(store)
    argv = ["simulate", str(store), "--policy", "line-lru", "--capacity-tokens", "4"]
    assert run([*argv, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["bytes"]["kv_gather_hbm"] == 256 and d["bytes"]["kv_gather_reserved"] == 768
    assert (d["line_hits"], d["line_misses"], d["line_bytes"]) == (6, 2, 128)
    assert d["per_layer"]["line_misses"] == [2]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "256 B" in out and "6 / 2" in out


def test_min_does_not_bound_line_lru_when_lines_hold_neighbours():
    # kv = 64 B, capacity 2 tokens = 1 line: line-lru fetches token 1 with token 0 (same line).
    g = Geometry(1, 1, 64, 132, 4)
    trace = trace_of([[[x]] for x in (0, 1, 0, 1)], 4, g)
    assert sim(trace, "line-lru", 2).misses == 1
    assert sim(trace, "min", 2).misses == 2  # MIN over whole tokens: both cold misses


@pytest.mark.parametrize("part", PARTITIONS)
@pytest.mark.parametrize("kv,bt", [(128, 4), (256, 3), (384, 5)])
def test_min_bounds_line_lru_when_rows_are_whole_lines(random_trace, part, kv, bt):
    trace = Trace(random_trace.requests, Geometry(3, 8, kv, 132, bt))
    for cap in (0, 3, 10, 40, 400):
        assert sim(trace, "min", cap, part).misses <= sim(trace, "line-lru", cap, part).misses


# ------------------------------------------------------------------ min's next-use storage


def test_min_next_use_is_uint32_and_widens_past_the_limit(random_trace, monkeypatch):
    cls = POLICIES["min"]
    blocks = StepBlocks(random_trace, block_elements=3 * 2 * 8 * 2)  # two steps per block
    policy = cls(blocks, parse_partition("global", 3, 20), random_trace.geometry)
    for block in blocks.reversed():
        policy.prepare_block(block)
    assert {a.dtype for a in policy._next.values()} == {np.dtype(np.uint32)}
    policy.prepare()
    assert {a.dtype for a in policy._next.values()} == {np.dtype(np.uint32)}
    ref = {cap: sim(random_trace, "min", cap).misses for cap in (5, 20)}
    # Lower the uint32 limit so the pass outgrows it midway: every array widens to int64.
    monkeypatch.setattr(belady, "SMALL_LIMIT", random_trace.count_accesses() // 2)
    for cap in (5, 20):
        counters, pol = drive(cls, random_trace, cap, block_elements=3 * 2 * 8 * 2)
        assert int(counters.misses.sum()) == ref[cap]
    monkeypatch.setattr(belady, "SMALL_LIMIT", 0)  # int64 from the start
    for cap in (5, 20):
        assert sim(random_trace, "min", cap).misses == ref[cap]
    blocks = StepBlocks(random_trace)
    policy = cls(blocks, parse_partition("global", 3, 20), random_trace.geometry)
    for block in blocks.reversed():
        policy.prepare_block(block)
    assert {a.dtype for a in policy._next.values()} == {np.dtype(np.int64)}
