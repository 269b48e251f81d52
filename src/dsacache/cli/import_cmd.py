"""`dsacache import dsa-jsonl`: a public DSA capture (trace_steps.jsonl) into a trace store."""

from __future__ import annotations

from pathlib import Path

import typer

from dsacache.cli.app import import_app
from dsacache.cli.options import BLOCK_TOKENS, INDEX_BYTES, KV_BYTES
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.trace.dsa_jsonl import read_capture, write_capture
from dsacache.trace.geometry import PRESETS, preset

HELP = "\n\n".join(
    [
        "Read FILE, a `trace_steps.jsonl` (plain or gzip) as the instrumented DeepSeek-V3.2-Exp "
        "reference inference writes it, into the trace store OUT.",
        'One JSON object per decode step x request x layer with `event` "dsa_topk", '
        "`request_id`, `layer_id`, `step_idx` (the decoded token's position), "
        "`seq_len_current` (= step_idx + 1, our context_len), `selected_token_pos` and, "
        "optionally, `scores_topk`; other keys and other events are ignored. Records may come "
        "in any order; requests may start and end at different positions.",
        "Layers and top-k come from the file (the most layers, the longest row; --top-k to "
        "store more slots); bytes per token and page size from --preset and the byte flags.",
        "The whole file is checked before anything is written: a malformed line, an "
        "inconsistent record or a missing (request, layer, step) is one error line naming it.",
        "Example: dsacache import dsa-jsonl outputs/ruler_1771772829/trace_steps.jsonl "
        "--out ruler.zarr",
    ]
)


@import_app.command("dsa-jsonl", help=HELP)
def dsa_jsonl_cmd(
    file: Path = typer.Argument(..., help="trace_steps.jsonl, or a gzip of it."),
    out: Path = typer.Option(..., "--out", "-o", help="Trace store to write (a directory)."),
    preset_name: str = typer.Option(
        "deepseek-v3.2",
        "--preset",
        help=f"Bytes per token and page size from this geometry: {', '.join(PRESETS)}.",
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", min=1, help="Slots per row to store (default: the longest row)."
    ),
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
    chunk_steps: int = typer.Option(64, "--chunk-steps", min=1, help="Steps per stored chunk."),
) -> None:
    """Import a dsa-jsonl capture (help: HELP above)."""
    geometry = preset(preset_name).with_overrides(
        kv_bytes_per_token=kv_bytes, index_bytes_per_token=index_bytes, block_tokens=block_tokens
    )
    if not file.exists():
        raise DsacacheError(f"{file}: file: does not exist")
    with progress_bar("read", file.stat().st_size) as advance:
        cap = read_capture(file, top_k=top_k, progress=advance)
    g = geometry.with_overrides(layers=cap.layers, top_k=cap.top_k)
    steps = sum(len(r.records) for r in cap.requests.values()) // cap.layers
    with progress_bar("write", steps) as advance:
        write_capture(cap, out, g, chunk_steps, progress=advance)
    scores = "with scores" if cap.has_scores else "no scores"
    typer.echo(
        f"wrote {out}: {len(cap.requests)} request(s), {steps} steps in all, {g.layers} layers, "
        f"k={g.top_k}, {scores} ({cap.records:,} records)"
    )
