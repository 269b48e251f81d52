"""Export a trace as libCacheSim's ``oracleGeneral`` binary trace.

Format: little-endian packed records of 24 bytes, one per access, in access order::

    uint32 clock_time         the decode step of the access
    uint64 obj_id             (request << 48) | (layer << 32) | token
    uint32 obj_size           bytes (geometry.kv_bytes_per_token unless object_size is given)
    int64  next_access_vtime  1-based position of the next access to the same obj_id, -1 if none

Access order (docs/trace-format.md): step -> layer -> request -> slot, i.e. for each step t,
for each layer l, for each request r that has a step t, the valid slots (index >= 0) of
``indices[t, l, :]`` in slot order.

``next_access_vtime`` convention (verified against libcachesim 0.3.5): it is an *absolute*
virtual time, not a distance. If the next access to the same object is the j-th record of the
file (0-based), the field holds ``j + 1``: the request number counted from 1, which is what
libCacheSim's own converter (``Util.convert_to_oracleGeneral``) writes and what
``cache->n_req`` reads when that request arrives. ``-1`` means never accessed again (the reader
turns it into ``INT64_MAX``). Checked two ways: libcachesim's converter on a known CSV trace
writes exactly these values, and libcachesim's ``Belady`` reproduces the textbook demand-paging
OPT miss ratio on files written this way but not on files holding distances ``j - i``
(tests/test_export_libcachesim.py).

Works for traces larger than memory. Pass 1 counts the valid accesses of every step, so each
access's absolute position is known; pass 2 walks step blocks from the last to the first with a
dense "next position" table (one int64 per (request, layer, token), token < the request's
largest context length), fills the block's records in a compiled kernel and writes them at
their offset. Output goes to a temporary file next to OUT, renamed into place at the end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError, TraceError
from dsacache.trace.blocks import StepBlocks
from dsacache.trace.model import Trace

RECORD_DTYPE = np.dtype(
    [("clock_time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access_vtime", "<i8")]
)
assert RECORD_DTYPE.itemsize == 24

REQUEST_SHIFT = 48
LAYER_SHIFT = 32
MAX_REQUESTS = 1 << 16
MAX_LAYERS = 1 << 16
# Slot entries (int32) held in one step block; the block's records take 6x as many bytes.
_BLOCK_ELEMENTS = 1 << 22


def obj_id(request: int, layer: int, token: int) -> int:
    """The obj_id of key (request, layer, token)."""
    return (request << REQUEST_SHIFT) | (layer << LAYER_SHIFT) | token


def read_oracle_general(path: str | Path) -> np.ndarray:
    """Read an oracleGeneral file into a structured array (fields as RECORD_DTYPE)."""
    p = Path(path)
    size = p.stat().st_size
    if size % RECORD_DTYPE.itemsize:
        raise DsacacheError(f"{p}: {size} bytes is not a whole number of 24-byte records")
    return np.fromfile(p, dtype=RECORD_DTYPE)


# ---------------------------------------------------------------- compiled kernels


@njit(cache=True)
def _count_block(block: np.ndarray, max_ctx: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Valid slots per step of block [steps, layers, requests, k] into counts[steps].

    Returns [-1, -1, -1, -1] or the (step, layer, request, slot) of the first bad index
    (< -1 or >= the request's largest context length).
    """
    nb, nl, nr, k = block.shape
    bad = np.full(4, -1, np.int64)
    for t in range(nb):
        c = 0
        for layer in range(nl):
            for r in range(nr):
                lim = max_ctx[r]
                for s in range(k):
                    tok = block[t, layer, r, s]
                    if tok >= 0:
                        if tok >= lim:
                            bad[0], bad[1], bad[2], bad[3] = t, layer, r, s
                            return bad
                        c += 1
                    elif tok != -1:
                        bad[0], bad[1], bad[2], bad[3] = t, layer, r, s
                        return bad
        counts[t] = c
    return bad


