"""The on-disk trace: a versioned, chunked, compressed Zarr v3 store (docs/trace-format.md).

Writes go to a hidden sibling directory that is renamed into place only when complete, so a
failed or interrupted write never leaves a half-written trace at the destination.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from dsacache import __version__
from dsacache.errors import DsacacheError, TraceError
from dsacache.trace.geometry import Geometry
from dsacache.trace.request import DEFAULT_CHUNK_STEPS, RequestTrace, TraceParts
from dsacache.trace.validate import MISSING, check_chunk_values

FORMAT_NAME = "dsacache-trace"
FORMAT_VERSION = 1
_CODEC = ZstdCodec(level=1, checksum=True)


class RequestWriter:
    """Fills one request's arrays; rows are written in step chunks."""

    def __init__(
        self,
        group: zarr.Group,
        steps: int,
        geometry: Geometry,
        near_miss: int,
        chunk_steps: int,
        *,
        scores: bool = False,
        source: str = "<writer>",
        prefix: str = "",
        validate: bool = True,
    ) -> None:
        self.source, self.prefix, self.validate = source, prefix, validate
        self.steps, self.geometry, self.width = steps, geometry, near_miss
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
        self.scores = None
        if scores:
            # NaN fill: a lost chunk reads as NaN at selected slots, which validation rejects.
            self.scores = group.create_array(
                "scores",
                shape=shape,
                chunks=chunks,
                dtype="float32",
                fill_value=np.nan,
                compressors=_CODEC,
            )
        self._ctx = np.full(steps, -1, dtype=np.int64)

    def write(
        self,
        start: int,
        indices: np.ndarray,
        context_lens: np.ndarray,
        near_miss: np.ndarray | None = None,
        scores: np.ndarray | None = None,
    ) -> None:
        """Write rows start..start+len(indices); each chunk is validated before it is stored."""
        indices = self._rows(indices, "indices", self.geometry.top_k, start)
        stop = start + indices.shape[0]
        ctx = np.asarray(context_lens)
        field = self.prefix + "context_lens"
        if ctx.dtype.kind not in "iu":
            raise TraceError(self.source, field, f"dtype must be integer, got {ctx.dtype}")
        if ctx.shape != (indices.shape[0],):
            raise TraceError(
                self.source, field, f"shape {ctx.shape} does not match {indices.shape[0]} rows"
            )
        if ctx.size and ctx.min() < 0:
            s = int(np.argmin(ctx))
            raise TraceError(self.source, field, f"negative value {ctx[s]} at step {start + s}")
        near = None
        if self.near_miss is not None:
            if near_miss is None:
                raise TraceError(
                    self.source, self.prefix + "near_miss", "rows are required for this request"
                )
            near = self._rows(near_miss, "near_miss", self.width, start)
            if near.shape[0] != indices.shape[0]:
                raise TraceError(
                    self.source,
                    self.prefix + "near_miss",
                    f"{near.shape[0]} rows do not match {indices.shape[0]} rows of indices",
                )
        sc = self._score_rows(scores, indices.shape)
        if self.validate:
            check_chunk_values(indices, ctx, near, start, self.source, self.prefix, scores=sc)
        self.indices[start:stop] = indices
        self._ctx[start:stop] = ctx
        if near is not None:
            self.near_miss[start:stop] = near
        if sc is not None:
            self.scores[start:stop] = sc

    def _score_rows(self, scores: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
        field = self.prefix + "scores"
        if self.scores is None:
            if scores is not None:
                raise TraceError(
                    self.source, field, "given for a request added without scores=True"
                )
            return None
        if scores is None:
            raise TraceError(self.source, field, "rows are required for this request")
        arr = np.asarray(scores)
        if arr.dtype.kind != "f":
            raise TraceError(self.source, field, f"dtype must be floating, got {arr.dtype}")
        if arr.shape != shape:
            raise TraceError(
                self.source, field, f"chunk shape {arr.shape} does not match indices' {shape}"
            )
        return arr.astype(np.float32, copy=False)

    def _rows(self, arr: np.ndarray, name: str, width: int, start: int) -> np.ndarray:
        arr = np.asarray(arr)
        field = self.prefix + name
        if arr.dtype.kind not in "iu":
            raise TraceError(self.source, field, f"dtype must be integer, got {arr.dtype}")
        want = (self.geometry.layers, width)
        if arr.ndim != 3 or arr.shape[1:] != want:
            raise TraceError(
                self.source, field, f"chunk shape {arr.shape} is not [rows, {want[0]}, {want[1]}]"
            )
        if start < 0 or start + arr.shape[0] > self.steps:
            raise TraceError(
                self.source,
                field,
                f"rows {start}..{start + arr.shape[0] - 1} outside 0..{self.steps - 1}",
            )
        if arr.size and arr.min() < -1:  # before the cast; -2 here is a value, not a lost chunk
            s, layer, slot = np.unravel_index(int(np.argmin(arr)), arr.shape)
            raise TraceError(
                self.source,
                field,
                f"index {arr[s, layer, slot]} < -1 at step {start + s}, layer {layer}, slot {slot}",
            )
        if arr.size and arr.max() > np.iinfo(np.int32).max:
            raise TraceError(self.source, field, f"value {arr.max()} does not fit int32")
        return arr.astype(np.int32, copy=False)

    def close(self) -> None:
        """Store context_lens; every step must have been written."""
        unwritten = np.flatnonzero(self._ctx < 0)
        if unwritten.size:
            raise TraceError(
                self.source,
                self.prefix + "indices",
                f"{unwritten.size} of {self.steps} steps never written "
                f"(first: step {unwritten[0]})",
            )
        self.context_lens[:] = self._ctx


class TraceWriter:
    """Context manager that writes a trace store chunk by chunk, atomically.

    with TraceWriter(path, geometry, meta) as w:
        r = w.add_request(steps)
        r.write(0, indices_chunk, context_lens_chunk)

    Every chunk's shape and dtype are checked as it is written, and its values against the
    format's rules unless validate=False (for producers that are valid by construction: the
    value checks cost about as much as the compression).
    """

    def __init__(
        self,
        path: str | Path,
        geometry: Geometry,
        meta: dict[str, Any] | None = None,
        chunk_steps: int = DEFAULT_CHUNK_STEPS,
        *,
        validate: bool = True,
    ) -> None:
        if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, int) or chunk_steps < 1:
            raise DsacacheError(f"chunk_steps must be a positive integer, got {chunk_steps!r}")
        self.path = Path(path)
        self.geometry = geometry
        self.meta = _jsonable_meta(meta or {})
        self.chunk_steps = chunk_steps
        self.validate = validate
        self._requests: list[RequestWriter] = []
        self._tmp = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> TraceWriter:
        _check_destination(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._root = zarr.open_group(str(self._tmp), mode="w", zarr_format=3)
            self._reqs_group = self._root.create_group("requests")
        except OSError as e:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise DsacacheError(f"{self.path}: cannot write ({describe_error(e)})") from None
        return self

    def add_request(self, steps: int, near_miss: int = 0, scores: bool = False) -> RequestWriter:
        """A new request of `steps` steps, with `near_miss` near-miss slots and, if `scores`,
        the indexer's score of every selection."""
        r = len(self._requests)
        group = self._reqs_group.create_group(str(r))
        writer = RequestWriter(
            group,
            steps,
            self.geometry,
            near_miss,
            self.chunk_steps,
            scores=scores,
            source=str(self.path),
            prefix=f"requests/{r}/",
            validate=self.validate,
        )
        self._requests.append(writer)
        return writer

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        try:
            if not self._requests:
                raise TraceError(str(self.path), "n_requests", "a trace needs at least one request")
            for r in self._requests:
                r.close()
            self._root.attrs.update(
                {
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "geometry": self.geometry.to_dict(),
                    "meta": {"tool_version": __version__, **self.meta},
                    "n_requests": len(self._requests),
                }
            )
            _check_destination(self.path)  # again: it may have appeared while we wrote
            old = None
            if self.path.exists():
                # Move the old store aside first, so a failure here never loses both.
                old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(self.path, old)
            try:
                os.replace(self._tmp, self.path)
            except BaseException:
                if old is not None:
                    os.replace(old, self.path)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise


def _jsonable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """meta as plain JSON types (numpy scalars/arrays converted); one-line error otherwise."""

    def convert(o: object) -> object:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON-serializable")

    try:
        return json.loads(json.dumps(meta, default=convert, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise DsacacheError(f"meta: {e}") from None


def _check_destination(path: Path) -> None:
    """Only an existing dsacache trace store (or nothing) may be replaced."""
    if not path.exists():
        return
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        is_trace = attrs.get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        is_trace = False
    if not (path.is_dir() and is_trace):
        raise DsacacheError(
            f"{path}: exists and is not a dsacache trace store; refusing to overwrite"
        )


def describe_error(e: BaseException) -> str:
    """An exception as one short line (library messages can span lines)."""
    text = " ".join(str(e).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def write_store(
    path: str | Path,
    requests: Sequence[RequestTrace],
    geometry: Geometry,
    meta: dict[str, Any],
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
) -> None:
    """Write requests as a new store, chunk by chunk (what Trace.save does)."""
    with TraceWriter(path, geometry, meta, chunk_steps) as w:
        for req in requests:
            m = 0 if req.near_miss is None else int(req.near_miss.shape[2])
            rw = w.add_request(req.steps, near_miss=m, scores=req.scores is not None)
            for c in req.iter_chunks(chunk_steps):
                rw.write(c.start, c.indices, c.context_lens, c.near_miss, c.scores)


def read_store(path: str | Path, *, lazy: bool = False) -> TraceParts:
    """The store's attributes and arrays, with the store's own rules checked
    (docs/trace-format.md); the array rules are left to the caller (Trace.load validates)."""
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
        raise TraceError(src, "zarr.json", f"unreadable ({describe_error(e)})") from None
    if attrs.get("format") != FORMAT_NAME:
        raise TraceError(src, "format", f"expected {FORMAT_NAME!r}, got {attrs.get('format')!r}")
    version = attrs.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # true == 1 in Python
        raise TraceError(
            src, "format_version", f"unsupported version {version!r} (supported: {FORMAT_VERSION})"
        )
    geometry_attr = attrs.get("geometry")
    if not isinstance(geometry_attr, dict):
        raise TraceError(src, "geometry", f"must be an object, got {geometry_attr!r}")
    try:
        geometry = Geometry.from_dict(geometry_attr)
    except DsacacheError as e:
        raise TraceError(src, "geometry", str(e).removeprefix("geometry: ")) from None
    meta = attrs.get("meta", {})
    if not isinstance(meta, dict):
        raise TraceError(src, "meta", f"must be an object, got {meta!r}")
    n = attrs.get("n_requests")
    if type(n) is not int or n < 1:
        raise TraceError(src, "n_requests", f"must be a positive integer, got {n!r}")
    try:
        stored = sorted(root["requests"].group_keys()) if "requests" in root else []
    except Exception as e:  # noqa: BLE001
        raise TraceError(src, "requests", f"unreadable ({describe_error(e)})") from None
    extra = sorted(set(stored) - {str(r) for r in range(n)})
    if extra:
        raise TraceError(
            src, "n_requests", f"is {n} but the store also holds requests/{', '.join(extra)}"
        )
    return TraceParts([_open_request(root, r, src, lazy) for r in range(n)], geometry, meta)


class StoredArray:
    """A lazy on-disk array (what a lazily loaded RequestTrace holds).

    Reads like a numpy array (`shape`, `dtype`, `chunks`, slicing gives numpy); a chunk that
    fails to decode raises TraceError naming the store, the array and the steps read.
    """

    def __init__(self, array: zarr.Array, source: str, name: str) -> None:
        self.array, self.source, self.name = array, source, name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.array.chunks)

    @property
    def ndim(self) -> int:
        return len(self.array.shape)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except Exception as e:  # noqa: BLE001 - a corrupt chunk fails inside the codec
            raise TraceError(
                self.source, self.name, f"corrupt chunk in {_steps(key)} ({describe_error(e)})"
            ) from None

    def read(self) -> np.ndarray:
        """The whole array in memory, read chunk by chunk (an error names the bad chunk)."""
        if not self.shape or self.shape[0] == 0:
            return self[...]
        step = self.chunks[0]
        out = np.empty(self.shape, dtype=self.dtype)
        for start in range(0, self.shape[0], step):
            out[start : start + step] = self[start : start + step]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"StoredArray({self.source}:{self.name}, shape={self.shape}, dtype={self.dtype})"


def _steps(key: Any) -> str:
    first = key[0] if isinstance(key, tuple) and key else key
    if isinstance(first, slice) and first.step in (None, 1):
        start = first.start or 0
        return f"steps {start}..{first.stop - 1}" if first.stop is not None else f"steps {start}.."
    if isinstance(first, int):
        return f"step {first}"
    return "the array"


def _open_request(root: zarr.Group, r: int, src: str, lazy: bool) -> RequestTrace:
    arrays: dict[str, Any] = {}
    for name in ("indices", "context_lens", "near_miss", "scores"):
        key = f"requests/{r}/{name}"
        try:
            node = root[key]
        except KeyError:
            if name in ("near_miss", "scores"):  # optional arrays
                arrays[name] = None
                continue
            raise TraceError(src, key, "missing array") from None
        except Exception as e:  # noqa: BLE001 - broken array metadata (zarr.json)
            raise TraceError(src, key, f"unreadable metadata ({describe_error(e)})") from None
        if not isinstance(node, zarr.Array):
            raise TraceError(src, key, "is not an array")
        arrays[name] = StoredArray(node, src, key)
    ctx = arrays["context_lens"].read()
    if not lazy:
        for name in ("indices", "near_miss", "scores"):
            if arrays[name] is not None:
                arrays[name] = arrays[name].read()
    return RequestTrace(arrays["indices"], ctx, arrays["near_miss"], arrays["scores"])
