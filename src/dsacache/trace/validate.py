"""The format's rules (docs/trace-format.md "Validation rules"), checked chunk by chunk so huge
traces stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dsacache.errors import TraceError
from dsacache.trace.geometry import Geometry
from dsacache.trace.request import RequestTrace

# Fill value of stored index arrays: a chunk missing on disk reads as this (never valid).
MISSING = -2


def validate_requests(requests: Sequence[RequestTrace], geometry: Geometry, source: str) -> None:
    """Every rule on the arrays of every request (a trace's own arrays, or a reader's)."""
    for r, req in enumerate(requests):
        prefix = f"requests/{r}/" if len(requests) > 1 else ""
        validate_request(req, geometry, source, prefix)


def _check_array(
    arr: Any, source: str, field: str, rank: int, want: np.dtype = np.dtype(np.int32)
) -> None:
    # Never np.asarray() an array that has a dtype: a lazy on-disk array would be read whole.
    dtype = np.dtype(arr.dtype if hasattr(arr, "dtype") else np.asarray(arr).dtype)
    if dtype != want:
        raise TraceError(source, field, f"dtype must be {want}, got {dtype}")
    if len(arr.shape) != rank:
        raise TraceError(source, field, f"must have rank {rank}, got shape {tuple(arr.shape)}")


def validate_request(req: RequestTrace, geometry: Geometry, source: str, prefix: str = "") -> None:
    src, g = source, geometry
    _check_array(req.indices, src, prefix + "indices", 3)
    steps, layers, k = (int(x) for x in req.indices.shape)
    if layers != g.layers:
        raise TraceError(
            src, prefix + "indices", f"has {layers} layers but geometry.layers is {g.layers}"
        )
    if k != g.top_k:
        raise TraceError(src, prefix + "indices", f"has {k} slots but geometry.top_k is {g.top_k}")
    ctx = req.context_lens
    if ctx.dtype.kind not in "iu":
        raise TraceError(src, prefix + "context_lens", f"dtype must be integer, got {ctx.dtype}")
    if ctx.shape != (steps,):
        raise TraceError(
            src,
            prefix + "context_lens",
            f"shape {ctx.shape} does not match {steps} steps of indices",
        )
    if steps and ctx.min() < 0:
        s = int(np.argmin(ctx))
        what = " (a missing chunk reads as -1)" if ctx[s] == -1 else ""
        raise TraceError(src, prefix + "context_lens", f"negative value {ctx[s]} at step {s}{what}")
    if req.near_miss is not None:
        _check_array(req.near_miss, src, prefix + "near_miss", 3)
        nshape = tuple(int(x) for x in req.near_miss.shape)
        if nshape[:2] != (steps, layers):
            raise TraceError(
                src,
                prefix + "near_miss",
                f"shape {nshape} does not match indices' [{steps}, {layers}, ...]",
            )
    if req.scores is not None:
        _check_array(req.scores, src, prefix + "scores", 3, np.dtype(np.float32))
        sshape = tuple(int(x) for x in req.scores.shape)
        want = (steps, layers, k)
        if sshape != want:
            raise TraceError(
                src, prefix + "scores", f"shape {sshape} does not match indices' {want}"
            )
    for chunk in req.iter_chunks():
        check_chunk_values(
            chunk.indices,
            chunk.context_lens,
            chunk.near_miss,
            chunk.start,
            src,
            prefix,
            scores=chunk.scores,
        )


def check_chunk_values(
    indices: np.ndarray,
    context_lens: np.ndarray,
    near_miss: np.ndarray | None,
    start: int,
    source: str,
    prefix: str = "",
    *,
    scores: np.ndarray | None = None,
) -> None:
    """The value rules for rows start.. of one request (shapes already checked)."""
    _check_values(indices, context_lens, start, source, prefix + "indices")
    if near_miss is not None:
        _check_values(near_miss, context_lens, start, source, prefix + "near_miss")
        both = np.concatenate([indices, near_miss], axis=2)
        _check_duplicates(both, start, source, prefix + "near_miss", "also in the top-k")
    if scores is not None:
        check_scores(indices, scores, start, source, prefix + "scores")


def check_scores(
    indices: np.ndarray, scores: np.ndarray, start: int, source: str, field: str
) -> None:
    """A score is finite exactly where the slot holds a token, NaN where it is empty."""
    if scores.size == 0:
        return
    valid = indices >= 0
    bad = np.where(valid, ~np.isfinite(scores), ~np.isnan(scores))
    if bad.any():
        s, layer, slot = _where(bad)
        value = scores[s, layer, slot]
        where = f"at step {start + s}, layer {layer}, slot {slot}"
        if valid[s, layer, slot]:
            what = " (a missing chunk reads as NaN)" if np.isnan(value) else ""
            raise TraceError(source, field, f"score {value} of a selected token {where}{what}")
        raise TraceError(source, field, f"score {value} at an empty slot {where} (must be NaN)")


def _where(mask: np.ndarray) -> tuple[int, int, int]:
    s, layer, slot = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return int(s), int(layer), int(slot)


def _check_values(idx: np.ndarray, ctx: np.ndarray, start: int, src: str, field: str) -> None:
    if idx.size == 0:
        return
    low = idx < -1
    if low.any():
        s, layer, slot = _where(low)
        value = int(idx[s, layer, slot])
        what = f" (a missing chunk reads as {MISSING})" if value == MISSING else ""
        raise TraceError(
            src, field, f"index {value} < -1 at step {start + s}, layer {layer}, slot {slot}{what}"
        )
    high = idx >= ctx[:, None, None]
    if high.any():
        s, layer, slot = _where(high)
        raise TraceError(
            src,
            field,
            f"index {int(idx[s, layer, slot])} >= context length {int(ctx[s])} "
            f"at step {start + s}, layer {layer}, slot {slot}",
        )
    _check_duplicates(idx, start, src, field, "twice in one (step, layer)")


def _check_duplicates(idx: np.ndarray, start: int, src: str, field: str, what: str) -> None:
    if idx.shape[2] < 2:
        return
    srt = np.sort(idx, axis=2)
    dup = (srt[:, :, 1:] == srt[:, :, :-1]) & (srt[:, :, 1:] >= 0)
    if dup.any():
        s, layer, slot = _where(dup)
        token = int(srt[s, layer, slot + 1])
        raise TraceError(src, field, f"token {token} {what} at step {start + s}, layer {layer}")
