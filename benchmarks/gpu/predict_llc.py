"""The LLC model's and the perf model's prediction for the GPU prototype's trace, beside the
H200 measurements (docs/gpu-prototype.md, "Measured on an H200").

    .venv/bin/python benchmarks/gpu/predict_llc.py [--trace .device-in/ds_trace.npz]
        [--results benchmarks/gpu/results] [--out benchmarks/gpu/results/h200-sim-prediction.json]

Model: dsacache.sim.llc on the `h200` preset (60 MiB as 16384 sets x 30 ways of 128 B lines,
32 B sectors on, LRU, modulo set index), for `baseline` (reservation none) and the `token`
reservation at each set-aside size of the measured run (token-lru, per-layer partition: the
prototype's hot buffer; the region's capacity is checked equal to the GPU's slots x layers).

Two streams:
- `prototype`: the kv-gather runs only, what the prototype's kernels read (no weights, no
  indexer scan, no append). The model's drivers are reused unchanged; only their runs are
  filtered (`only_gathers`).
- `decode`: the model's full DSA decode stream (DeepSeek-V3.2 weights per layer, indexer scan
  of every cached key, gathers, appends): what a real decode step would put through the L2.

Windows: all 136 steps; the timed steps (after 8 warm-up steps; line hits only, from the
per-step misses); and step 2 alone, the step ncu profiled (3-step runs, counters of 3 steps
minus those of 2). The perf model (dsacache.perf, h200 preset) is applied with the prototype's
workload: 20 layers, batch 1, no weights, no indexer scan, 2048 gathers of 656 B per layer.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np

from dsacache.gpu.layouts import ALIGN, DS_PAGE, DS_ROW_BYTES
from dsacache.perf import Workload, model, perf_params
from dsacache.sim.llc import LLCConfig, Runs, simulate_llc
from dsacache.sim.llc import front as llc_front
from dsacache.sim.llc import run as llc_run
from dsacache.sim.llc.hardware import SECTOR_BYTES, hardware
from dsacache.sim.llc.kernels import K_ACCESSES, K_BYTES, K_HITS
from dsacache.sim.llc.layout import Layout, line_span
from dsacache.sim.llc.stream import KV_GATHER
from dsacache.trace.io import open_trace

ROOT = Path(__file__).parents[2]
HW = "h200"
WARMUP = 8  # run_gpu.py's --warmup of the measured runs
NCU_STEP = 2  # ncu --launch-skip 2 x layers: the third step's gathers were profiled
MEASURED = ("h200-run1.json", "h200-run2-ncu-all.json")
W = 16  # table column width


def only_gathers(runs: Runs) -> Runs:
    """The same runs with everything but kv-gather dropped (per-step offsets recomputed)."""
    keep = runs.cls == KV_GATHER
    step_of = np.repeat(np.arange(runs.steps), np.diff(runs.step_start))
    starts = np.zeros(runs.steps + 1, np.int64)
    np.cumsum(np.bincount(step_of[keep], minlength=runs.steps), out=starts[1:])
    f = [runs.first, runs.count, runs.cls, runs.m0, runs.m1]
    return Runs(runs.start, *(a[keep] for a in f), starts)


@contextlib.contextmanager
def prototype_stream() -> Iterator[None]:
    """simulate_llc's drivers (run._replay, front.run_front) fed gathers only."""
    iter_runs, build_runs = llc_run.iter_runs, llc_front.build_runs

    def gathers_iter(*a: object, **k: object) -> Iterator[Runs]:
        return (only_gathers(r) for r in iter_runs(*a, **k))

    def gathers_build(*a: object, **k: object) -> Runs:
        return only_gathers(build_runs(*a, **k))

    with (
        mock.patch.object(llc_run, "iter_runs", gathers_iter),
        mock.patch.object(llc_front, "build_runs", gathers_build),
    ):
        yield


def popcount4(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.int64)
    return (m & 1) + (m >> 1 & 1) + (m >> 2 & 1) + (m >> 3 & 1)


def sectors_of(first: np.ndarray, last: np.ndarray, m0: np.ndarray, m1: np.ndarray) -> np.ndarray:
    """32 B sectors a byte range touches, from its line_span."""
    inner = np.maximum(last - first - 1, 0) * 4
    return popcount4(m0) + np.where(last > first, popcount4(m1), 0) + inner


