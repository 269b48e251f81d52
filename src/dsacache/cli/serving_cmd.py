"""`dsacache serving`: decode throughput vs concurrency, all KV in HBM vs KV offloaded to host
memory behind a per-request HBM buffer (SGLang's HiSparse)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.cli.app import app
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.hardware import GPUS, gpu
from dsacache.perf.buffer_stats import (
    GENERATED_LAYERS,
    GENERATED_STEPS,
    buffer_stats,
    progress_units,
)
from dsacache.perf.serving import (
    ATTENTION_MODES,
    DEFAULT_COLLECTIVE_S,
    DEFAULT_MEM_FRACTION,
    DEFAULT_SWAP_LAYER_S,
    BufferStats,
    Deployment,
    ServingParams,
    ServingResult,
    ServingWorkload,
    serving_rows,
)
from dsacache.perf.serving_models import MODELS, serving_model
from dsacache.sim.hierarchy import DEFAULT_BUFFER_POLICY, HierarchyConfig
from dsacache.trace import open_trace
from dsacache.units import GIB, MIB

HELP = "\n\n".join(
    [
        "Model decode throughput at each concurrency (requests in the system) for two "
        "deployments of MODEL on GPUS x HARDWARE: the baseline keeps every request's KV in "
        "HBM, so HBM caps the running requests (the rest wait); offload keeps the KV in host "
        "memory and, per request and layer, a buffer of --buffer-tokens rows in HBM that the "
        "sparse attention reads (index keys stay in HBM). The step time counts the weights "
        "(MoE: the experts the batch touches), attention and index-key reads, compute where "
        "it binds, the collectives between GPUs, and for offload the buffer's misses read "
        "from pinned host memory on the critical path (docs/hierarchy.md).",
        "The buffer's hit rate (the fraction of selected rows it holds) is measured by "
        "simulating the buffers as `dsacache hierarchy` does, under --buffer-policy: on "
        "--trace PATH (its top-k must be the model's), or, without --trace and --hit-rate, on "
        f"a generated trace of the model's geometry (`dsacache synth`'s indexer generator, "
        f"{GENERATED_LAYERS} layers sampling the model's depth, up to {GENERATED_STEPS} steps "
        "from the middle of the decode steps whose context outgrows the buffer: tens of "
        "seconds). Decode steps whose context fits the buffer hit (all the KV is on the GPU); "
        "the hit rate counts them. --hit-rate H is a what-if instead.",
        "--json prints one object: baseline_max_concurrency, offload_max_concurrency and "
        "rows [{concurrency, baseline_tokens_per_s, offload_tokens_per_s, ratio, "
        "buffer_hit_rate, baseline_step, offload_step (and, from a simulation, "
        "offload_p99_step_ms: the step at the miss rate of the p99 step)}], plus the "
        "deployment's memory and buffer_stats {hit_rate, p99_miss_rate, source}.",
        f"Models: {', '.join(MODELS)}. Hardware: {', '.join(GPUS)} (the hardware table, "
        "src/dsacache/hardware.py, with every number's source).",
        "Example: dsacache serving --model glm-5.1 --hardware h200 --gpus 8 --input-tokens "
        "32768 --output-tokens 8192 --buffer-tokens 4096 --concurrency 8,32,64,128,256 "
        "--hit-rate 0.88",
        "Example: dsacache serving --model deepseek-v3.2 --hardware h200 --gpus 8 "
        "--input-tokens 32768 --output-tokens 8192 --buffer-tokens 4096 --concurrency 8,256 "
        "--trace ds.zarr",
    ]
)


def parse_concurrency(text: str) -> list[int]:
    """'8,16,32' -> [8, 16, 32]; each value an integer >= 1, at least one."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise DsacacheError("--concurrency needs at least one value, e.g. 8,32,128")
    out = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            raise DsacacheError(f"--concurrency: {p!r} is not an integer") from None
        if v < 1:
            raise DsacacheError(f"--concurrency values must be >= 1, got {v}")
        out.append(v)
    return out


