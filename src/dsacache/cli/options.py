"""Options shared by every command that reads a trace."""

from __future__ import annotations

from pathlib import Path

import typer

from dsacache.trace import Trace, open_trace

TRACE_ARG = typer.Argument(
    ..., help="A trace store (dsacache synth/record) or a plain .npz with an `indices` array."
)
KV_BYTES = typer.Option(
    None, "--kv-bytes", help="For .npz input: KV bytes per token per layer (default: 656)."
)
INDEX_BYTES = typer.Option(
    None, "--index-bytes", help="For .npz input: index-key bytes per token (default: 132)."
)
BLOCK_TOKENS = typer.Option(
    None, "--block-tokens", help="For .npz input: tokens per KV page (default: 64)."
)


def load_trace_arg(
    path: Path, kv_bytes: int | None, index_bytes: int | None, block_tokens: int | None
) -> Trace:
    """Open TRACE lazily (stores stream chunk by chunk) with the .npz geometry flags applied."""
    return open_trace(
        path,
        lazy=True,
        kv_bytes_per_token=kv_bytes,
        index_bytes_per_token=index_bytes,
        block_tokens=block_tokens,
    )
