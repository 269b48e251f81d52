"""Import a plain .npz of indices (what a user dumps from vLLM or SGLang).

Arrays: `indices` [steps, layers, k] (or [requests, steps, layers, k]), any integer dtype,
-1 = empty slot; optional `context_lens` [steps] (or [requests, steps]), default max index + 1
per step; optional `near_miss` shaped like `indices` with m slots; optional `scores` shaped like
`indices`, any float dtype (stored float32, NaN where a slot is empty). The file carries no
geometry: bytes per token and page size come from the caller (defaults: DeepSeek-V3.2).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dsacache.errors import TraceError
from dsacache.trace.geometry import PRESETS
from dsacache.trace.request import RequestTrace, TraceParts, default_context_lens

_DEFAULT = PRESETS["deepseek-v3.2"]


def read_npz(path: str | Path) -> TraceParts:
    """The file's arrays as requests, with DeepSeek-V3.2's bytes per token and page size
    (Trace.load applies the caller's overrides, then validates)."""
    src = str(path)
    if not Path(path).exists():
        raise TraceError(src, "file", "does not exist")
    if not Path(path).is_file() or not zipfile.is_zipfile(path):
        raise TraceError(src, "file", "not an .npz archive (not a zip file, or truncated)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception as e:  # noqa: BLE001 - zip, zlib, npy-header and pickle errors alike
        text = " ".join(str(e).split())[:160]
        raise TraceError(
            src, "file", f"unreadable or corrupt .npz ({type(e).__name__}: {text})"
        ) from None
    if "indices" not in arrays:
        raise TraceError(src, "indices", f"missing array (found: {', '.join(arrays) or 'none'})")
    indices = _as_int32(arrays["indices"], src, "indices")
    if indices.ndim not in (3, 4):
        raise TraceError(
            src, "indices", f"must have rank 3 [steps, layers, k] or 4, got shape {indices.shape}"
        )
    batch = indices.ndim == 4
    if not batch:
        indices = indices[None]
    ctx = arrays.get("context_lens")
    if ctx is not None:
        ctx = np.asarray(ctx)
        if ctx.dtype.kind not in "iu":
            raise TraceError(src, "context_lens", f"dtype must be integer, got {ctx.dtype}")
        want = indices.shape[:2] if batch else indices.shape[1:2]
        if ctx.shape != want:
            raise TraceError(
                src, "context_lens", f"shape {ctx.shape} does not match indices' steps {want}"
            )
        ctx = ctx.astype(np.int64).reshape(indices.shape[:2])
    near = arrays.get("near_miss")
    if near is not None:
        near = _as_int32(near, src, "near_miss")
        if near.ndim != indices.ndim - (0 if batch else 1):
            raise TraceError(src, "near_miss", f"rank does not match indices ({near.shape})")
        if not batch:
            near = near[None]
        if near.shape[:3] != indices.shape[:3]:
            raise TraceError(
                src,
                "near_miss",
                f"shape {near.shape} does not match indices' {indices.shape[:3]}",
            )
    scores = arrays.get("scores")
    if scores is not None:
        if scores.dtype.kind != "f":
            raise TraceError(src, "scores", f"dtype must be floating, got {scores.dtype}")
        want = indices.shape if batch else indices.shape[1:]
        if scores.shape != want:
            raise TraceError(src, "scores", f"shape {scores.shape} does not match indices' {want}")
        scores = scores.astype(np.float32, copy=False).reshape(indices.shape)
    requests = [
        RequestTrace(
            indices[r],
            default_context_lens(indices[r]) if ctx is None else ctx[r],
            None if near is None else near[r],
            None if scores is None else scores[r],
        )
        for r in range(indices.shape[0])
    ]
    if indices.shape[2] < 1 or indices.shape[3] < 1:
        raise TraceError(
            src,
            "indices",
            f"shape {indices.shape[1:] if not batch else indices.shape} has no layers or no slots",
        )
    geometry = _DEFAULT.with_overrides(layers=int(indices.shape[2]), top_k=int(indices.shape[3]))
    return TraceParts(requests, geometry, {"source_model": "imported", "imported_from": src})


def _as_int32(arr: np.ndarray, src: str, field: str) -> np.ndarray:
    if arr.dtype.kind not in "iu":
        raise TraceError(src, field, f"dtype must be integer, got {arr.dtype}")
    if arr.size and (arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min):
        bad = arr.max() if arr.max() > np.iinfo(np.int32).max else arr.min()
        raise TraceError(src, field, f"value {bad} does not fit int32")
    return arr.astype(np.int32, copy=False)
