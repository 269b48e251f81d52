"""Measured vs model from a calibration run's JSON (benchmarks/gpu/calibrate_gpu.py).

    python benchmarks/gpu/plot_calibration.py benchmarks/gpu/results/calibration-h200.json \
        [--figure docs/calibration-h200.png]

Prints two Markdown tables (the L2 footprint sweep: measured vs model hit rate per size; the
decode configurations: predicted vs measured step time and KV hit rate, with the errors the
issue's targets are stated in) and, with --figure, draws three panels: the sweep's hit rate vs
data set size, predicted vs measured step time, predicted vs measured KV hit rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

KIB_PER_MIB = 1024


def _f(v: object, fmt: str = ".3g") -> str:
    return format(v, fmt) if isinstance(v, int | float) else "-"


def l2_table(sw: dict[str, Any]) -> tuple[str, float | None]:
    """The sweep's table and the largest |model - measured| over 8..100 MiB (None: no data)."""
    rows = ["| data set (MiB) | GB/s | measured h | model h | model - measured |",
            "| ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    sizes = sw.get("sizes_kib", [])
    meas = sw.get("measured_hit_rate") or [None] * len(sizes)
    mod = sw.get("model_hit_rate") or [None] * len(sizes)
    bw = sw.get("measured_gb_per_s") or [None] * len(sizes)
    worst = None
    for s, b, m, p in zip(sizes, bw, meas, mod, strict=False):
        d = p - m if isinstance(m, float) and isinstance(p, float) else None
        if d is not None and 8 * KIB_PER_MIB <= s <= 100 * KIB_PER_MIB:
            worst = abs(d) if worst is None else max(worst, abs(d))
        rows.append(
            f"| {s / KIB_PER_MIB:g} | {_f(b, '.4g')} | {_f(m)} | {_f(p)} | {_f(d, '+.3f')} |"
        )
    return "\n".join(rows), worst


def decode_table(dec: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The configurations' table and the step-time error summary (median / worst |pred/meas-1|)."""
    rows = ["| configuration | predicted ms | measured ms | error | predicted KV h | "
            "measured KV h (bracket) | weights / index / gather / copy / append ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    errs = []
    for r in dec:
        p, m = r.get("predicted_step_ms"), r.get("measured_step_ms")
        e = p / m - 1 if isinstance(p, float) and isinstance(m, float) and m > 0 else None
        if e is not None:
            errs.append(abs(e))
        parts = " / ".join(_f(r.get(f"measured_{k}_ms"), ".3g")
                           for k in ("weights", "index", "gather", "copy", "append"))  # fmt: skip
        rows.append(
            f"| {r['name']} | {_f(p, '.4g')} | {_f(m, '.4g')} | {_f(e, '+.1%')} | "
            f"{_f(r.get('predicted_kv_hit_rate'))} | {_f(r.get('measured_kv_hit_rate'))} | "
            f"{parts} |"
        )
    summary = {}
    if errs:
        summary = {"median_abs_error": float(np.median(errs)), "worst_abs_error": max(errs)}
    return "\n".join(rows), summary


def figure(d: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.4))
    sw = d["l2_sweep"]
    mib = np.asarray(sw.get("sizes_kib", []), float) / KIB_PER_MIB
    meas = [np.nan if v is None else v for v in (sw.get("measured_hit_rate") or [])]
    if meas:
        ax[0].plot(mib, meas, "o", ms=4, label="measured (bandwidth -> h)")
    if sw.get("model_hit_rate"):
        ax[0].plot(mib, sw["model_hit_rate"], "-", label="GPU L2 model")
    ax[0].axvspan(8, 100, color="grey", alpha=0.08, label="target range 8-100 MiB")
    ax[0].set(xlabel="data set (MiB)", ylabel="L2 hit rate", ylim=(-0.05, 1.05),
              title="L2 footprint sweep")  # fmt: skip
    ax[0].legend(fontsize=8)
    dec = [r for r in d["decode"] if isinstance(r.get("measured_step_ms"), float)]
    for r in dec:
        c = "C1" if r.get("slots") else "C0"
        ax[1].loglog(r["measured_step_ms"], r["predicted_step_ms"], "o", color=c)
        ax[1].annotate(r["name"].split("/", 1)[-1], (r["measured_step_ms"], r["predicted_step_ms"]),
                       fontsize=7)  # fmt: skip
        h = r.get("measured_kv_hit_rate")
        if isinstance(h, float):
            ax[2].plot(h, r["predicted_kv_hit_rate"], "o", color=c)
            ax[2].annotate(r["name"].split("/", 1)[-1], (h, r["predicted_kv_hit_rate"]), fontsize=7)
    if dec:
        v = [x for r in dec for x in (r["measured_step_ms"], r["predicted_step_ms"])]
        lo, hi = min(v) / 1.5, max(v) * 1.5
        xs = np.array([lo, hi])
        ax[1].plot(xs, xs, "k-", lw=0.8, label="predicted = measured")
        ax[1].fill_between(xs, xs * 0.85, xs * 1.15, color="grey", alpha=0.15, label="±15 %")
        ax[1].legend(fontsize=8)
    ax[1].set(xlabel="measured step (ms)", ylabel="predicted step (ms)",
              title="decode step (blue: baseline, orange: reservation)")  # fmt: skip
    ax[2].plot([0, 1], [0, 1], "k-", lw=0.8)
    ax[2].set(xlabel="measured KV hit rate (timing brackets)", ylabel="predicted KV hit rate",
              xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), title="KV gathers served by L2")  # fmt: skip
    gpu = d.get("env", {}).get("gpu") or "CPU smoke run"
    fig.suptitle(f"calibration: models vs measurement ({gpu})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="calibration-<gpu>.json")
    ap.add_argument("--figure", type=Path, help="draw the three panels to this PNG")
    a = ap.parse_args(argv)
    try:
        d = json.loads(a.results.read_text())
        sw, dec = d["l2_sweep"], d["decode"]
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {a.results}: not a calibration result ({e})", file=sys.stderr)
        return 2
    t, worst = l2_table(sw)
    print(t)
    print(f"\nL2 sweep, max |model - measured| over 8-100 MiB: {_f(worst)}\n")
    t, summary = decode_table(dec)
    print(t)
    if summary:
        print(f"\nstep time |predicted / measured - 1|: median {summary['median_abs_error']:.1%}, "
              f"worst {summary['worst_abs_error']:.1%}")  # fmt: skip
    lru = d.get("lru", {})
    if isinstance(lru.get("lru_ms_per_step"), float) and lru.get("gather_ms_per_step"):
        print(f"\nLRU {lru['lru_ms_per_step']:.4g} ms/step = "
              f"{100 * lru['lru_ms_per_step'] / lru['gather_ms_per_step']:.3g} % of the gathers "
              f"({lru['gather_ms_per_step']:.4g} ms/step), {lru.get('lru_impl')}")  # fmt: skip
    if a.figure:
        figure(d, a.figure)
        print(f"\nwrote {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
