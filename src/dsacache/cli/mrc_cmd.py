"""`dsacache mrc`: token-LRU hit rate at every reserved capacity (miss-ratio curve)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.cli.app import app
from dsacache.cli.options import BLOCK_TOKENS, INDEX_BYTES, KV_BYTES, TRACE_ARG, load_trace_arg
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.report.mrc_plot import plot_curve
from dsacache.sim.mrc import MissRatioCurve, mrc, sample_threshold

TABLE_ROWS = 8


@app.command("mrc")
def mrc_command(
    trace: Path = TRACE_ARG,
    partition: str = typer.Option(
        "global",
        "--partition",
        "-p",
        help="`global` (one LRU region), `per-layer` (each layer gets capacity / layers) or "
        "`pinned:L1,L2,...` (only those layers use the region; the others always miss).",
    ),
    sample_rate: float | None = typer.Option(
        None,
        "--sample-rate",
        "-r",
        help="SHARDS key sampling rate in (0, 1] for huge traces (approximate curve); "
        "default: exact.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the plot (hit rate vs reserved MiB) to this PNG."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON object: exact totals and a sampled list of points."
    ),
    max_mib: float | None = typer.Option(
        None,
        "--max-mib",
        "--max-mb",
        help="Show capacities up to this many MiB (default: where the curve stops rising; "
        "capped at 2^42 MiB = 2^62 bytes; --max-mb is an alias, also MiB).",
    ),
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
) -> None:
    """Miss-ratio curve: token-LRU hit rate for EVERY reserved capacity, in one pass.

    Mattson's stack algorithm gives each re-access its LRU stack distance d (1 + distinct
    keys touched since the key's previous access); a region of C tokens hits exactly the
    accesses with d <= C. The result equals `dsacache simulate --policy token-lru` at every
    capacity. Reserved MiB = tokens x kv_bytes_per_token / 2^20.

    Prints hit rate at a few capacities (or, with --json, one object); --out also plots the
    curve. --sample-rate R traces only the keys a hash picks (SHARDS): faster, approximate.
    """
    sample_threshold(sample_rate)  # fail on a bad rate before opening the trace
    if max_mib is not None and (not math.isfinite(max_mib) or max_mib <= 0):
        raise DsacacheError(f"--max-mib must be a positive number, got {max_mib}")
    if out is not None and out.suffix.lower() != ".png":
        raise DsacacheError(f"--out {out}: the plot is written as PNG; name a .png file")
    if out is not None and not out.parent.is_dir():
        raise DsacacheError(f"--out {out}: directory {out.parent} does not exist")
    tr = load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)
    with progress_bar("mrc", tr.steps) as advance:
        curve = mrc(tr, partition, sample_rate, progress=advance)
    # tokens_of_mib clamps to curve.max_tokens (2**62 bytes): a huge --max-mib is no error.
    top = curve.saturation_tokens if max_mib is None else curve.tokens_of_mib(max_mib)
    if json_out:
        print(json.dumps(curve.to_dict(max_tokens=top), allow_nan=False))
    else:
        print_curve_table(curve, top)
    if out is not None:
        plot_curve(curve, out, top)
        print(f"wrote {out}", file=sys.stderr if json_out else sys.stdout)


def _table_capacities(curve: MissRatioCurve, top: int) -> list[int]:
    """Token capacities at round MiB values (1-2-5 steps) up to `top`, then `top`."""
    top_mib = float(curve.capacity_mib(top))
    nice = sorted(m * 10.0**e for e in range(-3, 7) for m in (1, 2, 5))
    mibs = [x for x in nice if x < top_mib][-(TABLE_ROWS - 1) :]
    caps = [curve.tokens_of_mib(x) for x in mibs] + [top]
    return sorted(set(caps))


def _mib(x: float) -> str:
    return f"{x:,.2f}" if x >= 10 else f"{x:.4f}"


def print_curve_table(curve: MissRatioCurve, top: int) -> None:
    console = Console()
    mode = "exact" if curve.exact else f"SHARDS sample rate {curve.sample_rate:g} (approximate)"
    console.print(
        f"[bold]{curve.source}[/bold]: {curve.requests} request(s), {curve.steps} steps, "
        f"{curve.layers} layers, k={curve.top_k}, {curve.accesses:,} accesses; token-LRU, "
        f"partition {curve.partition}, {mode}",
        soft_wrap=True,
    )
    table = Table("reserved MiB", "tokens", "hit rate", "hits")
    for cap in _table_capacities(curve, top):
        table.add_row(
            _mib(float(curve.capacity_mib(cap))),
            f"{cap:,}",
            f"{curve.hit_rate_at(cap):.4f}",
            f"{curve.hits_at(cap):,}",
        )
    console.print(table)
    sat = curve.saturation_tokens
    console.print(
        f"no eviction from {_mib(float(curve.capacity_mib(sat)))} MiB ({sat:,} tokens): hit rate "
        f"{curve.max_hits / curve.accesses if curve.accesses else 0.0:.4f}; "
        f"{curve.cold_misses:,} cold misses, {curve.bypassed:,} bypassed; "
        f"engine {curve.engine_seconds:.2f} s",
        soft_wrap=True,
    )
