"""`dsacache synth`: write a calibrated synthetic trace."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.analysis import analyze
from dsacache.cli.app import app
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.trace import Trace
from dsacache.trace.geometry import PRESETS, preset
from dsacache.trace.synth import PAPER_TARGETS, SynthTargets, synthesize

_DEFAULTS = SynthTargets()


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Trace store to write (a directory)."),
    preset_name: str = typer.Option(
        "deepseek-v3.2", "--preset", help=f"Model geometry: {', '.join(PRESETS)}."
    ),
    steps: int = typer.Option(1000, "--steps", help="Decode steps."),
    context: int = typer.Option(32768, "--context", help="Context length at the first step."),
    requests: int = typer.Option(1, "--requests", help="Requests in the batch."),
    seed: int = typer.Option(0, "--seed", help="Random seed (request r uses seed + r)."),
    layers: int | None = typer.Option(None, "--layers", help="Override the preset's layers."),
    top_k: int | None = typer.Option(None, "--top-k", help="Override the preset's top-k."),
    new_lookup: float | None = typer.Option(
        None,
        "--new-lookup",
        help=f"Target new_lookup_fraction [default: {_DEFAULTS.new_lookup_fraction}].",
    ),
    persistence: float | None = typer.Option(
        None,
        "--persistence",
        help="Target persistence in steps instead of --new-lookup (sets it to 1/persistence).",
    ),
    new_lookup_p95: float | None = typer.Option(
        None,
        "--new-lookup-p95",
        help="Target P95 of the per-(step, layer) new-lookup fraction (a Beta spread around the "
        "mean). Default: the paper's 0.90 when the mean is the paper's, else no spread.",
    ),
    overlap: float = typer.Option(
        _DEFAULTS.interlayer_overlap, "--interlayer-overlap", help="Target interlayer_overlap."
    ),
    working_set: float = typer.Option(
        _DEFAULTS.working_set_ratio,
        "--working-set",
        help="Target working_set_ratio over --window steps (steered, not exact).",
    ),
    lookback: float = typer.Option(
        _DEFAULTS.lookback_mean_steps,
        "--lookback",
        help="Target lookback_mean_steps (steered, not exact).",
    ),
    window: int = typer.Option(_DEFAULTS.window, "--window", help="Working-set window, steps."),
    chunk_steps: int = typer.Option(64, "--chunk-steps", help="Steps per stored chunk."),
    check: bool = typer.Option(
        False, "--check", help="Analyze the written trace and print targets beside results."
    ),
) -> None:
    """Generate a synthetic DSA trace calibrated to access-pattern targets.

    new_lookup_fraction and interlayer_overlap are met by construction; persistence follows
    (≈ 1 / new_lookup_fraction); working-set ratio and lookback are steered by short pilot runs.
    New selections fall on attention sinks, a recent window and a uniform long tail. The context
    starts at --context tokens and grows by one per step. Defaults are the paper's values.

    Example: dsacache synth --preset deepseek-v3.2 --steps 1000 --context 32768 --out t.zarr
    """
    if new_lookup is not None and persistence is not None:
        raise DsacacheError("give --new-lookup or --persistence, not both")
    if persistence is not None:
        if persistence < 1:
            raise DsacacheError(f"--persistence must be >= 1 step, got {persistence}")
        new_lookup = 1.0 / persistence
    if new_lookup_p95 is None and new_lookup is None:
        new_lookup_p95 = PAPER_TARGETS.new_lookup_p95
    targets = SynthTargets(
        new_lookup_fraction=_DEFAULTS.new_lookup_fraction if new_lookup is None else new_lookup,
        new_lookup_p95=new_lookup_p95,
        interlayer_overlap=overlap,
        working_set_ratio=working_set,
        lookback_mean_steps=lookback,
        window=window,
    )
    geometry = preset(preset_name).with_overrides(layers=layers, top_k=top_k)
    if chunk_steps < 1:
        raise DsacacheError(f"--chunk-steps must be >= 1, got {chunk_steps}")
    with progress_bar("synth", steps * requests) as advance:
        trace = synthesize(
            geometry, steps, context, targets, seed=seed, requests=requests, out=out,
            chunk_steps=chunk_steps, progress=advance,
        )  # fmt: skip
    g = trace.geometry
    typer.echo(
        f"wrote {out}: {requests} request(s) x {steps} steps x {g.layers} layers x k={g.top_k}, "
        f"context {context}..{context + steps - 1}"
    )
    if check:
        _print_check(trace, targets)


def _print_check(trace: Trace, targets: SynthTargets) -> None:
    with progress_bar("analyze", sum(r.steps for r in trace.requests)) as advance:
        r = analyze(trace, window=targets.window, progress=advance)
    table = Table("metric", "target", "this trace")
    rows = [
        ("new_lookup_fraction", targets.new_lookup_fraction, r.new_lookup_fraction),
        ("  P95", targets.new_lookup_p95, r.new_lookup_fraction_p95),
        ("persistence_mean_steps", targets.persistence_mean_steps, r.persistence_mean_steps),
        ("interlayer_overlap", targets.interlayer_overlap, r.interlayer_overlap),
        (f"working_set_ratio (W={targets.window})", targets.working_set_ratio, r.working_set_ratio),
        ("lookback_mean_steps", targets.lookback_mean_steps, r.lookback_mean_steps),
    ]
    for label, want, got in rows:
        table.add_row(
            label, "-" if want is None else f"{want:.3f}", "n/a" if got is None else f"{got:.3f}"
        )
    Console().print(table)
