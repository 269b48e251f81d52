"""dsacache.perf: the step-time formula term by term, presets, overrides, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_trace
from dsacache.cli.app import run
from dsacache.errors import DsacacheError
from dsacache.perf import (
    DEFAULT_MLP_LINES,
    PerfParams,
    Workload,
    check_batch,
    max_batch,
    model,
    perf_params,
    step_time,
    workload_from_sim,
)
from dsacache.sim import SimConfig, simulate
from dsacache.trace import Geometry, RequestTrace, Trace

P = PerfParams("toy", hbm_bytes_per_s=1e9, llc_hit_ns=100.0, hbm_ns=400.0, mlp_lines=10.0)
# 2 layers, batch 3, 1000 B weights/layer, 50 tokens cached x 4 B keys, 256 B KV rows (2 lines),
# 5 tokens gathered per request per layer, 40 % of gather loads hit.
W = Workload(2, 3, 1000, 50.0, 4, 256, 5.0, 0.4)


def test_every_term_by_hand():
    s = step_time(P, W)
    assert s.weights_s == pytest.approx(2 * 1000 / 1e9)  # L * W / BW
    assert s.index_s == pytest.approx(3 * 2 * 50 * 4 / 1e9)  # B * L * ctx * I / BW
    assert s.gather_loads == 3 * 2 * 5 * 2  # B * L * g * lines per token = 60
    assert s.gather_latency_s == pytest.approx(60 * (0.4 * 100 + 0.6 * 400) * 1e-9 / 10)
    assert s.gather_bandwidth_s == pytest.approx(60 * 0.6 * 128 / 1e9)  # 4.608 us
    assert s.gather_s == pytest.approx(4.608e-6)  # bandwidth-bound here
    assert s.total_s == pytest.approx(2e-6 + 1.2e-6 + 4.608e-6)


def test_latency_bound_branch_and_result():
    fast = PerfParams("fast", 1e12, 100.0, 400.0, 10.0)
    r = model(fast, W)
    lat = 60 * 280e-9 / 10  # 1.68 us beats 60 * 0.6 * 128 / 1e12
    total = 2e-9 + 1.2e-9 + lat
    ideal = 2e-9 + 1.2e-9 + 60 * 100e-9 / 10
    assert r.step.gather_s == pytest.approx(lat)
    assert r.step_seconds == pytest.approx(total)
    assert r.ideal.total_s == pytest.approx(ideal)
    assert r.slowdown == pytest.approx(total / ideal)
    assert r.tokens_per_s_per_user == pytest.approx(1 / total)
    assert r.tokens_per_s_per_gpu == pytest.approx(3 / total)


def test_lines_per_token_rounds_up():
    assert step_time(P, W.with_(kv_bytes_per_token=200)).gather_loads == 60
    assert step_time(P, W.with_(kv_bytes_per_token=257)).gather_loads == 90


def test_all_hits_is_the_ideal():
    r = model(P, W.with_(hit_rate=1.0))
    assert r.slowdown == pytest.approx(1.0)
    assert r.step.gather_bandwidth_s == 0.0


@settings(max_examples=60, deadline=None)
@given(
    h1=st.floats(0, 1),
    h2=st.floats(0, 1),
    mlp=st.floats(1, 1e4),
    bw=st.floats(1e8, 1e13),
)
def test_more_hits_never_slower(h1, h2, mlp, bw):
    p = PerfParams("x", bw, 150.0, 350.0, mlp)
    lo, hi = sorted((h1, h2))
    slow, fast = model(p, W.with_(hit_rate=lo)), model(p, W.with_(hit_rate=hi))
    assert fast.step_seconds <= slow.step_seconds * (1 + 1e-12)
    assert fast.slowdown >= 1.0 - 1e-12


def test_more_capacity_never_slower_through_the_simulator():
    tr = make_trace(12, layers=3, k=8, context=40, requests=2, seed=3)
    times = []
    for cap in (0, 8, 24, 64, 400):
        sim = simulate(tr, SimConfig("token-lru", capacity_tokens=cap))
        w = workload_from_sim(tr, sim, weights_bytes_per_layer=10_000)
        times.append(model(perf_params("h100"), w).step_seconds)
    assert all(b <= a for a, b in zip(times, times[1:], strict=False))
    assert times[-1] < times[0]


def ragged_trace() -> Trace:
    """Two requests, one layer, k = 2: A decodes 2 steps, B only 1 (a ragged batch)."""
    g = Geometry(1, 2, 256, 4, 16)
    a = RequestTrace(np.array([[[0, 1]], [[1, 2]]], np.int32), np.array([3, 4]))
    b = RequestTrace(np.array([[[0, -1]]], np.int32), np.array([5]))
    return Trace([a, b], g)


def test_workload_from_sim_ragged_batch_by_hand():
    tr = ragged_trace()
    # access order step -> layer -> request -> slot: t0 A0 A1 B0 (3 misses), t1 A1 (hit) A2
    sim = simulate(tr, SimConfig("token-lru", capacity_tokens=10))
    assert (sim.accesses, sim.hits) == (5, 1)
    w = workload_from_sim(tr, sim, weights_bytes_per_layer=77, layers_per_gpu=9)
    assert w.batch == 2 and w.layers_per_gpu == 9 and w.weights_bytes_per_layer == 77
    # 5 gathers over the 3 (request, step) pairs that exist: 5/3, not 5 / (2 steps x 2 requests)
    assert w.gathers_per_layer == pytest.approx(5 / 3)
    assert w.context_tokens == pytest.approx((3 + 4 + 5) / 3)
    assert w.hit_rate == pytest.approx(1 / 5)
    s = step_time(P, w)
    # B * L * g * lines = 2 * 9 * 5/3 * 2 (256 B rows) = 60 loads, index 2 * 9 * 4 * 4 B
    assert s.gather_loads == pytest.approx(60.0)
    assert s.index_s == pytest.approx(2 * 9 * 4 * 4 / 1e9)
    assert s.gather_bandwidth_s == pytest.approx(60 * 0.8 * 128 / 1e9)


def test_workload_from_sim_line_hits_by_hand():
    # 192 B rows straddle lines: A0 = lines 0-1, A1 = 1-2, A2 = 3-4 (B in its own block).
    # t0: A0 miss miss, A1 hit (line 1) miss, B0 miss miss; t1: A1 hit hit, A2 miss miss.
    # Lines: 3 hits of 10; tokens (all lines hit): only A1 at t1, 1 of 5.
    a, b = ragged_trace().requests
    tr = Trace([a, b], Geometry(1, 2, 192, 4, 16))
    sim = simulate(tr, SimConfig("line-lru", capacity_tokens=10))
    assert (sim.line_hits, sim.line_misses, sim.hits, sim.accesses) == (3, 7, 1, 5)
    w = workload_from_sim(tr, sim, weights_bytes_per_layer=0)
    assert w.hit_rate == pytest.approx(0.3)  # the line hit rate, not the token one (0.2)


def test_check_batch():
    tr = ragged_trace()
    assert check_batch(tr, None) == 2 and check_batch(tr, 2) == 2
    with pytest.raises(DsacacheError, match="--batch 4 does not match the trace's 2 request"):
        check_batch(tr, 4)


def test_max_batch_by_hand():
    # ideal T(B) = 2 us + B * (0.4 us index + 0.2 us gathers); budget 5 us -> B = 5
    assert max_batch(P, W, 2e5) == 5
    assert max_batch(P, W, 1.9e5) == 5
    assert max_batch(P, W, 1 / 2.61e-6) == 1
    with pytest.raises(DsacacheError, match="out of reach"):
        max_batch(P, W, 1e6)


def test_presets_and_overrides():
    p = perf_params("h100")
    assert p.hbm_bytes_per_s == 3.35e12
    assert p.llc_hit_ns == pytest.approx(291 / 1.98)
    assert p.hbm_ns == pytest.approx(700 / 1.98)
    assert p.mlp_lines == pytest.approx(DEFAULT_MLP_LINES)
    assert DEFAULT_MLP_LINES == pytest.approx(967.8, abs=0.05)  # by hand, docs/perf-model.md
    assert all(p.sources[k] for k in ("hbm_bytes_per_s", "llc_hit_ns", "hbm_ns", "mlp_lines"))
    assert "ASSUMED" in perf_params("mi300x").sources["mlp_lines"]
    q = perf_params("H200", mlp_lines=5, hbm_ns=1000)
    assert (q.mlp_lines, q.hbm_ns, q.hbm_bytes_per_s) == (5, 1000, 4.8e12)
    assert q.sources["mlp_lines"] == "given" and q.sources["hbm_bytes_per_s"] != "given"
    assert model(q, W).step.gather_latency_s > model(perf_params("h200"), W).step.gather_latency_s


def test_default_mlp_reproduces_the_measured_hbm_utilisation():
    # What the default MLP was derived from: an all-miss, latency-bound gather phase on the
    # H200 draws 7.3 % of HBM bandwidth (bandwidth time / latency time of the same loads).
    h200 = perf_params("h200")
    gathers_only = Workload(1, 1, 0, 0.0, 0, 128, 1e6, 0.0)
    s = step_time(h200, gathers_only)
    assert s.gather_latency_s > s.gather_bandwidth_s
    assert s.gather_bandwidth_s / s.gather_latency_s == pytest.approx(0.073, rel=1e-9)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: perf_params("tpu"), "unknown hardware 'tpu'"),
        (lambda: perf_params("h100", mlp_lines=0), "mlp_lines"),
        (lambda: perf_params("h100", hbm_ns=math.nan), "hbm_ns"),
        (lambda: perf_params("h100", clock=1.0), "unknown perf parameter 'clock'"),
        (lambda: W.with_(batch=0), "batch"),
        (lambda: W.with_(hit_rate=1.5), "hit_rate"),
        (lambda: W.with_(layers_per_gpu=2.5), "layers_per_gpu"),
        (lambda: W.with_(context_tokens=-1.0), "context_tokens"),
    ],
)
def test_bad_values(call, match):
    with pytest.raises(DsacacheError, match=match):
        call()


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "t.zarr"
    make_trace(10, layers=3, k=8, context=40, requests=2, seed=5).save(path)
    return path


def test_cli_json(store, capsys):
    argv = ["perf", str(store), "--hardware", "h200", "--capacity-tokens", "16",
            "--layers-per-gpu", "6", "--weights-mib", "2", "--mlp-lines", "50",
            "--json"]  # fmt: skip
    assert run(argv) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("step_seconds", "ideal_step_seconds", "slowdown", "tokens_per_s_per_user",
                "tokens_per_s_per_gpu", "terms", "ideal_terms", "workload", "params",
                "weights_source", "simulation", "hardware"):  # fmt: skip
        assert key in d
    assert d["workload"]["batch"] == 2 and d["workload"]["layers_per_gpu"] == 6
    assert d["workload"]["weights_bytes_per_layer"] == 2 * 2**20
    assert d["params"]["mlp_lines"] == 50 and d["params"]["sources"]["mlp_lines"] == "given"
    assert d["tokens_per_s_per_gpu"] == pytest.approx(2 * d["tokens_per_s_per_user"])
    assert d["slowdown"] == pytest.approx(d["step_seconds"] / d["ideal_step_seconds"])
    assert d["simulation"]["capacity_tokens"] == 16
    assert d["workload"]["hit_rate"] == pytest.approx(d["simulation"]["hit_rate"])


def test_cli_four_requests_are_the_batch(tmp_path, capsys):
    tr = make_trace([10, 7, 10, 4], layers=2, k=8, context=[30, 40, 20, 50], requests=4, seed=9)
    path = tmp_path / "four.zarr"
    tr.save(path)
    argv = ["perf", str(path), "--capacity-tokens", "40", "--weights-mb", "1", "--json"]
    assert run(argv) == 0
    d = json.loads(capsys.readouterr().out)
    together = simulate(tr, SimConfig("token-lru", capacity_tokens=40))
    assert d["workload"]["batch"] == 4 and d["simulation"]["hits"] == together.hits
    assert d["workload"]["hit_rate"] == pytest.approx(together.hit_rate)
    # gathers per request-step over the 31 request-steps that exist
    assert d["workload"]["gathers_per_layer"] == pytest.approx(together.accesses / (31 * 2))
    # one request alone does not share the region: its hit rate is not the batch's
    alone = Trace([tr.requests[1]], tr.geometry)
    solo = simulate(alone, SimConfig("token-lru", capacity_tokens=40))
    assert solo.hit_rate != pytest.approx(together.hit_rate)
    assert run([*argv, "--batch", "4"]) == 0  # the check passes
    capsys.readouterr()
    assert run([*argv, "--batch", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch 1 does not match the trace's 4 request" in err


def test_cli_table(store, capsys):
    assert run(["perf", str(store), "--capacity-mb", "0.01", "--weights-mb", "1"]) == 0
    out = capsys.readouterr().out
    assert "slowdown" in out and "tokens/s per GPU" in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--capacity-mb", "1", "--batch", "0"], "--batch"),
        (["--capacity-mb", "1", "--batch", "3"], "does not match the trace's 2 request"),
        (["--policy", "near-miss", "--capacity-mib", "1"], "--near-miss-source"),
        (["--capacity-mb", "1", "--layers-per-gpu", "0"], "--layers-per-gpu"),
        (["--capacity-mb", "1", "--hardware", "tpu"], "tpu"),
        (["--capacity-mb", "1", "--mlp-lines", "-3"], "mlp_lines"),
        (["--capacity-mb", "1", "--policy", "nope"], "nope"),
        (["--capacity-mb", "1", "--weights-mb", "-1"], "weights"),
        (["--capacity-mb", "1", "--model", "gpt-9"], "gpt-9"),
        (["--capacity-mb", "1"], "cannot tell the model"),  # test geometry matches no preset
        ([], "exactly one capacity"),
    ],
)
def test_cli_bad_input_one_line(store, capsys, extra, needle):
    weights = (
        [] if needle in ("weights", "gpt-9", "cannot tell the model") else ["--weights-mb", "1"]
    )
    assert run(["perf", str(store), *weights, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dsacache: error:") and needle in err


def test_cli_help():
    assert run(["perf", "--help"]) == 0
