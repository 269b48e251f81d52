"""The token-level driver and the token-lru, fifo and keep-previous policies.

Pure-Python references replay the same access order (step -> layer -> request -> slot) for every
policy and partition; hypothesis checks the invariants; small cases are worked by hand.
"""

from __future__ import annotations

import importlib
import json
from collections import OrderedDict
from functools import partial

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_trace, slow_block_reads
from dsacache.cli.app import run
from dsacache.errors import DsacacheError, TraceError
from dsacache.sim import POLICIES, SimConfig, SimResult, simulate
from dsacache.sim.config import mb_to_mib
from dsacache.sim.partition import parse_partition
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.blocks import StepBlocks

# The module (the package's `simulate` attribute is the function of that name).
simulate_module = importlib.import_module("dsacache.sim.simulate")

MINE = ("token-lru", "fifo", "keep-previous")

# ------------------------------------------------------------------ references in pure Python


def access_rows(trace: Trace):
    """(step, layer, request, [valid tokens in slot order]) in access order."""
    idx = [np.asarray(r.indices[:]) for r in trace.requests]
    for t in range(trace.steps):
        for layer in range(trace.geometry.layers):
            for r, a in enumerate(idx):
                if t < a.shape[0]:
                    yield t, layer, r, [int(v) for v in a[t, layer] if v >= 0]


def reference(trace: Trace, policy: str, cap: int, spec: str = "global"):
    """Per-layer (hits, misses) lists of `policy` by plain dicts."""
    layers = trace.geometry.layers
    part = parse_partition(spec, layers, cap)
    hits, misses = [0] * layers, [0] * layers
    if policy == "keep-previous":
        # Each step's share goes to the requests that still have that step.
        active = [sum(1 for r in trace.requests if r.steps > t) for t in range(trace.steps)]

        def quota(t: int, layer: int) -> int:
            p = int(part.of_layer[layer])
            if p < 0:
                return 0
            members = int((part.of_layer == p).sum())
            return int(part.capacity[p]) // (members * active[t])

        kept: dict[tuple[int, int], tuple[int, set]] = {}
        for t, layer, r, toks in access_rows(trace):
            step, prev = kept.get((r, layer), (-2, set()))
            held = prev if step == t - 1 else set()
            for tok in toks:
                if tok in held:
                    hits[layer] += 1
                else:
                    misses[layer] += 1
            kept[(r, layer)] = (t, set(toks[: quota(t, layer)]))
        return hits, misses
    regions = [OrderedDict() for _ in range(part.regions)]
    for _, layer, r, toks in access_rows(trace):
        p = int(part.of_layer[layer])
        for tok in toks:
            if p < 0:
                misses[layer] += 1
                continue
            store, key = regions[p], (r, layer, tok)
            if key in store:
                hits[layer] += 1
                if policy == "token-lru":
                    store.move_to_end(key)
                continue
            misses[layer] += 1
            if part.capacity[p] == 0:
                continue
            if len(store) >= part.capacity[p]:
                store.popitem(last=False)
            store[key] = None
    return hits, misses


def distinct_keys(trace: Trace) -> int:
    return len({(r, layer, tok) for _, layer, r, toks in access_rows(trace) for tok in toks})


# ------------------------------------------------------------------ against the references


@pytest.fixture(scope="module")
def batch_trace() -> Trace:
    return make_trace([25, 40, 9], layers=4, k=12, context=[16, 50, 30], requests=3, seed=4)


@pytest.mark.parametrize("policy", MINE)
@pytest.mark.parametrize("spec", ["global", "per-layer", "pinned:0,2", "pinned:3"])
def test_matches_reference(batch_trace, policy, spec):
    results = set()
    for cap in (0, 1, 5, 20, 40, 100, 150, 250, 400, 5000):
        res = simulate(batch_trace, SimConfig(policy, capacity_tokens=cap, partition=spec))
        hits, misses = reference(batch_trace, policy, cap, spec)
        assert res.per_layer_hits.tolist() == hits, f"capacity {cap}"
        assert res.per_layer_misses.tolist() == misses, f"capacity {cap}"
        assert res.hits == sum(hits) and res.misses == sum(misses)
        assert res.capacity_tokens == cap and res.partition == spec and res.prefetches == 0
        results.add(res.hits)
    assert len(results) >= 4


