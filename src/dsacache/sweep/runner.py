"""Run a sweep's grid on local worker processes and commit each row as its run finishes.

Each worker builds a trace once (cached by its identity) and reuses it for every run of that
trace it gets. The parent is the only writer: it commits a finished run's row atomically
(store.py) and rebuilds results.parquet every few seconds and at the end.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from dsacache.errors import DsacacheError
from dsacache.perf import model, perf_params, workload_from_sim
from dsacache.sim import SimConfig, simulate
from dsacache.sim.llc.run import LLCConfig, weights_bytes_from_mib
from dsacache.sweep.config import Run, SweepConfig, canonical_json, trace_label
from dsacache.sweep.store import ResultStore
from dsacache.trace.geometry import PRESETS as GEOMETRY_PRESETS
from dsacache.trace.model import Trace

CONSOLIDATE_EVERY_S = 2.0
EXECUTORS = ("local", "ray")
_TRACES: dict[str, Trace] = {}  # per worker process: trace identity JSON -> trace


def build_trace(identity: dict[str, Any], base_dir: str) -> Trace:
    """The trace a run's identity names (synth: generated in memory; file: opened lazily)."""
    if "synth" in identity:
        from dsacache.trace.synth import synthesize

        s = identity
        g = GEOMETRY_PRESETS[s["synth"]].with_overrides(layers=s["layers"], top_k=s["top_k"])
        return synthesize(g, s["steps"], s["context"], seed=s["seed"], requests=s["requests"])
    from dsacache.trace.io import open_trace

    p = Path(identity["path"])
    return open_trace(p if p.is_absolute() else Path(base_dir) / p, lazy=True)


def execute(run: Run) -> dict[str, Any]:
    """One run: simulate, model the step, return its row (timing columns end in _seconds)."""
    t0 = time.perf_counter()
    cfg = run.config
    key = canonical_json(cfg["trace"])
    built = 0.0
    trace = _TRACES.get(key)
    if trace is None:
        tb = time.perf_counter()
        trace = build_trace(cfg["trace"], run.base_dir)
        built = time.perf_counter() - tb
        _TRACES.clear()  # keep one trace per worker: grids run trace by trace
        _TRACES[key] = trace
    sim = simulate(trace, SimConfig(cfg["policy"], cfg["capacity_tokens"], cfg["capacity_mib"],
                                    cfg["partition"], cfg["near_miss_source"]))  # fmt: skip
    wmib = cfg["weights_mib"]
    weights = None if wmib is None else weights_bytes_from_mib(wmib)
    w_bytes, _ = LLCConfig(weights_bytes=weights).weights(trace.geometry)
    # the batch is the trace's requests, simulated together (workload_from_sim)
    work = workload_from_sim(
        trace, sim, weights_bytes_per_layer=w_bytes, layers_per_gpu=cfg["layers_per_gpu"]
    )
    perf = model(perf_params(cfg["hardware"]), work)
    g = trace.geometry
    return {
        "config_hash": run.config_hash,
        "trace": trace_label(cfg["trace"]),
        "trace_identity": key,
        "config_json": canonical_json(cfg),
        "policy": cfg["policy"],
        "near_miss_source": sim.near_miss_source,
        "capacity_mib": cfg["capacity_mib"],
        "capacity_tokens_requested": cfg["capacity_tokens"],
        "partition": sim.partition,
        "hardware": cfg["hardware"],
        "batch": work.batch,
        "layers_per_gpu": work.layers_per_gpu,
        "weights_bytes_per_layer": w_bytes,
        "layers": g.layers,
        "top_k": g.top_k,
        "steps": trace.steps,
        "requests": len(trace.requests),
        "kv_bytes_per_token": g.kv_bytes_per_token,
        "capacity_tokens": sim.capacity_tokens,
        "effective_capacity_tokens": sim.effective_tokens,
        "effective_capacity_mib": sim.effective_tokens * g.kv_bytes_per_token / 2**20,
        "accesses": sim.accesses,
        "hits": sim.hits,
        "misses": sim.misses,
        "hit_rate": sim.hit_rate,
        "gather_hit_rate": work.hit_rate,
        "prefetches": sim.prefetches,
        "step_time_s": perf.step_seconds,
        "ideal_step_time_s": perf.ideal.total_s,
        "slowdown": perf.slowdown,
        "tokens_per_s_per_user": perf.tokens_per_s_per_user,
        "tokens_per_s_per_gpu": perf.tokens_per_s_per_gpu,
        "engine_seconds": sim.engine_seconds,
        "trace_build_seconds": built,
        "run_seconds": time.perf_counter() - t0,
    }


def _execute_in_worker(run: Run) -> dict[str, Any]:
    try:
        return execute(run)
    except DsacacheError as e:  # subclasses may not unpickle: send the message as the base
        raise DsacacheError(str(e)) from None


def run_sweep(
    sweep: SweepConfig,
    out: str | Path,
    *,
    resume: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    executor: str = "local",
    address: str | None = None,
) -> dict[str, int]:
    """Run every run of `sweep` not yet committed in `out`; return counts (runs, skipped,
    done, rows). on_start(todo, skipped) is called before the first run. executor "local"
    runs on worker processes here, "ray" on Ray tasks (a cluster at `address`, else a private
    local Ray with `workers` CPUs); either way only this process commits rows."""
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise DsacacheError(f"--workers must be >= 1, got {n_workers}")
    if executor not in EXECUTORS:
        raise DsacacheError(f"unknown --executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if address is not None and executor != "ray":
        raise DsacacheError(f"--address {address!r} needs --executor ray")
    if executor == "ray":
        from dsacache.sweep.ray_exec import import_ray

        import_ray()  # one-line error before anything is written
    store = ResultStore(out)
    store.open(resume)
    tmp = store.dir / f".sweep.toml.{os.getpid()}.tmp"
    tmp.write_text(sweep.text, encoding="utf-8")
    os.replace(tmp, store.dir / "sweep.toml")
    order = [r.config_hash for r in sweep.runs]
    have = store.committed()
    todo = [r for r in sweep.runs if r.config_hash not in have]
    if on_start is not None:
        on_start(len(todo), len(sweep.runs) - len(todo))
    done = 0
    last = time.monotonic()
    if todo:
        if executor == "ray":
            from dsacache.sweep.ray_exec import ray_rows

            rows_in = ray_rows(todo, workers=n_workers, address=address)
        else:
            rows_in = _local_rows(todo, n_workers)
        try:
            for row in rows_in:  # only the parent commits, as each run finishes
                store.commit(row)
                done += 1
                if progress is not None:
                    progress(1)
                if time.monotonic() - last >= CONSOLIDATE_EVERY_S:
                    store.consolidate(order)
                    last = time.monotonic()
        finally:
            rows_in.close()  # cancels what is still pending
    rows = store.consolidate(order)
    return {"runs": len(sweep.runs), "skipped": len(sweep.runs) - len(todo), "done": done,
            "rows": rows}  # fmt: skip


def _local_rows(todo: list, n_workers: int) -> Iterator[dict]:
    """Rows of `todo` from local worker processes, in the order they finish."""
    # Grid order has the trace outermost, so a worker mostly reuses its cached trace.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["dsacache.sweep.runner"])
    with ProcessPoolExecutor(max_workers=min(n_workers, len(todo)), mp_context=ctx) as pool:
        pending: set[Future] = {pool.submit(_execute_in_worker, r) for r in todo}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    yield f.result()
        finally:
            for f in pending:
                f.cancel()
