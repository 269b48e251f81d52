"""`dsacache demo`: the pipeline end to end on the embedded default (what `make demo` runs):
synthetic trace -> analysis -> a small sweep -> report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer

from dsacache.analysis import analyze
from dsacache.cli.analyze_cmd import print_metrics_table
from dsacache.cli.app import app
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.report import build_report
from dsacache.report.build import STAGES
from dsacache.sweep import parse_config, run_sweep
from dsacache.sweep.runner import build_trace

DEMO_PRESET = "deepseek-v3.2"
DEMO_STEPS = 200
DEMO_CONTEXT = 32768
DEMO_LAYERS = 8  # a reduced DeepSeek-V3.2 (61 layers) so the whole demo fits in 2 minutes
DEMO_POLICIES = ("min", "token-lru", "fifo", "keep-previous")
DEMO_CAPACITIES_MB = (0, 5, 10, 20, 40)


def demo_sweep_toml(steps: int) -> str:
    """The demo's sweep grid: the synthetic trace x policies x reserved MiB (H100, global)."""
    pols = ", ".join(f'"{p}"' for p in DEMO_POLICIES)
    caps = ", ".join(str(c) for c in DEMO_CAPACITIES_MB)
    return (
        "# dsacache demo: a SYNTHETIC trace calibrated to the paper's statistics (not a model\n"
        f"# recording): {DEMO_PRESET} geometry reduced to {DEMO_LAYERS} layers.\n"
        f'traces = [{{synth = "{DEMO_PRESET}", steps = {steps}, context = {DEMO_CONTEXT}, '
        f"layers = {DEMO_LAYERS}, seed = 0}}]\n"
        f"policies = [{pols}]\n"
        f"capacities = [{caps}]\n"
        'partitions = ["global"]\n'
        'hardware = ["h100"]\n'
    )


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Directory for the outputs."),
    steps: int = typer.Option(DEMO_STEPS, "--steps", help="Decode steps to generate."),
    workers: int | None = typer.Option(
        None, "--workers", "-j", help="Local sweep worker processes (default: all cores)."
    ),
) -> None:
    """Run the pipeline end to end: trace -> analysis -> sweep -> report.

    The trace is SYNTHETIC, calibrated to the paper's statistics (DeepSeek-V3.2 geometry,
    top-k 2048, 32K context, reduced to 8 layers), until a bundled backbone records real
    ones. Writes OUT/analysis.json, OUT/sweep.toml (the grid: policies min, token-lru, fifo,
    keep-previous x 0-40 MiB reserved, H100), OUT/results.parquet, the figures
    (hit_rate.png, slowdown.png, new_lookup_heatmap.png, mrc.png) and OUT/report.html.
    """
    start = time.perf_counter()
    if steps < 2:
        raise DsacacheError(f"--steps must be an integer >= 2, got {steps}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DsacacheError(f"{out}: cannot create the output directory ({e.strerror})") from None
    sweep = parse_config(demo_sweep_toml(steps), base_dir=out, source="demo sweep")
    identity = sweep.runs[0].trace
    typer.echo(
        f"[1/4] SYNTHETIC trace (calibrated to the paper's statistics, not a model recording): "
        f"{DEMO_PRESET} geometry, {DEMO_LAYERS} layers, {steps} steps from a "
        f"{DEMO_CONTEXT}-token context"
    )
    trace = build_trace(identity, str(out))
    typer.echo("[2/4] access-pattern analysis")
    with progress_bar("analyze", steps) as advance:
        result = analyze(trace, progress=advance)
    tmp = out / ".analysis.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), allow_nan=False, indent=1))
    os.replace(tmp, out / "analysis.json")
    print_metrics_table(result)
    typer.echo(f"[3/4] sweep: {len(sweep.runs)} runs ({', '.join(DEMO_POLICIES)})")
    with progress_bar("sweep", len(sweep.runs)) as advance:
        run_sweep(sweep, out, workers=workers, progress=advance)
    typer.echo("[4/4] report")
    label = f"SYNTHETIC trace ({DEMO_PRESET} geometry, {DEMO_LAYERS} layers, {steps} steps)"
    with progress_bar("report", STAGES) as advance:
        files = build_report(out, trace, label, advance)
    written = [out / "analysis.json", out / "sweep.toml", out / "results.parquet", *files]
    for f in written:
        typer.echo(f"wrote {f}")
    typer.echo(f"open {out / 'report.html'}  ({time.perf_counter() - start:.1f} s)")
