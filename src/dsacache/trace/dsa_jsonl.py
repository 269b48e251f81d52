"""The public DSA capture format: `trace_steps.jsonl` (plain or gzip), as the instrumented
DeepSeek-V3.2-Exp reference inference writes it (awesome-mini-project/DeepSeek-V3.2-Exp,
docs/INSTRUMENTATION.md), read into a trace store and written back (docs/trace-format.md).

One JSON object per line and per decode step x request x layer:

    {"event": "dsa_topk", "request_id": 0, "layer_id": 5, "step_idx": 42,
     "seq_len_current": 43, "selected_token_pos": [0, 5, 1, ...], "scores_topk": [...]}

step_idx is the position of the token being decoded and seq_len_current = step_idx + 1 the
tokens in the cache, that token included: exactly our context_len. scores_topk is optional;
other keys, and records of other events, are ignored. Records come in any order.

Reading streams the file once and keeps, per request, the positions (and scores) in flat
arrays plus one small entry per record; the store is then written a chunk of steps at a time.
Any problem is one TraceError naming the line (or the missing record), before anything is
written.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from dsacache.errors import DsacacheError, TraceError
from dsacache.trace.geometry import Geometry
from dsacache.trace.model import DEFAULT_CHUNK_STEPS, Trace
from dsacache.trace.store import TraceWriter

EVENT = "dsa_topk"
FORMAT = "dsa-jsonl"
_REQUIRED = ("request_id", "layer_id", "step_idx", "seq_len_current", "selected_token_pos")
_PROGRESS_LINES = 256  # report read progress every this many lines
_MAX_CONTEXT = int(np.iinfo(np.int32).max)  # token positions are stored as int32
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class _Request:
    """One request's records: a flat buffer of positions (and scores) plus an index."""

    records: dict[tuple[int, int], int] = field(default_factory=dict)  # (step, layer) -> i
    lines: array = field(default_factory=lambda: array("q"))
    offsets: array = field(default_factory=lambda: array("q"))
    lengths: array = field(default_factory=lambda: array("q"))
    positions: array = field(default_factory=lambda: array("i"))
    scores: array = field(default_factory=lambda: array("f"))


@dataclass
class Capture:
    """What a dsa-jsonl file holds, checked record by record."""

    source: str
    requests: dict[int, _Request]
    layers: int
    top_k: int  # the longest row
    has_scores: bool
    records: int
    meta: dict[str, Any]


def _is_int(v: object) -> bool:
    return type(v) is int


def _open_text(path: Path) -> tuple[IO[str], IO[bytes]]:
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    magic = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
    return io.TextIOWrapper(stream, encoding="utf-8"), raw


