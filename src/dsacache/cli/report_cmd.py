"""`dsacache report`: figures and a self-contained report.html for a sweep folder."""

from __future__ import annotations

from pathlib import Path

import typer

from dsacache.cli.app import app
from dsacache.cli.options import load_trace_arg
from dsacache.cli.progress import progress_bar
from dsacache.report import build_report
from dsacache.report.build import STAGES, load_rows


@app.command("report")
def report_command(
    folder: Path = typer.Argument(..., help="A sweep folder (holding results.parquet)."),
    trace: Path | None = typer.Option(
        None,
        "--trace",
        "-t",
        help="Trace for the heatmap, MRC and metrics (default: the sweep's own trace, "
        "rebuilt when it is synthetic or opened when its file still exists).",
    ),
) -> None:
    """Write figures and one self-contained DIR/report.html for the sweep in DIR.

    Figures (PNG, in DIR): hit_rate.png (hit rate vs reserved MiB, one line per policy, min
    included; one panel per trace/partition/hardware), slowdown.png (modelled slowdown vs
    reserved MiB beside the paper's Table 4), and -- when a trace is available --
    new_lookup_heatmap.png (per-layer new-lookup fraction over steps) and mrc.png (token-LRU
    miss-ratio curve). report.html inlines them (base64 PNG) with the results table and the
    trace's metrics beside the paper's.

    Example: dsacache report runs/grid
    """
    load_rows(folder)  # one-line error on a folder without results before opening a trace
    tr = load_trace_arg(trace, None, None, None) if trace is not None else None
    with progress_bar("report", STAGES) as advance:
        files = build_report(folder, tr, str(trace) if trace is not None else None, advance)
    for f in files:
        typer.echo(f"wrote {f}")
