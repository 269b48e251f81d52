"""`dsacache report`: figures and a self-contained report.html for a sweep folder."""

from __future__ import annotations

from pathlib import Path

import typer

from dsacache.cli.app import app
from dsacache.cli.options import load_trace_arg
from dsacache.cli.progress import progress_bar
from dsacache.report import build_report
from dsacache.report.build import STAGES, load_rows
from dsacache.report.predictability_plot import read_analysis


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
    analysis: list[Path] = typer.Option(
        [],
        "--analysis",
        "-a",
        help="A `dsacache analyze --json [--predictability]` output of another trace, drawn "
        "beside the sweep's trace in predictability.png (repeat for more).",
    ),
) -> None:
    """Write figures and one self-contained DIR/report.html for the sweep in DIR.

    Figures (PNG, in DIR): hit_rate.png (hit rate vs reserved MiB, one line per policy, min
    included; one panel per trace/partition/hardware), slowdown.png (modelled slowdown vs
    reserved MiB beside the paper's Table 4), and -- when a trace is available --
    new_lookup_heatmap.png (per-layer new-lookup fraction over steps), mrc.png (token-LRU
    miss-ratio curve) and predictability.png (P(selected at t+1 | streak) per layer group,
    per-layer consecutive vs shifted overlap; --analysis adds other traces to it).
    report.html inlines them (base64 PNG) with the results table and the trace's metrics
    beside the paper's.

    Example: dsacache report runs/grid -a other.json
    """
    load_rows(folder)  # one-line error on a folder without results before opening a trace
    others = [(str(p), read_analysis(p)) for p in analysis]
    tr = load_trace_arg(trace, None, None, None) if trace is not None else None
    with progress_bar("report", STAGES) as advance:
        label = str(trace) if trace is not None else None
        files = build_report(folder, tr, label, advance, analyses=others)
    for f in files:
        typer.echo(f"wrote {f}")