@pytest.mark.parametrize("policy", MINE)
def test_block_boundaries_and_lazy_store_do_not_matter(batch_trace, policy, tmp_path, monkeypatch):
    cfg = SimConfig(policy, capacity_tokens=60, partition="per-layer")
    whole = simulate(batch_trace, cfg)
    store = tmp_path / "t.zarr"
    batch_trace.save(store, chunk_steps=3)
    lazy = Trace.load(store, lazy=True)
    # One step per block: policy state must carry across every block boundary.
    monkeypatch.setattr(simulate_module, "StepBlocks", partial(StepBlocks, block_elements=1))
    done: list[int] = []
    split = simulate(lazy, cfg, progress=done.append)
    assert len(done) == batch_trace.steps and sum(done) == batch_trace.steps
    assert split.per_layer_hits.tolist() == whole.per_layer_hits.tolist()
    assert split.per_layer_misses.tolist() == whole.per_layer_misses.tolist()


# ------------------------------------------------------------------ hand-worked cases


def hand_trace() -> Trace:
    # 1 request, 2 layers, k=3; rows: step 0, 1, 2
    idx = np.array(
        [
            [[5, 1, 2], [0, 3, -1]],
            [[1, 5, 4], [-1, 3, 0]],
            [[4, 2, 1], [3, 6, 7]],
        ],
        dtype=np.int32,
    )
    return Trace([RequestTrace(idx, [8, 8, 8])], Geometry(2, 3, 656, 132, 64))


@pytest.mark.parametrize(
    ("cap", "spec", "hits", "misses"),
    [
        # Whole previous selection kept (6 >= 2 layers x 1 request x k=3). Step 1: layer 0 hits
        # 1 and 5, misses 4; layer 1 hits 3 and 0. Step 2: layer 0 hits 4 and 1 and misses 2
        # (chosen at step 0, dropped at step 1); layer 1 hits 3, misses 6 and 7.
        (6, "global", [4, 3], [5, 4]),
        # quota floor(2 / (2 x 1)) = 1: each (request, layer) keeps its first valid entry:
        # layer 0 keeps 5, 1 (step 0, 1); layer 1 keeps 0 (step 0) and 3 (step 1: slot 0 is -1).
        (2, "global", [2, 2], [7, 5]),
        (2, "per-layer", [2, 2], [7, 5]),  # 1 token per layer region
        (5, "global", [3, 3], [6, 4]),  # quota 2: layer 0 keeps {5,1}, {1,5}; layer 1 as full
        (6, "pinned:1", [0, 3], [9, 4]),  # layer 0 bypasses the region
        (0, "global", [0, 0], [9, 7]),
    ],
)
def test_keep_previous_by_hand(cap, spec, hits, misses):
    res = simulate(hand_trace(), SimConfig("keep-previous", capacity_tokens=cap, partition=spec))
    assert res.per_layer_hits.tolist() == hits
    assert res.per_layer_misses.tolist() == misses


def test_keep_previous_quota_goes_to_the_requests_still_running():
    # Request 0 runs 1 step, request 1 runs 3; one layer, k=2, capacity 2 tokens.
    # Step 0: 2 requests share 2 -> 1 token each; request 1 keeps 0 (its first valid entry).
    # Step 1: only request 1 is left: it may keep 2 -> hits 0 (kept at step 0), misses 1;
    # keeps {0, 1}. Step 2: hits 0 and 1. A quota over ALL requests (1 token at every step)
    # would keep only 0 and miss 1 at step 2: 2 hits, not 3.
    short = np.array([[[3, 2]]], dtype=np.int32)
    long = np.array([[[0, 3]], [[0, 1]], [[1, 0]]], dtype=np.int32)
    trace = Trace(
        [RequestTrace(short, [4]), RequestTrace(long, [4, 4, 4])], Geometry(1, 2, 656, 132, 64)
    )
    res = simulate(trace, SimConfig("keep-previous", capacity_tokens=2))
    assert (res.hits, res.misses) == (3, 5)
    assert reference(trace, "keep-previous", 2) == ([3], [5])


