"""The serving model: hand-computed step pieces, HBM caps, MoE experts, ratios, properties."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsacache.errors import DsacacheError
from dsacache.hardware import HOST_LINKS, GpuSpec, gpu
from dsacache.perf.serving import (
    ROWS_IN_FLIGHT,
    BufferStats,
    Deployment,
    ServingParams,
    ServingWorkload,
    expected_experts,
    serving_rows,
)
from dsacache.perf.serving_models import MODELS, ServingModel, serving_model
from dsacache.trace.geometry import PRESETS as GEOMETRY

# A toy model whose parameter counts are easy to do by hand (see test_toy_model_counts).
TOY = ServingModel(
    "toy", "Toy", layers=2, dense_layers=1, hidden=8, vocab=10, heads=2, q_lora_rank=4,
    kv_lora_rank=128, qk_rope_dim=8, qk_nope_dim=4, v_head_dim=4, index_heads=2,
    index_head_dim=8, top_k=4, experts=4, experts_per_token=2, shared_experts=1,
    moe_intermediate=2, dense_intermediate=4, published_total_params=7472,
    published_active_params=7296,
)  # fmt: skip
# Memory-bound everywhere (huge FLOPs), 1 GB/s HBM and peer links, BF16 KV (compute cap. 9.0).
TOY_GPU = GpuSpec(
    "toy-gpu", "Toy GPU", 90, 4, 1.0, 1 << 20, 1, 0, 2 * (7288 + 20000), 1e9, 1e18, 1e18,
    "pcie-gen5-x16", 1e9,
)  # fmt: skip
TOY_WORK = ServingWorkload(gpus=2, input_tokens=10, output_tokens=4, buffer_tokens=4)
TOY_PARAMS = ServingParams(mem_fraction=0.5, swap_layer_s=5e-6, collective_s=10e-6)


def _toy(attention: str = "dp", **changes) -> Deployment:
    return Deployment(TOY, TOY_GPU, TOY_WORK, replace(TOY_PARAMS, attention=attention, **changes))


def test_toy_model_counts():
    attention = 8 * 4 + 4 * 2 * (4 + 8) + 8 * (128 + 8) + 128 * 2 * (4 + 4) + 2 * 4 * 8
    indexer = 4 * 2 * 8 + 8 * 8 + 8 * 2
    assert TOY.attention_params == attention + indexer == 3472
    assert (TOY.expert_params, TOY.dense_ffn_params, TOY.router_params) == (48, 96, 32)
    # 2 layers of attention, 1 dense FFN, 1 MoE layer of 4 routed + 1 shared experts + router,
    # embedding and output head
    assert TOY.total_params == 2 * 3472 + 96 + (5 * 48 + 32) + 2 * 80 == 7472
    assert TOY.active_params == 2 * 3472 + 96 + (3 * 48 + 32) + 80 == 7296
    assert TOY.kv_bytes_per_token("bf16") == 2 * (128 + 8)
    assert TOY.kv_bytes_per_token("fp8") == 128 + 4 + 2 * 8
    assert TOY.index_bytes_per_token == 12


@pytest.mark.parametrize("name", list(MODELS))
def test_presets_match_their_published_sizes(name):
    m = MODELS[name]
    assert m.total_params == pytest.approx(m.published_total_params, rel=0.01)
    assert m.active_params == pytest.approx(m.published_active_params, rel=0.03)
    assert m.kv_bytes_per_token("fp8") == 656 and m.kv_bytes_per_token("bf16") == 1152
    assert m.index_bytes_per_token == 132
    assert m.sources["dimensions"] and m.sources["published_params"]
    d = m.to_dict()
    assert d["kv_bytes_per_token"] == {"fp8": 656, "bf16": 1152}


def test_deepseek_preset_matches_the_trace_geometry():
    m, g = serving_model("DeepSeek-V3.2"), GEOMETRY["deepseek-v3.2"]
    assert (m.layers, m.top_k, m.kv_bytes_per_token("fp8"), m.index_bytes_per_token) == (
        g.layers, g.top_k, g.kv_bytes_per_token, g.index_bytes_per_token,
    )  # fmt: skip
    with pytest.raises(DsacacheError, match="unknown model 'llama'"):
        serving_model("llama")
    with pytest.raises(DsacacheError, match="unknown KV dtype"):
        m.kv_bytes_per_token("fp4")


@pytest.mark.parametrize(
    "experts,per_token,tokens", list(itertools.product([4, 5], [1, 2, 3], [1, 2, 3]))
)
def test_expected_experts_against_enumeration(experts, per_token, tokens):
    # Every token picks `per_token` distinct experts, all choices equally likely: average the
    # distinct experts the batch touches over every combination of choices.
    choices = list(itertools.combinations(range(experts), per_token))
    total = 0
    for batch in itertools.product(choices, repeat=tokens):
        total += len(set().union(*batch))
    exact = total / len(choices) ** tokens
    assert expected_experts(experts, per_token, tokens) == pytest.approx(exact)


def test_expected_experts_by_hand():
    assert expected_experts(256, 8, 1) == pytest.approx(8)
    assert expected_experts(4, 2, 2) == pytest.approx(3)  # 4 (1 - (1/2)^2)
    assert expected_experts(256, 8, 0) == 0
    assert expected_experts(256, 8, 10_000) == pytest.approx(256)


def test_weights_and_hbm_caps_by_hand():
    dp, tp = _toy("dp"), _toy("tp")
    # dp: attention replicated (2 layers x 3472 FP8), FFN (dense 96 + MoE 5 x 48 + 32) and the
    # BF16 embedding + head (2 x 80 x 2 B) sharded over 2 GPUs
    assert dp.weights_bytes_per_gpu == 2 * 3472 + (96 + 272) / 2 + 2 * 80 * 2 / 2 == 7288
    assert tp.weights_bytes_per_gpu == 2 * 3472 / 2 + 184 + 160 == 3816
    assert dp.kv_pool_bytes_per_gpu == 0.5 * 54576 - 7288 == 20000
    # a request reserves its peak context, 10 + 4 = 14 tokens, in 2 layers: BF16 KV 272 B + key
    assert dp.request_bytes(offload=False) == 14 * 2 * (272 + 12) == 7952
    # offload: the 4-row buffer of KV per layer, and every index key
    assert dp.request_bytes(offload=True) == 4 * 2 * 272 + 14 * 2 * 12 == 2512
    # a buffer longer than the request holds only the request's own 14 rows (no more than KV)
    big = Deployment(TOY, TOY_GPU, replace(TOY_WORK, buffer_tokens=32), TOY_PARAMS)
    assert big.request_bytes(offload=True) == big.request_bytes(offload=False) == 7952
    assert dp.max_running(False) == 2 * (20000 // 7952) == 4  # per GPU, times 2 GPUs
    assert dp.max_running(True) == 2 * (20000 // 2512) == 14
    assert tp.max_running(False) == (27288 - 3816) // 7952 == 2  # replicated: one GPU's worth
    assert tp.max_running(True) == (27288 - 3816) // 2512 == 9


def test_step_pieces_by_hand():
    dep = _toy("dp")
    s = dep.step(3)  # dp: the busiest GPU attends ceil(3/2) = 2 requests
    assert (s.running, s.per_gpu_batch) == (3, 2)
    touched = 4 * (1 - (1 - 2 / 4) ** 3)  # 3.5 experts
    weights = 2 * 3472 + 96 / 2 + ((touched + 1) * 48 + 32) / 2 + 80 * 2 / 2
    assert s.weights_s == pytest.approx(weights / 1e9)
    assert s.attention_s == pytest.approx(2 * 2 * 4 * 272 / 1e9)  # b x L x k rows of 272 B
    assert s.index_s == pytest.approx(2 * 2 * 12 * 12 / 1e9)  # b x L x mean context 12, 12 B each
    # all-gather + reduce-scatter per layer of 3 x 8 bf16 hidden values, half leaves each GPU
    assert s.comm_s == pytest.approx(2 * 2 * (10e-6 + 3 * 8 * 2 * 0.5 / 1e9))
    assert s.host_s == 0 and s.swap_fixed_s == 0
    assert s.total_s == pytest.approx(s.weights_s + s.attention_s + s.index_s + s.comm_s)

    o = dep.step(3, miss_rate=0.25)  # 1 miss per request per layer (k = 4)
    raw = HOST_LINKS["pcie-gen5-x16"].raw_bytes_per_s
    bandwidth = 2 * 2 * 4 * 0.25 * 3 * 152 / raw  # 4 rows of 3 lines of 128 + 24 B
    latency = 2 * 1 * 1e-6 / ROWS_IN_FLIGHT  # 2 layers x 1 row at 1 us, 16 rows in flight
    assert o.host_s == pytest.approx(max(bandwidth, latency)) and latency > bandwidth
    assert o.swap_fixed_s == pytest.approx(2 * 5e-6)
    assert o.total_s == pytest.approx(s.total_s + o.host_s + o.swap_fixed_s)
    over = _toy("dp", overlap=True).step(3, miss_rate=0.25)
    assert over.total_s == pytest.approx(max(s.total_s, o.host_s) + o.swap_fixed_s)


def test_host_reads_become_bandwidth_bound_with_many_requests():
    dep = Deployment(serving_model("glm-5.1"), gpu("h200"), ServingWorkload(8, 32768, 8192, 4096))
    one, many = dep.step(8, 0.1), dep.step(256, 0.1)  # 1 and 32 requests per GPU
    misses = 2048 * 0.1
    assert one.host_s == pytest.approx(78 * misses * 1e-6 / ROWS_IN_FLIGHT)  # latency-bound
    row = HOST_LINKS["pcie-gen5-x16"].row_read_s(1152)
    assert many.host_s == pytest.approx(32 * 78 * misses * row)  # bandwidth-bound


def test_tp_attention_splits_heads_not_rows():
    dp, tp = _toy("dp"), _toy("tp")
    assert tp.step(3).per_gpu_batch == 3  # every GPU holds and reads every request's KV
    assert tp.step(3).attention_s == pytest.approx(3 * 2 * 4 * 272 / 1e9)
    assert tp.step(1).weights_s < dp.step(1).weights_s  # attention weights sharded


def test_ratio_caps_and_fast_path():
    res = serving_rows(TOY, TOY_GPU, TOY_WORK, [1, 4, 9, 40], BufferStats(0.5), TOY_PARAMS)
    assert (res.baseline_max_concurrency, res.offload_max_concurrency) == (4, 14)
    dep = res.deployment
    for row in res.rows:
        rb, ro = min(row.concurrency, 4), min(row.concurrency, 14)
        assert row.baseline.running == rb and row.offload.running == ro
        assert row.baseline_tokens_per_s == pytest.approx(rb / dep.step(rb).total_s)
        assert row.offload_tokens_per_s == pytest.approx(ro / dep.step(ro, 0.5).total_s)
        assert row.ratio == pytest.approx(row.offload_tokens_per_s / row.baseline_tokens_per_s)
    d = res.to_dict()
    assert d["baseline_max_concurrency"] == 4 and len(d["rows"]) == 4
    for r in d["rows"]:
        for key in ("concurrency", "baseline_tokens_per_s", "offload_tokens_per_s", "ratio",
                    "buffer_hit_rate"):  # fmt: skip
            assert key in r
    # input + output no longer than the buffer: every selection hits, whatever --hit-rate says
    short = ServingWorkload(gpus=2, input_tokens=2, output_tokens=2, buffer_tokens=4)
    fast = serving_rows(TOY, TOY_GPU, short, [2], BufferStats(0.0), TOY_PARAMS)
    assert fast.rows[0].buffer_hit_rate == 1.0 and fast.rows[0].offload.host_s == 0


def test_p99_miss_rate_gives_a_worst_step():
    stats = BufferStats.from_host_bytes(0.9, 3 * 272, 2 * 2 * 4, 272, "sim")
    assert stats.p99_miss_rate == pytest.approx(3 / 16)
    res = serving_rows(TOY, TOY_GPU, TOY_WORK, [3], stats, TOY_PARAMS)
    row = res.rows[0]
    assert row.offload_p99.total_s == pytest.approx(_toy().step(3, 3 / 16).total_s)
    assert row.to_dict()["offload_p99_step_ms"] == pytest.approx(row.offload_p99.total_s * 1e3)


def test_no_baseline_request_fits():
    big = replace(TOY_WORK, input_tokens=10_000)  # 10,004 tokens of 284 B x 2 layers: 5.7 MB
    res = serving_rows(TOY, replace(TOY_GPU, hbm_bytes=2 * (7288 + 600_000)), big, [2],
                       BufferStats(0.5), TOY_PARAMS)  # fmt: skip
    assert res.baseline_max_concurrency == 0 and res.rows[0].baseline is None
    assert res.rows[0].baseline_tokens_per_s == 0 and res.rows[0].ratio is None
    assert res.offload_max_concurrency > 0 and res.rows[0].offload_tokens_per_s > 0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ServingWorkload(0, 10, 4, 4), "--gpus must be an integer >= 1"),
        (lambda: ServingWorkload(2, 10, 4, 0), "--buffer-tokens must be an integer >= 1"),
        (lambda: ServingWorkload(2, 0, 4, 4), "--input-tokens"),
        (lambda: Deployment(TOY, TOY_GPU, replace(TOY_WORK, buffer_tokens=3)), "below the model"),
        (lambda: serving_rows(TOY, TOY_GPU, TOY_WORK, [], BufferStats(0.5)), "at least one"),
        (lambda: serving_rows(TOY, TOY_GPU, TOY_WORK, [0], BufferStats(0.5)), ">= 1"),
        (lambda: BufferStats(1.5), r"hit rate must be a number in \[0, 1\]"),
        (lambda: ServingParams(attention="pp"), "unknown attention"),
        (lambda: ServingParams(kv_dtype="int4"), "unknown KV dtype"),
        (lambda: ServingParams(mem_fraction=0), "memory fraction"),
        (lambda: ServingParams(collective_s=-1), "collective_s"),
        (lambda: _toy().step(0), "running requests"),
        (lambda: Deployment(serving_model("glm-5.1"), gpu("h200"), ServingWorkload(1, 8, 8, 4096))
         .kv_pool_bytes_per_gpu, "does not fit on 1 x NVIDIA H200"),
    ],
)  # fmt: skip
def test_bad_input(call, match):
    with pytest.raises(DsacacheError, match=match):
        call()


def test_kv_dtype_follows_the_compute_capability():
    m, w = serving_model("glm-5.1"), ServingWorkload(8, 32768, 8192, 4096)
    assert Deployment(m, gpu("h200"), w).kv_dtype == "bf16"
    assert Deployment(m, gpu("b200"), w).kv_dtype == "fp8"
    assert Deployment(m, gpu("h200"), w, ServingParams(kv_dtype="fp8")).kv_bytes == 656


_PUBLIC = (serving_model("glm-5.1"), gpu("h200"), ServingWorkload(8, 32768, 8192, 4096))


@settings(max_examples=40, deadline=None)
@given(
    h1=st.floats(0, 1),
    h2=st.floats(0, 1),
    conc=st.integers(1, 600),
    overlap=st.booleans(),
)
def test_offload_throughput_is_monotone_in_hit_rate(h1, h2, conc, overlap):
    lo, hi = sorted((h1, h2))
    p = ServingParams(overlap=overlap)
    a = serving_rows(*_PUBLIC, [conc], BufferStats(lo), p).rows[0]
    b = serving_rows(*_PUBLIC, [conc], BufferStats(hi), p).rows[0]
    assert b.offload_tokens_per_s >= a.offload_tokens_per_s * (1 - 1e-12)
    assert a.baseline_tokens_per_s == b.baseline_tokens_per_s  # the baseline never reads host


@settings(max_examples=30, deadline=None)
@given(
    gpus=st.integers(1, 16),
    input_tokens=st.integers(1, 200_000),
    output_tokens=st.integers(1, 50_000),
    extra=st.integers(0, 4),
    attention=st.sampled_from(["dp", "tp"]),
    model=st.sampled_from(list(MODELS)),
    hw=st.sampled_from(["h200", "b200", "gh200", "mi300x"]),
)
def test_baseline_is_flat_once_capped(gpus, input_tokens, output_tokens, extra, attention,
                                      model, hw):  # fmt: skip
    w = ServingWorkload(gpus, input_tokens, output_tokens, 2048 * (1 + extra))
    p = ServingParams(attention=attention)
    try:
        dep = Deployment(serving_model(model), gpu(hw), w, p)
        cap = dep.max_running(False)
    except DsacacheError:
        return  # the weights do not fit these GPUs
    conc = [1, max(cap, 1), cap + 1, 2 * cap + 7]
    res = serving_rows(serving_model(model), gpu(hw), w, conc, BufferStats(0.9), p)
    tps = [r.baseline_tokens_per_s for r in res.rows]
    if cap == 0:
        assert all(t == 0 for t in tps)
    else:
        assert tps[1] == tps[2] == tps[3] > 0
        assert tps[0] <= tps[1] * (1 + 1e-12)  # more running requests never lower throughput
    cap_off = res.offload_max_concurrency
    for r in res.rows:
        assert r.offload is None or r.offload.running == min(r.concurrency, cap_off)
    assert math.isfinite(sum(r.offload_tokens_per_s for r in res.rows))
