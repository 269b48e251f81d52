"""Run a sweep's grid on local worker processes and commit each row as its run finishes.

Runs that differ only in axes of the perf model (hardware, layers_per_gpu, weights_mib,
host_link) share one simulation: the grid is grouped by simulation (SIMULATION_KEYS), each
group is one task that simulates once and models every run of it. Each worker builds a trace
once (cached by its identity) and reuses it for every group of that trace it gets. The parent is
the only writer: it commits each row atomically (store.py) and rebuilds results.parquet every
few seconds and at the end.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from dsacache.errors import DsacacheError
from dsacache.hardware import HOST_LINKS, gpu
from dsacache.perf import model, perf_params, workload_from_sim
from dsacache.perf.model import gather_workload
from dsacache.perf.offload import offload_step
from dsacache.sim import SimConfig, SimResult, simulate
from dsacache.sim.hierarchy import HierarchyResult, simulate_hierarchy
from dsacache.sim.llc.run import LLCConfig, weights_bytes_from_mib
from dsacache.sweep.config import (
    Run,
    SweepConfig,
    canonical_json,
    hierarchy_config,
    trace_label,
)
from dsacache.sweep.store import BUFFER_COLUMNS, ResultStore
from dsacache.trace.geometry import Geometry, preset
from dsacache.trace.model import Trace

CONSOLIDATE_EVERY_S = 2.0
EXECUTORS = ("local", "ray")
_TRACES: dict[str, Trace] = {}  # per worker process: trace identity JSON -> trace


def trace_geometry(identity: dict[str, Any]) -> Geometry:
    """The geometry of a synth trace's identity."""
    return preset(identity["synth"]).with_overrides(
        layers=identity["layers"], top_k=identity["top_k"]
    )


def build_trace(
    identity: dict[str, Any], base_dir: str, progress: Callable[[int], None] | None = None
) -> Trace:
    """The trace a run's identity names (synth: generated in memory, reporting progress in
    trace.generate.progress_total's units; file: opened lazily)."""
    if "synth" in identity:
        from dsacache.trace.generate import generate_preset

        s = identity
        # a result store written before the generator key holds the statistics generator's runs
        return generate_preset(
            s.get("generator", "stats"), s["synth"], s["steps"], s["context"],
            layers=s["layers"], top_k=s["top_k"], seed=s["seed"], requests=s["requests"],
            progress=progress,
        )  # fmt: skip
    from dsacache.trace.io import open_trace

    p = Path(identity["path"])
    return open_trace(p if p.is_absolute() else Path(base_dir) / p, lazy=True)


# The run's keys that only change the perf model (and the schema version, the same for all
# runs): runs that differ in them share one simulation. Every other key, a new axis included,
# separates simulations, so forgetting to list one costs sharing, never correctness.
PERF_KEYS = ("version", "hardware", "layers_per_gpu", "weights_mib", "host_link")


def simulation_key(run: Run) -> str:
    """Canonical JSON of what run's simulation depends on (equal keys: one simulation)."""
    return canonical_json({k: v for k, v in run.config.items() if k not in PERF_KEYS})