def test_lru_and_fifo_by_hand():
    # One layer, one request: 0 1 | 0 2 | 1 0 with room for 2 tokens.
    idx = np.array([[[0, 1]], [[0, 2]], [[1, 0]]], dtype=np.int32)
    trace = Trace([RequestTrace(idx, [3, 3, 3])], Geometry(1, 2, 656, 132, 64))
    # LRU: m m | h m(evicts 1) | m(evicts 0) m  -> 1 hit
    # FIFO: m m | h m(evicts 0) | h m(evicts 1) -> 2 hits
    assert simulate(trace, SimConfig("token-lru", capacity_tokens=2)).hits == 1
    assert simulate(trace, SimConfig("fifo", capacity_tokens=2)).hits == 2
    assert simulate(trace, SimConfig("keep-previous", capacity_tokens=2)).hits == 2


def test_pinned_layers_only_use_the_region(batch_trace):
    res = simulate(batch_trace, SimConfig("token-lru", capacity_tokens=10**6, partition="pinned:1"))
    _, all_misses = reference(batch_trace, "token-lru", 0)
    for layer in (0, 2, 3):
        assert res.per_layer_hits[layer] == 0
        assert res.per_layer_misses[layer] == all_misses[layer]
    assert res.per_layer_hits[1] > 0


# ------------------------------------------------------------------ properties

trace_params = st.fixed_dictionaries(
    {
        "steps": st.integers(1, 12),
        "layers": st.integers(1, 3),
        "k": st.integers(1, 8),
        "context": st.integers(1, 20),
        "requests": st.integers(1, 3),
        "seed": st.integers(0, 2**16),
        "pad": st.sampled_from([0.0, 0.3]),
    }
)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _trace(p: dict) -> Trace:
    return make_trace(
        p["steps"], p["layers"], p["k"], p["context"], p["requests"], seed=p["seed"], pad=p["pad"]
    )


@FAST
@given(
    trace_params,
    st.sampled_from(MINE),
    st.integers(0, 60),
    st.sampled_from(["global", "per-layer", "pinned:0"]),
)
def test_hits_plus_misses_is_accesses(p, policy, cap, spec):
    trace = _trace(p)
    res = simulate(trace, SimConfig(policy, capacity_tokens=cap, partition=spec))
    assert res.hits + res.misses == res.accesses == trace.count_accesses()
    assert (res.per_layer_hits + res.per_layer_misses).sum() == res.accesses
    assert res.hit_rate == (res.hits / res.accesses if res.accesses else 0.0)


@FAST
@given(
    trace_params, st.integers(0, 40), st.integers(1, 40), st.sampled_from(["global", "per-layer"])
)
def test_lru_inclusion(p, cap, extra, spec):
    trace = _trace(p)
    small = simulate(trace, SimConfig("token-lru", capacity_tokens=cap, partition=spec))
    big = simulate(trace, SimConfig("token-lru", capacity_tokens=cap + extra, partition=spec))
    assert (big.per_layer_misses <= small.per_layer_misses).all()


@FAST
@given(trace_params, st.sampled_from(["token-lru", "fifo"]), st.integers(0, 5))
def test_room_for_everything_only_cold_misses(p, policy, slack):
    trace = _trace(p)
    n = distinct_keys(trace)
    res = simulate(trace, SimConfig(policy, capacity_tokens=n + slack))
    assert res.misses == n
    per = SimConfig(policy, capacity_tokens=(n + slack) * p["layers"], partition="per-layer")
    assert simulate(trace, per).misses == n