def _lines(path: Path, progress: Callable[[int], None] | None) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line; a damaged file fails naming the line it reached."""
    src = str(path)
    if not path.is_file():
        raise TraceError(src, "file", "does not exist" if not path.exists() else "not a file")
    text, raw = _open_text(path)
    n = 0
    done = 0
    try:
        while True:
            try:
                line = text.readline()
            except UnicodeDecodeError:
                raise TraceError(src, f"line {n + 1}", "not UTF-8 text") from None
            except EOFError:
                raise TraceError(
                    src, f"line {n + 1}", "the gzip stream ends early (truncated file?)"
                ) from None
            except (OSError, zlib.error) as e:  # BadGzipFile is an OSError
                raise TraceError(src, f"line {n + 1}", f"corrupt gzip data ({e})") from None
            if not line:
                break
            n += 1
            yield n, line
            if progress is not None and n % _PROGRESS_LINES == 0:
                pos = raw.tell()
                progress(pos - done)
                done = pos
        if progress is not None:
            progress(max(0, raw.tell() - done))
    finally:
        text.close()


def read_capture(
    path: str | Path,
    *,
    top_k: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Capture:
    """Read and check a dsa-jsonl file (every rule of docs/trace-format.md "dsa-jsonl").

    top_k: the slot count to store (default: the longest row); a longer row is an error.
    progress(n) is called with the bytes read (of the file as stored) since the last call.
    """
    p = Path(path)
    src = str(p)
    requests: dict[int, _Request] = {}
    layers = 0
    longest = 0
    scores_line: tuple[int, bool] | None = None  # the first record's line, and its scores
    meta: dict[str, Any] = {}
    count = 0
    for n, line in _lines(p, progress):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise TraceError(src, where, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise TraceError(src, where, f"not a JSON object (a {type(rec).__name__})")
        if "event" not in rec:
            raise TraceError(src, where, "no `event` key")
        if rec["event"] != EVENT:
            continue  # another event type: not ours
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise TraceError(src, where, f"{EVENT} record without {', '.join(missing)}")
        for key in ("request_id", "layer_id", "step_idx", "seq_len_current"):
            v = rec[key]
            if not _is_int(v) or (key != "request_id" and v < 0):
                raise TraceError(src, where, f"{key} must be an integer >= 0, got {v!r}")
        req_id, layer, step, seq_len = (
            rec["request_id"], rec["layer_id"], rec["step_idx"], rec["seq_len_current"]
        )  # fmt: skip
        if seq_len != step + 1:
            raise TraceError(
                src, where, f"seq_len_current {seq_len} is not step_idx + 1 = {step + 1}"
            )
        if seq_len > _MAX_CONTEXT:
            raise TraceError(
                src, where, f"seq_len_current {seq_len} does not fit int32 token positions"
            )
        pos = _positions(rec["selected_token_pos"], seq_len, src, where)
        if top_k is not None and pos.size > top_k:
            raise TraceError(src, where, f"{pos.size} selected positions, more than top_k {top_k}")
        has = "scores_topk" in rec
        if scores_line is None:
            scores_line = (n, has)
            meta = {k: rec[k] for k in ("run_name", "dataset") if isinstance(rec.get(k), str)}
        elif has != scores_line[1]:
            first = "has" if scores_line[1] else "has no"
            raise TraceError(
                src,
                where,
                f"{'has' if has else 'has no'} scores_topk but the first record "
                f"(line {scores_line[0]}) {first}: a file stores scores for all records or none",
            )
        req = requests.setdefault(req_id, _Request())
        key = (step, layer)
        if key in req.records:
            first_line = req.lines[req.records[key]]
            raise TraceError(
                src,
                where,
                f"a second record for request {req_id}, layer {layer}, step_idx {step} "
                f"(the first is line {first_line})",
            )
        if has:
            sc = _scores(rec["scores_topk"], pos.size, src, where)
            req.scores.frombytes(sc.tobytes())
        req.records[key] = len(req.lines)
        req.lines.append(n)
        req.offsets.append(len(req.positions))
        req.lengths.append(pos.size)
        req.positions.frombytes(pos.astype(np.int32).tobytes())
        layers = max(layers, layer + 1)
        longest = max(longest, pos.size)
        count += 1
    if not requests:
        raise TraceError(src, "file", f"no {EVENT} records")
    for req_id in sorted(requests):
        _check_complete(requests[req_id], req_id, layers, src)
    k = top_k if top_k is not None else max(longest, 1)
    has_scores = scores_line is not None and scores_line[1]
    return Capture(src, requests, layers, k, has_scores, count, meta)


def _positions(value: object, seq_len: int, src: str, where: str) -> np.ndarray:
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise TraceError(src, where, "selected_token_pos must be a list of integers")
    try:
        pos = np.array(value, dtype=np.int64)
    except OverflowError:
        raise TraceError(
            src, where, f"a selected position is outside 0..{seq_len - 1} (seq_len_current)"
        ) from None
    if pos.size:
        if pos.min() < 0 or pos.max() >= seq_len:
            bad = int(pos.min()) if pos.min() < 0 else int(pos.max())
            raise TraceError(
                src, where, f"selected position {bad} outside 0..{seq_len - 1} (seq_len_current)"
            )
        srt = np.sort(pos)
        dup = np.flatnonzero(srt[1:] == srt[:-1])
        if dup.size:
            raise TraceError(src, where, f"selected position {int(srt[dup[0]])} appears twice")
    return pos


def _scores(value: object, n: int, src: str, where: str) -> np.ndarray:
    if not isinstance(value, list) or not all(type(v) in (int, float) for v in value):
        raise TraceError(src, where, "scores_topk must be a list of numbers")
    if len(value) != n:
        raise TraceError(
            src, where, f"{len(value)} scores_topk for {n} selected_token_pos (one per position)"
        )
    try:
        wide = np.array(value, dtype=np.float64)
    except OverflowError:  # an integer beyond float64: found below
        wide = None
    if wide is not None:
        with np.errstate(over="ignore"):
            sc = wide.astype(np.float32)
        if np.isfinite(sc).all():
            return sc
    bad = next(v for v in value if not _finite_float32(v))
    raise TraceError(src, where, f"score {bad!r} is not a finite float32")


def _finite_float32(v: float) -> bool:
    try:
        return math.isfinite(v) and abs(v) <= _FLOAT32_MAX
    except OverflowError:
        return False


def _check_complete(req: _Request, req_id: int, layers: int, src: str) -> None:
    """Every layer at every step between the request's first and last step_idx."""
    steps = np.array(sorted({s for s, _ in req.records}), dtype=np.int64)
    first, last = int(steps[0]), int(steps[-1])
    if len(req.records) == (last - first + 1) * layers:
        return
    for s in range(first, last + 1):
        for layer in range(layers):
            if (s, layer) not in req.records:
                raise TraceError(
                    src,
                    f"request {req_id}",
                    f"no record for layer {layer} at step_idx {s} (its records run step_idx "
                    f"{first}..{last}, and the file has layers 0..{layers - 1})",
                )


