"""`dsacache analyze`: access-pattern metrics of a trace, next to the paper's values."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.analysis import PAPER, PAPER_WINDOW, AnalysisResult, analyze, check_params
from dsacache.cli.app import app
from dsacache.cli.options import BLOCK_TOKENS, INDEX_BYTES, KV_BYTES, TRACE_ARG, load_trace_arg
from dsacache.cli.progress import progress_bar

PAPER_PAGE_TOKENS = 64  # default P (DeepSeek-V3.2's KV page), beside which the paper's 0.35 shows


@app.command("analyze")
def analyze_command(
    trace: Path = TRACE_ARG,
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON object (all metrics, per layer, histogram)."
    ),
    window: int = typer.Option(
        50, "--window", "-w", help="Working-set window W in decode steps (the paper uses 50)."
    ),
    page_tokens: int = typer.Option(
        64, "--page-tokens", "-p", help="Page size P in tokens for page utilization."
    ),
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
) -> None:
    """Measure how a trace's top-k selections move: the paper's access-pattern metrics.

    - new_lookup_fraction: share of a step's top-k not selected at the previous step (same layer).
    - persistence_mean_steps: mean run of consecutive steps a token stays selected.
    - lookback_mean_steps: steps since a re-selected token's previous selection.
    - interlayer_overlap: share of layer l's top-k also chosen by layer l-1 at the same step.
    - working_set_ratio: distinct tokens a layer touches in W steps, divided by k.
    - page_utilization: selected tokens per token of the P-token pages they touch.

    Means pool over requests, steps and layers, shown beside the paper's H200 values (Levy 2026).
    --json prints one object that adds per-layer values and a reuse-distance histogram.
    """
    window, page_tokens = check_params(window, page_tokens)  # fail before opening the trace
    tr = load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)
    total = sum(r.steps for r in tr.requests)
    with progress_bar("analyze", total) as advance:
        result = analyze(tr, window=window, page_tokens=page_tokens, progress=advance)
    if json_out:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print_metrics_table(result)


def _fmt(value: float | None, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.3f}{suffix}"


def print_metrics_table(r: AnalysisResult) -> None:
    console = Console()
    console.print(
        f"[bold]{r.source}[/bold]: {r.requests} request(s), {r.steps} steps, {r.layers} layers, "
        f"k={r.top_k}, {r.accesses:,} accesses"
    )
    table = Table("metric", "this trace", "paper (H200 traces)")
    ws_note = "" if r.window == PAPER_WINDOW else f" at W={PAPER_WINDOW}"
    page_note = "" if r.page_tokens == PAPER_PAGE_TOKENS else f" at P={PAPER_PAGE_TOKENS}"
    rows = [
        ("new_lookup_fraction", r.new_lookup_fraction, "", ""),
        ("  P95", r.new_lookup_fraction_p95, "", "new_lookup_fraction_p95"),
        ("persistence_mean_steps", r.persistence_mean_steps, "", ""),
        ("lookback_mean_steps", r.lookback_mean_steps, "", ""),
        ("interlayer_overlap", r.interlayer_overlap, "", ""),
        (f"working_set_ratio (W={r.window})", r.working_set_ratio, "x", "working_set_ratio"),
        ("  P95", r.working_set_ratio_p95, "x", "working_set_ratio_p95"),
        (f"page_utilization (P={r.page_tokens})", r.page_utilization, "", "page_utilization"),
    ]
    for label, value, suffix, key in rows:
        key = key or label
        paper = _fmt(PAPER[key], suffix)
        if key.startswith("working_set_ratio"):
            paper += ws_note
        if key == "page_utilization":
            paper += page_note
        table.add_row(label, _fmt(value, suffix), paper)
    console.print(table)
