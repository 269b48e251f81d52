"""`dsacache calibrate`: the models against public measurements."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from dsacache.cli.app import app
from dsacache.errors import DsacacheError
from dsacache.sim.llc.gpu_l2 import CHUNK_KIB, FITTED, GPU_L2_PRESETS, gpu_l2_preset, preset_sweep
from dsacache.sim.llc.l2_measured import MEASURED, measured_sweep

calibrate_app = typer.Typer(
    help="Compare the models with public measurements.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(calibrate_app, name="calibrate")


def parse_sizes(text: str) -> list[int]:
    """'S1,S2,...' -> positive KiB sizes."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DsacacheError(f"--sizes-kib must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise DsacacheError(f"--sizes-kib needs at least one positive size, got {text!r}")
    return sizes


@calibrate_app.command("l2-sweep")
def l2_sweep_command(
    hardware: str = typer.Option(
        ..., "--hardware", help=f"GPU L2 preset: {', '.join(GPU_L2_PRESETS)}."
    ),
    sms: int | None = typer.Option(None, "--sms", help="SMs streaming (default: the preset's)."),
    chunk_kib: int = typer.Option(
        CHUNK_KIB, "--chunk-kib", help="KiB each block reads (a multiple of 16; benchmark: 512)."
    ),
    sizes_kib: str = typer.Option(
        ..., "--sizes-kib", help="Comma-separated data sets in KiB (multiples of the chunk)."
    ),
    measured: bool = typer.Option(
        False,
        "--measured",
        help="Also show the public measured hit rate at the sizes it has "
        f"(bundled: {', '.join(MEASURED)}) and the model's bandwidth-equivalent hit rate "
        "(far hits slower, converted like the measured bandwidths: the one to compare).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Replay the RRZE gpu-benches `gpu-l2-cache` sweep (every SM re-reads one data set) through
    the GPU L2 model; print the steady-state fraction of requests served by L2 per data set."""
    preset = gpu_l2_preset(hardware)
    sizes = parse_sizes(sizes_kib)
    if sms is not None and sms < 1:
        raise DsacacheError(f"--sms must be >= 1, got {sms}")
    ref = None
    if measured:
        ref = measured_sweep(preset.name, preset.l2_bytes)
    result = preset_sweep(preset, sizes, chunk_kib, sms)
    equivalent = None
    if ref is not None:  # the model as the public sweep would report it: the one to compare
        equivalent = result.bandwidth_equivalent(preset.name, FITTED.far_cost)
    if json_out:
        out: dict = {"sizes_kib": sizes, "hit_rate": result.hit_rate}
        if ref is not None:
            out["bandwidth_equivalent_hit_rate"] = equivalent
            out["measured_hit_rate"] = [ref.at(s) for s in sizes]
        print(json.dumps(out, allow_nan=False))
        return
    table = Table(title=f"{preset.label}: L2 hit rate of the gpu-l2-cache sweep (model)")
    table.add_column("data set KiB", justify="right")
    table.add_column("model hit rate", justify="right")
    table.add_column("near hits", justify="right")  # of all requests, served near
    if ref is not None:
        table.add_column("model bw-equivalent", justify="right")
        table.add_column("measured", justify="right")
    for i, s in enumerate(sizes):
        row = [f"{s:,}", f"{result.hit_rate[i]:.3f}", f"{result.near_fraction[i]:.3f}"]
        if ref is not None:
            m = ref.at(s)
            row += [f"{equivalent[i]:.3f}", "-" if m is None else f"{m:.3f}"]
        table.add_row(*row)
    Console().print(table)
