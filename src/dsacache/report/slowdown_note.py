"""The paragraph under the report's slowdown figure: why the modelled curve is (or is not)
the paper's Table 4, with this sweep's own numbers."""

from __future__ import annotations

from typing import Any

from dsacache.perf import perf_params

# The paper's Table 4 read through our step model (docs/perf-model.md, benchmarks/table4.py):
# S(0) = 1.87 means the gathers take about 62 % of the ideal step; the other slowdowns then
# imply these gather hit rates at 5 / 10 / 15 / 20 MB (1 - (S - 1) / 0.87, latency-bound).
IMPLIED_HIT_RATES = (0.23, 0.43, 0.66, 0.83)


def facet_numbers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (trace, partition, hardware, weights) panel: the all-miss-side slowdown (the
    smallest capacity's largest slowdown), the best slowdown, and the weight stream's share of
    the ideal step."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["trace"], r["partition"], r["hardware"], r["weights_bytes_per_layer"])
        groups.setdefault(key, []).append(r)
    out = []
    for (trace, part, hw, wb), grp in groups.items():
        low = min(r["effective_capacity_mib"] for r in grp)
        worst = max(r["slowdown"] for r in grp if r["effective_capacity_mib"] == low)
        best = min(r["slowdown"] for r in grp)
        ideal = grp[0]["ideal_step_time_s"]
        weights_s = grp[0]["layers_per_gpu"] * wb / perf_params(hw).hbm_bytes_per_s
        out.append({"trace": trace, "partition": part, "hardware": hw,
                    "weights_mib": wb / 2**20, "worst": worst, "best": best,
                    "weights_share": weights_s / ideal})  # fmt: skip
    return out


def slowdown_note(rows: list[dict[str, Any]]) -> str:
    """One paragraph: what bounds the modelled slowdown here, and what the paper's implies."""
    panels = "; ".join(
        f"weights {f['weights_mib']:,.0f} MiB/layer on {f['hardware']}: the weights stream "
        f"{100 * f['weights_share']:.0f} % of the ideal step, slowdown {f['worst']:.3f} at the "
        f"smallest reservation and {f['best']:.3f} at best"
        for f in facet_numbers(rows)
    )
    implied = " / ".join(f"{h:.2f}" for h in IMPLIED_HIT_RATES)
    return (
        "Why this is not the paper's curve. The modelled step adds the weight stream, the "
        "index-key scan and the KV gathers (docs/perf-model.md); a reservation only speeds up "
        "the gathers, so the slowdown can be no larger than their share of the step allows. "
        f"In this sweep: {panels}. The paper's 1.87 at 0 MB says its gathers take about 62 % of "
        "the ideal step (an LLC hit 2.4 x faster than HBM); its 1.67 / 1.5 / 1.3 / 1.15 then "
        f"imply gather hit rates {implied} at 5 / 10 / 15 / 20 MB (4.77 / 9.54 / 14.31 / 19.07 "
        "MiB). Our model gets there only with a footprint of about 21 MB per step (top-k 256 "
        "and one request on 20 Llama-3.1-70B layers) and about 2 gather loads in flight, at "
        "52 tok/s per user; Belady's MIN then reaches 0.23 / 0.43 / 0.56 / 0.67, "
        "keep-previous 0.12 / 0.22 / 0.32 / 0.43, token-LRU 0. At the batch an H200 can serve "
        "at 100 tok/s per user the weights dominate and no reservation moves the slowdown "
        "from about 1.2 (benchmarks/table4.py)."
    )