def write_capture(
    capture: Capture,
    out: str | Path,
    geometry: Geometry,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write a checked capture as a trace store, request by request, a chunk at a time."""
    ids = sorted(capture.requests)
    meta = {
        "source_model": "imported",
        "imported_from": capture.source,
        "import_format": FORMAT,
        "request_ids": ids,
        **capture.meta,
    }
    g = geometry
    with TraceWriter(out, g, meta, chunk_steps) as w:
        for req_id in ids:
            req = capture.requests[req_id]
            first = min(s for s, _ in req.records)
            steps = len(req.records) // g.layers
            rw = w.add_request(steps, scores=capture.has_scores)
            positions = np.frombuffer(req.positions, dtype=np.int32)
            scores = np.frombuffer(req.scores, dtype=np.float32) if capture.has_scores else None
            for a in range(0, steps, chunk_steps):
                b = min(a + chunk_steps, steps)
                idx = np.full((b - a, g.layers, g.top_k), -1, dtype=np.int32)
                sc = np.full(idx.shape, np.nan, dtype=np.float32) if scores is not None else None
                for t in range(a, b):
                    for layer in range(g.layers):
                        i = req.records[(first + t, layer)]
                        o, n = req.offsets[i], req.lengths[i]
                        idx[t - a, layer, :n] = positions[o : o + n]
                        if sc is not None:
                            sc[t - a, layer, :n] = scores[o : o + n]
                ctx = np.arange(first + a + 1, first + b + 1, dtype=np.int64)
                rw.write(a, idx, ctx, None, sc)
                if progress is not None:
                    progress(b - a)


def import_dsa_jsonl(
    path: str | Path,
    out: str | Path,
    geometry: Geometry,
    *,
    top_k: int | None = None,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
) -> Capture:
    """Read `path` (checked whole first), then write the store `out` with `geometry`'s bytes
    per token and page size and the file's layers and top-k."""
    cap = read_capture(path, top_k=top_k)
    write_capture(cap, out, geometry.with_overrides(layers=cap.layers, top_k=cap.top_k),
                  chunk_steps)  # fmt: skip
    return cap


# --- writing ---------------------------------------------------------------------------------


def _request_ids(trace: Trace) -> list[int]:
    """The ids an imported trace came with, else 0, 1, 2, ..."""
    ids = trace.meta.get("request_ids")
    n = len(trace.requests)
    if isinstance(ids, list) and len(ids) == n and all(_is_int(i) for i in ids):
        if all(a < b for a, b in zip(ids, ids[1:], strict=False)):  # import sorts by id
            return ids
    return list(range(n))


def check_exportable(trace: Trace) -> None:
    """dsa-jsonl numbers steps by the decoded position: each request has steps, and its
    context_lens start at >= 1 and grow by one per step."""
    for r, req in enumerate(trace.requests):
        ctx = np.asarray(req.context_lens, dtype=np.int64)
        if ctx.size == 0:
            raise DsacacheError(
                f"{trace.source}: request {r} has no steps; dsa-jsonl has no record to hold it"
            )
        if ctx[0] < 1:
            raise DsacacheError(
                f"{trace.source}: request {r}: step 0 has context_len {ctx[0]}; dsa-jsonl needs "
                ">= 1 (step_idx = context_len - 1)"
            )
        jumps = np.flatnonzero(np.diff(ctx) != 1)
        if jumps.size:
            t = int(jumps[0]) + 1
            raise DsacacheError(
                f"{trace.source}: request {r}: context_len goes {ctx[t - 1]} -> {ctx[t]} at step "
                f"{t}; dsa-jsonl needs one more token per step"
            )


def _record(req_id: int, layer: int, ctx: int, row: np.ndarray, scores: np.ndarray | None) -> str:
    keep = row >= 0
    pos = ",".join(map(str, row[keep].tolist()))
    head = (
        f'{{"event":"{EVENT}","request_id":{req_id},"layer_id":{layer},'
        f'"step_idx":{ctx - 1},"seq_len_current":{ctx},"selected_token_pos":[{pos}]'
    )
    if scores is None:
        return head + "}\n"
    return head + ',"scores_topk":[' + ",".join(map(repr, scores[keep].tolist())) + "]}\n"


def export_dsa_jsonl(
    trace: Trace,
    out: str | Path,
    *,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    block_steps: int = DEFAULT_CHUNK_STEPS,
) -> int:
    """Write `trace` as dsa-jsonl (gzip when `out` ends in .gz), in decode order: step ->
    layer -> request; scores when every request stores them. Atomic: a hidden sibling renamed
    into place. Returns the records written."""
    out = Path(out)
    if out.is_dir():
        raise DsacacheError(f"{out}: is a directory")
    if out.exists() and not force:
        raise DsacacheError(f"{out}: exists; pass --force to overwrite it")
    check_exportable(trace)
    ids = _request_ids(trace)
    with_scores = trace.has_scores
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    written = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.name.endswith(".gz"):  # level 1: digits barely compress more at 6, 10x slower
            f = gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1)
        else:
            f = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed by the with below
        with f:
            for a in range(0, trace.steps, block_steps):
                b = min(a + block_steps, trace.steps)
                rows = []
                for r, req in enumerate(trace.requests):
                    if a >= req.steps:
                        continue
                    sc = np.asarray(req.scores[a:b]) if with_scores else None
                    rows.append((ids[r], np.asarray(req.indices[a:b]), req.context_lens[a:b], sc))
                for t in range(b - a):
                    for layer in range(trace.geometry.layers):
                        for req_id, idx, ctx, sc in rows:
                            if t < idx.shape[0]:
                                s = None if sc is None else sc[t, layer]
                                f.write(_record(req_id, layer, int(ctx[t]), idx[t, layer], s))
                                written += 1
                if progress is not None:
                    progress(b - a)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written
