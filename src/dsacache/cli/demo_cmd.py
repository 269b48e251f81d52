"""`dsacache demo`: the pipeline end to end on the embedded default (what `make demo` runs)."""

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
from dsacache.trace.geometry import preset
from dsacache.trace.synth import synthesize

DEMO_PRESET = "deepseek-v3.2"
DEMO_STEPS = 200
DEMO_CONTEXT = 32768


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Directory for the outputs."),
    steps: int = typer.Option(DEMO_STEPS, "--steps", help="Decode steps to generate."),
) -> None:
    """Run the pipeline end to end: trace -> analysis -> printed summary.

    The trace is a SYNTHETIC one calibrated to the paper's statistics (DeepSeek-V3.2 geometry:
    61 layers, top-k 2048, 32K context), until a bundled backbone records real ones. Writes
    OUT/trace.zarr and OUT/analysis.json.
    """
    start = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DsacacheError(f"{out}: cannot create the output directory ({e.strerror})") from None
    geometry = preset(DEMO_PRESET)
    trace_path = out / "trace.zarr"
    typer.echo(
        f"[1/2] synthetic trace (calibrated to the paper's statistics, not a model recording): "
        f"{DEMO_PRESET}, {steps} steps from a {DEMO_CONTEXT}-token context"
    )
    with progress_bar("synth", steps) as advance:
        trace = synthesize(geometry, steps, DEMO_CONTEXT, out=trace_path, progress=advance)
    typer.echo("[2/2] access-pattern analysis")
    with progress_bar("analyze", steps) as advance:
        result = analyze(trace, progress=advance)
    tmp = out / ".analysis.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), allow_nan=False, indent=1))
    os.replace(tmp, out / "analysis.json")
    print_metrics_table(result)
    typer.echo(
        f"wrote {trace_path} and {out / 'analysis.json'} in {time.perf_counter() - start:.1f} s"
    )
