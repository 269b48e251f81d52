"""`dsacache analyze`: access-pattern metrics of a trace, next to the paper's values."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.analysis import (
    PAPER,
    PAPER_WINDOW,
    PUBLIC_DSV32,
    AnalysisResult,
    PredictabilityResult,
    analyze,
    check_params,
)
from dsacache.analysis.predictability import (
    RANK_LABELS,
    RANK_SOURCES,
    STREAK_LABELS,
    group_name,
    parse_layer_groups,
)
from dsacache.cli.app import app
from dsacache.cli.options import BLOCK_TOKENS, INDEX_BYTES, KV_BYTES, TRACE_ARG, load_trace_arg
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError

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
    predictability: bool = typer.Option(
        False,
        "--predictability",
        help="Add P(selected at t+1 | streak, rank) with counts, and per layer group the "
        "streak lift P(.. | streak >= 3) - P(.. | streak 1).",
    ),
    rank_by: str = typer.Option(
        "auto",
        "--rank-by",
        help="Rank of a selection in its row: score (the stored indexer scores), slot (slot "
        "order) or auto (score when the trace stores scores, else slot).",
    ),
    layer_groups: str | None = typer.Option(
        None,
        "--layer-groups",
        help="Layer groups for the per-group summaries, e.g. 0-1,20-60 (default: all layers, "
        "plus 0-1 and 20-last when the model has more than 20 layers).",
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
    - consecutive_overlap / shifted_overlap: share of a step's top-k selected at the previous
      step, as is / with the previous step's positions moved by one (x-1 selected before).

    Means pool over requests, steps and layers, shown beside the paper's H200 values (Levy 2026).
    A second table gives the overlaps per layer group. --json prints one object that adds
    per-layer values and a reuse-distance histogram.

    --predictability: for every selection with a next step, whether the token is selected
    again at t+1, by its streak (consecutive steps selected up to t) and its rank in the row
    (quarters), with counts; see docs/architecture.md.
    """
    window, page_tokens = check_params(window, page_tokens)  # fail before opening the trace
    if rank_by not in RANK_SOURCES:
        raise DsacacheError(f"--rank-by must be one of {', '.join(RANK_SOURCES)}, got {rank_by!r}")
    tr = load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)
    groups = parse_layer_groups(layer_groups, tr.geometry.layers)  # before the long pass
    total = sum(r.steps for r in tr.requests)
    with progress_bar("analyze", total) as advance:
        result = analyze(
            tr, window=window, page_tokens=page_tokens, progress=advance,
            predictability=predictability, rank_by=rank_by, layer_groups=layer_groups,
        )  # fmt: skip
    if json_out:
        print(json.dumps(result.to_dict(), allow_nan=False))
        return
    print_metrics_table(result)
    print_overlap_table(result, groups)
    if result.predictability is not None:
        print_predictability(result.predictability)


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


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def print_overlap_table(r: AnalysisResult, groups: list[tuple[int, int]]) -> None:
    """Consecutive vs offset-shifted overlap, averaged over the layers of each group (the
    pooled values are in --json)."""
    table = Table("layers", "consecutive_overlap", "shifted_overlap")
    for lo, hi in groups:
        cons = _mean(r.per_layer["consecutive_overlap"][lo : hi + 1])
        shift = _mean(r.per_layer["shifted_overlap"][lo : hi + 1])
        table.add_row(group_name((lo, hi)), _fmt(cons), _fmt(shift))
    console = Console()
    console.print(table)
    lo0, hi0 = PUBLIC_DSV32["consecutive_overlap layers 0-1"]
    lo20, hi20 = PUBLIC_DSV32["consecutive_overlap layers 20-60"]
    shifted = PUBLIC_DSV32["shifted_overlap"][0]
    console.print(  # three lines under 80 columns: rich wraps longer ones
        "Group values are means over their layers. Real DeepSeek-V3.2, ~64K context\n"
        f"(TensorRT-LLM blog): consecutive {lo0:.2f}-{hi0:.2f} in layers 0-1, "
        f"{lo20:.2f}-{hi20:.2f} in 20-60;\nshifted by one ~{shifted:.2f}."
    )


def print_predictability(p: PredictabilityResult) -> None:
    console = Console()
    rank = "score (stored indexer scores)" if p.rank_source == "score" else "slot order"
    console.print(
        f"[bold]P(selected at t+1 | streak, rank)[/bold], rank by {rank};\n"
        "cells: probability (selections counted)"
    )
    for group in p.groups:
        h, t = p.counts(group)
        table = Table(title=f"layers {group_name(group)}", box=None, pad_edge=False)
        table.add_column("streak", no_wrap=True)
        for name in (*RANK_LABELS, "all ranks"):  # "0.445 (1.4k)": 12 characters at most
            table.add_column(name, no_wrap=True, min_width=12)
        for s, label in enumerate(STREAK_LABELS):
            cells = [_cell(h[s, q], t[s, q]) for q in range(len(RANK_LABELS))]
            table.add_row(label, *cells, _cell(h[s].sum(), t[s].sum()))
        table.add_row(
            "all", *[_cell(h[:, q].sum(), t[:, q].sum()) for q in range(len(RANK_LABELS))],
            _cell(h.sum(), t.sum()),
        )  # fmt: skip
        console.print(table)
    summary = Table("layers", "P(next | streak 1)", "P(next | streak >= 3)", "streak lift")
    for group in p.groups:
        p1, p3, lift = p.lift(group)
        summary.add_row(group_name(group), *(_fmt(_finite(v)) for v in (p1, p3, lift)))
    console.print(summary)


def _finite(v: float) -> float | None:
    return v if v == v else None  # NaN: nothing counted


def _cell(hits: int, total: int) -> str:
    """probability (selections), the count short: 987, 1.4k, 12k, 3.4M."""
    if not total:
        return "- (0)"
    n = int(total)
    if n < 1000:
        short = str(n)
    elif n < 10**6:
        short = f"{n / 1e3:.1f}k" if n < 10**4 else f"{n // 1000}k"
    else:
        short = f"{n / 1e6:.1f}M" if n < 10**7 else f"{n // 10**6}M"
    return f"{hits / total:.3f} ({short})"
