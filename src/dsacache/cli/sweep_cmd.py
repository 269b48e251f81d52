"""`dsacache sweep`: run a TOML grid of simulations + perf-model runs into a parquet table."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from dsacache.cli.app import app
from dsacache.cli.progress import progress_bar
from dsacache.sweep import load_config, run_sweep

HELP = "\n\n".join(
    [
        "Run every point of the grid in CONFIG (TOML) -- traces x requests x policies x "
        "capacities x partitions x hardware x layers_per_gpu x weights_mib x "
        "near_miss_source x buffer_tokens x buffer_policies x host_links -- as `dsacache "
        "perf` would (simulate, then model the decode step), on --workers local processes, "
        "and write one row per run to OUT/results.parquet (and OUT/sweep.toml, the config). "
        "Runs that differ only in hardware, layers_per_gpu, weights_mib or host_links share "
        "one simulation.",
        "With `buffer_tokens` (a list of N) a run is `dsacache hierarchy`'s: per-(request, "
        "layer) HBM buffers of N tokens over host memory under each of `buffer_policies` "
        '(default ["token-lru"]), the LLC token region (`policies` x `capacities`, default '
        "token-lru at 0 MiB) in front of their rows, and the step modelled with the buffers' "
        'misses read over each of `host_links` (default ["hardware"]: the GPU\'s own; or '
        "pcie-gen5-x16, pcie-gen4-x16, nvlink-c2c), not overlapped. Its rows add "
        "buffer_hits, buffer_misses, buffer_cold_misses, buffer_hit_rate, host_bytes, "
        "host_bytes_per_step_{mean,p50,p99,max} and host_time_s; hits / hit_rate are then the "
        "reads served from L2.",
        "The batch is each trace's requests, simulated together: a synth trace's `requests`, "
        "or the grid's `requests` axis (a list; it generates each synth trace once per "
        "count; a grid of trace files only has no use for it and is an error), or a trace "
        "file's own. There is no `batch` key.",
        "CONFIG keys: `traces` (paths, relative to CONFIG, or synth tables such as "
        '{synth = "deepseek-v3.2", steps = 50, context = 4096, layers = 4, top_k = 256, '
        'seed = 0, requests = 4}; `generator = "stats"` picks the statistics generator '
        "instead of the indexer model, and fewer layers than the preset's make a reduced model "
        'sampling its depth), `policies`, `capacities` (a number = MiB, "20 MiB", '
        '"5 MB" = 5e6 B = 4.77 MiB, "5000 tokens", {tokens = 5000}); optional `requests`, '
        '`partitions` ["global"], `hardware` ["h100"], `layers_per_gpu` (default: the '
        "trace's), `weights_mib` (MiB per layer, or \"model\" = the model's, inferred from the "
        "trace geometry: the default), "
        '`near_miss_source` ("trace" or "layer-below"; required with the near-miss policy).',
        "Columns: config_hash (sha256 of the run's canonical config JSON, trace identity "
        "included), config columns, batch (= requests), capacity_mib (asked) and "
        "effective_capacity_mib, near_miss_source, accesses, hits, misses, hit_rate, step_time_s, "
        "ideal_step_time_s, slowdown, tokens/s; timing columns have `seconds` in their name "
        "and are the only ones that differ between two runs of the same config.",
        "Each finished run is committed at once (OUT/rows/HASH.parquet, atomic rename); "
        "--resume skips runs already committed, so a killed sweep resumed gives exactly the "
        "rows of an uninterrupted one.",
        "Query example (pyarrow): `import pyarrow.parquet as pq, pyarrow.compute as pc; "
        't = pq.read_table("OUT/results.parquet"); '
        'print(t.filter(pc.equal(t["policy"], "min")).select(["capacity_mib", '
        '"hit_rate", "slowdown"]))`',
        "--executor ray runs each run as a Ray task (retried if its worker dies) on the "
        "cluster at --address HOST:PORT, or on a private local Ray with --workers CPUs; rows "
        "are still committed by this process as each task finishes.",
        "Example: dsacache sweep grid.toml --out runs/grid --workers 2",
        "Example: dsacache sweep grid.toml --out runs/grid --executor ray --address 127.0.0.1:6379",
    ]
)


@app.command("sweep", help=HELP)
def sweep_command(
    config: Path = typer.Argument(..., help="The sweep grid (TOML)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.parquet and rows/."),
    resume: bool = typer.Option(False, "--resume", help="Skip runs already committed in OUT."),
    workers: int | None = typer.Option(
        None, "--workers", "-j", help="Local worker processes (default: all cores)."
    ),
    executor: str = typer.Option(
        "local", "--executor", help="Where runs execute: local (processes) or ray."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address HOST:PORT (--executor ray only)."
    ),
) -> None:
    """Run a sweep grid (help text: HELP above)."""
    sweep = load_config(config)
    t0 = time.perf_counter()
    state: dict = {}

    def started(todo: int, skipped: int) -> None:
        state["todo"] = todo
        if skipped:
            typer.echo(f"resuming: {skipped} of {todo + skipped} runs already committed", err=True)

    with progress_bar("sweep", len(sweep.runs)) as advance:
        counts = run_sweep(
            sweep,
            out,
            resume=resume,
            workers=workers,
            progress=advance,
            on_start=started,
            executor=executor,
            address=address,
        )
    wall = time.perf_counter() - t0
    rate = counts["done"] / wall if wall > 0 else 0.0
    typer.echo(
        f"{counts['rows']} rows in {out / 'results.parquet'} ({counts['done']} run now in "
        f"{counts['simulations']} simulations, {counts['skipped']} skipped; {wall:.1f} s, "
        f"{rate:.2f} runs/s)"
    )
