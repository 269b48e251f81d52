"""The on-disk trace: a versioned, chunked, compressed Zarr v3 store (docs/trace-format.md).

Writes go to a hidden sibling directory that is renamed into place only when complete, so a
failed or interrupted write never leaves a half-written trace at the destination.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from dsacache.errors import DsacacheError, TraceError
from dsacache.trace.geometry import Geometry
from dsacache.trace.model import DEFAULT_CHUNK_STEPS, RequestTrace, Trace
from dsacache.trace.validate import MISSING

FORMAT_NAME = "dsacache-trace"
FORMAT_VERSION = 1
_CODEC = ZstdCodec(level=1, checksum=True)


class RequestWriter:
    """Fills one request's arrays; rows are written in step chunks."""

    def __init__(
        self, group: zarr.Group, steps: int, geometry: Geometry, near_miss: int, chunk_steps: int
    ) -> None:
        shape = (steps, geometry.layers, geometry.top_k)
        chunks = (max(1, min(chunk_steps, steps)), geometry.layers, geometry.top_k)
        self.indices = group.create_array(
            "indices",
            shape=shape,
            chunks=chunks,
            dtype="int32",
            fill_value=MISSING,
            compressors=_CODEC,
        )
        self.context_lens = group.create_array(
            "context_lens",
            shape=(steps,),
            chunks=(max(1, steps),),
            dtype="int64",
            fill_value=-1,
            compressors=_CODEC,
        )
        self.near_miss = None
        if near_miss:
            self.near_miss = group.create_array(
                "near_miss",
                shape=(steps, geometry.layers, near_miss),
                chunks=(chunks[0], geometry.layers, near_miss),
                dtype="int32",
                fill_value=MISSING,
                compressors=_CODEC,
            )
        self._ctx = np.full(steps, -1, dtype=np.int64)

    def write(
        self,
        start: int,
        indices: np.ndarray,
        context_lens: np.ndarray,
        near_miss: np.ndarray | None = None,
    ) -> None:
        stop = start + indices.shape[0]
        self.indices[start:stop] = indices
        self._ctx[start:stop] = context_lens
        if self.near_miss is not None:
            if near_miss is None:
                raise DsacacheError("near_miss rows are required for this request")
            self.near_miss[start:stop] = near_miss

    def close(self) -> None:
        self.context_lens[:] = self._ctx


class TraceWriter:
    """Context manager that writes a trace store chunk by chunk, atomically.

    with TraceWriter(path, geometry, meta) as w:
        r = w.add_request(steps)
        r.write(0, indices_chunk, context_lens_chunk)
    """

    def __init__(
        self,
        path: str | Path,
        geometry: Geometry,
        meta: dict[str, Any] | None = None,
        chunk_steps: int = DEFAULT_CHUNK_STEPS,
    ) -> None:
        self.path = Path(path)
        self.geometry = geometry
        self.meta = meta or {}
        self.chunk_steps = chunk_steps
        self._requests: list[RequestWriter] = []
        self._tmp = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> TraceWriter:
        _check_destination(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._root = zarr.open_group(str(self._tmp), mode="w", zarr_format=3)
        self._reqs_group = self._root.create_group("requests")
        return self

    def add_request(self, steps: int, near_miss: int = 0) -> RequestWriter:
        group = self._reqs_group.create_group(str(len(self._requests)))
        writer = RequestWriter(group, steps, self.geometry, near_miss, self.chunk_steps)
        self._requests.append(writer)
        return writer

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        try:
            for r in self._requests:
                r.close()
            from dsacache import __version__

            self._root.attrs.update(
                {
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "geometry": self.geometry.to_dict(),
                    "meta": {"tool_version": __version__, **self.meta},
                    "n_requests": len(self._requests),
                }
            )
            if self.path.exists():
                shutil.rmtree(self.path)
            os.replace(self._tmp, self.path)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise


def _check_destination(path: Path) -> None:
    """Only an existing trace store (or nothing) may be replaced."""
    if not path.exists():
        return
    if path.is_dir() and (path / "zarr.json").exists():
        return
    raise DsacacheError(f"{path}: exists and is not a dsacache trace store; refusing to overwrite")


def save_trace(trace: Trace, path: str | Path, chunk_steps: int = DEFAULT_CHUNK_STEPS) -> None:
    with TraceWriter(path, trace.geometry, trace.meta, chunk_steps) as w:
        for req in trace.requests:
            m = 0 if req.near_miss is None else int(req.near_miss.shape[2])
            rw = w.add_request(req.steps, near_miss=m)
            for c in req.iter_chunks(chunk_steps):
                rw.write(c.start, c.indices, c.context_lens, c.near_miss)


def load_store(path: str | Path, *, lazy: bool = False, validate: bool = True) -> Trace:
    src = str(path)
    p = Path(path)
    if not p.exists():
        raise TraceError(src, "file", "does not exist")
    if not (p / "zarr.json").is_file():
        raise TraceError(src, "file", "not a dsacache trace store (no zarr.json)")
    try:
        root = zarr.open_group(src, mode="r", zarr_format=3)
        attrs = dict(root.attrs)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise TraceError(src, "zarr.json", f"unreadable ({type(e).__name__}: {e})") from None
    if attrs.get("format") != FORMAT_NAME:
        raise TraceError(src, "format", f"expected {FORMAT_NAME!r}, got {attrs.get('format')!r}")
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise TraceError(src, "format_version", f"unsupported version {version!r}")
    try:
        geometry = Geometry.from_dict(attrs.get("geometry") or {})
    except DsacacheError as e:
        raise TraceError(src, "geometry", str(e)) from None
    n = attrs.get("n_requests")
    requests = []
    for r in range(n if isinstance(n, int) else 0):
        requests.append(_open_request(root, r, src, lazy))
    if not requests:
        raise TraceError(src, "n_requests", f"must be a positive integer, got {n!r}")
    try:
        return Trace(requests, geometry, attrs.get("meta") or {}, source=src, validate=validate)
    except TraceError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt chunk fails inside the codec
        raise TraceError(src, "data", f"corrupt chunk ({type(e).__name__}: {e})") from None


def _open_request(root: zarr.Group, r: int, src: str, lazy: bool) -> RequestTrace:
    arrays = {}
    for name in ("indices", "context_lens", "near_miss"):
        key = f"requests/{r}/{name}"
        try:
            arrays[name] = root[key]
        except KeyError:
            if name == "near_miss":
                arrays[name] = None
                continue
            raise TraceError(src, key, "missing array") from None
        if not isinstance(arrays[name], zarr.Array):
            raise TraceError(src, key, "is not an array")
    try:
        ctx = arrays["context_lens"][:]
        if not lazy:
            arrays["indices"] = arrays["indices"][:]
            if arrays["near_miss"] is not None:
                arrays["near_miss"] = arrays["near_miss"][:]
    except Exception as e:  # noqa: BLE001 - a corrupt chunk fails inside the codec
        raise TraceError(src, f"requests/{r}", f"corrupt chunk ({type(e).__name__}: {e})") from None
    return RequestTrace(arrays["indices"], ctx, arrays["near_miss"])
