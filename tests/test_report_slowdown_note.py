"""The paragraph under the report's slowdown figure: its numbers come from the rows."""

from __future__ import annotations

import pytest

from dsacache.report.slowdown_note import IMPLIED_HIT_RATES, facet_numbers, slowdown_note


def row(cap: float, slowdown: float, weights_mib: float, policy: str = "min") -> dict:
    return {"trace": "t", "partition": "global", "hardware": "h100", "policy": policy,
            "weights_bytes_per_layer": int(weights_mib * 2**20), "layers_per_gpu": 4,
            "effective_capacity_mib": cap, "slowdown": slowdown,
            "ideal_step_time_s": 2e-3}  # fmt: skip


def test_facet_numbers_by_hand():
    rows = [row(0.0, 1.8, 0), row(0.0, 1.83, 0, "fifo"), row(20.0, 1.07, 0),
            row(0.0, 1.01, 400), row(20.0, 1.002, 400)]  # fmt: skip
    got = {f["weights_mib"]: f for f in facet_numbers(rows)}
    assert set(got) == {0.0, 400.0}
    assert (got[0.0]["worst"], got[0.0]["best"], got[0.0]["weights_share"]) == (1.83, 1.07, 0.0)
    # 4 layers x 400 MiB over H100's 3.35 TB/s, against a 2 ms ideal step
    share = 4 * 400 * 2**20 / 3.35e12 / 2e-3
    assert got[400.0]["weights_share"] == pytest.approx(share)  # 0.2504
    text = slowdown_note(rows)
    assert "weights 400 MiB/layer on h100: the weights stream 25 % of the ideal step" in text
    assert "slowdown 1.830 at the smallest reservation and 1.070 at best" in text
    assert "slowdown 1.010 at the smallest reservation and 1.002 at best" in text
    assert "0.23 / 0.43 / 0.66 / 0.83" in text


def test_implied_hit_rates_are_the_paper_s_slowdowns_inverted():
    paper = (1.67, 1.5, 1.3, 1.15)
    assert IMPLIED_HIT_RATES == tuple(round(1 - (s - 1) / 0.87, 2) for s in paper)


@pytest.mark.slow
def test_the_quoted_table4_setting_is_what_the_pipeline_gives():
    """The note quotes benchmarks/table4.py's 21 MB-footprint setting (Llama-3.1-70B geometry,
    20 layers, top-k 256, one request, 64 steps from 8,192 tokens): recompute it."""
    from dataclasses import replace

    from dsacache.perf import mlp_for_slowdown, model, perf_params, workload_from_sim
    from dsacache.sim import SimConfig, simulate
    from dsacache.sim.config import mb_to_mib
    from dsacache.sim.llc.run import MODEL_WEIGHTS
    from dsacache.trace.geometry import preset
    from dsacache.trace.synth import PAPER_TARGETS, synthesize

    geometry = preset("llama-3.1-70b").with_overrides(layers=20, top_k=256)
    trace = synthesize(geometry, 64, 8192, PAPER_TARGETS, seed=0, requests=1)
    weights = MODEL_WEIGHTS["llama-3.1-70b"][0]
    text = slowdown_note([row(0.0, 1.5, 0)])
    hit_rates = {}
    for policy in ("min", "keep-previous", "token-lru"):
        hit_rates[policy] = []
        for mb in (5, 10, 15, 20):
            sim = simulate(trace, SimConfig(policy, capacity_mib=mb_to_mib(mb)))
            w = workload_from_sim(trace, sim, weights_bytes_per_layer=weights)
            hit_rates[policy].append(w.hit_rate)
    quoted = {"min": "MIN then reaches", "keep-previous": "keep-previous"}
    for policy, words in quoted.items():
        assert f"{words} {' / '.join(f'{h:.2f}' for h in hit_rates[policy])}," in text
    assert max(hit_rates["token-lru"]) < 0.005 and "token-LRU 0." in text
    # "about 2 gather loads in flight, at 52 tok/s per user"
    w0 = w.with_(hit_rate=0.0)
    h200 = perf_params("h200")
    mlp = mlp_for_slowdown(h200, w0, 1.87)
    assert round(mlp) == 2 and "about 2 gather loads in flight" in text
    per_user = 1 / model(replace(h200, mlp_lines=mlp), w0).ideal.total_s
    assert round(per_user) == 52 and "at 52 tok/s per user" in text