@njit(cache=True)
def _fill_block(
    block: np.ndarray,
    step0: int,
    pos_begin: int,
    pos_end: int,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    next_pos: np.ndarray,
    out_clock: np.ndarray,
    out_id: np.ndarray,
    out_next: np.ndarray,
) -> int:
    """Fill the records of positions [pos_begin, pos_end) walking the block backwards.

    next_pos[key] holds the 1-based position of the key's next access (-1: none) and is
    updated to this block's first access of the key. Returns the position reached (must be
    pos_begin) or -1 on an index out of range.
    """
    nb, nl, nr, k = block.shape
    pos = pos_end
    for t in range(nb - 1, -1, -1):
        clock = step0 + t
        for layer in range(nl - 1, -1, -1):
            for r in range(nr - 1, -1, -1):
                lim = max_ctx[r]
                base = key_off[r] + layer * lim
                hi = (np.uint64(r) << np.uint64(48)) | (np.uint64(layer) << np.uint64(32))
                for s in range(k - 1, -1, -1):
                    tok = block[t, layer, r, s]
                    if tok < 0:
                        continue
                    if tok >= lim:
                        return -1
                    pos -= 1
                    if pos < pos_begin:
                        return -1
                    i = pos - pos_begin
                    key = base + tok
                    out_clock[i] = clock
                    out_id[i] = hi | np.uint64(tok)
                    out_next[i] = next_pos[key]
                    next_pos[key] = pos + 1
    return pos


# ---------------------------------------------------------------- export


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir() and not force:
        raise DsacacheError(f"{out}: exists; pass force=True to overwrite it")
    if out.is_dir():
        raise DsacacheError(f"{out}: is a directory; give a file path for the oracleGeneral trace")
    if not out.parent.is_dir():
        raise DsacacheError(f"{out.parent}: directory does not exist")


def export_libcachesim(
    trace: Trace,
    out: str | Path,
    object_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    force: bool = True,
) -> int:
    """Write `trace` to `out` as libCacheSim oracleGeneral; return the number of records.

    object_size: obj_size of every record (default geometry.kv_bytes_per_token).
    progress: called with the number of steps just processed, once per block in each of the
    two passes (so it sums to 2 * trace.steps).
    force: replace an existing file at `out` (the CLI asks for --force).
    """
    out = Path(out)
    _check_out(out, force)
    g = trace.geometry
    size = g.kv_bytes_per_token if object_size is None else int(object_size)
    if not 1 <= size < 1 << 32:
        raise DsacacheError(f"object size must be in [1, 2^32), got {size}")
    n_req = len(trace.requests)
    if n_req > MAX_REQUESTS:
        raise DsacacheError(
            f"{trace.source}: {n_req} requests; obj_id packing allows {MAX_REQUESTS}"
        )
    if g.layers > MAX_LAYERS:
        raise DsacacheError(
            f"{trace.source}: {g.layers} layers; obj_id packing allows {MAX_LAYERS}"
        )

    blocks = StepBlocks(trace, _BLOCK_ELEMENTS)
    key_off, max_ctx = blocks.keys.key_offset, blocks.keys.max_context
    steps = blocks.steps

    # Pass 1: valid accesses per step -> absolute position of every step's first access.
    counts = np.zeros(steps, dtype=np.int64)
    for a, b in blocks.bounds:
        block = blocks.read(a, b).indices
        bad = _count_block(block, max_ctx, counts[a:b])
        if bad[0] >= 0:
            t, layer, r, s = (int(x) for x in bad)
            value = int(block[t, layer, r, s])
            field = f"requests/{r}/indices" if n_req > 1 else "indices"
            raise TraceError(
                trace.source,
                field,
                f"invalid index {value} at step {a + t}, layer {layer}, slot {s}",
            )
        if progress is not None:
            progress(b - a)
    starts = np.zeros(steps + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    total = int(starts[-1])

    # Pass 2: blocks from last to first, records written at their absolute offsets.
    next_pos = np.full(blocks.keys.size, -1, dtype=np.int64)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise DsacacheError(f"{out}: cannot write ({e.strerror})") from None
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        with os.fdopen(fd, "wb") as f:
            f.truncate(total * RECORD_DTYPE.itemsize)
            for blk in blocks.reversed():
                a, b = blk.start, blk.stop
                p0, p1 = int(starts[a]), int(starts[b])
                block = blk.indices
                rec = np.empty(p1 - p0, dtype=RECORD_DTYPE)
                rec["obj_size"] = size
                reached = _fill_block(
                    block,
                    a,
                    p0,
                    p1,
                    key_off,
                    max_ctx,
                    next_pos,
                    rec["clock_time"],
                    rec["obj_id"],
                    rec["next_access_vtime"],
                )
                if reached != p0:
                    raise TraceError(
                        trace.source, "indices", f"changed while exporting (steps {a}..{b - 1})"
                    )
                f.seek(p0 * RECORD_DTYPE.itemsize)
                f.write(rec.view(np.uint8))
                if progress is not None:
                    progress(b - a)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DsacacheError(f"{out}: cannot write ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return total
