"""The calibration run: measure what the LLC and perf models claim, on the GPU, in one go.

    PYTHONPATH=src python benchmarks/gpu/calibrate_gpu.py [--out DIR] [--budget-s 540]
    PYTHONPATH=src python benchmarks/gpu/calibrate_gpu.py --cpu-smoke --out DIR   (CPU, tiny)

Writes DIR/calibration-<gpu>.json (default DIR benchmarks/gpu/results; <gpu> = h200 on an
H200, cpu-smoke with --cpu-smoke), rewritten after every phase. Phases, each in try/except (an
error is recorded under "errors" and the run goes on), inside a wall-clock budget:

1. env: GPU, SMs, L2 size, max persisting set-aside and window, versions.
2. predict: BEFORE anything is timed, the LLC model (dsacache.sim.llc) and the perf model
   (dsacache.perf) predict every decode configuration's KV hit rate and step time on the same
   synthetic trace the GPU then runs (worker processes, one per configuration); the GPU L2
   model (dsacache.sim.llc.gpu_l2) predicts the footprint sweep's hit rates.
3. l2_sweep: the RRZE gpu-l2-cache pattern on this GPU (dsacache.gpu.l2_sweep): bandwidth per
   data set size -> hit rate (plateau 8 MiB .. L2/2 and tail >= 2 x L2 of the sweep itself,
   as for the public curves).
4. decode: per model, batch and reservation, the whole decode stream of `--layers` layers
   (dsacache.gpu.decode_stream: weights GEMV, index-key scan, copy, top-k gathers, appends),
   timed per phase; the reservation = a hot buffer (the slot LRU's decisions, computed on the
   CPU before the run) pinned by a persisting access-policy window (dsacache.gpu.l2). Timing
   brackets of the gathers (all rows in L2 / all from DRAM) turn the gather time into a
   measured KV hit rate.
5. lru: the token LRU's time per step next to the gathers it serves (batch 1).

Keys: l2_sweep {sizes_kib, measured_hit_rate, model_hit_rate, ...}, decode [{name,
measured_step_ms, predicted_step_ms, predicted_kv_hit_rate, measured_kv_hit_rate, ...}],
lru {gather_ms_per_step, lru_ms_per_step, lru_impl}, env, errors, phases.
"""

from __future__ import annotations

import os
import sys

if "--cpu-smoke" in sys.argv:  # must precede the first triton import
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from dsacache.gpu.session import (  # noqa: E402
    PhaseLog,
    calibrate_sleep,
    env_info,
    gpu_slug,
    release_window,
    stub_zarr,
    time_ms,
)

stub_zarr()

from dsacache.sim.llc.gpu_l2 import gpu_l2_preset  # noqa: E402