def gather_requests(trace, n_steps: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """int64 [steps] each: 32 B sector bytes and 128 B line accesses the gathers of each step
    request, in the model's layout (paged pool, 2 MiB aligned, rows packed in 64-token
    blocks)."""
    g = trace.geometry
    ctx = [np.asarray(r.context_lens[:n_steps], np.int64) for r in trace.requests]
    lay = Layout.build(g, ctx, 0)
    sectors = np.zeros(n_steps, np.int64)
    lines = np.zeros(n_steps, np.int64)
    layer = np.arange(g.layers)[None, :, None]
    for r, req in enumerate(trace.requests):
        idx = np.asarray(req.indices[:n_steps], np.int64)  # [steps, layers, k]
        ok = idx >= 0
        first, last, m0, m1 = lay.kv_row_lines(layer, r, np.where(ok, idx, 0))
        n = idx.shape[0]
        sectors[:n] += np.where(ok, sectors_of(first, last, m0, m1), 0).reshape(n, -1).sum(axis=1)
        lines[:n] += np.where(ok, last - first + 1, 0).reshape(n, -1).sum(axis=1)
    return sectors * SECTOR_BYTES, lines


def gpu_sectors_per_row() -> float:
    """Mean 32 B sectors per row in the prototype's pool (layouts.py: the pool starts 4 KiB
    aligned, 64-token pages of 656 B rows); hot-buffer slots are packed rows the same way."""
    j = np.arange(DS_PAGE, dtype=np.int64)
    first, last, m0, m1 = line_span(ALIGN + j * DS_ROW_BYTES, np.int64(DS_ROW_BYTES))
    return float(sectors_of(first, last, m0, m1).mean())


def kv_counts(res) -> np.ndarray:  # noqa: ANN001
    return res.counters[KV_GATHER].astype(np.int64)


def run_config(trace, cfg: LLCConfig, stream: str, steps: int | None = None):  # noqa: ANN001, ANN201
    if stream == "prototype":
        with prototype_stream():
            return simulate_llc(trace, cfg, steps=steps)
    return simulate_llc(trace, cfg, steps=steps)


def predict(
    trace, cfg: LLCConfig, stream: str, sector_bytes: np.ndarray, lines: np.ndarray
) -> dict:  # noqa: ANN001
    """Hit rates of one configuration over the three windows (sector_bytes, lines: what each
    step's gathers request, in 32 B sector bytes and in line accesses)."""
    g = trace.geometry
    t0 = time.perf_counter()
    full = run_config(trace, cfg, stream)
    c = kv_counts(full)
    steps = full.steps
    timed = slice(WARMUP, steps)
    out: dict = {
        "kv_line_hit_rate_all": c[K_HITS] / c[K_ACCESSES],
        "kv_sector_hit_rate_all": 1 - c[K_BYTES] / sector_bytes[:steps].sum(),
        "kv_line_hit_rate_timed": 1 - full.blocking_per_step[timed].sum() / lines[timed].sum(),
        "hbm_bytes_per_gather_launch_all": c[K_BYTES] / (steps * g.layers),
    }
    if full.token_region is not None:
        fr = full.token_region
        out["region_tokens"] = fr.capacity_tokens
        out["region_ways"] = fr.ways
        out["shared_ways"] = fr.shared_ways
        out["region_token_hit_rate"] = fr.hits / (fr.hits + fr.misses)
    if stream == "prototype":
        a = kv_counts(run_config(trace, cfg, stream, NCU_STEP))
        b = kv_counts(run_config(trace, cfg, stream, NCU_STEP + 1))
        d = b - a
        out["kv_line_hit_rate_ncu_step"] = d[K_HITS] / d[K_ACCESSES]
        out["kv_sector_hit_rate_ncu_step"] = 1 - d[K_BYTES] / sector_bytes[NCU_STEP]
        out["hbm_bytes_per_gather_launch_ncu_step"] = d[K_BYTES] / g.layers
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()}


def measured(results: Path) -> dict:
    """The measured modes of both H200 runs (file -> mode -> the columns compared here)."""
    cols = ("slots", "set_aside_mib", "gather_ms_median", "lru_ms_median", "copy_ms_median",
            "total_ms_median", "sim_hit_rate", "sim_capacity_tokens", "lru_hit_rate_all",
            "ncu_l2_hit_pct", "ncu_dram_bytes")  # fmt: skip
    out = {}
    for name in MEASURED:
        data = json.loads((results / name).read_text())
        out[name] = {m: {c: v[c] for c in cols if c in v} for m, v in data["modes"].items()}
    return out


