"""`dsacache simulate`: replay a trace against a reserved LLC region under one token policy."""

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
    load_trace_arg,
)
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.sim import POLICIES, SimConfig, SimResult, simulate

# Optional here (unlike the other commands' TRACE) so that --list-policies needs no trace.
TRACE = typer.Argument(
    None, help="A trace store (dsacache synth/record) or a plain .npz with an `indices` array."
)


def _help() -> str:
    policies = "\n".join(f"* `{name}`: {POLICIES[name].summary}" for name in sorted(POLICIES))
    # Typer keeps the line breaks of a help text, so each paragraph is one string.
    return "\n\n".join(
        [
            "Replay TRACE against a reserved region of the LLC that holds whole KV tokens "
            "(key = request, layer, token; one token = one layer's KV row), in access order "
            "step -> layer -> request -> slot, and count hits and misses.",
            "Policies (--policy):",
            policies,
            "Capacity: --capacity-tokens N, or --capacity-mib X = floor(X * 2^20 / KV bytes "
            "per token) tokens (rounded down: the region never holds more than X MiB; "
            "--capacity-mb is an alias, also MiB). Partition: `global` (one region), "
            "`per-layer` (each layer gets floor(N / layers)), `pinned:L1,L2` (only those "
            "layers use the region, sharing N; the others always miss).",
            "Prints a table; --json prints one object with accesses, hits, misses, hit_rate, "
            "engine_seconds (the engine's own time, compile and I/O excluded), bytes by class "
            "(KV gathers served by the region / from HBM, prefetches; for line-lru 128-byte "
            "line hits / misses x 128 B, with line_hits and line_misses), the effective "
            "capacity (per-layer: floor(N / layers) x layers) next to the requested one "
            "(requested_capacity_mib, capacity_tokens), near_miss_source and per-layer counts.",
            "--list-policies prints every policy with its description and two flags: online "
            "(decides from the past only) and prefetches (may fetch tokens no access asked for); "
            "with --json, a list of objects with keys name, description, online, prefetches.",
            "Example: dsacache simulate t.zarr --policy token-lru --capacity-mib 20 --json",
        ]
    )


@app.command(
    "simulate",
    help=_help(),
    short_help="Hits and misses of a token-level reserved LLC region, per policy.",
)
def simulate_command(
    trace: Path | None = TRACE,
    policy: str | None = typer.Option(
        None, "--policy", "-P", help="Replacement policy (see above; required)."
    ),
    capacity_tokens: int | None = CAPACITY_TOKENS,
    capacity_mib: float | None = CAPACITY_MIB,
    partition: str = PARTITION,
    near_miss_source: str | None = NEAR_MISS_SOURCE,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
    list_policies: bool = typer.Option(
        False, "--list-policies", help="List the policies (with --json: as JSON) and exit."
    ),
) -> None:
    """Replay TRACE against a reserved LLC region (help text: _help above)."""
    if list_policies:
        print_policies(json_out)
        return
    if trace is None:
        raise DsacacheError("missing argument TRACE (or give --list-policies)")
    if policy is None:
        raise DsacacheError("missing option --policy (see --list-policies)")
    # fail before reading
    cfg = SimConfig(policy, capacity_tokens, capacity_mib, partition, near_miss_source)
    tr = load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)
    with progress_bar(f"simulate {policy}", tr.steps) as advance:
        result = simulate(tr, cfg, progress=advance)
    if json_out:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print_result_table(tr.source, result)


def policy_list() -> list[dict[str, object]]:
    """Every registered token policy: name, description, online, prefetches (sorted by name)."""
    return [
        {
            "name": name,
            "description": cls.summary,
            "online": bool(cls.online),
            "prefetches": bool(cls.prefetches),
        }
        for name, cls in sorted(POLICIES.items())
    ]


def print_policies(json_out: bool) -> None:
    rows = policy_list()
    if json_out:
        print(json.dumps(rows))
        return
    width = max(len(r["name"]) for r in rows)
    print(f"{'policy':<{width}}  online  prefetches  description")
    for r in rows:
        online, pre = ("yes" if r[f] else "no" for f in ("online", "prefetches"))
        print(f"{r['name']:<{width}}  {online:<6}  {pre:<10}  {r['description']}")


def print_result_table(source: str, r: SimResult) -> None:
    hbm = r.hbm_bytes
    table = Table("", "value", title=f"{source}: reserved-region simulation")
    rows = [
        ("policy", r.policy),
        ("partition", r.partition),
        ("capacity", f"{r.capacity_tokens:,} tokens ({r.capacity_mib:,.2f} MiB)"),
    ]
    if r.requested_mib is not None:
        rows.insert(2, ("requested capacity", f"{r.requested_mib:,.4g} MiB"))
    if r.near_miss_source is not None:
        rows.append(("near-miss source", r.near_miss_source))
    if r.effective_tokens != r.capacity_tokens:
        eff_mib = r.effective_tokens * r.kv_bytes_per_token / 2**20
        rows.append(("effective capacity", f"{r.effective_tokens:,} tokens ({eff_mib:,.2f} MiB)"))
    rows += [
        ("accesses", f"{r.accesses:,}"),
        ("hits", f"{r.hits:,}"),
        ("misses", f"{r.misses:,}"),
        ("hit rate", f"{r.hit_rate:.4f}"),
    ]
    if r.line_hits is not None:
        rows.append(("128 B line hits / misses", f"{r.line_hits:,} / {r.line_misses:,}"))
    rows.append(("KV gathers from HBM", f"{hbm:,} B ({hbm / 2**20:,.1f} MiB)"))
    if r.prefetches:
        rows.append(("prefetches", f"{r.prefetches:,}"))
    rows.append(("engine seconds", f"{r.engine_seconds:.3f}"))
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)
