"""`dsacache hierarchy`: replay a trace through per-(request, layer) HBM buffers over host memory
(SGLang's HiSparse), optionally with the LLC token region in front of the buffers' rows."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.cli.app import app
from dsacache.cli.options import BLOCK_TOKENS, INDEX_BYTES, KV_BYTES, TRACE_ARG, load_trace_arg
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.hardware import GPUS
from dsacache.sim.hierarchy import (
    DEFAULT_BUFFER_POLICY,
    DEFAULT_HARDWARE,
    DEFAULT_LLC_POLICY,
    HierarchyConfig,
    HierarchyResult,
    level_policies,
    simulate_hierarchy,
)
from dsacache.units import MIB


def _help() -> str:
    return "\n\n".join(
        [
            "Replay TRACE through the KV hierarchy of DSA serving with host offload (SGLang's "
            "HiSparse): the full KV in host memory and, per request and layer, a buffer of "
            "--buffer-tokens KV rows in HBM that the sparse attention reads. Each step the "
            "row's selected tokens already in the buffer hit; every other one is copied from "
            "host memory into the buffer (no bypass), evicting, when the buffer is full, a "
            "resident token the row did not select, chosen by --buffer-policy (token-lru is "
            "HiSparse's; min is the optimum, the bound). A request whose whole context fits "
            "the buffer never misses. --buffer-tokens must be at least the trace's top-k.",
            "--llc-reserve-mib M adds the LLC token region of `dsacache simulate` (one region "
            "of floor(M MiB / KV row) tokens shared by every request and layer, under "
            "--llc-policy) in front of the buffers' rows: it serves the attention's reads of "
            "rows the buffer holds from L2 and never saves a host read (docs/hierarchy.md). M "
            "is checked against the LLC of --hardware.",
            f"Policies (both levels): {', '.join(level_policies())}. Hardware: {', '.join(GPUS)}.",
            "--json prints one object: hbm {policy, buffer_tokens, whole_requests, accesses, "
            "hits, misses, cold_misses (first selections of a token by its request and layer), "
            "hit_rate}, llc {policy, partition, reserve_mib, capacity_tokens, hardware, accesses, "
            "hits "
            "(served from L2), misses, hit_rate, region_hits, region_hits_buffer_missed, "
            "hbm_read_bytes} or null, host_bytes (= hbm misses x KV bytes per token), "
            "host_bytes_per_step {mean, p50, p99, max} (each step's misses summed over its "
            "requests and layers), engine_seconds.",
            "Example: dsacache hierarchy t.zarr --buffer-tokens 4096 --buffer-policy token-lru",
        ]
    )


@app.command(
    "hierarchy",
    help=_help(),
    short_help="Host reads of per-request HBM KV buffers (HiSparse), optionally behind an LLC "
    "token region.",
)
def hierarchy_command(
    trace: Path = TRACE_ARG,
    buffer_tokens: int = typer.Option(
        ..., "--buffer-tokens", "-n", help="KV rows per request per layer in HBM (>= top-k)."
    ),
    buffer_policy: str = typer.Option(
        DEFAULT_BUFFER_POLICY, "--buffer-policy", "-P", help="The buffers' policy."
    ),
    llc_reserve_mib: float | None = typer.Option(
        None, "--llc-reserve-mib", help="LLC token region in MiB (default: no LLC level)."
    ),
    llc_policy: str | None = typer.Option(
        None,
        "--llc-policy",
        help=f"The LLC region's policy [default: {DEFAULT_LLC_POLICY}; needs --llc-reserve-mib].",
    ),
    hardware: str = typer.Option(
        DEFAULT_HARDWARE, "--hardware", help="GPU whose LLC bounds --llc-reserve-mib."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
) -> None:
    """Replay TRACE through HBM buffers (help text: _help above)."""
    if llc_policy is not None and llc_reserve_mib is None:
        raise DsacacheError("--llc-policy needs --llc-reserve-mib (the LLC region's size)")
    cfg = HierarchyConfig(  # fails before reading
        buffer_tokens,
        buffer_policy,
        llc_reserve_mib,
        llc_policy or DEFAULT_LLC_POLICY,
        hardware,
    )
    tr = load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)
    cfg.check(tr)
    with progress_bar(f"hierarchy {buffer_policy}", tr.steps) as advance:
        result = simulate_hierarchy(tr, cfg, progress=advance)
    if json_out:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print_hierarchy(result)


def print_hierarchy(r: HierarchyResult) -> None:
    c = r.config
    kv = r.kv_bytes_per_token
    title = f"{r.source}: {r.requests} request(s), {r.steps} steps, {r.layers} layers, k={r.top_k}"
    table = Table("", "value", title=title)
    ratio = c.buffer_tokens / r.top_k
    rows = [
        ("HBM buffer rows", f"{c.buffer_tokens:,} per request and layer = {ratio:g} x k"),
        ("buffer policy", c.buffer_policy),
        ("requests that fit", f"{r.whole_requests} of {r.requests} (never miss)"),
        ("accesses", f"{r.accesses:,}"),
        ("hits / misses", f"{r.hits:,} / {r.misses:,}"),
        ("cold misses", f"{r.cold_misses:,}"),
        ("hit rate", f"{r.hit_rate:.4f}"),
        ("host reads", f"{r.host_bytes:,} B ({r.host_bytes / MIB:,.1f} MiB)"),
    ]
    s = r.host_bytes_per_step
    rows.append(
        (
            "host MiB per step",
            f"mean {s['mean'] / MIB:,.3f}, p50 {s['p50'] / MIB:,.3f}, p99 {s['p99'] / MIB:,.3f}, "
            f"max {s['max'] / MIB:,.3f}",
        )
    )
    if r.llc is not None:
        d = r.llc.to_dict(kv)
        rows += [
            (
                "LLC region",
                f"{d['reserve_mib']:g} MiB = {d['capacity_tokens']:,} tokens, "
                f"{d['policy']} ({d['hardware']})",
            ),  # fmt: skip
            (
                "LLC hits (served from L2)",
                f"{d['hits']:,} of {d['accesses']:,} ({d['hit_rate']:.4f})",
            ),  # fmt: skip
            ("region hits the buffer missed", f"{d['region_hits_buffer_missed']:,}"),
            ("HBM reads of rows", f"{d['hbm_read_bytes'] / MIB:,.1f} MiB"),
        ]
    rows.append(("engine seconds", f"{r.engine_seconds:.3f}"))
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)