# ------------------------------------------------------------------ config, result, errors


def test_capacity_mib_is_floored():
    g = Geometry(2, 3, 656, 132, 64)
    assert SimConfig("fifo", capacity_mib=1).tokens(g) == 2**20 // 656 == 1598
    assert SimConfig("fifo", capacity_mib=0.5).tokens(g) == 2**19 // 656
    assert SimConfig("fifo", capacity_mib=0).tokens(g) == 0
    assert SimConfig("fifo", capacity_tokens=7).tokens(g) == 7
    assert SimConfig("fifo", capacity_tokens=np.int64(7)).tokens(g) == 7  # numpy ints too
    assert SimConfig("fifo", capacity_mib=np.float32(1.0)).tokens(g) == 1598
    res = simulate(hand_trace(), SimConfig("token-lru", capacity_mib=0.001))
    assert res.capacity_tokens == int(0.001 * 2**20) // 656 == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "lru", "capacity_tokens": 5}, "unknown policy 'lru' \\(known: .*token-lru"),
        ({"policy": "fifo", "capacity_tokens": -1}, "-1"),
        ({"policy": "fifo", "capacity_mib": -0.5}, "-0.5"),
        ({"policy": "fifo", "capacity_mib": float("nan")}, "nan"),
        ({"policy": "fifo", "capacity_tokens": 5, "capacity_mib": 1.0}, "exactly one"),
        ({"policy": "fifo"}, "exactly one"),
        ({"policy": "fifo", "capacity_tokens": 2.5}, "2.5"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(DsacacheError, match=message):
        SimConfig(**kwargs)


@pytest.mark.parametrize("spec", ["pinned:2", "pinned:-1", "pinned:x", "pinned:", "ring"])
def test_bad_partition(spec):
    with pytest.raises(DsacacheError, match="partition"):
        simulate(hand_trace(), SimConfig("token-lru", capacity_tokens=4, partition=spec))


@pytest.mark.parametrize("policy", MINE)
def test_out_of_range_index_is_a_trace_error(policy):
    idx = np.array([[[0, 1]], [[1, 9]]], dtype=np.int32)  # 9 >= every context length
    trace = Trace([RequestTrace(idx, [2, 3])], Geometry(1, 2, 656, 132, 64), validate=False)
    with pytest.raises(TraceError, match="step 1"):
        simulate(trace, SimConfig(policy, capacity_tokens=4))


def test_policies_registered_with_summaries():
    for name in MINE:
        assert POLICIES[name].name == name and POLICIES[name].summary


def test_result_to_dict_is_json():
    res = simulate(hand_trace(), SimConfig("keep-previous", capacity_tokens=6))
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert isinstance(res, SimResult)
    assert (d["accesses"], d["hits"], d["misses"]) == (16, 7, 9)
    assert d["hit_rate"] == 7 / 16 and isinstance(d["engine_seconds"], float)
    assert d["bytes"] == {
        "kv_gather_reserved": 7 * 656,
        "kv_gather_hbm": 9 * 656,
        "prefetch_hbm": 0,
    }
    assert d["per_layer"]["hits"] == [4, 3] and d["per_layer"]["misses"] == [5, 4]
    assert (d["policy"], d["partition"], d["capacity_tokens"]) == ("keep-previous", "global", 6)
    assert d["effective_capacity_tokens"] == 6 and "line_hits" not in d
    empty = Trace([RequestTrace(np.full((2, 2, 3), -1, np.int32), [4, 4])], hand_trace().geometry)
    assert simulate(empty, SimConfig("token-lru", capacity_tokens=3)).hit_rate == 0.0


# ------------------------------------------------------------------ CLI


@pytest.fixture
def store(tmp_path, batch_trace):
    path = tmp_path / "t.zarr"
    batch_trace.save(path, chunk_steps=8)
    return path


def test_cli_json(store, batch_trace, capsys):
    argv = ["simulate", str(store), "--policy", "token-lru", "--capacity-tokens", "40", "--json"]
    assert run(argv + ["--partition", "per-layer"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("accesses", "hits", "misses", "hit_rate", "engine_seconds", "bytes", "per_layer"):
        assert key in d
    hits, misses = reference(batch_trace, "token-lru", 40, "per-layer")
    assert d["per_layer"]["hits"] == hits and d["misses"] == sum(misses)
    assert d["bytes"]["kv_gather_hbm"] == sum(misses) * 656


def test_cli_table_and_mb(store, capsys):
    assert run(["simulate", str(store), "--policy", "fifo", "--capacity-mb", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "fifo" in out and "hit rate" in out and f"{2**20 // 10 // 656:,} tokens" in out


@pytest.mark.parametrize(
    "extra",
    [
        ["--policy", "nope", "--capacity-tokens", "3"],
        ["--policy", "fifo", "--capacity-tokens", "-3"],
        ["--policy", "fifo", "--capacity-tokens", "3", "--capacity-mb", "1"],
        ["--policy", "fifo"],
        ["--policy", "fifo", "--capacity-tokens", "3", "--partition", "pinned:9"],
    ],
)
def test_cli_bad_config(store, capsys, extra):
    assert run(["simulate", str(store), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsacache: error:") and err.count("\n") == 1


def test_cli_help_lists_policies():
    from typer.testing import CliRunner

    from dsacache.cli.app import _register_commands, app

    _register_commands()
    res = CliRunner().invoke(app, ["simulate", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for name, cls in POLICIES.items():
        assert name in text and " ".join(cls.summary.split()) in text


def test_per_layer_reports_the_effective_capacity():
    # 2 layers: 7 tokens asked, floor(7 / 2) = 3 per layer, 6 held.
    res = simulate(hand_trace(), SimConfig("token-lru", capacity_tokens=7, partition="per-layer"))
    d = res.to_dict()
    assert (d["capacity_tokens"], d["effective_capacity_tokens"]) == (7, 6)
    assert d["effective_capacity_mib"] == 6 * 656 / 2**20
    assert d["capacity_mib"] == 7 * 656 / 2**20


# ------------------------------------------------------------------ engine time


@pytest.mark.parametrize("policy", ["token-lru", "min", "line-lru", "keep-previous"])
def test_engine_seconds_exclude_reading_the_blocks(batch_trace, policy, monkeypatch):
    """Reading a block (decompressing, interleaving) is I/O, not engine time: make every read
    sleep and check the engine clock does not see it (min reads the trace twice)."""
    cfg = SimConfig(policy, capacity_tokens=60)
    simulate(batch_trace, cfg)  # compiled / loaded before the clock matters
    reads = slow_block_reads(monkeypatch, simulate_module)
    res = simulate(batch_trace, cfg)
    slept = 0.02 * len(reads)
    assert len(reads) >= batch_trace.steps and slept >= 0.8
    assert res.engine_seconds < 0.25 * slept, (res.engine_seconds, slept)


# ------------------------------------------------------------------ huge capacities


@pytest.mark.parametrize(
    "extra",
    [
        ["--policy", "token-lru", "--capacity-tokens", "99999999999999999999"],
        ["--policy", "token-lru", "--capacity-tokens", str(2**62 // 656 + 1)],
        ["--policy", "line-lru", "--capacity-tokens", str(2**62 // 656 + 1)],
        ["--policy", "min", "--capacity-mb", "1e300"],
        ["--policy", "keep-previous", "--capacity-mb", "1e300", "--partition", "per-layer"],
    ],
)
def test_cli_huge_capacity_is_one_line_error(store, capsys, extra):
    assert run(["simulate", str(store), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsacache: error:") and "too large" in err and err.count("\n") == 1


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_cli_large_capacity_below_the_limit_runs(store, batch_trace, capsys, policy):
    # 2**62 // 656 - 1 tokens: far more than the key space, so every policy holds everything.
    cap = str(2**62 // 656 - 1)
    for part in ("global", "per-layer"):
        argv = ["simulate", str(store), "--policy", policy, "--capacity-tokens", cap]
        if policy == "near-miss":
            argv += ["--near-miss-source", "layer-below"]
        assert run([*argv, "--partition", part, "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        if policy in ("token-lru", "fifo", "min"):
            assert d["misses"] == distinct_keys(batch_trace)


def test_huge_capacity_python_api():
    with pytest.raises(DsacacheError, match="too large"):
        SimConfig("token-lru", capacity_tokens=2**62)
    with pytest.raises(DsacacheError, match="too large"):
        SimConfig("token-lru", capacity_mib=2.0**42)
    with pytest.raises(DsacacheError, match="too large"):
        SimConfig("token-lru", capacity_tokens=2**62 // 656 + 1).tokens(hand_trace().geometry)
    with pytest.raises(DsacacheError, match="too large"):
        parse_partition("global", 2, 10**20)


# ------------------------------------------------------------------ units and near-miss source


def test_requested_and_effective_capacity_reported(batch_trace):
    # 0.01 MiB of 656 B rows: floor(10485.76 / 656) = 15 tokens; per-layer over 4 layers: 3 each
    res = simulate(batch_trace, SimConfig("fifo", capacity_mib=0.01, partition="per-layer"))
    d = res.to_dict()
    assert d["requested_capacity_mib"] == 0.01
    assert d["capacity_tokens"] == 15 and d["effective_capacity_tokens"] == 12
    assert d["effective_capacity_mib"] == 12 * 656 / 2**20 < d["capacity_mib"] < 0.01
    assert d["near_miss_source"] is None
    tok = simulate(batch_trace, SimConfig("fifo", capacity_tokens=15)).to_dict()
    assert tok["requested_capacity_mib"] is None and tok["capacity_tokens"] == 15


def test_mb_to_mib_reads_the_paper_s_mb():
    assert mb_to_mib(5) == pytest.approx(4.768, abs=5e-4)  # the paper's 5 MB
    assert mb_to_mib(20) == pytest.approx(19.073, abs=5e-4)
    assert mb_to_mib(2**20 / 1e6) == pytest.approx(1.0)


def test_near_miss_source_is_explicit():
    trace = make_trace([6, 4], layers=2, k=3, context=[9, 7], requests=2, near_miss=2, seed=8)
    plain = Trace([RequestTrace(r.indices, r.context_lens) for r in trace.requests], trace.geometry)
    with pytest.raises(DsacacheError, match="near-miss needs its prefetch source"):
        SimConfig("near-miss", capacity_tokens=5)
    with pytest.raises(DsacacheError, match="for the near-miss policy only"):
        SimConfig("token-lru", capacity_tokens=5, near_miss_source="trace")
    with pytest.raises(DsacacheError, match="needs near-miss rows"):
        simulate(plain, SimConfig("near-miss", 5, near_miss_source="trace"))
    # the same trace, both sources: layer-below ignores the rows (equal to the plain trace)
    below = simulate(trace, SimConfig("near-miss", 5, near_miss_source="layer-below"))
    rows = simulate(trace, SimConfig("near-miss", 5, near_miss_source="trace"))
    same = simulate(plain, SimConfig("near-miss", 5, near_miss_source="layer-below"))
    assert below.to_dict()["near_miss_source"] == "layer-below"
    assert rows.to_dict()["near_miss_source"] == "trace"
    assert (below.hits, below.prefetches) == (same.hits, same.prefetches)
    assert (rows.hits, rows.prefetches) != (below.hits, below.prefetches)


def test_cli_near_miss_source(store, capsys):
    base = ["simulate", str(store), "--policy", "near-miss", "--capacity-mb", "0.01"]
    assert run(base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--near-miss-source" in err
    assert run([*base, "--near-miss-source", "layer-below", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["near_miss_source"] == "layer-below" and d["requested_capacity_mib"] == 0.01
