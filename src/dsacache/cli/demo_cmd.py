"""`dsacache demo`: the pipeline end to end on the embedded defaults (what `make demo` runs):
a real DSA recording from the bundled backbone -> its analysis, then a synthetic trace at
DeepSeek-V3.2 scale -> analysis -> a small sweep of the LLC reservation -> a sweep of the HBM
buffers over host memory and the serving model at their hit rate -> report."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import typer

from dsacache.analysis import analyze
from dsacache.cli.analyze_cmd import print_metrics_table
from dsacache.cli.app import app
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.hardware import gpu
from dsacache.perf.serving import BufferStats, ServingResult, ServingWorkload, serving_rows
from dsacache.perf.serving_models import serving_model
from dsacache.report import build_report
from dsacache.report.build import HIERARCHY_DIR, SERVING_JSON, STAGES, load_rows
from dsacache.sweep import parse_config, run_sweep
from dsacache.sweep.runner import build_trace, trace_geometry
from dsacache.sweep.store import RESULTS, ROWS
from dsacache.trace.generate import DEFAULT_GENERATOR, progress_total

DEMO_PRESET = "deepseek-v3.2"
DEMO_STEPS = 200
DEMO_CONTEXT = 32768
DEMO_LAYERS = 8  # a reduced DeepSeek-V3.2 (61 layers) so the whole demo fits in 2 minutes
# hazard-plus: the best online policy on the policy frontier (docs/policies.md)
DEMO_POLICIES = ("min", "token-lru", "fifo", "keep-previous", "hazard-plus")
DEMO_CAPACITIES_MIB = (0, 5, 10, 20, 40)
# Two weight settings: the model's own (its weight stream dominates the step, so no reservation
# moves the slowdown much) and 0 (the attention part of the step alone, as when the weights
# stream elsewhere or overlap the gathers): there the reservation decides the step time.
DEMO_WEIGHTS_MIB = ("model", 0)
# The HBM level (SGLang's HiSparse): buffers of k to 4k rows per request and layer, every
# policy; the serving model at the public setting's shape (8 x H200, 32K in / 8K out, 4096
# rows) with the token-lru hit rate of the synthetic trace.
DEMO_BUFFER_TOKENS = (2048, 3072, 4096, 6144, 8192)
DEMO_SERVING_BUFFER = 4096
DEMO_SERVING = {"model": "deepseek-v3.2", "hardware": "h200", "gpus": 8, "input_tokens": 32768,
                "output_tokens": 8192}  # fmt: skip
DEMO_CONCURRENCY = (1, 8, 32, 64, 128, 256)
# The bundled backbone's stage: two prompts in the styles of its corpus (code and prose)
DEMO_PROMPTS = ("def read_config(path):\n", "The package provides")
DEMO_RECORD_TOKENS = 96
DEMO_RECORD_TOP_K = 32
# seeded sampling: greedy decoding of a tiny model from a short prompt falls into loops, which
# make its selections unrealistically sticky
DEMO_TEMPERATURE, DEMO_TOP_P, DEMO_SEED = 0.8, 0.95, 0


def _demo_trace(steps: int) -> str:
    return (
        f'{{synth = "{DEMO_PRESET}", generator = "{DEFAULT_GENERATOR}", steps = {steps}, '
        f"context = {DEMO_CONTEXT}, layers = {DEMO_LAYERS}, seed = 0}}"
    )


def demo_hierarchy_toml(steps: int) -> str:
    """The demo's hierarchy grid: the synthetic trace x HBM buffer rows x buffer policies (no
    LLC reservation; H200 and its PCIe Gen5 host link)."""
    pols = ", ".join(f'"{p}"' for p in DEMO_POLICIES)
    return (
        "# dsacache demo: HBM buffers per (request, layer) over host memory (HiSparse), on the\n"
        f"# SYNTHETIC trace of the LLC sweep ({DEMO_PRESET} geometry, {DEMO_LAYERS} layers).\n"
        f"traces = [{_demo_trace(steps)}]\n"
        f"buffer_tokens = [{', '.join(map(str, DEMO_BUFFER_TOKENS))}]\n"
        f"buffer_policies = [{pols}]\n"
        'hardware = ["h200"]\n'
    )


def demo_sweep_toml(steps: int) -> str:
    """The demo's sweep grid: the synthetic trace x policies x reserved MiB (H100, global)."""
    pols = ", ".join(f'"{p}"' for p in DEMO_POLICIES)
    caps = ", ".join(str(c) for c in DEMO_CAPACITIES_MIB)
    weights = ", ".join(f'"{w}"' if isinstance(w, str) else str(w) for w in DEMO_WEIGHTS_MIB)
    return (
        "# dsacache demo: a SYNTHETIC trace (not a model recording) of the indexer-model\n"
        f"# generator: {DEMO_PRESET} geometry reduced to {DEMO_LAYERS} layers that sample its "
        "depth.\n"
        f"traces = [{_demo_trace(steps)}]\n"
        f"policies = [{pols}]\n"
        f"capacities = [{caps}]\n"
        'partitions = ["global"]\n'
        'hardware = ["h100"]\n'
        "# weights per layer: the model's own, and 0 (the attention part of the step alone)\n"
        f"weights_mib = [{weights}]\n"
    )


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Directory for the outputs."),
    steps: int = typer.Option(DEMO_STEPS, "--steps", help="Decode steps to generate."),
    workers: int | None = typer.Option(
        None, "--workers", "-j", help="Local sweep worker processes (default: all cores)."
    ),
    record_tokens: int = typer.Option(
        DEMO_RECORD_TOKENS,
        "--record-tokens",
        help="Tokens the bundled backbone decodes per prompt (0: skip that stage).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace the sweep results of an earlier demo in OUT."
    ),
) -> None:
    """Run the pipeline end to end: record -> analysis, then trace -> analysis -> sweep -> report.

    First the bundled backbone (`tiny`, with its distilled indexer) decodes two prompts with
    top-k 32 sparse attention and its recorded trace is analysed (OUT/recorded, a trace store,
    and OUT/recorded-analysis.json). Then a SYNTHETIC trace at DeepSeek-V3.2 scale from the
    indexer-model generator (`dsacache synth`'s default, calibrated to DeepSeek-V3.2's public
    measurements; top-k 2048, 32K context, a reduced model of 8 layers sampling the 61) goes
    through the cache study, since no CPU can decode a 61-layer model. Writes OUT/analysis.json,
    OUT/sweep.toml (the grid: policies min, token-lru, fifo, keep-previous, hazard-plus x
    0-40 MiB reserved x weights per layer: the model's, and 0 -- the attention part of the step
    alone, where the reservation decides the step time -- on H100), OUT/results.parquet; then
    the HBM level of serving with host offload (SGLang's HiSparse) on the same trace:
    OUT/hierarchy/ (a sweep of buffers of 2048-8192 rows per request and layer x the same
    policies on H200) and OUT/serving.json (decode throughput vs concurrency, DeepSeek-V3.2 on
    8 x H200, 32K in / 8K out, KV in HBM vs offloaded behind 4096-row buffers at their token-lru
    hit rate); the figures (hit_rate.png, fraction_of_min.png, slowdown.png, buffer.png,
    serving.png, new_lookup_heatmap.png, mrc.png) and OUT/report.html.
    """
    start = time.perf_counter()
    if steps < 2:
        raise DsacacheError(f"--steps must be an integer >= 2, got {steps}")
    if record_tokens < 0:
        raise DsacacheError(f"--record-tokens must be >= 0, got {record_tokens}")
    _clear_earlier_demo(out, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DsacacheError(f"{out}: cannot create the output directory ({e.strerror})") from None
    recorded = []
    if record_tokens:
        typer.echo(
            f"[0/5] REAL DSA recording: the bundled backbone (tiny) decodes {len(DEMO_PROMPTS)} "
            f"prompts x {record_tokens} tokens, top-k {DEMO_RECORD_TOP_K}"
        )
        recorded = _record_bundled(out, record_tokens)
    sweep = parse_config(demo_sweep_toml(steps), base_dir=out, source="demo sweep")
    identity = sweep.runs[0].trace
    typer.echo(
        f"[1/5] SYNTHETIC trace (the indexer model calibrated to DeepSeek-V3.2's public "
        f"measurements, not a model recording): {DEMO_PRESET} geometry, {DEMO_LAYERS} layers "
        f"sampling its depth, {steps} steps from a {DEMO_CONTEXT}-token context"
    )
    total = progress_total(identity["generator"], trace_geometry(identity), steps, 1)
    with progress_bar("synth", total) as advance:
        trace = build_trace(identity, str(out), advance)
    typer.echo("[2/5] access-pattern analysis")
    with progress_bar("analyze", steps) as advance:
        result = analyze(trace, progress=advance)
    _write_json(out / "analysis.json", result.to_dict())
    print_metrics_table(result)
    typer.echo(f"[3/5] sweep: {len(sweep.runs)} runs ({', '.join(DEMO_POLICIES)})")
    with progress_bar("sweep", len(sweep.runs)) as advance:
        run_sweep(sweep, out, workers=workers, progress=advance)
    hier = parse_config(demo_hierarchy_toml(steps), base_dir=out, source="demo hierarchy")
    typer.echo(
        f"[4/5] HBM buffers over host memory (HiSparse): {len(hier.runs)} runs, buffers of "
        f"{DEMO_BUFFER_TOKENS[0]}-{DEMO_BUFFER_TOKENS[-1]} rows x {len(DEMO_POLICIES)} policies; "
        "the serving model at the token-lru hit rate"
    )
    with progress_bar("hierarchy", len(hier.runs)) as advance:
        run_sweep(hier, out / HIERARCHY_DIR, workers=workers, progress=advance)
    _write_json(out / SERVING_JSON, _serving(out / HIERARCHY_DIR).to_dict())
    typer.echo("[5/5] report")
    label = f"SYNTHETIC trace ({DEMO_PRESET} geometry, {DEMO_LAYERS} layers, {steps} steps)"
    with progress_bar("report", STAGES) as advance:
        files = build_report(out, trace, label, advance)
    written = [*recorded, out / "analysis.json", out / "sweep.toml", out / RESULTS]
    written += [out / HIERARCHY_DIR / RESULTS, out / SERVING_JSON, *files]
    for f in written:
        typer.echo(f"wrote {f}")
    typer.echo(f"open {out / 'report.html'}  ({time.perf_counter() - start:.1f} s)")


def _clear_earlier_demo(out: Path, force: bool) -> None:
    """An earlier demo's sweep results in OUT stop the sweeps half-way: refuse them before
    anything is written, or with --force remove them (only the demo's own sweep folders)."""
    earlier = [out / RESULTS, out / ROWS, out / HIERARCHY_DIR]
    found = [p for p in earlier if p.exists()]
    if not found:
        return
    if not force:
        raise DsacacheError(
            f"{out} already holds an earlier demo's sweep results ({found[0].name}): pass "
            "--force to replace them, or another --out"
        )
    for p in found:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _serving(folder: Path) -> ServingResult:
    """The serving model at DEMO_SERVING with the hierarchy sweep's token-lru buffer of
    DEMO_SERVING_BUFFER rows: its hit rate and its p99 step's miss rate."""
    row = next(
        r for r in load_rows(folder)
        if r["buffer_policy"] == "token-lru" and r["buffer_tokens"] == DEMO_SERVING_BUFFER
    )  # fmt: skip
    s = DEMO_SERVING
    stats = BufferStats.from_host_bytes(
        row["buffer_hit_rate"], row["host_bytes_per_step_p99"],
        row["accesses"] / row["steps"], row["kv_bytes_per_token"],
        f"token-lru, {DEMO_SERVING_BUFFER} rows, on the demo's SYNTHETIC trace",
    )  # fmt: skip
    work = ServingWorkload(s["gpus"], s["input_tokens"], s["output_tokens"], DEMO_SERVING_BUFFER)
    return serving_rows(serving_model(s["model"]), gpu(s["hardware"]), work,
                        list(DEMO_CONCURRENCY), stats)  # fmt: skip


def _write_json(path: Path, obj: dict) -> None:
    """Write `path` atomically (a hidden temp file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, allow_nan=False, indent=1))
    os.replace(tmp, path)


def _record_bundled(out: Path, tokens: int) -> list[Path]:
    """Decode DEMO_PROMPTS with the bundled backbone's DSA, save and analyse the trace."""
    import torch
    from transformers.utils import logging as hf_logging

    from dsacache.dsa.decode import Sampling
    from dsacache.dsa.hooks import attach
    from dsacache.dsa.models import TINY, load_backbone, load_indexer, resolve_model_path
    from dsacache.dsa.record import record

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    sampling = Sampling(DEMO_TEMPERATURE, DEMO_TOP_P, DEMO_SEED)
    model, tokenizer = load_backbone(TINY)
    indexer, _ = load_indexer(None, resolve_model_path(TINY), model)
    att = attach(model, indexer, DEMO_RECORD_TOP_K)
    try:
        with progress_bar("record", len(DEMO_PROMPTS) * tokens) as advance:
            rec = record(
                model, tokenizer, att, list(DEMO_PROMPTS), tokens, DEMO_RECORD_TOP_K,
                sampling=sampling, meta={"model": TINY}, progress=advance,
            )  # fmt: skip
    finally:
        att.detach()
    store = out / "recorded"
    rec.trace.save(store)
    for i, text in enumerate(rec.texts):
        typer.echo(f"  request {i}: {DEMO_PROMPTS[i]!r} -> {' '.join(text.split())[:80]!r}...")
    result = analyze(rec.trace)
    _write_json(out / "recorded-analysis.json", result.to_dict())
    print_metrics_table(result)
    return [store, out / "recorded-analysis.json"]
