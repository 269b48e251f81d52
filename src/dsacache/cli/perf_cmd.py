"""`dsacache perf`: simulate a reserved region, then model decode step time and slowdown."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.cli.app import app
from dsacache.cli.options import (
    BLOCK_TOKENS,
    CAPACITY_MB,
    CAPACITY_TOKENS,
    INDEX_BYTES,
    KV_BYTES,
    PARTITION,
    TRACE_ARG,
    load_trace_arg,
)
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.perf import PerfResult, model, perf_params, workload_from_sim
from dsacache.sim import SimConfig, simulate
from dsacache.sim.llc.run import LLCConfig, weights_bytes_from_mb

HELP = "\n\n".join(
    [
        "Simulate TRACE against a reserved LLC region (as `dsacache simulate`), then turn its "
        "hits and misses into decode step time on one GPU (docs/perf-model.md): weights and "
        "index-key scans stream at HBM bandwidth; the KV gathers are blocking loads, "
        "--mlp-lines of them in flight, each paying the LLC latency on a hit and the HBM "
        "latency on a miss, or the HBM bandwidth the misses need, whichever is longer.",
        "Prints the step time, tokens/s per user (1 / step) and per GPU (batch / step), and "
        "the slowdown against the same step with every gather hitting. --json prints one "
        "object: step_seconds, ideal_step_seconds, slowdown, tokens_per_s_per_user, "
        "tokens_per_s_per_gpu, terms, ideal_terms, workload, params (with sources), simulation.",
        "Hardware presets: h100, h200, b200, mi300x; every number can be overridden. Weights "
        "per layer: --weights-mb, or --model's (llama-3.1-70b, deepseek-v3.2; ASSUMED values), "
        "by default the model whose geometry the trace has.",
        "Example: dsacache perf t.zarr --hardware h200 --policy token-lru --capacity-mb 20 "
        "--layers-per-gpu 20 --batch 8",
    ]
)


def _positive_int(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise DsacacheError(f"{name} must be an integer >= 1, got {value}")


@app.command(
    "perf", help=HELP, short_help="Decode step time, tokens/s and slowdown from simulated misses."
)
def perf_command(
    trace: Path = TRACE_ARG,
    hardware: str = typer.Option("h100", "--hardware", help="h100 | h200 | b200 | mi300x."),
    policy: str = typer.Option("token-lru", "--policy", "-P", help="Reserved-region policy."),
    capacity_mb: float | None = CAPACITY_MB,
    capacity_tokens: int | None = CAPACITY_TOKENS,
    partition: str = PARTITION,
    layers_per_gpu: int | None = typer.Option(
        None, "--layers-per-gpu", help="Layers on one GPU (default: the trace's layers)."
    ),
    batch: int = typer.Option(1, "--batch", "-b", help="Requests decoded together (>= 1)."),
    weights_mb: float | None = typer.Option(
        None, "--weights-mb", help="Weights MiB per layer (default: --model's)."
    ),
    model_name: str | None = typer.Option(
        None, "--model", help="Model whose weights per layer to use (llama-3.1-70b, ...)."
    ),
    mlp_lines: float | None = typer.Option(
        None, "--mlp-lines", help="Override: gather loads in flight (default ~968, see docs)."
    ),
    hbm_bytes_per_s: float | None = typer.Option(
        None, "--hbm-bytes-per-s", help="Override: HBM bandwidth in bytes/s."
    ),
    llc_hit_ns: float | None = typer.Option(
        None, "--llc-hit-ns", help="Override: LLC / reserved-region hit latency (ns)."
    ),
    hbm_ns: float | None = typer.Option(None, "--hbm-ns", help="Override: HBM latency (ns)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
) -> None:
    """Model decode step time (help text: HELP above)."""
    # Everything that can be checked without the trace fails before reading it.
    params = perf_params(
        hardware,
        mlp_lines=mlp_lines,
        hbm_bytes_per_s=hbm_bytes_per_s,
        llc_hit_ns=llc_hit_ns,
        hbm_ns=hbm_ns,
    )
    cfg = SimConfig(policy, capacity_tokens, capacity_mb, partition)
    _positive_int("--batch", batch)
    _positive_int("--layers-per-gpu", layers_per_gpu)
    weights = None if weights_mb is None else weights_bytes_from_mb(weights_mb)
    tr = load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)
    w_bytes, w_note = LLCConfig(weights_bytes=weights, model=model_name).weights(tr.geometry)
    with progress_bar(f"simulate {policy}", tr.steps) as advance:
        sim = simulate(tr, cfg, progress=advance)
    work = workload_from_sim(
        tr, sim, weights_bytes_per_layer=w_bytes, layers_per_gpu=layers_per_gpu, batch=batch
    )
    result = model(params, work)
    if json_out:
        out = result.to_dict()
        out["weights_source"] = w_note
        out["simulation"] = sim.to_dict()
        print(json.dumps(out, allow_nan=False))
    else:
        _print_table(tr.source, result, w_note)


def _print_table(source: str, r: PerfResult, weights_note: str) -> None:
    w, s = r.workload, r.step
    table = Table("", "value", title=f"{source}: decode step on {r.params.name}")
    rows = [
        ("layers per GPU / batch", f"{w.layers_per_gpu} / {w.batch}"),
        ("gather hit rate", f"{w.hit_rate:.4f}"),
        ("weights per layer", f"{w.weights_bytes_per_layer / 2**20:,.1f} MiB ({weights_note})"),
        ("weights stream", f"{s.weights_s * 1e3:.4f} ms"),
        ("index-key scan", f"{s.index_s * 1e3:.4f} ms"),
        ("gathers (latency / bandwidth)", f"{s.gather_latency_s * 1e3:.4f} / "
         f"{s.gather_bandwidth_s * 1e3:.4f} ms"),
        ("step time", f"{r.step_seconds * 1e3:.4f} ms"),
        ("ideal step (all gathers hit)", f"{r.ideal.total_s * 1e3:.4f} ms"),
        ("tokens/s per user", f"{r.tokens_per_s_per_user:,.2f}"),
        ("tokens/s per GPU", f"{r.tokens_per_s_per_gpu:,.2f}"),
        ("slowdown", f"{r.slowdown:.4f}"),
    ]  # fmt: skip
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)
