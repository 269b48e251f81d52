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
    CAPACITY_MIB,
    CAPACITY_TOKENS,
    INDEX_BYTES,
    KV_BYTES,
    NEAR_MISS_SOURCE,
    PARTITION,
    TRACE_ARG,
    load_trace_arg,
)
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.perf import PerfResult, check_batch, model, perf_params, workload_from_sim
from dsacache.sim import SimConfig, SimResult, simulate
from dsacache.sim.llc.hardware import PRESETS
from dsacache.sim.llc.run import LLCConfig, weights_bytes_from_mib

HELP = "\n\n".join(
    [
        "Simulate TRACE against a reserved LLC region (as `dsacache simulate`), then turn its "
        "hits and misses into decode step time on one GPU (docs/perf-model.md): weights and "
        "index-key scans stream at HBM bandwidth; the KV gathers are blocking loads, "
        "--mlp-lines of them in flight, each paying the LLC latency on a hit and the HBM "
        "latency on a miss, or the HBM bandwidth the misses need, whichever is longer.",
        "The batch is the trace's requests: they share the simulated region (the hit rate is "
        "theirs together), and gathers count each request's own steps (a ragged batch). "
        "--batch N only checks that: an N other than the trace's request count is an error "
        "(make a trace of N requests, e.g. `dsacache synth --requests N`).",
        "Prints the step time, tokens/s per user (1 / step) and per GPU (batch / step), and "
        "the slowdown against the same step with every gather hitting. --json prints one "
        "object: step_seconds, ideal_step_seconds, slowdown, tokens_per_s_per_user, "
        "tokens_per_s_per_gpu, terms, ideal_terms, workload, params (with sources), simulation.",
        f"Hardware presets: {', '.join(PRESETS)}; every number can be overridden. Weights "
        "per layer: --weights-mib, or --model's (llama-3.1-70b, deepseek-v3.2; ASSUMED "
        "values), by default the model whose geometry the trace has. Sizes are MiB (2^20 B); "
        "--capacity-mb and --weights-mb are aliases that mean MiB too.",
        "Example: dsacache perf t.zarr --hardware h200 --policy token-lru --capacity-mib 20 "
        "--layers-per-gpu 20",
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
    hardware: str = typer.Option("h100", "--hardware", help=" | ".join(PRESETS) + "."),
    policy: str = typer.Option("token-lru", "--policy", "-P", help="Reserved-region policy."),
    capacity_mib: float | None = CAPACITY_MIB,
    capacity_tokens: int | None = CAPACITY_TOKENS,
    partition: str = PARTITION,
    near_miss_source: str | None = NEAR_MISS_SOURCE,
    layers_per_gpu: int | None = typer.Option(
        None, "--layers-per-gpu", help="Layers on one GPU (default: the trace's layers)."
    ),
    batch: int | None = typer.Option(
        None,
        "--batch",
        "-b",
        help="Check only: the batch is the trace's requests; another N is an error.",
    ),
    weights_mib: float | None = typer.Option(
        None,
        "--weights-mib",
        "--weights-mb",
        help="Weights MiB per layer (default: --model's; --weights-mb: alias, MiB).",
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
    cfg = SimConfig(policy, capacity_tokens, capacity_mib, partition, near_miss_source)
    _positive_int("--batch", batch)
    _positive_int("--layers-per-gpu", layers_per_gpu)
    weights = None if weights_mib is None else weights_bytes_from_mib(weights_mib)
    tr = load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)
    check_batch(tr, batch)
    w_bytes, w_note = LLCConfig(weights_bytes=weights, model=model_name).weights(tr.geometry)
    with progress_bar(f"simulate {policy}", tr.steps) as advance:
        sim = simulate(tr, cfg, progress=advance)
    work = workload_from_sim(
        tr, sim, weights_bytes_per_layer=w_bytes, layers_per_gpu=layers_per_gpu
    )
    result = model(params, work)
    if json_out:
        out = result.to_dict()
        out["weights_source"] = w_note
        out["simulation"] = sim.to_dict()
        print(json.dumps(out, allow_nan=False))
    else:
        _print_table(tr.source, result, w_note, sim)


def _print_table(source: str, r: PerfResult, weights_note: str, sim: SimResult) -> None:
    w, s = r.workload, r.step
    table = Table("", "value", title=f"{source}: decode step on {r.params.name}")
    eff_mib = sim.effective_tokens * sim.kv_bytes_per_token / 2**20
    asked = "" if sim.requested_mib is None else f"asked {sim.requested_mib:,.4g} MiB; "
    rows = [
        ("layers per GPU / batch (requests)", f"{w.layers_per_gpu} / {w.batch}"),
        ("reserved region", f"{asked}holds {sim.effective_tokens:,} tokens = {eff_mib:,.2f} MiB"),
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