def group_runs(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by simulation, groups in the order of their first run."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(simulation_key(r), []).append(r)
    return list(groups.values())


def _trace(cfg: dict[str, Any], base_dir: str) -> tuple[Trace, float]:
    """The run's trace (this worker's cached one when it is the same) and its build seconds."""
    key = canonical_json(cfg["trace"])
    trace = _TRACES.get(key)
    if trace is not None:
        return trace, 0.0
    tb = time.perf_counter()
    trace = build_trace(cfg["trace"], base_dir)
    _TRACES.clear()  # keep one trace per worker: grids run trace by trace
    _TRACES[key] = trace
    return trace, time.perf_counter() - tb


def _simulate(trace: Trace, cfg: dict[str, Any]) -> SimResult | HierarchyResult:
    if cfg["buffer_tokens"] is None:
        return simulate(trace, SimConfig(cfg["policy"], cfg["capacity_tokens"], cfg["capacity_mib"],
                                         cfg["partition"], cfg["near_miss_source"]))  # fmt: skip
    return simulate_hierarchy(trace, hierarchy_config(cfg))


def execute_group(runs: list[Run]) -> list[dict[str, Any]]:
    """Runs that share one simulation (group_runs): simulate once, then model each run's step
    and return its row (timing columns end in _seconds)."""
    t0 = time.perf_counter()
    first = runs[0].config
    trace, built = _trace(first, runs[0].base_dir)
    sim = _simulate(trace, first)
    simulated = time.perf_counter() - t0
    rows = []
    for run in runs:
        t1 = time.perf_counter()
        row = _row(run, trace, sim, built)
        row["run_seconds"] = simulated + time.perf_counter() - t1
        rows.append(row)
    return rows


def execute(run: Run) -> dict[str, Any]:
    """One run: simulate, model the step, return its row."""
    return execute_group([run])[0]


def _row(run: Run, trace: Trace, sim: SimResult | HierarchyResult, built: float) -> dict[str, Any]:
    cfg = run.config
    if isinstance(sim, HierarchyResult):
        hierarchy_config(cfg).check(trace)  # this run's hardware: the region must fit its LLC
    wmib = cfg["weights_mib"]
    weights = None if wmib is None else weights_bytes_from_mib(wmib)
    w_bytes, _ = LLCConfig(weights_bytes=weights).weights(trace.geometry)
    g = trace.geometry
    buffer: dict[str, Any] = dict.fromkeys(BUFFER_COLUMNS)
    if isinstance(sim, HierarchyResult):
        llc = sim.llc
        assert llc is not None  # a sweep's hierarchy run always has its LLC level (maybe 0 MiB)
        # the batch is the trace's requests; the LLC hit rate is the reads L2 served
        work = gather_workload(
            trace, llc.hits / llc.accesses if llc.accesses else 0.0, llc.accesses,
            weights_bytes_per_layer=w_bytes, layers_per_gpu=cfg["layers_per_gpu"],
        )  # fmt: skip
        perf = model(perf_params(cfg["hardware"]), work)
        hw = gpu(cfg["hardware"])
        link = hw.link if cfg["host_link"] is None else HOST_LINKS[cfg["host_link"]]
        step = offload_step(perf, sim, hw, link)
        per_step = sim.host_bytes_per_step
        buffer.update(
            buffer_tokens=cfg["buffer_tokens"], buffer_policy=cfg["buffer_policy"],
            host_link=link.name, buffer_hits=sim.hits, buffer_misses=sim.misses,
            buffer_cold_misses=sim.cold_misses, buffer_hit_rate=sim.hit_rate,
            host_bytes=sim.host_bytes, host_time_s=step.host_s + step.fixed_s,
            **{f"host_bytes_per_step_{k}": v for k, v in per_step.items()},
        )  # fmt: skip
        sim_counts = {
            "partition": llc.partition, "capacity_tokens": llc.capacity_tokens,
            "effective_tokens": llc.capacity_tokens, "accesses": llc.accesses,
            "hits": llc.hits, "misses": llc.misses, "prefetches": 0,
            "near_miss_source": None, "engine_seconds": sim.engine_seconds,
        }  # fmt: skip
        times = (step.total_s, step.ideal_s, step.slowdown, step.tokens_per_s_per_user,
                 step.tokens_per_s_per_gpu)  # fmt: skip
    else:
        # the batch is the trace's requests, simulated together (workload_from_sim)
        work = workload_from_sim(
            trace, sim, weights_bytes_per_layer=w_bytes, layers_per_gpu=cfg["layers_per_gpu"]
        )
        perf = model(perf_params(cfg["hardware"]), work)
        sim_counts = {
            "partition": sim.partition, "capacity_tokens": sim.capacity_tokens,
            "effective_tokens": sim.effective_tokens, "accesses": sim.accesses,
            "hits": sim.hits, "misses": sim.misses, "prefetches": sim.prefetches,
            "near_miss_source": sim.near_miss_source, "engine_seconds": sim.engine_seconds,
        }  # fmt: skip
        times = (perf.step_seconds, perf.ideal.total_s, perf.slowdown,
                 perf.tokens_per_s_per_user, perf.tokens_per_s_per_gpu)  # fmt: skip
    accesses, hits = sim_counts["accesses"], sim_counts["hits"]
    return {
        "config_hash": run.config_hash,
        "simulation_hash": hashlib.sha256(simulation_key(run).encode()).hexdigest(),
        "trace": trace_label(cfg["trace"]),
        "trace_identity": canonical_json(cfg["trace"]),
        "config_json": canonical_json(cfg),
        "policy": cfg["policy"],
        "near_miss_source": sim_counts["near_miss_source"],
        "capacity_mib": cfg["capacity_mib"],
        "capacity_tokens_requested": cfg["capacity_tokens"],
        "partition": sim_counts["partition"],
        "hardware": cfg["hardware"],
        "batch": work.batch,
        "layers_per_gpu": work.layers_per_gpu,
        "weights_bytes_per_layer": w_bytes,
        "layers": g.layers,
        "top_k": g.top_k,
        "steps": trace.steps,
        "requests": len(trace.requests),
        "kv_bytes_per_token": g.kv_bytes_per_token,
        "capacity_tokens": sim_counts["capacity_tokens"],
        "effective_capacity_tokens": sim_counts["effective_tokens"],
        "effective_capacity_mib": sim_counts["effective_tokens"] * g.kv_bytes_per_token / 2**20,
        "accesses": accesses,
        "hits": hits,
        "misses": sim_counts["misses"],
        "hit_rate": hits / accesses if accesses else 0.0,
        "gather_hit_rate": work.hit_rate,
        "prefetches": sim_counts["prefetches"],
        **buffer,
        "step_time_s": times[0],
        "ideal_step_time_s": times[1],
        "slowdown": times[2],
        "tokens_per_s_per_user": times[3],
        "tokens_per_s_per_gpu": times[4],
        "engine_seconds": sim_counts["engine_seconds"],
        "trace_build_seconds": built,
        "run_seconds": 0.0,
    }


def _execute_in_worker(runs: list[Run]) -> list[dict[str, Any]]:
    try:
        return execute_group(runs)
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
    groups = group_runs(todo)  # one simulation each
    if on_start is not None:
        on_start(len(todo), len(sweep.runs) - len(todo))
    done = 0
    last = time.monotonic()
    if groups:
        if executor == "ray":
            from dsacache.sweep.ray_exec import ray_rows

            rows_in = ray_rows(groups, workers=n_workers, address=address)
        else:
            rows_in = _local_rows(groups, n_workers)
        try:
            for rows_out in rows_in:  # only the parent commits, as each simulation finishes
                for row in rows_out:
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
            "simulations": len(groups), "rows": rows}  # fmt: skip


def _local_rows(groups: list[list[Run]], n_workers: int) -> Iterator[list[dict]]:
    """The rows of each group (one simulation) from local worker processes, in the order the
    groups finish."""
    # Grid order has the trace outermost, so a worker mostly reuses its cached trace.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["dsacache.sweep.runner"])
    with ProcessPoolExecutor(max_workers=min(n_workers, len(groups)), mp_context=ctx) as pool:
        pending: set[Future] = {pool.submit(_execute_in_worker, g) for g in groups}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    yield f.result()
        finally:
            for f in pending:
                f.cancel()