def dram_ratio(trace, rows: int, modes: dict) -> dict:  # noqa: ANN001
    """ncu DRAM bytes read per gather launch / the KV sector bytes that launch requests
    (rows per launch x the prototype's sectors per row x 32 B): ~1 means the profiled gathers
    fetched (nearly) all their KV sectors from DRAM, i.e. found few of them in L2."""
    per_launch = rows / (trace.steps * trace.geometry.layers)
    kv = per_launch * gpu_sectors_per_row() * SECTOR_BYTES
    out = {"kv_sector_bytes_per_launch": kv}
    for mode, m in modes.items():
        if m.get("ncu_dram_bytes") is not None:
            out[mode] = m["ncu_dram_bytes"] / kv
    return out


def perf_prediction(trace, h: float, gather_ms: float | None) -> dict:  # noqa: ANN001
    """dsacache.perf's gather time for the prototype's workload at gather hit rate h."""
    g = trace.geometry
    ctx = float(np.mean([np.mean(r.context_lens) for r in trace.requests]))
    acc = sum(int((np.asarray(r.indices) >= 0).sum()) for r in trace.requests)
    per_layer = acc / (trace.steps * g.layers * len(trace.requests))
    w = Workload(g.layers, len(trace.requests), 0, ctx, 0, g.kv_bytes_per_token, per_layer, h)
    p = perf_params(HW)
    st = model(p, w).step
    out = {
        "hit_rate": h,
        "gather_loads": st.gather_loads,
        "gather_latency_ms": st.gather_latency_s * 1e3,
        "gather_bandwidth_ms": st.gather_bandwidth_s * 1e3,
        "gather_ms": st.gather_s * 1e3,
        "mlp_lines": p.mlp_lines,
    }
    if gather_ms:
        # Little's law backwards: loads in flight the measured time implies at this h
        mean_ns = h * p.llc_hit_ns + (1 - h) * p.hbm_ns
        out["measured_gather_ms"] = gather_ms
        out["implied_mlp_lines"] = st.gather_loads * mean_ns * 1e-6 / gather_ms
    return out


DIFFERENCES = [
    "ncu lts__t_sector_hit_rate.pct counts every L2 sector access of the _ds_gather_kernel "
    "launches: q (each of the 32 split programs reads the layer's q), indices, block table, "
    "slot table, partial-result stores and the KV rows; the model's rates count KV rows only.",
    "ncu profiled only the gather kernels of step 2 of a 3-step run (launches 41-60), with "
    "every kernel serialised and --cache-control none; the copy and LRU kernels ran between "
    "them unprofiled. In the reserve modes the copy kernel reads the missed rows from the pool "
    "and writes them into their slots just before the gather: those DRAM reads fall on the "
    "copy, not the gather. The model's token mode charges them to the gathers.",
    "The model's region is a separate token store carved out of whole L2 ways; on the GPU the "
    "hot buffer is ordinary memory kept in L2 by a persisting access-policy window "
    "(hitRatio 1), whose replacement and partitioning NVIDIA does not document.",
    "The model's L2 is one 60 MiB LRU cache of 16384 sets x 30 ways with a modulo set index "
    "(ASSUMED: the associativity, hash and policy of the H200's L2 are not published); the "
    "H200's L2 is built of two partitions.",
    "Sector hit rates: model = 1 - HBM bytes / sector bytes requested (32 B sectors); the "
    "prototype reads every 656 B row as whole 32 B sectors too (gpu_sectors_per_row).",
]