@app.command(
    "serving",
    help=HELP,
    short_help="Decode throughput vs concurrency: KV in HBM vs host offload with an HBM buffer.",
)
def serving_command(
    model_name: str = typer.Option(..., "--model", help=f"{' | '.join(MODELS)}."),
    hardware: str = typer.Option(..., "--hardware", help=f"{' | '.join(GPUS)}."),
    gpus: int = typer.Option(..., "--gpus", help="GPUs the model is spread over (>= 1)."),
    input_tokens: int = typer.Option(..., "--input-tokens", help="Prompt tokens per request."),
    output_tokens: int = typer.Option(..., "--output-tokens", help="Generated tokens per request."),
    buffer_tokens: int = typer.Option(
        ..., "--buffer-tokens", help="HBM buffer rows per request per layer (>= top-k)."
    ),
    concurrency: str = typer.Option(
        ..., "--concurrency", help="Comma-separated requests in the system, e.g. 8,64,256."
    ),
    hit_rate: float | None = typer.Option(
        None,
        "--hit-rate",
        help="What-if: fraction of selected rows the buffer holds, [0, 1] (default: simulated).",
    ),
    trace_path: Path | None = typer.Option(
        None, "--trace", help="Simulate the buffers on this trace for the hit rate."
    ),
    buffer_policy: str = typer.Option(
        DEFAULT_BUFFER_POLICY, "--buffer-policy", help="The buffers' policy in the simulation."
    ),
    attention: str = typer.Option(
        "dp",
        "--attention",
        help="dp: data-parallel attention (each request's KV on one GPU; SGLang's "
        "--enable-dp-attention, the public HiSparse setup) | tp: tensor-parallel attention "
        "(MLA's latent KV replicated on every GPU).",
    ),
    kv_dtype: str = typer.Option(
        "auto",
        "--kv-dtype",
        help="auto (fp8 on compute capability >= 10.0, bf16 before: SGLang's default) | "
        "fp8 | bf16.",
    ),
    mem_fraction: float = typer.Option(
        DEFAULT_MEM_FRACTION,
        "--mem-fraction",
        help="Share of device memory for weights + KV (SGLang --mem-fraction-static).",
    ),
    swap_layer_us: float = typer.Option(
        round(DEFAULT_SWAP_LAYER_S * 1e6, 9),
        "--swap-layer-us",
        help="Fixed cost of the swap-in kernels per layer per step, microseconds (ASSUMED).",
    ),
    collective_us: float = typer.Option(
        round(DEFAULT_COLLECTIVE_S * 1e6, 9),
        "--collective-us",
        help="Latency of one collective between the GPUs, microseconds (ASSUMED).",
    ),
    overlap: bool = typer.Option(
        False,
        "--overlap",
        help="What-if: host reads overlap the GPU's work (HiSparse today: they do not).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Also draw throughput vs concurrency to this PNG."
    ),
) -> None:
    """Model serving throughput (help text: HELP above)."""
    if attention not in ATTENTION_MODES:
        raise DsacacheError(
            f"--attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}"
        )
    if hit_rate is not None and trace_path is not None:
        raise DsacacheError("give --hit-rate (a what-if) or --trace (simulated), not both")
    params = ServingParams(
        attention=attention,
        kv_dtype=None if kv_dtype == "auto" else kv_dtype,
        mem_fraction=mem_fraction,
        swap_layer_s=swap_layer_us / 1e6,
        collective_s=collective_us / 1e6,
        overlap=overlap,
    )
    model, hw = serving_model(model_name), gpu(hardware)
    work = ServingWorkload(gpus, input_tokens, output_tokens, buffer_tokens)
    levels = parse_concurrency(concurrency)
    dep = Deployment(model, hw, work, params)  # bad input fails before any simulation
    HierarchyConfig(buffer_tokens, buffer_policy)
    if hit_rate is not None:
        stats = BufferStats(hit_rate)
    else:
        trace = None if trace_path is None else open_trace(trace_path, lazy=True)
        units = progress_units(model, dep.kv_bytes, work, trace)
        with progress_bar("buffer simulation", units) as advance:
            stats = buffer_stats(model, dep.kv_bytes, work, buffer_policy, trace, advance)
    result = serving_rows(model, hw, work, levels, stats, params)
    if plot is not None:
        from dsacache.report.figures import plot_serving

        try:
            plot_serving(result.to_dict(), plot)
        except OSError as e:
            raise DsacacheError(f"{plot}: cannot write the plot: {e.strerror or e}") from None
    if json_out:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print_serving(result)
    if plot is not None and not json_out:
        print(f"wrote {plot}")


def print_serving(r: ServingResult) -> None:
    d = r.deployment
    p99 = r.stats.p99_miss_rate
    p99 = "" if p99 is None else f", p99 step miss rate {p99:.3f}"
    w = d.work
    title = (
        f"{d.model.label}, {w.gpus} x {d.hw.name}, {w.input_tokens} in / {w.output_tokens} out, "
        f"buffer {w.buffer_tokens}"
    )
    table = Table(
        "requests", "running b/o", "baseline tok/s", "offload tok/s", "ratio", "step ms b/o",
        "host ms", title=title,
    )  # fmt: skip
    for row in r.rows:
        b, o = row.baseline, row.offload
        table.add_row(
            str(row.concurrency),
            f"{0 if b is None else b.running}/{0 if o is None else o.running}",
            f"{row.baseline_tokens_per_s:,.0f}",
            f"{row.offload_tokens_per_s:,.0f}",
            "-" if row.ratio is None else f"{row.ratio:.2f}",
            f"{'-' if b is None else f'{b.total_s * 1e3:.1f}'}/"
            f"{'-' if o is None else f'{o.total_s * 1e3:.1f}'}",
            "-" if o is None else f"{(o.host_s + o.swap_fixed_s) * 1e3:.2f}",
        )
    Console().print(table)
    print(
        f"{d.params.attention} attention, {d.kv_dtype} KV ({d.kv_bytes} B/token/layer), host "
        f"link {d.hw.link.label}, host reads {'overlapped' if d.params.overlap else 'serial'}; "
        f"buffer hit rate {r.rows[0].buffer_hit_rate:.3f} ({r.stats.source}){p99}.\n"
        f"HBM per GPU: {d.weights_bytes_per_gpu / GIB:,.1f} GiB weights, "
        f"{d.kv_pool_bytes_per_gpu / GIB:,.1f} GiB for KV; a request takes "
        f"{d.request_bytes(False) / MIB:,.0f} MiB (baseline) / "
        f"{d.request_bytes(True) / MIB:,.0f} MiB (offload). Max running: "
        f"{r.baseline_max_concurrency} (baseline) / {r.offload_max_concurrency} (offload)."
    )
