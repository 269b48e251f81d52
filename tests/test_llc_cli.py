"""The LLC driver (`simulate_llc`) and `dsacache llc`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_trace
from dsacache.cli.app import run
from dsacache.errors import DsacacheError
from dsacache.sim.llc import LLCConfig, simulate_llc
from dsacache.sim.llc.layout import Layout
from dsacache.sim.llc.run import MODEL_WEIGHTS, infer_model
from dsacache.sim.llc.stream import CLASSES, KV_GATHER, iter_runs
from dsacache.trace import Geometry, Trace
from dsacache.trace.geometry import PRESETS
from test_llc_reference import RefLLC


@pytest.fixture(scope="module")
def trace() -> Trace:
    return make_trace([6, 4], layers=3, k=8, context=[40, 20], requests=2, seed=2)


def small(**kw) -> LLCConfig:
    base = dict(hardware="h100", sets=16, ways=4, weights_bytes=20_000)
    return LLCConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(policy="srrip", sectors=True),
        dict(policy="drrip", set_hash="xor"),
        dict(reservation="way", reserve_mib=2 * 16 * 128 / 2**20),
        dict(reservation="set-aside", reserve_mib=20 * 128 / 2**20, sectors=True),
    ],
)
def test_driver_equals_reference_model(trace, kw):
    cfg = small(**kw)
    res = simulate_llc(trace, cfg, block_elements=50)
    hw, ecfg, resolved = cfg.resolve()
    ref = RefLLC(
        16,
        4,
        ecfg.policy,
        ecfg.set_hash,
        ecfg.sectors,
        resolved.mode,
        resolved.ways,
        resolved.quota,
    )
    layout = Layout.build(trace.geometry, [r.context_lens for r in trace.requests], 20_000)
    blocking = np.concatenate([ref.run(r) for r in iter_runs(trace, layout)])
    np.testing.assert_array_equal(res.counters, ref.counts)
    np.testing.assert_array_equal(res.blocking_per_step, blocking)
    assert res.steps == 6 and res.blocking_per_step.sum() == res.counters[KV_GATHER, 2]


def test_shortcut_changes_nothing(trace):
    a = simulate_llc(trace, small(weights_bytes=400_000))
    b = simulate_llc(trace, small(weights_bytes=400_000, shortcut=False))
    assert a.shortcut_lines > 0 and b.shortcut_lines == 0
    np.testing.assert_array_equal(a.counters, b.counters)
    np.testing.assert_array_equal(a.blocking_per_step, b.blocking_per_step)


def test_reservation_keeps_gathers_across_weight_sweeps():
    # 1 layer, k=32 re-selected every step: the weights sweep flushes an unreserved cache;
    # a set-aside big enough for the gathered rows keeps them.
    idx = np.tile(np.arange(32, dtype=np.int32), (8, 1, 1))
    tr = Trace.from_arrays(idx, np.full(8, 64), Geometry(1, 32, 656, 132, 16))
    cache = dict(sets=64, ways=8, weights_bytes=1 << 20)  # 64 KiB; weights 16x that
    none = simulate_llc(tr, small(**cache))
    kept = simulate_llc(tr, small(**cache, reservation="set-aside", reserve_mib=40 / 1024))
    rows = 32 * 656 // 128 + 1  # lines of 32 packed rows
    assert none.counters[KV_GATHER, 1] < kept.counters[KV_GATHER, 1]
    assert none.blocking_per_step[1:].min() >= rows - 2  # flushed every step
    assert kept.blocking_per_step[1:].max() == 0  # all kept


def test_weights_from_model_and_errors(trace):
    assert infer_model(PRESETS["deepseek-v3.2"]) == "deepseek-v3.2"
    assert infer_model(PRESETS["llama-3.1-70b"]) == "llama-3.1-70b"
    # GLM-5 shares DeepSeek-V3.2's bytes per token: the layer count tells them apart.
    assert infer_model(PRESETS["glm-5"]) == "glm-5"
    assert infer_model(PRESETS["deepseek-v3.2"].with_overrides(layers=2)) == "deepseek-v3.2"
    assert infer_model(trace.geometry) is None
    w, note = LLCConfig().weights(PRESETS["deepseek-v3.2"])
    assert w == MODEL_WEIGHTS["deepseek-v3.2"][0] == 37_000_000_000 // 61 and "ASSUMED" in note
    assert LLCConfig(model="llama-3.1-70b").weights(trace.geometry)[0] == 70_600_000_000 // 40
    with pytest.raises(DsacacheError, match="--weights-mib or --model"):
        LLCConfig().weights(trace.geometry)
    with pytest.raises(DsacacheError, match="unknown model"):
        LLCConfig(model="gpt-2").weights(trace.geometry)
    with pytest.raises(DsacacheError, match="steps"):
        simulate_llc(trace, small(), steps=0)
    with pytest.raises(DsacacheError, match="weights bytes"):
        simulate_llc(trace, small(weights_bytes=-5))


def test_cli_text_and_json(tmp_path, trace, capsys):
    store = tmp_path / "t.zarr"
    trace.save(store, chunk_steps=2)
    args = ["llc", str(store), "--sets", "16", "--ways", "4", "--weights-mb", "0.02"]
    assert run(args + ["--reservation", "way", "--reserve-mb", "0.004"]) == 0
    out = capsys.readouterr().out
    assert "kv-gather" in out and "blocking (kv-gather) line misses per step: mean " in out
    assert "{b[" not in out  # the numbers are printed, not the format string
    assert "reservation: way" in out
    # requested and effective: 0.004 MiB = 4194 B asked, rounded down to 2 ways of 16 x 128 B
    assert run(args + ["--reservation", "way", "--reserve-mib", "0.004", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["reservation"]
    assert (res["requested_bytes"], res["effective_bytes"], res["ways"]) == (4194, 4096, 2)
    assert run(args + ["--json", "--steps", "3", "--policy", "drrip", "--sectors"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["classes"]) == set(CLASSES) | {"total"}
    assert d["steps"] == 3 and len(d["gather_misses_per_step"]) == 3
    assert d["llc"]["capacity_bytes"] == 16 * 4 * 128 and d["policy"] == "drrip"
    c = d["classes"]["kv-gather"]
    assert c["hits"] + c["misses"] == c["accesses"] > 0
    assert d["weights_bytes_per_layer"] == int(0.02 * 2**20)
    assert sum(d["gather_misses_per_step"]) == c["misses"]


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["--hardware", "tpu"], "unknown hardware 'tpu'"),
        (["--policy", "mru"], "unknown policy"),
        (["--sets", "1000"], "power of two"),
        (["--ways", "0"], "ways must be a positive integer"),
        (["--reservation", "way", "--reserve-mb", "100"], "exceeds the LLC"),
        (["--reservation", "set-aside", "--reserve-mb", "40"], "exceeds the hardware's limit"),
        (["--reserve-mb", "5"], "choose 'way' or 'set-aside'"),
        (["--reserve-mb", "-1", "--reservation", "way"], ">= 0"),
        (["--reserved-classes", "tlb", "--reservation", "way", "--reserve-mb", "4"], "tlb"),
        (["--set-hash", "crc"], "set hash"),
        (["--steps", "0"], "--steps"),
        (["--weights-mb", "-2"], "weights MiB"),
        (["--weights-mb", "1e13"], "2**62 bytes"),
        (["--sets", "1073741824", "--ways", "255"], "too large to model"),
    ],
)
def test_cli_bad_input(tmp_path, trace, capsys, extra, msg):
    store = tmp_path / "t.zarr"
    trace.save(store)
    assert run(["llc", str(store), "--weights-mb", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsacache: error:") and err.count("\n") == 1 and msg in err


def test_cli_needs_weights_for_unknown_model(tmp_path, trace, capsys):
    store = tmp_path / "t.zarr"
    trace.save(store)
    assert run(["llc", str(store)]) == 2
    assert "--weights-mib or --model" in capsys.readouterr().err
    assert run(["llc", str(tmp_path / "missing.zarr"), "--weights-mb", "1"]) == 2


def test_cli_npz_uses_model_weights(tmp_path, capsys):
    # A plain .npz gets DeepSeek-V3.2's geometry by default, hence its weights per layer.
    idx = np.array([[[0, 2, -1], [1, -1, -1]], [[2, 0, 3], [3, 1, -1]]], dtype=np.int32)
    path = tmp_path / "mine.npz"
    np.savez(path, indices=idx)
    assert run(["llc", str(path), "--sets", "16", "--ways", "4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["weights_bytes_per_layer"] == MODEL_WEIGHTS["deepseek-v3.2"][0]
    assert d["classes"]["kv-gather"]["accesses"] > 0 and d["shortcut_lines"] > 0
    assert d["classes"]["weights"]["hits"] == 0


def test_cli_help():
    from typer.testing import CliRunner

    from dsacache.cli.app import _register_commands, app

    _register_commands()
    res = CliRunner().invoke(app, ["llc", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "DRRIP always replays every line" in text
    for phrase in ("--reserve-mb", "--reservation", "set-aside", "--sectors", "blocking"):
        assert phrase in text


def test_cli_warns_when_drrip_has_no_followers(tmp_path, trace, capsys):
    store = tmp_path / "t.zarr"
    trace.save(store)
    args = ["llc", str(store), "--weights-mb", "0.01", "--policy", "drrip", "--ways", "4"]
    assert run(args + ["--sets", "64", "--json"]) == 0
    out = capsys.readouterr()
    assert "every set is a leader" in out.err and json.loads(out.out)["policy"] == "drrip"
    assert run(args + ["--sets", "128", "--json"]) == 0
    assert "leader" not in capsys.readouterr().err