def fmt(v: object, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if pct else f"{v:.4g}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=ROOT / ".device-in/ds_trace.npz")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks/gpu/results")
    ap.add_argument(
        "--out", type=Path, default=None, help="default: RESULTS/h200-sim-prediction.json"
    )
    ap.add_argument("--no-decode", action="store_true", help="skip the full decode stream")
    ap.add_argument("--figure", type=Path, help="also draw measured vs predicted to this PNG")
    ap.add_argument("--from-json", action="store_true", help="only redraw from --out's JSON")
    a = ap.parse_args()
    out_path = a.out or a.results / "h200-sim-prediction.json"
    if a.from_json:
        plot(json.loads(out_path.read_text()), a.figure)
        return
    if not a.trace.exists():  # .device-in/ is not committed; the trace is deterministic
        raise SystemExit(
            f"{a.trace} is missing: python benchmarks/gpu/run_gpu.py --make-trace {a.trace}"
        )
    trace = open_trace(a.trace, lazy=False).materialize()
    meas = measured(a.results)
    run2 = meas[MEASURED[1]]
    sizes = [(m, v["set_aside_mib"]) for m, v in run2.items() if m.startswith("reserve-")]
    hw = hardware(HW)
    sector_bytes, lines = gather_requests(trace, trace.steps)
    rows = sum(int((np.asarray(r.indices) >= 0).sum()) for r in trace.requests)
    base = {"hardware": HW, "sectors": True, "weights_bytes": 0, "policy": "lru"}
    configs = [("baseline", 0.0, LLCConfig(**base))]
    for mode, mib in sizes:
        configs.append((mode, mib, LLCConfig(**base, reservation="token", reserve_mib=mib,
                                             front_partition="per-layer")))  # fmt: skip
    streams = ["prototype"] + ([] if a.no_decode else ["decode"])
    preds = []
    for stream in streams:
        for mode, mib, cfg in configs:
            if stream == "decode":  # the model's own weights per layer (DeepSeek-V3.2)
                cfg = dataclasses.replace(cfg, weights_bytes=None)
            rec = {"stream": stream, "mode": mode, "set_aside_mib": mib}
            rec.update(predict(trace, cfg, stream, sector_bytes, lines))
            gpu = run2.get(mode, {})
            if "region_tokens" in rec and gpu.get("sim_capacity_tokens") is not None:
                rec["region_tokens_equal_gpu_slots"] = (
                    rec["region_tokens"] == gpu["sim_capacity_tokens"]
                )
            preds.append(rec)
            print(f"  {stream:9s} {mode:11s} {rec['seconds']:6.1f} s", flush=True)
    perf = []
    for rec in preds:
        if rec["stream"] != "prototype":
            continue
        ms = meas[MEASURED[0]].get(rec["mode"], {}).get("gather_ms_median")
        perf.append(
            {"mode": rec["mode"], **perf_prediction(trace, rec["kv_line_hit_rate_timed"], ms)}
        )
    for label, h in (("all-miss", 0.0), ("all-hit", 1.0)):  # the model's bounds
        perf.append({"mode": label, **perf_prediction(trace, h, None)})
    result = {
        "trace": {
            "path": str(a.trace.relative_to(ROOT) if a.trace.is_relative_to(ROOT) else a.trace),
            "requests": len(trace.requests),
            "steps": trace.steps,
            "geometry": trace.geometry.to_dict(),
            "gathered_rows": rows,
            "model_sector_bytes_per_row": float(sector_bytes.sum() / rows),
            "gpu_sectors_per_row": gpu_sectors_per_row(),
        },
        "model": {
            "hardware": hw.to_dict(),
            "policy": "lru",
            "set_hash": "modulo",
            "sectors": True,
            "token_front": {"policy": "token-lru", "partition": "per-layer"},
            "streams": {
                "prototype": "kv-gather runs only (what the prototype's kernels read)",
                "decode": "weights (DeepSeek-V3.2, model's MODEL_WEIGHTS) + indexer scan + "
                "kv-gather + kv-append: the model's full DSA decode stream",
            },
            "windows": {
                "all": f"steps 0-{trace.steps - 1}",
                "timed": f"steps {WARMUP}-{trace.steps - 1} (line hits only)",
                "ncu_step": f"step {NCU_STEP} (ncu profiled its 20 gather launches)",
            },
        },
        "predictions": preds,
        "measured_dram_over_kv_sector_bytes": dram_ratio(trace, rows, meas[MEASURED[1]]),
        "perf_model": perf,
        "measured": meas,
        "differences": DIFFERENCES,
    }
    out_path.write_text(json.dumps(result, indent=1))
    print_table(preds, run2, perf)
    print(f"wrote {out_path}")
    if a.figure:
        plot(result, a.figure)


