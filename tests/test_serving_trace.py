"""`dsacache serving` with the buffer hit rate simulated: on --trace, or on a generated trace of
the model's geometry; the hit rate and p99 miss rate are the hierarchy simulation's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsacache.cli.app import run
from dsacache.errors import DsacacheError
from dsacache.perf.buffer_stats import (
    GENERATED_LAYERS,
    buffer_stats,
    generated_trace,
    generated_window,
)
from dsacache.perf.serving import ServingWorkload
from dsacache.perf.serving_models import serving_model
from dsacache.sim.hierarchy import HierarchyConfig, simulate_hierarchy
from dsacache.trace import open_trace
from dsacache.trace.geometry import Geometry
from dsacache.trace.synth import synthesize

BASE = ["serving", "--model", "deepseek-v3.2", "--hardware", "h200", "--gpus", "8",
        "--concurrency", "8,256", "--json"]  # fmt: skip


def _json(capsys, argv: list[str]) -> dict:
    assert run(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def ds_store(tmp_path_factory) -> Path:
    """A small synthetic trace with DeepSeek-V3.2's top-k (2048) and FP8 KV row."""
    path = tmp_path_factory.mktemp("ds") / "ds.zarr"
    synthesize(Geometry(2, 2048, 656, 132, 64), 40, 8192, seed=3).save(path)
    return path


def test_trace_gives_the_simulated_hit_rate(capsys, ds_store: Path) -> None:
    work = ["--input-tokens", "8192", "--output-tokens", "1024", "--buffer-tokens", "3072"]
    out = _json(capsys, [*BASE, *work, "--trace", str(ds_store), "--buffer-policy", "fifo"])
    sim = simulate_hierarchy(open_trace(ds_store), HierarchyConfig(3072, "fifo"))
    stats = out["buffer_stats"]
    assert stats["hit_rate"] == sim.hit_rate == out["rows"][0]["buffer_hit_rate"]
    p99 = sim.host_bytes_per_step["p99"] / 656 / (sim.accesses / sim.steps)
    assert stats["p99_miss_rate"] == pytest.approx(p99)
    assert "fifo on" in stats["source"] and "offload_p99_step_ms" in out["rows"][1]
    lru = _json(capsys, [*BASE, *work, "--trace", str(ds_store)])
    assert lru["buffer_stats"]["hit_rate"] != stats["hit_rate"]  # the policy reached the sim


def test_generated_trace_of_the_model(capsys) -> None:
    work = ["--input-tokens", "4096", "--output-tokens", "48", "--buffer-tokens", "2048"]
    out = _json(capsys, [*BASE, *work])
    model = serving_model("deepseek-v3.2")
    w = ServingWorkload(8, 4096, 48, 2048)
    trace = generated_trace(model, 1152, w)  # bf16 KV on an H200 (compute capability 9.0)
    assert (trace.geometry.top_k, trace.geometry.layers, trace.steps) == (
        2048,
        GENERATED_LAYERS,
        48,
    )
    assert trace.meta["generator"] == "indexer" and trace.meta["indexer"]["model_layers"] == 61
    sim = simulate_hierarchy(trace, HierarchyConfig(2048))
    assert out["buffer_stats"]["hit_rate"] == sim.hit_rate
    assert "generated trace" in out["buffer_stats"]["source"]
    assert buffer_stats(model, 1152, w, "token-lru").hit_rate == sim.hit_rate


def test_a_request_that_fits_needs_no_simulation(capsys) -> None:
    work = ["--input-tokens", "3000", "--output-tokens", "96", "--buffer-tokens", "4096"]
    out = _json(capsys, [*BASE, *work])
    assert out["buffer_stats"]["hit_rate"] == 1.0 and "fits" in out["buffer_stats"]["source"]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--hit-rate", "0.9", "--trace", "x.zarr"], "not both"),
        (["--buffer-policy", "lfu"], "buffer policy 'lfu' cannot run this level"),
        (["--trace", "{small}"], "the trace's top-k 4 is not DeepSeek-V3.2's 2048"),
        (["--trace", "{missing}"], "missing"),
    ],
)
def test_bad_input_is_one_line_rc2(extra, needle, capsys, tmp_path: Path, small_store) -> None:
    extra = [x.format(small=small_store, missing=tmp_path / "missing.zarr") for x in extra]
    work = ["--input-tokens", "8192", "--output-tokens", "64", "--buffer-tokens", "4096"]
    rc = run([*BASE, *work, *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_steps_that_fit_the_buffer_hit_and_the_rest_are_simulated() -> None:
    """2000 in / 3000 out, 4096 rows: steps 0..2096 (contexts 2000..4096) keep all their KV in
    the buffer; the generated trace covers the 903 that outgrow it, and the hit rate blends."""
    model, w = serving_model("deepseek-v3.2"), ServingWorkload(8, 2000, 3000, 4096)
    assert w.decode_split() == (2097, 903) and generated_window(w) == (4097, 903)
    trace = generated_trace(model, 1152, w)
    assert int(trace.requests[0].context_lens[0]) == 4097 and trace.steps == 903
    sim = simulate_hierarchy(trace, HierarchyConfig(4096))
    stats = buffer_stats(model, 1152, w, "token-lru")
    assert stats.hit_rate == pytest.approx((2097 + 903 * sim.hit_rate) / 3000)
    assert "the first 2097 of 3000 decode steps fit" in stats.source
    # a longer decode: up to 1000 steps from the middle of the 9000 that outgrow the buffer
    assert generated_window(ServingWorkload(8, 2000, 11097, 4096)) == (4097 + 4000, 1000)


def test_a_trace_that_never_outgrows_the_buffer_is_refused() -> None:
    short = synthesize(Geometry(1, 2048, 656, 132, 64), 3, 3000, seed=0)
    w = ServingWorkload(8, 3000, 8192, 4096)
    with pytest.raises(DsacacheError, match="fits a buffer of 4096 rows"):
        buffer_stats(serving_model("deepseek-v3.2"), 1152, w, "token-lru", short)
