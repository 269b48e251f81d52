"""Miss-ratio curves (sim/mrc.py): Mattson's stack distances against exact LRU at every size."""

from __future__ import annotations

import json
from collections import OrderedDict

import libcachesim as lcs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_trace, reference_accesses, slow_block_reads
from dsacache.cli.app import run
from dsacache.errors import DsacacheError, TraceError
from dsacache.sim import mrc as mrc_mod
from dsacache.sim.config import SimConfig
from dsacache.sim.mrc import MissRatioCurve, mrc
from dsacache.sim.simulate import simulate
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.export_libcachesim import export_libcachesim

# ------------------------------------------------------------------ references in pure Python


def accesses(trace: Trace) -> list[tuple[int, int, int]]:
    """(request, layer, token) of every access, step -> layer -> request -> slot."""
    return [(r, layer, tok) for _t, layer, r, tok in reference_accesses(trace)]


def lru_hits(keys: list, cap: int) -> int:
    cache: OrderedDict = OrderedDict()
    hits = 0
    for o in keys:
        if o in cache:
            cache.move_to_end(o)
            hits += 1
            continue
        cache[o] = None
        if len(cache) > cap:
            cache.popitem(last=False)
    return hits


def reference_hits(trace: Trace, partition: str, capacity: int) -> int:
    """Token-LRU hits of simulate's partitions, one OrderedDict per region."""
    acc = accesses(trace)
    layers = trace.geometry.layers
    if partition == "global":
        return lru_hits(acc, capacity)
    if partition == "per-layer":
        return sum(
            lru_hits([a for a in acc if a[1] == lay], capacity // layers) for lay in range(layers)
        )
    pinned = {int(x) for x in partition.split(":")[1].split(",")}
    return lru_hits([a for a in acc if a[1] in pinned], capacity)


def layer_trace(trace: Trace, layer: int) -> Trace:
    """The accesses of one layer as a one-layer trace (same order)."""
    g = trace.geometry
    reqs = [
        RequestTrace(np.asarray(r.indices[:, layer : layer + 1]), r.context_lens)
        for r in trace.requests
    ]
    return Trace(
        reqs, Geometry(1, g.top_k, g.kv_bytes_per_token, g.index_bytes_per_token, g.block_tokens)
    )


def libcachesim_lru_hits(trace: Trace, capacities: list[int], path) -> list[int]:
    n = export_libcachesim(trace, path, object_size=1)
    out = []
    for cap in capacities:
        if cap == 0:
            out.append(0)
            continue
        reader = lcs.TraceReader(trace=str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
        miss_ratio = lcs.LRU(cache_size=cap, hashpower=12).process_trace(reader)[0]
        out.append(n - round(miss_ratio * n))
    return out


@pytest.fixture(scope="module")
def batch_trace() -> Trace:
    # Two requests of different lengths, 3 layers, k=12, ~20 % padding: ~1.5 K accesses.
    return make_trace([30, 21], layers=3, k=12, context=[30, 16], requests=2, seed=11)


# ------------------------------------------------------------------ (1) by hand


def test_hand_computed_distances():
    # Access order 0 1 2 | 2 0 | 1 3 2 (one layer). Stack distances (1 + distinct keys since
    # the previous access): inf inf inf | 1 3 | 3 inf 4.
    idx = np.array([[[0, 1, 2]], [[2, 0, -1]], [[1, 3, 2]]], dtype=np.int32)
    trace = Trace.from_arrays(idx, np.array([4, 4, 4]), Geometry(1, 3, 656, 132, 64))
    c = mrc(trace)
    assert (c.accesses, c.cold_misses, c.bypassed) == (8, 4, 0)
    assert c.capacities_tokens.tolist() == [1, 3, 4]
    assert c.hits.tolist() == [1, 3, 4]
    assert [c.hits_at(cap) for cap in range(7)] == [0, 1, 1, 3, 4, 4, 4]
    assert c.hit_rate_at(3) == 3 / 8
    assert [lru_hits([0, 1, 2, 2, 0, 1, 3, 2], cap) for cap in range(7)] == [0, 1, 1, 3, 4, 4, 4]


def test_hand_computed_partitions():
    # step 0: layer 0 [0, 1], layer 1 [0, -]; step 1: layer 0 [1, 0], layer 1 [0, 1].
    # Keys a=(L0,0) b=(L0,1) c=(L1,0) d=(L1,1); order a b c | b a c d.
    idx = np.array([[[0, 1], [0, -1]], [[1, 0], [0, 1]]], dtype=np.int32)
    trace = Trace.from_arrays(idx, np.array([2, 2]), Geometry(2, 2, 1024, 132, 64))
    g = mrc(trace)  # distances inf inf inf | 2 3 3 inf
    assert [g.hits_at(cap) for cap in range(5)] == [0, 0, 1, 3, 3]
    assert g.cold_misses == 4
    per = mrc(trace, "per-layer")  # layer 0: a b | b a -> 1 2; layer 1: c | c d -> 1 inf
    assert per.capacities_tokens.tolist() == [2, 4]  # per-layer 1 and 2 tokens, x 2 layers
    assert [per.hits_at(cap) for cap in range(6)] == [0, 0, 2, 2, 3, 3]
    pin = mrc(trace, "pinned:1")  # layer 1 only: c | c d -> 1 inf; layer 0 always misses
    assert (pin.accesses, pin.bypassed, pin.cold_misses) == (7, 4, 2)
    assert [pin.hits_at(cap) for cap in range(3)] == [0, 1, 1]
    assert pin.capacity_mib(1024) == 1.0 and pin.tokens_of_mib(1.0) == 1024


# ------------------------------------------------------------------ (2) exact LRU at every size


@pytest.mark.parametrize("partition", ["global", "per-layer", "pinned:0,2"])
def test_equals_ordereddict_lru_at_every_capacity(batch_trace, partition):
    c = mrc(batch_trace, partition)
    assert c.accesses == len(accesses(batch_trace)) > 1000
    top = c.saturation_tokens + 2 * batch_trace.geometry.layers
    for cap in range(0, top + 1):
        assert c.hits_at(cap) == reference_hits(batch_trace, partition, cap), cap
    assert c.hits_at(top) == c.accesses - c.cold_misses - c.bypassed


def test_equals_libcachesim_lru_global_and_per_layer(tmp_path, batch_trace):
    g = mrc(batch_trace)
    caps = list(range(0, g.saturation_tokens + 3))
    assert [g.hits_at(cap) for cap in caps] == libcachesim_lru_hits(
        batch_trace, caps, tmp_path / "all.og"
    )
    # per-layer: libcachesim LRU of capacity floor(N / layers) on each layer's accesses
    layers = batch_trace.geometry.layers
    per = mrc(batch_trace, "per-layer")
    caps = list(range(0, per.saturation_tokens + layers + 1))
    per_cap = sorted({cap // layers for cap in caps})
    by_layer = [
        dict(
            zip(
                per_cap,
                libcachesim_lru_hits(
                    layer_trace(batch_trace, lay), per_cap, tmp_path / f"l{lay}.og"
                ),
                strict=True,
            )
        )
        for lay in range(layers)
    ]
    assert [per.hits_at(cap) for cap in caps] == [
        sum(h[cap // layers] for h in by_layer) for cap in caps
    ]


@pytest.mark.parametrize("partition", ["global", "per-layer", "pinned:1"])
def test_equals_simulate_token_lru(batch_trace, partition):
    c = mrc(batch_trace, partition)
    for cap in sorted(
        {0, 1, 5, 17, 40, 99, 150, 211, c.saturation_tokens - 1, c.saturation_tokens}
    ):
        res = simulate(
            batch_trace, SimConfig("token-lru", capacity_tokens=cap, partition=partition)
        )
        assert (res.hits, res.accesses) == (c.hits_at(cap), c.accesses), cap


# ------------------------------------------------------------------ (3) properties


@st.composite
def small_traces(draw):
    steps = draw(st.integers(1, 8))
    layers = draw(st.integers(1, 3))
    k = draw(st.integers(1, 6))
    context = draw(st.integers(1, 10))
    requests = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 10_000))
    pad = draw(st.sampled_from([0.0, 0.3, 0.9]))
    return make_trace(steps, layers, k, context, requests=requests, seed=seed, pad=pad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=small_traces(), partition=st.sampled_from(["global", "per-layer"]))
def test_properties(trace, partition):
    c = mrc(trace, partition)
    caps = np.arange(0, c.saturation_tokens + 4)
    hits = c.hits_at_many(caps)
    assert (np.diff(hits) >= 0).all()  # LRU inclusion: more capacity never fewer hits
    assert hits[0] == 0
    n = len(accesses(trace))
    distinct = len(set(accesses(trace)))
    assert c.accesses == n and c.cold_misses == distinct
    big = distinct * trace.geometry.layers  # enough for every key even per layer
    assert c.hits_at(big) == n - distinct == c.max_hits
    for cap in (1, 2, 3, 5, big):
        assert c.hits_at(cap) == reference_hits(trace, partition, cap)


# ------------------------------------------------------------------ (4) compaction


def test_compaction_many_more_accesses_than_keys(monkeypatch):
    # 2 layers x 6 tokens = 12 keys, 1,200 steps x 2 layers x 4 slots ~ 9.6 K accesses: the
    # stack clocks (at least 2 x keys + 64 slots) fill and compact many times.
    rng = np.random.default_rng(5)
    steps, layers, k, ctx = 1200, 2, 4, 6
    idx = np.stack(
        [[rng.choice(ctx, size=k, replace=False) for _ in range(layers)] for _ in range(steps)]
    )
    idx[rng.random(idx.shape) < 0.2] = -1
    trace = Trace.from_arrays(
        idx.astype(np.int32), np.full(steps, ctx), Geometry(layers, k, 656, 132, 64)
    )
    results = {}
    for slack in (2, 10_000):  # 10_000: the clock never fills
        monkeypatch.setattr(mrc_mod, "TIME_SLACK", slack)
        for part in ("global", "per-layer", "pinned:1"):
            results[slack, part] = mrc(trace, part)
    for part in ("global", "per-layer", "pinned:1"):
        a, b = results[2, part], results[10_000, part]
        assert a.compactions >= 20 and b.compactions == 0
        np.testing.assert_array_equal(a.capacities_tokens, b.capacities_tokens)
        np.testing.assert_array_equal(a.hits, b.hits)
        for cap in range(0, 2 * layers * ctx + 2):
            assert a.hits_at(cap) == reference_hits(trace, part, cap)


# ------------------------------------------------------------------ (5) SHARDS sampling


def test_shards_close_to_exact():
    from dsacache.trace.synth import synthesize

    # 4 layers x k=128 x 300 steps from a 2K context: ~154 K accesses, ~9 K keys.
    trace = synthesize(Geometry(4, 128, 656, 132, 64), 300, 2048, seed=3)
    exact = mrc(trace)
    for rate in (0.25, 0.5):
        s = mrc(trace, sample_rate=rate)
        assert not s.exact and s.sample_rate == rate and s.accesses == exact.accesses
        assert 0.6 * rate < s.sampled_accesses / s.accesses < 1.4 * rate
        caps = exact.points(100)
        err = np.abs(s.hits_at_many(caps) - exact.hits_at_many(caps)) / exact.accesses
        assert err.max() < 0.03, (rate, err.max())
    # At R = 0.1 (~700 sampled keys) the mean error stays small; the largest errors sit on
    # the curve's steep rise (6.7 points measured).
    s = mrc(trace, sample_rate=0.1)
    caps = exact.points(100)
    err = np.abs(s.hits_at_many(caps) - exact.hits_at_many(caps)) / exact.accesses
    assert err.mean() < 0.01
    assert mrc(trace, sample_rate=1.0).exact  # rate 1 is the exact pass


# ------------------------------------------------------------------ (6) input, lazy stores, errors


def test_lazy_store_equals_memory_and_progress(tmp_path, batch_trace):
    store = tmp_path / "t.zarr"
    batch_trace.save(store, chunk_steps=4)
    lazy = Trace.load(store, lazy=True)
    done = []
    a, b = mrc(batch_trace, "per-layer"), mrc(lazy, "per-layer", progress=done.append)
    assert sum(done) == batch_trace.steps
    np.testing.assert_array_equal(a.hits, b.hits)
    np.testing.assert_array_equal(a.capacities_tokens, b.capacities_tokens)


def test_engine_seconds_exclude_reading_the_blocks(batch_trace, monkeypatch):
    mrc(batch_trace)  # kernels compiled / loaded
    reads = slow_block_reads(monkeypatch, mrc_mod)
    c = mrc(batch_trace)
    slept = 0.02 * len(reads)
    assert len(reads) == batch_trace.steps and slept >= 0.6
    assert c.engine_seconds < 0.25 * slept, (c.engine_seconds, slept)


def test_bad_input():
    trace = make_trace(3, layers=2, k=4, context=6)
    with pytest.raises(DsacacheError, match="unknown partition"):
        mrc(trace, "half")
    with pytest.raises(DsacacheError, match="layer 5"):
        mrc(trace, "pinned:5")
    for rate in (0, -0.1, 1.5, float("nan"), 1e-9):
        with pytest.raises(DsacacheError, match="sample rate"):
            mrc(trace, sample_rate=rate)
    bad = trace.requests[0].indices.copy()
    bad[2, 1, 0] = 99
    broken = Trace([RequestTrace(bad, trace.context_lens)], trace.geometry, validate=False)
    with pytest.raises(TraceError, match="step 2, layer 1, slot 0"):
        mrc(broken)
    with pytest.raises(TraceError, match="invalid index 99 at step 2, layer 1, slot 0"):
        mrc(broken, "pinned:0")  # also checked in layers outside the reservation
    with pytest.raises(DsacacheError, match="capacity"):
        mrc(trace).hits_at(-1)


def test_to_dict_is_json_and_consistent(batch_trace):
    c = mrc(batch_trace, "per-layer")
    d = json.loads(json.dumps(c.to_dict(n_points=50), allow_nan=False))
    assert d["accesses"] == c.accesses and d["max_hits"] == c.max_hits
    pts = d["points"]
    assert pts[0]["capacity_tokens"] == 0 and pts[-1]["capacity_tokens"] == c.saturation_tokens
    for p in pts:
        assert p["hits"] == c.hits_at(p["capacity_tokens"])
        assert p["capacity_mib"] == p["capacity_tokens"] * 656 / 2**20


# ------------------------------------------------------------------ (7) CLI


def test_cli_plot_and_json(tmp_path, batch_trace, capsys, monkeypatch):
    from matplotlib.figure import Figure

    drawn = []
    savefig = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda f, *a, **k: (drawn.append(f), savefig(f, *a, **k))
    )
    store = tmp_path / "t.zarr"
    batch_trace.save(store)
    png = tmp_path / "mrc.png"
    assert run(["mrc", str(store), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The plotted curve is the MRC's numbers: hit rate (%) at every plotted reserved size.
    (fig,) = drawn
    lines = {str(line.get_label()).split(" (")[0]: line for line in fig.axes[0].get_lines()}
    exact = mrc(batch_trace, "global")
    mib, pct = lines["token-LRU"].get_xdata(), lines["token-LRU"].get_ydata()
    tokens = np.rint(np.asarray(mib) * 2**20 / 656).astype(np.int64)
    assert len(tokens) > 5 and tokens[-1] >= exact.saturation_tokens
    want = [100.0 * exact.hits_at(int(t)) / exact.accesses for t in tokens]
    np.testing.assert_allclose(pct, want, rtol=1e-12)
    assert lines["no eviction"].get_ydata()[0] == pytest.approx(
        100.0 * exact.max_hits / exact.accesses
    )
    out = " ".join(capsys.readouterr().out.split())
    assert "hit rate" in out and "partition global" in out and f"wrote {png}" in out

    assert run(["mrc", str(store), "--json", "-p", "per-layer", "--max-mib", "0.05"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("accesses", "cold_misses", "max_hits", "points", "partition", "engine_seconds"):
        assert key in d
    assert d["partition"] == "per-layer"
    c = mrc(batch_trace, "per-layer")
    assert d["accesses"] == c.accesses and d["max_hits"] == c.max_hits
    assert d["points"][-1]["capacity_tokens"] == int(0.05 * 2**20 // 656)
    assert all(p["hits"] == c.hits_at(p["capacity_tokens"]) for p in d["points"])

    assert run(["mrc", str(store), "--json", "-r", "0.5", "-o", str(png)]) == 0
    res = capsys.readouterr()
    assert json.loads(res.out)["sample_rate"] == 0.5  # stdout stays one JSON object
    assert "wrote" in res.err


@pytest.mark.parametrize(
    "args",
    [["--sample-rate", "0"], ["-p", "pinned:9"], ["--max-mb", "-1"], ["--out", "x.txt"]],
)
def test_cli_bad_input(tmp_path, capsys, args):
    store = tmp_path / "t.zarr"
    make_trace(3, layers=2, k=4, context=6).save(store)
    assert run(["mrc", str(store), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsacache: error:") and err.count("\n") == 1


@pytest.mark.parametrize("max_mb", ["1e300", "1e12", "4398046511104"])
def test_cli_huge_max_mb_is_clamped(tmp_path, capsys, batch_trace, max_mb):
    store = tmp_path / "t.zarr"
    batch_trace.save(store)
    assert run(["mrc", str(store), "--json", "--max-mb", max_mb]) == 0
    d = json.loads(capsys.readouterr().out)
    top = min(int(float(max_mb) * 2**20 / 656), 2**62 // 656)  # floor, as tokens_of_mib
    assert d["points"][-1]["capacity_tokens"] == top
    assert d["points"][-1]["hits"] == d["max_hits"]
    assert run(["mrc", str(store), "--max-mb", max_mb, "--out", str(tmp_path / "m.png")]) == 0
    assert "hit rate" in capsys.readouterr().out
    c = mrc(batch_trace)
    assert c.hits_at(10**30) == c.max_hits and c.tokens_of_mib(1e300) == 2**62 // 656


def test_empty_curve_is_well_defined():
    idx = np.full((2, 1, 3), -1, dtype=np.int32)
    idx[0, 0, 0] = 0
    c = mrc(Trace.from_arrays(idx, np.array([1, 1]), Geometry(1, 3, 656, 132, 64)))
    assert isinstance(c, MissRatioCurve)
    assert (c.accesses, c.cold_misses, c.max_hits, c.saturation_tokens) == (1, 1, 0, 0)
    assert c.hits_at(10) == 0 and c.to_dict()["points"][0]["hits"] == 0