def plot(result: dict, path: Path) -> None:
    """Left: gather ms per step vs set-aside (baseline at 0); right: measured ncu L2 sector hit
    rate vs the model's KV hit rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(modes: dict, key: str) -> tuple[list[float], list[float]]:
        pts = [
            (v.get("set_aside_mib", 0.0), v[key])
            for m, v in modes.items()
            if (m == "baseline" or m.startswith("reserve-")) and v.get(key) is not None
        ]
        pts.sort()
        return [x for x, _ in pts], [y for _, y in pts]

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.6))
    for name, marker in zip(MEASURED, ("o", "s"), strict=True):
        modes = result["measured"][name]
        x, y = series(modes, "gather_ms_median")
        left.plot(x, y, marker=marker, label=f"{name}: baseline / reserve")
        buf = modes.get("buffer-16", {})
        if "gather_ms_median" in buf:
            left.plot(
                [16.8],
                [buf["gather_ms_median"]],
                marker="D",
                mfc="none",
                ls="none",
                color="black" if marker == "o" else "grey",
                label=f"{name}: buffer-16 (no window; drawn at 16.8)",
            )
    left.set(
        xlabel="persisting set-aside (MiB; 0 = baseline)",
        ylabel="gather ms per step (median)",
        title="H200 gather time, 20 layers x 2048 rows",
        ylim=(0, None),
    )
    left.legend(fontsize=7, loc="lower right")
    x, y = series(result["measured"][MEASURED[1]], "ncu_l2_hit_pct")
    right.plot(x, y, "s-", label="measured: ncu L2 sector hit, all gather traffic (run 2)")
    x, y = series(result["measured"][MEASURED[0]], "ncu_l2_hit_pct")
    right.plot(x, y, "o", mfc="none", label="measured: same, run 1")
    ratio = result["measured_dram_over_kv_sector_bytes"]
    pts = sorted(
        (v.get("set_aside_mib", 0.0), 100 * (1 - ratio[m]))
        for m, v in result["measured"][MEASURED[1]].items()
        if m in ratio and (m == "baseline" or m.startswith("reserve-"))
    )
    right.plot(
        *zip(*pts, strict=True),
        "s-",
        color="black",
        label="measured, derived: 1 - ncu DRAM bytes / KV sector bytes (run 2)",
    )
    for stream, key, style, label in (
        ("prototype", "kv_sector_hit_rate_ncu_step", "^--", "model: KV sectors, step 2 (ncu's)"),
        ("prototype", "kv_sector_hit_rate_all", "v--", "model: KV sectors, all steps"),
        ("decode", "kv_sector_hit_rate_all", "d:", "model: KV, full decode stream"),
        ("prototype", "region_token_hit_rate", "x:", "token-lru region (= GPU LRU hit rate)"),
    ):
        pts = sorted(
            (p["set_aside_mib"], 100 * p[key])
            for p in result["predictions"]
            if p["stream"] == stream and p.get(key) is not None
        )
        if pts:
            right.plot(*zip(*pts, strict=True), style, label=label)
    right.set(
        xlabel="persisting set-aside / reserved region (MiB)",
        ylabel="hit rate (%)",
        title="L2 hit rate: measured vs predicted",
        ylim=(-10, 100),
    )
    right.axhline(0, color="grey", lw=0.5)
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def print_table(preds: list[dict], run2: dict, perf: list[dict]) -> None:
    print("\nKV hit rates, % (model: dsacache.sim.llc h200; measured: ncu, h200-run2-ncu-all.json)")
    head = ["stream", "mode", "line all", "sector all", "line timed", "line s2", "sector s2",
            "region", "ncu L2 s2", "HBM B/launch s2", "ncu DRAM B"]  # fmt: skip
    print("".join(h.rjust(W) if i > 1 else h.ljust(11) for i, h in enumerate(head)))
    for r in preds:
        m = run2.get(r["mode"], {}) if r["stream"] == "prototype" else {}
        cells = [
            fmt(r.get(k), True)
            for k in ("kv_line_hit_rate_all", "kv_sector_hit_rate_all", "kv_line_hit_rate_timed",
                      "kv_line_hit_rate_ncu_step", "kv_sector_hit_rate_ncu_step",
                      "region_token_hit_rate")
        ] + [
            fmt(m.get("ncu_l2_hit_pct")),
            fmt(r.get("hbm_bytes_per_gather_launch_ncu_step")),
            fmt(m.get("ncu_dram_bytes")),
        ]  # fmt: skip
        print(r["stream"].ljust(11) + r["mode"].ljust(11) + "".join(c.rjust(W) for c in cells))
    print("\nperf model (h200, prototype workload) vs measured gather ms (h200-run1.json)")
    for p in perf:
        print(
            f"{p['mode']:11s} h={p['hit_rate']:.3f} model {p['gather_ms']:.4f} ms "
            f"(latency {p['gather_latency_ms']:.4f}, bandwidth {p['gather_bandwidth_ms']:.4f}) "
            f"measured {fmt(p.get('measured_gather_ms'))} ms, implied MLP "
            f"{fmt(p.get('implied_mlp_lines'))} lines (model {p['mlp_lines']:.0f})"
        )


if __name__ == "__main__":
    main()
