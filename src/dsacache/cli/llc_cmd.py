"""`dsacache llc`: the whole LLC under the decode memory stream of a trace."""

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
from dsacache.sim.llc.front import front_policies
from dsacache.sim.llc.hardware import MIB, PRESETS
from dsacache.sim.llc.kernels import LEADERS_PER_POLICY
from dsacache.sim.llc.run import (
    MODEL_WEIGHTS,
    LLCConfig,
    LLCResult,
    simulate_llc,
    weights_bytes_from_mib,
)

# DRRIP's leader spacing is max(2, sets // 32): at 64 sets or fewer every set leads
DRRIP_MIN_FOLLOWER_SETS = 2 * LEADERS_PER_POLICY


@app.command("llc")
def llc_command(
    trace: Path = TRACE_ARG,
    hardware: str = typer.Option(
        "h100", "--hardware", help=f"LLC and memory preset: {', '.join(PRESETS)}."
    ),
    policy: str = typer.Option(
        "lru",
        "--policy",
        help="Replacement: lru, srrip, drrip (drrip replays line by line: slower).",
    ),
    reservation: str = typer.Option(
        "none",
        "--reservation",
        help="KV reservation: none, way (CAT-style way partition), set-aside "
        "(NVIDIA persisting-L2 style capacity), token (a token-level region of whole ways in "
        "front of the shared LLC).",
    ),
    reserve_mib: float = typer.Option(
        0.0,
        "--reserve-mib",
        "--reserve-mb",
        help="Reserved MiB (2^20 B; --reserve-mb is an alias, also MiB), rounded down to the "
        "reservation's unit (way, token: whole ways; set-aside: 128 B lines); requested and "
        "effective sizes are both reported. token: 0 = a region of 0 tokens.",
    ),
    front_policy: str = typer.Option(
        "token-lru",
        "--front-policy",
        help="token reservation: the region's policy (one that reports per-access hits: "
        f"{', '.join(front_policies())}).",
    ),
    front_partition: str = typer.Option(
        "global",
        "--front-partition",
        help="token reservation: how the region is split: global, per-layer, pinned:L1,L2,...",
    ),
    reserved_classes: str = typer.Option(
        "kv-gather",
        "--reserved-classes",
        help="Comma-separated classes the reservation serves: weights, index-scan, kv-gather, "
        "kv-append.",
    ),
    sectors: bool = typer.Option(
        False, "--sectors", help="Fill 32-byte sectors on demand (sector misses cost 32 B)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Replay only the first N steps."),
    sets: int | None = typer.Option(
        None, "--sets", help="Override the preset's modelled sets (a power of two)."
    ),
    ways: int | None = typer.Option(None, "--ways", help="Override the preset's ways."),
    set_hash: str = typer.Option("modulo", "--set-hash", help="Set index: modulo or xor."),
    weights_mib: float | None = typer.Option(
        None,
        "--weights-mib",
        "--weights-mb",
        help="Weights read per layer per step, MiB (default: the model's; see --model; "
        "--weights-mb: alias, MiB).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help=f"Weights preset ({', '.join(MODEL_WEIGHTS)}); default: the one whose geometry "
        "the trace has.",
    ),
    no_shortcut: bool = typer.Option(
        False, "--no-shortcut", help="Replay streaming runs line by line (same result, slower)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
) -> None:
    """Replay a trace's decode memory stream through a modelled last-level cache.

    Per step and layer: the layer's weights (streaming, shared by the batch); per request the
    index-key scan of all context tokens (streaming); the KV rows of the top-k tokens (the
    blocking gathers); the new token's KV row and index key (append). KV and index keys live in
    paged pools (block_tokens per page), weights in a region per layer.

    The LLC is set-associative with 128-byte lines (presets: H100 50 MiB, H200 60 MiB, B200
    126.5 MiB, MI300X 256 MiB, modelled with power-of-two sets), replacement LRU, SRRIP or
    DRRIP, optionally sectored, and optionally reserves capacity for KV gathers: `way` gives
    them whole ways (Intel CAT style); `set-aside` lets them keep up to the reserved capacity as
    persisting lines that normal traffic may use when free (NVIDIA persisting-L2 style);
    `token` carves the reserved MiB (rounded down to whole ways) out of the LLC as a
    fully-associative region of whole tokens in front of it (the paper's architecture): every
    gather goes to the region (--front-policy, default token-lru, split by --front-partition),
    a hit costs nothing, a miss goes on to the shared LLC as kv-gather line accesses (filled
    there when they miss), and the other classes use the remaining ways. Its hits equal
    `dsacache simulate` with the same policy and partition and the region's capacity in tokens
    (printed; the same as `--capacity-mib X` when X MiB is a whole number of ways); blocking
    misses are the shared LLC's kv-gather line misses, as in the other modes (region token
    misses per step are in the JSON's token_region).

    Prints hits, misses and HBM bytes per class and the blocking (kv-gather) misses per step.
    Under LRU and SRRIP, long streaming runs are decided set by set without touching every
    line; the result is identical to a line-by-line replay (--no-shortcut). DRRIP always
    replays every line (its PSEL couples the sets), so it costs about as much as --no-shortcut:
    expect several times the LRU/SRRIP run time on long contexts. With 64 sets or fewer every
    DRRIP set is a leader (a warning says so).

    Sizes are MiB (2^20 bytes). Every reservation rounds down to its unit, so it never holds
    more than it was given; the requested and effective sizes are both printed.

    Example: dsacache llc ds.zarr --hardware h200 --reservation set-aside --reserve-mib 20
    """
    classes = tuple(c.strip() for c in reserved_classes.split(",") if c.strip())
    weights = None if weights_mib is None else weights_bytes_from_mib(weights_mib)
    cfg = LLCConfig(
        hardware=hardware,
        policy=policy,
        reservation=reservation,
        reserve_mib=reserve_mib,
        reserved_classes=classes,
        sectors=sectors,
        sets=sets,
        ways=ways,
        set_hash=set_hash,
        weights_bytes=weights,
        model=model,
        shortcut=not no_shortcut,
        front_policy=front_policy,
        front_partition=front_partition,
    )
    _, engine_cfg, _ = cfg.resolve()  # fail on a bad configuration before opening the trace
    if policy == "drrip" and engine_cfg.shape.sets <= DRRIP_MIN_FOLLOWER_SETS:
        typer.echo(
            f"warning: drrip with {engine_cfg.shape.sets} sets: every set is a leader "
            "(half SRRIP, half BRRIP), so there are no followers to duel for",
            err=True,
        )
    if steps is not None and steps < 1:
        raise DsacacheError(f"--steps must be a positive integer, got {steps}")
    tr = load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)
    cfg.weights(tr.geometry)
    total = tr.steps if steps is None else min(steps, tr.steps)
    with progress_bar("llc", total) as advance:
        result = simulate_llc(tr, cfg, steps=steps, progress=advance)
    if json_out:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print_llc(result)