ROOT = Path(__file__).parents[2]
MIB = 1 << 20
DEFAULT_L2_SIZES_MIB = [*range(8, 65, 4), *range(72, 161, 8)]
LAYOUT_OF = {"deepseek-v3.2": "ds", "llama-3.1-70b": "gqa"}
HEADS_OF = {"ds": 16, "gqa": 64}  # query heads per request: prototype's ds; Llama-3.1-70B's 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/gpu/results")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny run on CPU (Triton interpreter)")
    p.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget, seconds")
    p.add_argument("--models", default="llama-3.1-70b",
                   help="geometry presets, comma separated (llama-3.1-70b: gqa rows; "
                        "deepseek-v3.2: ds rows)")  # fmt: skip
    p.add_argument("--weights-mib", type=float, default=None,
                   help="weights per layer, MiB (default: the model's)")  # fmt: skip
    p.add_argument("--layers", type=int, default=20, help="layers on this GPU")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--context", type=int, default=16384, help="tokens cached per request")
    p.add_argument("--steps", type=int, default=12, help="decode steps per configuration")
    p.add_argument("--warmup", type=int, default=4, help="first steps not timed")
    p.add_argument("--top-k", type=int, default=2048)
    # The statistics generator by default: the device session must fit its 15 minutes, and the
    # indexer model takes ~100 s on a 2-core CPU for one batch-32 trace here (stats: 4 s). The
    # check compares model and measurement on the same trace, whichever generator made it.
    p.add_argument(
        "--generator",
        default="stats",
        choices=("indexer", "stats"),
        help="synthetic trace generator of every configuration",
    )
    p.add_argument("--reserve-mib", type=float, default=32.0,
                   help="hot-buffer set-aside (clipped to the device maximum)")  # fmt: skip
    p.add_argument("--nsplit", type=int, default=32, help="gather programs per request")
    p.add_argument("--precision", default="tf32", help="tl.dot input precision on GPU")
    p.add_argument("--bracket-launches", type=int, default=40)
    p.add_argument("--l2-sizes-mib", default=",".join(map(str, DEFAULT_L2_SIZES_MIB)))
    p.add_argument("--l2-chunk-kib", type=int, default=512)
    p.add_argument("--l2-blocks", type=int, default=100_000)
    p.add_argument("--l2-repeats", type=int, default=3)
    p.add_argument("--hardware", default=None,
                   help="model preset (default: from the GPU's name; h200 on CPU)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                   help="worker processes for the predictions")  # fmt: skip
    a = p.parse_args(argv)
    if a.cpu_smoke:
        a.layers, a.batches, a.context, a.steps, a.warmup, a.top_k = 2, "1,2", 256, 3, 1, 32
        a.weights_mib = a.weights_mib or 0.25
        a.reserve_mib = 2.0  # one way of the model's h200 L2: its token region = the GPU's slots
        a.nsplit, a.precision, a.bracket_launches = 1, "ieee", 1
        a.l2_sizes_mib = "0.03125,0.0625,0.09375,0.125,0.1875,0.25"  # 32 .. 256 KiB
        a.l2_chunk_kib, a.l2_blocks, a.l2_repeats = 16, 8, 1
        a.jobs = 1
    return a


# ---------------------------------------------------------------- configurations


def weights_bytes(model: str, weights_mib: float | None) -> int:
    from dsacache.sim.llc.run import MODEL_WEIGHTS

    if weights_mib is not None:
        return int(weights_mib * (1 << 20))
    return int(MODEL_WEIGHTS[model][0])


def configs(a: argparse.Namespace, hw: str, max_aside: int | None) -> list:
    """Every (model, batch, reservation) configuration, in run order."""
    from dsacache.gpu.predict import DecodeConfig

    aside = int(a.reserve_mib * MIB)
    if max_aside:
        aside = min(aside, int(max_aside))
    out = []
    for model in [m.strip() for m in a.models.split(",") if m.strip()]:
        if model not in LAYOUT_OF:
            raise SystemExit(f"unknown model {model!r} (known: {', '.join(LAYOUT_OF)})")
        for b in [int(x) for x in a.batches.split(",") if x.strip()]:
            for res in (0, aside):
                tag = f"reserve-{res / MIB:.4g}" if res else "baseline"
                out.append(
                    DecodeConfig(
                        f"{model}/b{b}/{tag}",
                        model,
                        a.layers,
                        b,
                        a.context,
                        a.steps,
                        a.warmup,
                        a.top_k,
                        weights_bytes(model, a.weights_mib),
                        res,
                        hw,
                        generator=a.generator,
                    )  # fmt: skip
                )
    return out


def l2_sizes_kib(sizes_mib: str, chunk_kib: int) -> list[int]:
    """Sweep sizes in KiB, rounded to whole chunks (at least one), sorted, unique."""
    out = set()
    for s in sizes_mib.split(","):
        if s.strip():
            n = max(1, int(round(float(s) * 1024 / chunk_kib)))
            out.add(n * chunk_kib)
    return sorted(out)


# ---------------------------------------------------------------- phases


def predict_all(
    cfgs: list, l2: tuple[str, list[int], int, int | None], jobs: int, deadline: float
) -> dict[str, Any]:
    """Every configuration's prediction and the GPU L2 model's sweep (l2 = hardware, sizes KiB,
    chunk KiB, SMs), in worker processes (spawned: no CUDA state) or inline with jobs = 1."""
    from dsacache.gpu.predict import l2_model, predict

    hw, sizes, chunk, sms = l2
    out: dict[str, Any] = {"configs": {}, "l2_model_hit_rate": None}
    if jobs <= 1:
        out["l2_model_hit_rate"] = l2_model(hw, sizes, chunk, sms)
        out["configs"] = {c.name: predict(c) for c in cfgs}
    else:
        ex = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"))
        l2_fut = ex.submit(l2_model, hw, sizes, chunk, sms)
        futs = {c.name: ex.submit(predict, c) for c in cfgs}
        for name, f in [*futs.items(), ("l2 model", l2_fut)]:
            try:
                val = f.result(timeout=max(deadline - time.monotonic(), 1.0))
            except Exception as e:  # noqa: BLE001 - one failure must not lose the rest
                val = {"error": f"{type(e).__name__}: {e}"}
            if name == "l2 model":
                out["l2_model_hit_rate"] = val if isinstance(val, list) else None
                out["l2_model_error"] = None if isinstance(val, list) else val["error"]
            else:
                out["configs"][name] = val
        # a prediction past its deadline must not hold up the measurements (or the exit)
        procs = list(getattr(ex, "_processes", {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    return out


def l2_measure(a: argparse.Namespace, ctx: dict, sizes_kib: list[int]) -> dict:
    from dsacache.errors import DsacacheError
    from dsacache.gpu.l2_sweep import measure_sweep, sweep_hit_rates

    pts = measure_sweep(
        sizes_kib, chunk_kib=a.l2_chunk_kib, blocks=a.l2_blocks, repeats=a.l2_repeats,
        device=ctx["dev"], timer=ctx["timer"],
    )  # fmt: skip
    bw = [p.gb_per_s for p in pts]
    out: dict[str, Any] = {
        "sizes_kib": [p.size_kib for p in pts],
        "measured_gb_per_s": bw,
        "measured_ms": [p.ms for p in pts],
        "chunk_kib": a.l2_chunk_kib,
        "blocks": a.l2_blocks,
        "repeats": a.l2_repeats,
    }
    try:
        out.update(sweep_hit_rates(pts, ctx["l2_bytes"]))
    except DsacacheError as e:  # no plateau above the tail (CPU timings): keep the bandwidths
        out["measured_hit_rate"] = [None] * len(bw)
        out["hit_rate_error"] = str(e)
    return out


def build_model_buffers(a: argparse.Namespace, ctx: dict, model: str, cfgs: list) -> dict:
    """One model's buffers, shared by its configurations: the KV cache (pool for the largest
    batch, hot buffer for the reservation), index keys, weights."""
    import torch

    from dsacache.gpu.decode_stream import random_index_keys
    from dsacache.gpu.layouts import build_cache

    ctx.pop("buffers", None)
    if ctx["cuda"]:
        torch.cuda.empty_cache()
    mine = [c for c in cfgs if c.model == model]
    bmax = max(c.batch for c in mine)
    slots = max(c.slots() for c in mine)
    g = mine[0].geometry()
    max_ctx = a.context + a.steps  # the synthetic context grows one token per step
    cache = build_cache(LAYOUT_OF[model], a.layers, bmax, max_ctx, slots, device=ctx["dev"])
    keys = random_index_keys(a.layers, bmax, max_ctx, g.index_bytes_per_token, device=ctx["dev"])
    ctx["buffers"] = {"model": model, "cache": cache, "keys": keys, "weights": None}
    return {
        "model": model, "layout": LAYOUT_OF[model], "requests": bmax, "max_context": max_ctx,
        "slots": slots, "kv_bytes": cache.kv.numel(), "index_key_bytes": keys.numel(),
        "weights_bytes_per_layer": mine[0].weights_bytes,
    }  # fmt: skip


def run_config(a: argparse.Namespace, ctx: dict, cfg: Any, pred: dict) -> dict:  # noqa: ANN401
    """Brackets, then the timed decode steps of one configuration; the prediction beside it."""
    import torch

    from dsacache.gpu import bench, l2
    from dsacache.gpu.decode_stream import DecodeStream, StreamShape, bracket_ms, phase_ms
    from dsacache.gpu.decode_stream import bracket_hit_rate as bracket_h

    cuda, dev = ctx["cuda"], ctx["dev"]
    buf = ctx["buffers"]
    full = buf["cache"]
    B, L = cfg.batch, cfg.layers
    slots = cfg.slots() if cfg.reserve_bytes else 0
    cache = dataclasses.replace(
        full, requests=B, block_table=full.block_table[:, :B].contiguous(), slots=slots
    )
    keys = buf["keys"][:, :B]
    rec: dict[str, Any] = {"name": cfg.name, "model": cfg.model, "batch": B, "layers": L,
                           "slots": slots, "set_aside_bytes": cfg.reserve_bytes}  # fmt: skip
    ctx["decode"].append(rec)
    for k in ("predicted_step_ms", "predicted_kv_hit_rate", "predicted_terms_ms",
              "region_token_hit_rate", "region_capacity_tokens", "error"):  # fmt: skip
        if k in pred:
            rec[k if k != "error" else "prediction_error"] = pred[k]
    shape = StreamShape(L, B, cache.max_context, cfg.top_k, HEADS_OF[cache.layout.name],
                        cfg.weights_bytes, a.nsplit, a.precision)  # fmt: skip
    key = (cfg.model, B)
    if key not in ctx["traces"]:  # the baseline and the reservation run the same trace
        ctx["traces"] = {key: cfg.trace()}
    trace = ctx["traces"][key]
    batch = bench.batch_of(trace)
    stream = DecodeStream(cache, keys, shape, weights=buf["weights"])
    buf["weights"] = stream.weights  # the next configuration of this model reuses them
    idx_all = torch.from_numpy(batch.indices).to(dev)
    hit_all = slot_all = None
    if slots:
        truth = bench.cpu_lru(batch, slots, keep=True)
        hit_all = torch.from_numpy(truth["hit"]).to(dev)
        slot_all = torch.from_numpy(truth["slot"]).to(dev)
        h, acc = truth["hits"][cfg.warmup :], truth["accesses"][cfg.warmup :]
        rec["buffer_token_hit_rate"] = float(h.sum() / max(acc.sum(), 1))
        rec["buffer_token_hit_rate_all_steps"] = float(
            truth["hits"].sum() / max(truth["accesses"].sum(), 1)
        )
    # brackets of this batch and kernel variant (measured once, reused by the twin config)
    bkey = (cfg.model, B, bool(slots))
    if bkey not in ctx["brackets"]:
        ctx["brackets"][bkey] = bracket_ms(
            stream, idx_all[0, 0], has_buf=bool(slots), launches=a.bracket_launches,
            timer=ctx["timer"],
        )  # fmt: skip
    br = ctx["brackets"][bkey]
    rec["t_hit_ms_per_gather"], rec["t_miss_ms_per_gather"] = br["t_hit_ms"], br["t_miss_ms"]
    ctx_lens = np.stack([np.asarray(r.context_lens) for r in trace.requests])  # [B, steps]
    s_cuda = torch.cuda.Stream() if cuda else None
    plan = None
    timers: list = []
    try:
        if cuda:
            torch.cuda.set_stream(s_cuda)
        if cuda and slots and ctx["env"].get("max_persisting_l2_bytes"):
            plan = l2.plan_window(
                cache.kv.data_ptr(), cache.buffer_bytes, cfg.reserve_bytes,
                ctx["env"]["max_persisting_l2_bytes"], ctx["env"].get("max_window_bytes", 0),
            )  # fmt: skip
            rec["hit_ratio"] = plan.hit_ratio
            rec["window_bytes"] = plan.num_bytes
            rec["set_aside_reported"] = l2.reserve(s_cuda.cuda_stream, plan)
        # every step's append rows up front: no host-device sync inside the timed loop
        at_all = [stream.append_rows(ctx_lens[:, t] - 1) for t in range(batch.steps)]
        pad = 0
        for t in range(batch.steps):
            if time.monotonic() > ctx["deadline"]:
                rec["truncated"] = True
                break
            n_tok = int(ctx_lens[:, t].max())
            at = at_all[t]
            if pad:
                torch.cuda._sleep(pad)
            tm = bench.Timer(cuda)
            t0 = time.perf_counter()
            stream.step(
                idx_all[t], None if hit_all is None else hit_all[t],
                None if slot_all is None else slot_all[t], n_tok, at, tm.mark,
            )  # fmt: skip
            host_ms = (time.perf_counter() - t0) * 1e3
            if cuda and ctx.get("cycles_per_ms"):  # the next step's spin: 1.5x this enqueue
                pad = int(1.5 * min(host_ms, 50.0) * ctx["cycles_per_ms"])
            timers.append((t, tm))
    finally:
        if cuda:  # the queued steps finish under the window before it is released
            torch.cuda.synchronize()
        if plan is not None:
            release_window(s_cuda.cuda_stream, rec)
        if cuda:
            torch.cuda.set_stream(torch.cuda.default_stream())
    rows = [phase_ms(tm.deltas_ms(), L) for t, tm in timers if t >= cfg.warmup]
    rec["timed_steps"] = len(rows)
    if rows:
        for key in rows[0]:
            rec[f"measured_{key}"] = float(np.median([r[key] for r in rows]))
        rec["per_step_ms"] = [round(r["step_ms"], 4) for r in rows]
        t = rec["measured_gather_ms"] / L
        rec["measured_gather_ms_per_launch"] = t
        rec["measured_kv_hit_rate_raw"] = bracket_h(t, br["t_hit_ms"], br["t_miss_ms"])
        raw = rec["measured_kv_hit_rate_raw"]
        rec["measured_kv_hit_rate"] = None if raw is None else min(1.0, max(0.0, raw))
    return {k: v for k, v in rec.items() if k not in ("per_step_ms",)}


def lru_phase(a: argparse.Namespace, ctx: dict, cfg: Any) -> dict:  # noqa: ANN401
    """The token LRU's time per step beside the gathers it serves (batch 1, this model): the
    serial LRU and the gathers timed together by bench.run_mode, then the parallel LRU
    (gpu.parallel_lru) stepped over the same trace, its hits checked against the serial walk."""
    import torch

    from dsacache.gpu import bench
    from dsacache.gpu.parallel_lru import ParallelTokenLRU

    cuda = ctx["cuda"]
    cache = ctx["buffers"]["cache"]
    slots = cfg.slots()
    cache = dataclasses.replace(
        cache, requests=1, block_table=cache.block_table[:, :1].contiguous(), slots=slots
    )
    batch = bench.batch_of(cfg.trace())
    pad = int(10 * ctx.get("cycles_per_ms", 0))  # > the host's enqueue time of one step
    res = bench.run_mode(
        cache, batch, bench.ModeSpec("lru", slots), layout=cache.layout.name,
        heads=HEADS_OF[cache.layout.name], nsplit=a.nsplit, warmup=cfg.warmup,
        precision=a.precision, deadline=ctx["deadline"], sleep_cycles=pad,
    )  # fmt: skip
    s = bench.summarize(res["rows"])
    truth = bench.cpu_lru(batch, slots)["hits"]
    plru = ParallelTokenLRU(batch.layers, 1, batch.max_context, slots, device=ctx["dev"])
    idx = torch.from_numpy(batch.indices).to(ctx["dev"])
    times, same = [], True
    for t in range(batch.steps):
        if cuda and pad:
            torch.cuda._sleep(pad)
        tm = bench.Timer(cuda)
        tm.mark()
        hit = plru.step(idx[t]).hit
        tm.mark()
        same &= int(hit.sum()) == int(truth[t])
        if t >= cfg.warmup:
            times.append(tm.deltas_ms()[0])
    return {
        "gather_ms_per_step": s["gather_ms_median"],
        "lru_ms_per_step": float(np.median(times)) if times else None,
        "lru_impl": f"parallel token LRU (gpu.parallel_lru, backend {plru.backend})",
        "parallel_hits_equal_serial": bool(same),
        "serial_lru_ms_per_step": s["lru_ms_median"],
        "serial_lru_impl": "slot_lru_triton (one warp per layer)" if cuda else "numba CPU walk",
        "copy_ms_per_step": s["copy_ms_median"],
        "config": cfg.name,
        "slots": slots,
        "timed_steps": len(times),
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not a.cpu_smoke
    env = env_info(cuda)
    tag = "cpu-smoke" if a.cpu_smoke else gpu_slug(env.get("gpu"))
    hw = a.hardware or (tag if tag in ("h100", "h200", "b200") else "h200")
    R = PhaseLog(a.out, f"calibration-{tag}.json")
    deadline = R.t0 + a.budget_s
    ctx: dict[str, Any] = {"cuda": cuda, "dev": "cuda" if cuda else "cpu", "env": env,
                           "deadline": deadline, "decode": [], "brackets": {},
                           "traces": {}}  # fmt: skip
    R.data.update({"args": {k: str(v) for k, v in vars(a).items()}, "env": env,
                   "model_hardware": hw, "errors": {}})  # fmt: skip
    R.data["l2_sweep"] = {"sizes_kib": [], "measured_hit_rate": [], "model_hit_rate": []}
    R.data["decode"] = ctx["decode"]
    R.data["lru"] = {"gather_ms_per_step": None, "lru_ms_per_step": None}
    R.phase("env", lambda: env)

    cal = R.phase("calibrate_sleep", calibrate_sleep, cuda) or {}
    ctx["cycles_per_ms"] = cal.get("cycles_per_ms", 0)
    ctx["timer"] = lambda fn: time_ms(fn, cuda, ctx["cycles_per_ms"])
    cfgs = configs(a, hw, env.get("max_persisting_l2_bytes"))
    ctx["l2_bytes"] = env.get("l2_bytes") or gpu_l2_preset(hw).l2_bytes  # the sweep's B_l2, B_dram
    sizes_kib = l2_sizes_kib(a.l2_sizes_mib, a.l2_chunk_kib)
    # 1. predictions, before anything is timed
    l2 = (hw, sizes_kib, a.l2_chunk_kib, env.get("sms"))
    pred = R.phase("predict", predict_all, cfgs, l2, a.jobs, R.t0 + 0.5 * a.budget_s) or {}
    preds = pred.get("configs", {})
    R.data["predictions"] = preds
    R.data["phases"]["predict"].pop("configs", None)  # kept once, under "predictions"
    R.data["l2_sweep"]["model_hit_rate"] = pred.get("l2_model_hit_rate") or []
    # 2. the footprint sweep
    meas = R.phase("l2_sweep", l2_measure, a, ctx, sizes_kib) or {}
    R.data["l2_sweep"].update(meas)
    if not R.data["l2_sweep"]["sizes_kib"]:
        R.data["l2_sweep"]["sizes_kib"] = sizes_kib
    # 3. the decode stream, model by model
    lru_done = False
    for model in dict.fromkeys(c.model for c in cfgs):
        if time.monotonic() > deadline - 30:
            R.data["phases"][f"build/{model}"] = {"ok": False, "error": "skipped: budget"}
            continue
        R.phase(f"build/{model}", build_model_buffers, a, ctx, model, cfgs)
        if "buffers" not in ctx:
            continue
        for cfg in (c for c in cfgs if c.model == model):
            if time.monotonic() > deadline - 20:
                R.data["phases"][cfg.name] = {"ok": False, "error": "skipped: budget"}
                continue
            R.phase(cfg.name, run_config, a, ctx, cfg, preds.get(cfg.name, {}))
        b1 = [c for c in cfgs if c.model == model and c.reserve_bytes and c.batch == 1]
        if b1 and not lru_done and time.monotonic() < deadline - 20:
            lru = R.phase("lru", lru_phase, a, ctx, b1[0])
            if lru:
                R.data["lru"] = lru
                lru_done = True
    R.data["errors"] = {n: p["error"] for n, p in R.data["phases"].items() if not p.get("ok")}
    R.data["wall_s"] = round(R.elapsed(), 2)
    R.save()
    print_summary(R.data)
    return 0


def print_summary(d: dict) -> None:
    print(f"{'configuration':34s} {'pred ms':>9s} {'meas ms':>9s} {'pred h':>7s} {'meas h':>7s}")
    for r in d["decode"]:

        def f(k: str, r: dict = r) -> str:
            v = r.get(k)
            return f"{v:9.4g}" if isinstance(v, float) else f"{'-':>9s}"

        print(f"{r['name']:34s} {f('predicted_step_ms')} {f('measured_step_ms')} "
              f"{f('predicted_kv_hit_rate')[2:]} {f('measured_kv_hit_rate')[2:]}")  # fmt: skip
    s = d["l2_sweep"]
    pairs = [(m, p) for m, p in zip(s.get("measured_hit_rate", []), s.get("model_hit_rate", []),
                                    strict=False) if m is not None]  # fmt: skip
    if pairs:
        err = max(abs(m - p) for m, p in pairs)
        print(f"L2 sweep: {len(pairs)} sizes, max |model - measured| = {err:.3f}")
    print("lru:", d["lru"])
    if d["errors"]:
        print("phases with errors:", ", ".join(d["errors"]))


if __name__ == "__main__":
    sys.exit(main())
