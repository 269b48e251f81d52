"""`dsacache export libcachesim`: write libCacheSim's oracleGeneral binary trace."""

from __future__ import annotations

from pathlib import Path

import typer

from dsacache.cli.app import export_app
from dsacache.cli.options import BLOCK_TOKENS, INDEX_BYTES, KV_BYTES, TRACE_ARG, load_trace_arg
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.trace import Trace
from dsacache.trace.dsa_jsonl import check_exportable, export_dsa_jsonl
from dsacache.trace.export_libcachesim import RECORD_DTYPE, export_libcachesim

FORCE = typer.Option(False, "--force", "-f", help="Overwrite OUT if it exists.")


def _open_for_export(
    trace: Path,
    out: Path,
    force: bool,
    kv_bytes: int | None,
    index_bytes: int | None,
    block_tokens: int | None,
) -> Trace:
    """TRACE opened for an export to OUT; an existing OUT without --force is refused first,
    before the (long) trace validation."""
    if out.exists() and not out.is_dir() and not force:
        raise DsacacheError(f"{out}: exists; pass --force to overwrite it")
    return load_trace_arg(trace, kv_bytes, index_bytes, block_tokens)


# Typer keeps the line breaks of a help text, so each paragraph is one string.
HELP = "\n\n".join(
    [
        "Write TRACE as libCacheSim's oracleGeneral binary trace, to run its 25+ replacement "
        "policies and its Belady bound on DSA traces.",
        "One 24-byte little-endian record per access: uint32 clock_time (the decode step), "
        "uint64 obj_id = (request << 48) | (layer << 32) | token, uint32 obj_size, "
        "int64 next_access_vtime.",
        "Access order: step -> layer -> request -> slot; for each step, each layer, each request "
        "that has that step, the valid slots (index >= 0) in slot order.",
        "next_access_vtime is absolute, not a distance: the 1-based record number of the next "
        "access to the same obj_id, -1 if there is none (what libCacheSim's own traceConv "
        "writes; its Belady relies on it).",
        "Example (cache sizes are in bytes; with --object-size 1 they count tokens):",
        "    dsacache export libcachesim t.zarr t.oracleGeneral --object-size 1\n"
        "    cachesim t.oracleGeneral oracleGeneral lru,belady 65536",
        "or from Python: `r = libcachesim.TraceReader('t.oracleGeneral', "
        "libcachesim.TraceType.ORACLE_GENERAL_TRACE)`, then "
        "`libcachesim.LRU(65536).process_trace(r)`.",
    ]
)


@export_app.command("libcachesim", help=HELP)
def libcachesim_cmd(
    trace: Path = TRACE_ARG,
    out: Path = typer.Argument(..., help="Output file (oracleGeneral binary, 24 B per access)."),
    object_size: int | None = typer.Option(
        None,
        "--object-size",
        min=1,
        max=2**32 - 1,
        help="obj_size of every record in bytes, e.g. 1 for unit-size objects "
        "(default: the trace's KV bytes per token).",
    ),
    force: bool = FORCE,
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
) -> None:
    """Write TRACE as libCacheSim's oracleGeneral binary trace (help: HELP above)."""
    t = _open_for_export(trace, out, force, kv_bytes, index_bytes, block_tokens)
    with progress_bar("export", 2 * t.steps) as advance:
        n = export_libcachesim(t, out, object_size=object_size, progress=advance, force=force)
    nbytes = n * RECORD_DTYPE.itemsize
    typer.echo(f"wrote {n:,} records ({nbytes:,} bytes) to {out}")


DSA_JSONL_HELP = "\n\n".join(
    [
        "Write TRACE as dsa-jsonl, the public capture format `dsacache import dsa-jsonl` reads "
        "(gzip when OUT ends in .gz): one JSON object per decode step x layer x request, in "
        "that order, with event, request_id, layer_id, step_idx (= context_len - 1), "
        "seq_len_current (= context_len), selected_token_pos (the valid slots, in slot order) "
        "and scores_topk when the trace stores scores.",
        "Request ids are the ones an imported trace came with, else 0, 1, 2, ... Each "
        "request's context_len must grow by one per step. Importing the file again gives the "
        "same indices, context lengths and scores (pass --top-k to keep a top-k larger than "
        "the longest row).",
        "Example: dsacache export dsa-jsonl t.zarr --out t.jsonl.gz",
    ]
)


@export_app.command("dsa-jsonl", help=DSA_JSONL_HELP)
def dsa_jsonl_cmd(
    trace: Path = TRACE_ARG,
    out: Path = typer.Option(..., "--out", "-o", help="Output file (.jsonl, or .jsonl.gz)."),
    force: bool = FORCE,
    kv_bytes: int | None = KV_BYTES,
    index_bytes: int | None = INDEX_BYTES,
    block_tokens: int | None = BLOCK_TOKENS,
) -> None:
    """Write TRACE as dsa-jsonl (help: DSA_JSONL_HELP above)."""
    t = _open_for_export(trace, out, force, kv_bytes, index_bytes, block_tokens)
    check_exportable(t)
    with progress_bar("export", t.steps) as advance:
        n = export_dsa_jsonl(t, out, force=force, progress=advance)
    typer.echo(f"wrote {n:,} records to {out}")
