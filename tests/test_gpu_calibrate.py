"""The calibration run's pieces on CPU (Triton interpreter): the L2 footprint sweep and its
bandwidth -> hit-rate conversion, the index-key scan, the decode stream's step (appends, copy),
the timing brackets, the models' prediction of a configuration, the session plumbing, and the
whole benchmarks/gpu/calibrate_gpu.py --cpu-smoke run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from dsacache.errors import DsacacheError  # noqa: E402
from dsacache.gpu import session  # noqa: E402
from dsacache.gpu.decode_stream import (  # noqa: E402
    DecodeStream,
    StreamShape,
    bracket_hit_rate,
    bracket_ms,
    index_scan,
    index_scan_ref,
    miss_index_sets,
    phase_ms,
    random_index_keys,
)
from dsacache.gpu.l2_sweep import (  # noqa: E402
    KIB,
    SWEEP_BLOCK,
    SweepPoint,
    measure_sweep,
    sweep_hit_rates,
    sweep_read,
)
from dsacache.gpu.layouts import build_cache  # noqa: E402

ROOT = Path(__file__).parents[1]


# ---------------------------------------------------------------- L2 sweep


def _points(bw, sizes_mib=(8, 16, 30, 60, 120, 160)):
    return [SweepPoint(int(m * 1024), 1.0, float(b)) for m, b in zip(sizes_mib, bw, strict=True)]


def test_hit_rate_conversion_hand_computed():
    # L2 60 MiB: B_l2 = median of 8..30 MiB, B_dram = median from 120 MiB. Plateau 10, tail 2:
    # a size read half from L2 costs 0.5/10 + 0.5/2 = 0.3 per byte
    out = sweep_hit_rates(_points([10, 10, 10, 1 / 0.3, 2, 2]), 60 << 20)
    assert (out["b_l2_gb_per_s"], out["b_dram_gb_per_s"]) == (10.0, 2.0)
    assert out["measured_hit_rate"] == pytest.approx([1, 1, 1, 0.5, 0, 0])
    # medians, and values beyond plateau and tail clipped (the raw ones are kept)
    out = sweep_hit_rates(_points([12, 10, 9, 8, 3, 1]), 60 << 20)
    assert (out["b_l2_gb_per_s"], out["b_dram_gb_per_s"]) == (10.0, 2.0)

    def h(b):
        return (1 / 2 - 1 / b) / (1 / 2 - 1 / 10)

    assert out["measured_hit_rate"] == pytest.approx([1.0, 1.0, h(9), h(8), h(3), 0.0])
    assert out["measured_hit_rate_raw"] == pytest.approx([h(12), 1.0, h(9), h(8), h(3), h(1)])


def test_hit_rate_conversion_rejects():
    with pytest.raises(DsacacheError, match="not above"):
        sweep_hit_rates(_points([2, 2, 2, 2, 10, 10]), 60 << 20)
    with pytest.raises(DsacacheError, match="8 MiB"):  # no point beyond 2 x L2
        sweep_hit_rates(_points([10, 10, 10, 5], (8, 16, 30, 60)), 60 << 20)


def test_sweep_read_sums_chunk_b_mod_n():
    chunk = 2 * SWEEP_BLOCK
    buf = torch.rand(3 * chunk + 5)
    out = torch.empty(7)
    sweep_read(buf, out, 3, chunk)
    want = torch.stack([buf[(b % 3) * chunk : (b % 3 + 1) * chunk].sum() for b in range(7)])
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-3)
    with pytest.raises(DsacacheError, match="do not fit"):
        sweep_read(buf, out, 4, chunk)
    with pytest.raises(DsacacheError, match="multiple"):
        sweep_read(buf, out, 1, chunk + 1)


def test_measure_sweep_sizes_and_bandwidth():
    calls = []

    def timer(fn):
        fn()
        calls.append(1)
        return 2.0  # ms

    pts = measure_sweep([16, 40, 64], chunk_kib=16, blocks=5, repeats=2, device="cpu", timer=timer)
    assert [p.size_kib for p in pts] == [16, 32, 64]  # whole chunks, rounded down
    assert len(calls) == 6
    for p in pts:
        assert p.ms == 2.0
        assert p.gb_per_s == pytest.approx(5 * 16 * KIB / 2e-3 / 1e9)
    with pytest.raises(DsacacheError, match="16 KiB"):
        measure_sweep([16], chunk_kib=8, blocks=1, repeats=1, device="cpu", timer=timer)


# ---------------------------------------------------------------- decode stream


def test_index_scan_equals_reference_and_leaves_the_tail():
    keys = random_index_keys(2, 3, 100, 132, device="cpu", seed=3)
    q = torch.randn(3, 128, generator=torch.Generator().manual_seed(4))
    out = torch.full((3, 100), 7.0)
    index_scan(keys[1], q, out, 77)
    torch.testing.assert_close(out[:, :77], index_scan_ref(keys[1], q, 77), rtol=1e-4, atol=1e-3)
    assert bool((out[:, 77:] == 7.0).all())
    # the reference itself, by hand for one token
    k = keys[1, 2, 5, :128].view(torch.float8_e4m3fn).float()
    sc = keys[1, 2, 5, 128:].view(torch.float32)[0]
    hand = float(k @ q[2] * sc)
    assert float(index_scan_ref(keys[1], q, 77)[2, 5]) == pytest.approx(hand, rel=1e-5, abs=1e-4)
    with pytest.raises(DsacacheError):
        index_scan(keys[1], torch.randn(3, 64), out, 77)


def _stream(layout: str, slots: int, weights_bytes: int = 2 * 8192 * 3):
    L, B, ctx, k = 2, 2, 256, 32
    cache = build_cache(layout, L, B, ctx, slots)
    keys = random_index_keys(L, B, ctx, 132, device="cpu")
    s = StreamShape(L, B, ctx, k, 16, weights_bytes, 1, "ieee")
    g = torch.Generator().manual_seed(5)
    idx = torch.stack(
        [torch.stack([torch.randperm(200, generator=g)[:k] for _ in range(B)]) for _ in range(L)]
    ).int()
    return DecodeStream(cache, keys, s), idx


@pytest.mark.parametrize("layout", ["ds", "gqa"])
def test_decode_step_appends_copies_and_marks(layout):
    from dsacache.gpu.slot_lru import SlotLRU

    st, idx = _stream(layout, slots=40)
    c = st.cache
    lru = SlotLRU(2, 2, 256, 40)
    res = lru.step(idx)
    pos = np.array([230, 241])
    at = st.append_rows(pos)
    marks = []
    st.step(idx, res.hit, res.slot, 242, at, lambda: marks.append(len(marks)))
    assert len(marks) == 1 + 5 * 2
    for layer in range(2):
        for r in range(2):
            got = c.rows(layer, r, torch.tensor([int(pos[r])]))
            assert torch.equal(got[0], st.new_rows[r])
            assert torch.equal(st.keys[layer, r, 241], st.new_keys[r])
        # the copy kernel filled the slots of the missed-and-resident tokens from the pool
        fill = res.fill[layer]
        for r in range(2):
            toks, slots = idx[layer, r][fill[r]].long(), res.slot[layer, r][fill[r]].long()
            assert torch.equal(c.buffer[layer, slots], c.rows(layer, r, toks))
    # the weights GEMV really ran over the layer's matrix (the last layer's output is kept)
    want = (st.x.float() @ st.weights[-1].float().t()).to(torch.bfloat16)
    torch.testing.assert_close(st.y.float(), want.float(), rtol=2e-2, atol=1e-2)
    with pytest.raises(DsacacheError, match="shared weights"):
        DecodeStream(c, st.keys, st.s, weights=st.weights[:1])


def test_phase_ms_sums_per_phase():
    d = list(range(10))  # 2 layers x (weights, index, copy, gather, append)
    out = phase_ms(d, 2)
    assert out == {"weights_ms": 5.0, "index_ms": 7.0, "copy_ms": 9.0, "gather_ms": 11.0,
                   "append_ms": 13.0, "step_ms": 45.0}  # fmt: skip
    with pytest.raises(DsacacheError):
        phase_ms(d, 3)


def test_bracket_hit_rate():
    assert bracket_hit_rate(0.3, 0.2, 0.6) == pytest.approx(0.75)
    assert bracket_hit_rate(0.6, 0.2, 0.6) == 0.0
    assert bracket_hit_rate(0.7, 0.2, 0.6) == pytest.approx(-0.25)  # unclipped
    assert bracket_hit_rate(0.3, 0.6, 0.6) is None
    assert bracket_hit_rate(math.nan, 0.2, 0.6) is None


def test_miss_sets_never_repeat_a_row():
    lay, idx = miss_index_sets(3, 2, 100, 10, 25, seed=1)
    assert lay.tolist() == [j % 3 for j in range(25)]
    for layer in range(3):
        for r in range(2):
            seen = np.concatenate([idx[j, r] for j in range(25) if lay[j] == layer])
            assert len(np.unique(seen)) == len(seen) and seen.max() < 100
    with pytest.raises(DsacacheError, match="disjoint"):
        miss_index_sets(3, 2, 100, 10, 31)


@pytest.mark.parametrize("has_buf", [False, True])
def test_bracket_ms_runs_both_sides(has_buf):
    st, idx = _stream("ds", slots=40 if has_buf else 0)
    seen = []

    def timer(fn):
        fn()
        seen.append(1)
        return 4.0

    br = bracket_ms(st, idx[0], has_buf=has_buf, launches=2, timer=timer)
    assert br == {"t_hit_ms": 2.0, "t_miss_ms": 2.0, "launches": 2, "has_buf": has_buf}
    assert len(seen) == 2


# ---------------------------------------------------------------- predictions


def test_prediction_matches_the_perf_formula_and_region():
    from dsacache.gpu.predict import DecodeConfig, predict
    from dsacache.perf import perf_params

    two_mib = 2 << 20  # one way of the h200 preset: the token region = the GPU's slots
    cfg = DecodeConfig("t", "llama-3.1-70b", 2, 2, 256, 3, 1, 32, 65536, two_mib)
    assert cfg.slots() == two_mib // (2 * 4096)
    p = predict(cfg)
    assert p["region_capacity_tokens"] == cfg.slots() * 2
    h = p["predicted_kv_hit_rate"]
    assert 0.0 <= h <= 1.0 and 0.0 <= p["region_token_hit_rate"] <= 1.0
    # the step time by hand (docs/perf-model.md): weights + index scan + max(latency, bandwidth)
    pp = perf_params("h200")
    ctx = np.mean([257, 258])  # timed steps 1, 2 of a context starting at 256
    t_w = 2 * 65536 / pp.hbm_bytes_per_s
    t_i = 2 * 2 * ctx * 132 / pp.hbm_bytes_per_s
    n = 2 * 2 * 32 * 32  # batch x layers x gathers x lines per 4096 B row
    t_lat = n * (h * pp.llc_hit_ns + (1 - h) * pp.hbm_ns) * 1e-9 / pp.mlp_lines
    t_bw = n * (1 - h) * 128 / pp.hbm_bytes_per_s
    assert p["predicted_step_ms"] == pytest.approx((t_w + t_i + max(t_lat, t_bw)) * 1e3)
    json.dumps(p)  # plain numbers only


# ---------------------------------------------------------------- session plumbing


def test_gpu_slug():
    assert session.gpu_slug("NVIDIA H200") == "h200"
    assert session.gpu_slug("NVIDIA A100-SXM4-80GB") == "a100"
    assert session.gpu_slug("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"
    assert session.gpu_slug(None) == "cpu"


def test_phase_log_records_errors_and_goes_on(tmp_path):
    log = session.PhaseLog(tmp_path, "x.json")

    def boom():
        raise ValueError("bad")

    assert log.phase("a", lambda: {"v": np.float64(1.5), "arr": np.arange(2)}) == {
        "v": 1.5, "arr": pytest.approx([0, 1])}  # fmt: skip
    assert log.phase("b", boom) is None
    d = json.loads((tmp_path / "x.json").read_text())
    assert d["phases"]["a"]["ok"] and d["phases"]["a"]["v"] == 1.5
    assert d["phases"]["b"]["ok"] is False and "ValueError: bad" in d["phases"]["b"]["error"]
    assert not (tmp_path / "x.json.tmp").exists()


# ---------------------------------------------------------------- the whole run


def test_release_window_records_a_failure_and_goes_on(monkeypatch):
    from dsacache.gpu import l2

    released = []
    monkeypatch.setattr(l2, "release", released.append)
    rec = {}
    session.release_window(7, rec)
    assert released == [7] and rec == {}

    def fail(handle):
        raise RuntimeError(f"no window on {handle}")

    monkeypatch.setattr(l2, "release", fail)
    session.release_window(7, rec)
    assert rec == {"release_error": "RuntimeError: no window on 7"}


def test_l2_sizes_rounding():
    sys.path.insert(0, str(ROOT / "benchmarks/gpu"))
    try:
        import calibrate_gpu
    finally:
        sys.path.pop(0)
    assert calibrate_gpu.l2_sizes_kib("8,8.1,0.1,160", 512) == [512, 8192, 163840]
    a = calibrate_gpu.parse_args([])
    assert a.budget_s <= 570 and a.batches == "1,8,32" and a.layers == 20
    cfgs = calibrate_gpu.configs(a, "h200", 39_321_600)
    assert len(cfgs) >= 6
    assert {c.batch for c in cfgs} == {1, 8, 32}
    assert {c.reserve_bytes for c in cfgs} == {0, 32 << 20}


@pytest.mark.slow
def test_cpu_smoke_writes_the_calibration_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TRITON_INTERPRET": "1"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu/calibrate_gpu.py"), "--cpu-smoke",
         "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    d = json.loads((tmp_path / "calibration-cpu-smoke.json").read_text())
    assert d["errors"] == {}, d["errors"]
    sw = d["l2_sweep"]
    n = len(sw["sizes_kib"])
    assert n == 6 and len(sw["measured_hit_rate"]) == n and len(sw["model_hit_rate"]) == n
    assert all(0.0 <= x <= 1.0 for x in sw["model_hit_rate"])
    assert all(b > 0 for b in sw["measured_gb_per_s"])
    assert len(d["decode"]) == 4
    for r in d["decode"]:
        for key in ("predicted_step_ms", "predicted_kv_hit_rate", "measured_step_ms",
                    "t_hit_ms_per_gather", "t_miss_ms_per_gather"):  # fmt: skip
            assert isinstance(r[key], float) and math.isfinite(r[key]), (r["name"], key)
        assert r["timed_steps"] == 2
        assert "measured_kv_hit_rate" in r
        if r["slots"]:
            # the GPU's slot LRU and the model's token region: the same hits
            assert r["buffer_token_hit_rate_all_steps"] == pytest.approx(r["region_token_hit_rate"])
    lru = d["lru"]
    assert lru["gather_ms_per_step"] > 0 and lru["lru_ms_per_step"] > 0
    assert lru["parallel_hits_equal_serial"] is True


def _plot_module():
    sys.path.insert(0, str(ROOT / "benchmarks/gpu"))
    try:
        import plot_calibration
    finally:
        sys.path.pop(0)
    return plot_calibration


def test_plot_calibration_tables_and_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pc = _plot_module()
    d = {
        "env": {"gpu": "test"},
        "l2_sweep": {"sizes_kib": [4096, 8192, 65536, 163840], "measured_gb_per_s": [9, 9, 5, 3],
                     "measured_hit_rate": [1.0, 0.98, 0.4, 0.0],
                     "model_hit_rate": [1.0, 1.0, 0.5, 0.3]},
        "decode": [
            {"name": "m/b1/baseline", "slots": 0, "predicted_step_ms": 9.0,
             "measured_step_ms": 10.0, "predicted_kv_hit_rate": 0.0, "measured_kv_hit_rate": 0.1},
            {"name": "m/b1/reserve-32", "slots": 409, "predicted_step_ms": 13.0,
             "measured_step_ms": 10.0, "predicted_kv_hit_rate": 0.2, "measured_kv_hit_rate": None},
            {"name": "m/b8/baseline", "slots": 0, "predicted_step_ms": 10.0,
             "measured_step_ms": 10.0, "predicted_kv_hit_rate": 0.0},
        ],
        "lru": {"gather_ms_per_step": 0.6, "lru_ms_per_step": 0.06, "lru_impl": "x"},
    }  # fmt: skip
    _, worst = pc.l2_table(d["l2_sweep"])
    assert worst == pytest.approx(0.1)  # 8 and 64 MiB are in 8..100; 4 and 160 are not
    _, summary = pc.decode_table(d["decode"])
    assert summary["median_abs_error"] == pytest.approx(0.1)
    assert summary["worst_abs_error"] == pytest.approx(0.3)
    f = tmp_path / "c.json"
    f.write_text(json.dumps(d))
    png = tmp_path / "c.png"
    assert pc.main([str(f), "--figure", str(png)]) == 0
    out = capsys.readouterr().out
    assert "median 10.0%, worst 30.0%" in out and "10 % of the gathers" in out
    assert png.stat().st_size > 10_000
    f.write_text("{}")
    assert pc.main([str(f)]) == 2
    assert "not a calibration result" in capsys.readouterr().err