def _mb(n: int) -> str:
    return f"{n / MIB:,.1f}"


def print_llc(r: LLCResult) -> None:
    console = Console()
    d = r.to_dict()
    llc = d["llc"]
    res = d["reservation"]
    console.print(
        f"[bold]{r.source}[/bold]: {r.requests} request(s), {r.steps} steps, {r.layers} layers; "
        f"{r.hardware.label}: {llc['sets']} sets x {llc['ways']} ways x 128 B = "
        f"{_mb(llc['capacity_bytes'])} MiB (real {_mb(llc['real_capacity_bytes'])} MiB), "
        f"{d['policy']}{', sectored' if d['sectors'] else ''}"
    )
    if res["mode"] != "none":
        console.print(
            f"reservation: {res['mode']}, {_mb(res['effective_bytes'])} MiB "
            f"(asked {_mb(res['requested_bytes'])} MiB) for {', '.join(res['classes'])}"
        )
    tr = d["token_region"]
    if tr is not None:
        rate = "n/a" if tr["hit_rate"] is None else f"{tr['hit_rate']:.4f}"
        console.print(
            f"token region: {tr['policy']}, {tr['partition']}, {tr['capacity_tokens']:,} tokens "
            f"in {tr['ways']} way(s), shared LLC {tr['shared_ways']} ways; "
            f"{tr['hits']:,} hits, {tr['misses']:,} misses (hit rate {rate})"
        )
    console.print(f"weights: {_mb(r.weights_bytes)} MiB per layer ({r.weights_note})")
    table = Table("class", "accesses", "hits", "misses", "hit rate", "HBM MiB")
    for name, c in d["classes"].items():
        rate = "n/a" if c["hit_rate"] is None else f"{c['hit_rate']:.4f}"
        table.add_row(
            name,
            f"{c['accesses']:,}",
            f"{c['hits']:,}",
            f"{c['misses']:,}",
            rate,
            _mb(c["hbm_bytes"]),
        )
    console.print(table)
    b = d["blocking_misses_per_step"]
    if b["mean"] is not None:
        console.print(
            f"blocking (kv-gather) line misses per step: mean {b['mean']:,.1f}, "
            f"min {b['min']:,}, max {b['max']:,}"
        )
    console.print(
        f"engine {r.engine_seconds:.2f} s, stream {r.stream_seconds:.2f} s; "
        f"{r.shortcut_lines:,} streaming line accesses decided by the shortcut"
    )
