"""dsacache.perf.inverse: the step model run backwards, against closed forms and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsacache.errors import DsacacheError
from dsacache.perf import (
    PerfParams,
    Workload,
    hit_rate_for_slowdown,
    mlp_for_slowdown,
    slowdown_at,
)

# Latency-bound: 1 TB/s, LLC 100 ns, HBM 400 ns. 2 layers x 1 MB weights (x = 2 us + 1.2 ns of
# index scan), 60 gather loads (3 requests x 2 layers x 5 tokens x 2 lines).
P = PerfParams("toy", hbm_bytes_per_s=1e12, llc_hit_ns=100.0, hbm_ns=400.0, mlp_lines=10.0)
W = Workload(2, 3, 1_000_000, 50.0, 4, 256, 5.0, 0.0)
X = 2e-6 + 1.2e-9  # the streaming terms, seconds
N = 60
PAPER = (1.87, 1.67, 1.5, 1.3, 1.15)


def test_mlp_for_slowdown_by_hand():
    # S(0) - 1 = N (t_hbm - t_llc) / MLP / (X + N t_llc / MLP)
    #   => MLP = N (t_hbm - t_llc - (S0 - 1) t_llc) / ((S0 - 1) X)
    want = N * (400e-9 - 100e-9 - 0.87 * 100e-9) / (0.87 * X)  # 7.3404 loads in flight
    got = mlp_for_slowdown(P, W, 1.87)
    assert got == pytest.approx(want, rel=1e-9)
    assert got == pytest.approx(7.3404, abs=1e-4)
    assert slowdown_at(PerfParams("c", 1e12, 100.0, 400.0, got), W, 0.0) == pytest.approx(1.87)


def test_paper_slowdowns_imply_linear_hit_rates():
    p = PerfParams("c", 1e12, 100.0, 400.0, mlp_for_slowdown(P, W, 1.87))
    # latency-bound: S(h) - 1 = (1 - h)(S(0) - 1), so h = 1 - (S - 1) / 0.87
    got = [hit_rate_for_slowdown(p, W, s) for s in PAPER]
    assert got == pytest.approx([0.0, 0.2299, 0.4253, 0.6552, 0.8276], abs=1e-4)
    assert got == pytest.approx([1 - (s - 1) / 0.87 for s in PAPER], abs=1e-9)
    assert hit_rate_for_slowdown(p, W, 1.0) == pytest.approx(1.0)


def test_unreachable_and_bad_targets():
    # default toy MLP 10: S(0) = (X + 60 x 400 ns / 10) / (X + 60 x 100 ns / 10) = 1.6387
    s0 = (X + N * 400e-9 / 10) / (X + N * 100e-9 / 10)
    assert slowdown_at(P, W, 0.0) == pytest.approx(s0)
    assert hit_rate_for_slowdown(P, W, s0 + 0.01) is None
    # no MLP makes S(0) exceed t_hbm / t_llc = 4 (the streaming terms only lower it)
    assert mlp_for_slowdown(P, W, 4.0) is None
    with pytest.raises(DsacacheError, match="slowdown"):
        hit_rate_for_slowdown(P, W, 0.5)
    with pytest.raises(DsacacheError, match="slowdown"):
        mlp_for_slowdown(P, W, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    frac=st.floats(0.0, 1.0),
    bw=st.floats(1e9, 1e13),
    mlp=st.floats(1.0, 5000.0),
    weights=st.integers(0, 10**8),
)
def test_round_trip_on_either_branch(frac, bw, mlp, weights):
    # Bandwidth- or latency-bound: the hit rate found gives back the slowdown asked for.
    p = PerfParams("x", bw, 150.0, 350.0, mlp)
    w = W.with_(weights_bytes_per_layer=weights)
    s0 = slowdown_at(p, w, 0.0)
    target = 1.0 + frac * (s0 - 1.0)
    h = hit_rate_for_slowdown(p, w, target)
    assert h is not None and 0.0 <= h <= 1.0
    assert slowdown_at(p, w, h) == pytest.approx(target, rel=1e-9, abs=1e-12)
