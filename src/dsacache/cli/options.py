"""Options shared by the commands that read a trace or size a reserved region."""

from __future__ import annotations

from pathlib import Path

import typer

from dsacache.trace import Trace, open_trace

TRACE_ARG = typer.Argument(
    ..., help="A trace store (dsacache synth/record) or a plain .npz with an `indices` array."
)
KV_BYTES = typer.Option(
    None, "--kv-bytes", help="KV bytes per token per layer (default: the store's; 656 for .npz)."
)
INDEX_BYTES = typer.Option(
    None, "--index-bytes", help="Index-key bytes per token (default: the store's; 132 for .npz)."
)
BLOCK_TOKENS = typer.Option(
    None, "--block-tokens", help="Tokens per KV page (default: the store's; 64 for .npz)."
)
# the reserved region of `simulate` and `perf` (SimConfig checks the values)
CAPACITY_TOKENS = typer.Option(
    None, "--capacity-tokens", "-n", help="Reserved capacity in tokens (>= 0, < 2^62 B)."
)
CAPACITY_MIB = typer.Option(
    None,
    "--capacity-mib",
    "--capacity-mb",
    "-m",
    help="Reserved capacity in MiB (2^20 bytes, >= 0; rounded down to whole tokens). "
    "--capacity-mb is an alias and means MiB too (the paper's 5 MB = 4.77 MiB).",
)
NEAR_MISS_SOURCE = typer.Option(
    None,
    "--near-miss-source",
    help="near-miss policy only (required there): prefetch the trace's near-miss rows "
    "(`trace`, recorded with --near-miss M) or the layer below's top-k (`layer-below`).",
)
PARTITION = typer.Option("global", "--partition", help="global | per-layer | pinned:L1,L2,...")


def load_trace_arg(
    path: Path, kv_bytes: int | None, index_bytes: int | None, block_tokens: int | None
) -> Trace:
    """Open TRACE lazily (stores stream chunk by chunk) with the geometry flags applied."""
    return open_trace(
        path,
        lazy=True,
        kv_bytes_per_token=kv_bytes,
        index_bytes_per_token=index_bytes,
        block_tokens=block_tokens,
    )
