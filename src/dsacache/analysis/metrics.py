"""Access-pattern metrics of a trace (docs/architecture.md "Access-pattern metrics").

One pass per request, chunk by chunk: a numba kernel walks every slot in access order
(step -> layer -> slot) and updates per-request state that lives across chunks:

- last_step[layer, token]: step of the token's most recent selection in that layer (NEVER if
  none). It answers "was it in S(t-1, l)?" (new lookups, run starts), the lookback distance,
  and, for layer l-1 already done at step t, "is it in S(t, l-1)?" (inter-layer overlap).
- win_mark[layer, token]: 1 + the working-set window that last counted the token.
- page_mark[page]: stamp of the (step, layer) that last counted the page.

Before a row updates last_step, one more look at it counts the row's tokens x with x - 1 in
S(t-1, l): the offset-shifted overlap (the previous step's selected positions moved by one, as
a score that depends on the relative position n - m would move them).

Everything else is per-layer sums and counts, so any metric pools over requests and layers
exactly as if the items were concatenated, and chunking cannot change a result.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from dsacache.analysis.predictability import (
    PredictabilityCounter,
    PredictabilityResult,
    parse_layer_groups,
    resolve_rank_source,
)
from dsacache.errors import DsacacheError
from dsacache.trace.model import Trace

NEVER = -2  # last_step fill: never equal to t - 1 (t >= 0) and never a valid step
NBINS = 64  # reuse-distance bins: bin i holds distances in [2^(i-1) + 1, 2^i]

# Rows of the per-layer float sums.
F_NEW, F_INTER, F_PAGE, F_SHIFT = 0, 1, 2, 3
NF = 4
# Rows of the per-layer integer counts.
(
    I_NEW_PAIRS,  # (t >= 1, l) pairs with S non-empty
    I_SEL,  # selections (valid slots)
    I_STARTS,  # selections not in S(t-1, l): run starts
    I_LB_SUM,  # sum of lookback distances
    I_LB_CNT,  # re-selections
    I_COLD,  # first-ever selections
    I_INTER_PAIRS,  # (t, l >= 1) pairs with S non-empty
    I_PAGE_PAIRS,  # (t, l) pairs with S non-empty
) = range(8)
NI = 8

METRICS = (
    "new_lookup_fraction",
    "persistence_mean_steps",
    "lookback_mean_steps",
    "interlayer_overlap",
    "working_set_ratio",
    "page_utilization",
)
# Beside the paper's six: |S(t,l) ∩ S(t-1,l)| / |S(t,l)| (= 1 - new lookups, per pair) and
# |S(t,l) ∩ (S(t-1,l) + 1)| / |S(t,l)|, both over the new-lookup pairs (t >= 1, S non-empty).
OVERLAPS = ("consecutive_overlap", "shifted_overlap")


@numba.njit(cache=True, nogil=True)
def chunk_kernel(
    idx: np.ndarray,  # int32 [steps, layers, k]
    start: int,  # absolute step of row 0
    wlen: int,  # working-set window length actually used (W, or all steps when fewer)
    full_end: int,  # steps >= full_end belong to the ignored trailing partial window
    page_tokens: int,
    last_step: np.ndarray,  # int32 [layers, size]
    win_mark: np.ndarray,  # int32 [layers, size]
    page_mark: np.ndarray,  # int64 [size // page_tokens + 1]
    bin_of: np.ndarray,  # int64 [steps + 1]: reuse-distance bin of each distance
    fsum: np.ndarray,  # float64 [NF, layers]
    icnt: np.ndarray,  # int64 [NI, layers]
    hist: np.ndarray,  # int64 [NBINS]
    union: np.ndarray,  # int64 [windows, layers]: working-set sizes
    newfrac: np.ndarray,  # float64 [steps, layers], NaN-filled: per-pair new-lookup fractions
) -> None:
    """Fold one chunk into the state; every token is < size (the caller checks:
    first_row_out_of_range)."""
    steps, layers, k = idx.shape
    size = last_step.shape[1]
    for i in range(steps):
        t = start + i
        w = t // wlen
        in_win = t < full_end
        for ly in range(layers):
            stamp = t * layers + ly + 1  # unique per (t, l) of this request, never 0
            n = 0
            new = 0
            inter = 0
            pages = 0
            lb_sum = 0
            lb_cnt = 0
            shifted = 0
            if t >= 1:  # before this row updates last_step: is x - 1 in S(t-1, l)?
                for j in range(k):
                    tok = idx[i, ly, j]
                    if 1 <= tok <= size and last_step[ly, tok - 1] == t - 1:
                        shifted += 1
            for j in range(k):
                tok = idx[i, ly, j]
                if tok < 0:
                    continue
                n += 1
                prev = last_step[ly, tok]
                if prev != t - 1:
                    new += 1
                if prev >= 0:
                    d = t - prev
                    lb_sum += d
                    lb_cnt += 1
                    hist[bin_of[d]] += 1
                last_step[ly, tok] = t
                # Layer ly-1 of this step is already folded in.
                if ly > 0 and last_step[ly - 1, tok] == t:
                    inter += 1
                if in_win and win_mark[ly, tok] != w + 1:
                    win_mark[ly, tok] = w + 1
                    union[w, ly] += 1
                p = tok // page_tokens
                if page_mark[p] != stamp:
                    page_mark[p] = stamp
                    pages += 1
            if n == 0:
                continue
            icnt[I_SEL, ly] += n
            icnt[I_STARTS, ly] += new
            icnt[I_LB_SUM, ly] += lb_sum
            icnt[I_LB_CNT, ly] += lb_cnt
            icnt[I_COLD, ly] += n - lb_cnt
            if t >= 1:
                f = new / n
                fsum[F_NEW, ly] += f
                fsum[F_SHIFT, ly] += shifted / n
                icnt[I_NEW_PAIRS, ly] += 1
                newfrac[i, ly] = f
            if ly >= 1:
                fsum[F_INTER, ly] += inter / n
                icnt[I_INTER_PAIRS, ly] += 1
            fsum[F_PAGE, ly] += n / (page_tokens * pages)
            icnt[I_PAGE_PAIRS, ly] += 1


def first_row_out_of_range(idx: np.ndarray, size: int) -> int:
    """The first row of a chunk [steps, layers, k] that selects a token >= size (outside the
    request's state arrays), or -1: checked once, before the kernels index by token."""
    if idx.size == 0 or idx.max() < size:
        return -1
    return int(np.argmax((idx >= size).any(axis=(1, 2))))


_warm = False


def _warm_up() -> None:
    """Compile (or load from cache) the kernel once, so engine_seconds is kernel time only."""
    global _warm
    if _warm:
        return
    z64 = np.zeros((1, 1), dtype=np.int64)
    chunk_kernel(
        np.zeros((0, 1, 1), dtype=np.int32),
        0,
        1,
        0,
        1,
        np.zeros((1, 1), dtype=np.int32),
        np.zeros((1, 1), dtype=np.int32),
        np.zeros(1, dtype=np.int64),
        np.zeros(1, dtype=np.int64),
        np.zeros((NF, 1)),
        np.zeros((NI, 1), dtype=np.int64),
        np.zeros(NBINS, dtype=np.int64),
        z64,
        np.zeros((0, 1)),
    )
    _warm = True


def distance_bins(max_distance: int) -> np.ndarray:
    """bin_of[d] = ceil(log2 d) for d >= 1 (bin 0 = distance 1); bin_of[0] unused."""
    d = np.arange(max_distance + 1, dtype=np.int64)
    _, exp = np.frexp(np.maximum(d - 1, 0).astype(np.float64))
    return exp.astype(np.int64)  # (d-1).bit_length(), exact for any int below 2^53


@dataclass
class AnalysisResult:
    """The six metrics (pooled over requests, steps and layers) plus per-layer values."""

    source: str
    requests: int
    steps: int  # (request, step) rows analysed: steps summed over requests
    layers: int
    top_k: int
    accesses: int  # valid slots
    window: int
    page_tokens: int
    new_lookup_fraction: float | None
    new_lookup_fraction_p95: float | None
    persistence_mean_steps: float | None
    lookback_mean_steps: float | None
    interlayer_overlap: float | None
    working_set_ratio: float | None
    working_set_ratio_p95: float | None
    page_utilization: float | None
    consecutive_overlap: float | None = None
    shifted_overlap: float | None = None
    per_layer: dict[str, list[float | None]] = field(default_factory=dict)
    reuse_distance_steps: dict[str, Any] = field(default_factory=dict)
    engine_seconds: float = 0.0
    # Per request, float64 [steps, layers]: each (t, l) pair's new-lookup fraction (NaN at
    # t = 0 and for empty rows). Not in to_dict (it is per step); the report draws it.
    new_lookup_by_step: list[np.ndarray] = field(default_factory=list, repr=False)
    # P(selected at t+1 | streak, rank) when asked for (analyze(..., predictability=True)).
    predictability: PredictabilityResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: plain Python numbers, None where a metric has no defined value."""
        out = {
            "source": self.source,
            "requests": self.requests,
            "steps": self.steps,
            "layers": self.layers,
            "top_k": self.top_k,
            "accesses": self.accesses,
            "window": self.window,
            "page_tokens": self.page_tokens,
            **{name: _num(getattr(self, name)) for name in METRICS + OVERLAPS},
            "new_lookup_fraction_p95": _num(self.new_lookup_fraction_p95),
            "working_set_ratio_p95": _num(self.working_set_ratio_p95),
            "per_layer": {
                name: [_num(v) for v in values] for name, values in self.per_layer.items()
            },
            "reuse_distance_steps": {
                key: (list(v) if isinstance(v, list) else v)
                for key, v in self.reuse_distance_steps.items()
            },
            "engine_seconds": float(self.engine_seconds),
        }
        if self.predictability is not None:
            out["predictability"] = self.predictability.to_dict()
        return out


def _num(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _p95(parts: list[np.ndarray]) -> float | None:
    values = np.concatenate(parts) if parts else np.empty(0)
    return float(np.percentile(values, 95)) if values.size else None


def _positive(name: str, value: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise DsacacheError(f"analyze: {name} must be an integer >= 1, got {value!r}") from None
    if v < 1:
        raise DsacacheError(f"analyze: {name} must be an integer >= 1, got {v}")
    return v


def check_params(window: int, page_tokens: int) -> tuple[int, int]:
    """Validate the analysis parameters (raises DsacacheError with a one-line message)."""
    return _positive("window", window), _positive("page_tokens", page_tokens)


def analyze(
    trace: Trace,
    window: int = 50,
    page_tokens: int = 64,
    progress: Callable[[int], None] | None = None,
    *,
    predictability: bool = False,
    rank_by: str = "auto",
    layer_groups: str | None = None,
) -> AnalysisResult:
    """Compute the access-pattern metrics of `trace`, streaming it chunk by chunk.

    window: working-set window W in steps; page_tokens: page size P in tokens.
    progress(n) is called after each chunk with the n steps it held (the increments sum to
    the steps of all requests). predictability adds P(selected at t+1 | streak, rank)
    (analysis/predictability.py; rank_by auto | score | slot) in the same pass, summarised
    per layer group ('0-1,20-60'; default: all layers, plus 0-1 and 20-last when deeper).
    """
    window, page_tokens = check_params(window, page_tokens)
    _warm_up()
    g = trace.geometry
    layers, k = g.layers, g.top_k
    pred = None
    if predictability:
        groups = parse_layer_groups(layer_groups, layers)
        pred = PredictabilityCounter(layers, resolve_rank_source(rank_by, trace.has_scores), groups)
    fsum = np.zeros((NF, layers), dtype=np.float64)
    icnt = np.zeros((NI, layers), dtype=np.int64)
    hist = np.zeros(NBINS, dtype=np.int64)
    ws_sum = np.zeros(layers, dtype=np.float64)
    ws_cnt = np.zeros(layers, dtype=np.int64)
    newfrac_by_request: list[np.ndarray] = []
    ws_parts: list[np.ndarray] = []
    engine = 0.0
    total_steps = 0

    for r, req in enumerate(trace.requests):
        steps = req.steps
        if steps == 0:
            newfrac_by_request.append(np.full((0, layers), np.nan))
            continue
        total_steps += steps
        size = max(req.max_context, 1)
        last_step = np.full((layers, size), NEVER, dtype=np.int32)
        win_mark = np.zeros((layers, size), dtype=np.int32)
        page_mark = np.zeros(size // page_tokens + 1, dtype=np.int64)
        wlen = window if steps >= window else steps  # fewer steps than W: one window of all
        n_windows = steps // wlen
        union = np.zeros((n_windows, layers), dtype=np.int64)
        bin_of = distance_bins(steps)
        req_newfrac = np.full((steps, layers), np.nan)
        newfrac_by_request.append(req_newfrac)
        if pred is not None:
            pred.start_request(size, steps)
        for chunk in req.iter_chunks():
            idx = np.ascontiguousarray(chunk.indices, dtype=np.int32)
            if idx.ndim != 3 or idx.shape[1:] != (layers, k):
                raise DsacacheError(
                    f"{trace.source}: request {r}: chunk shape {idx.shape} does not match "
                    f"geometry [steps, {layers}, {k}]"
                )
            n = idx.shape[0]
            newfrac = req_newfrac[chunk.start : chunk.start + n]
            bad = first_row_out_of_range(idx, size)
            if bad >= 0:
                raise DsacacheError(
                    f"{trace.source}: request {r}: token index >= the request's largest context "
                    f"length {req.max_context} at step {chunk.start + bad} (validate the trace)"
                )
            t0 = time.perf_counter()
            chunk_kernel(
                idx,
                chunk.start,
                wlen,
                n_windows * wlen,
                page_tokens,
                last_step,
                win_mark,
                page_mark,
                bin_of,
                fsum,
                icnt,
                hist,
                union,
                newfrac,
            )
            if pred is not None:
                pred.fold(idx, chunk.scores, chunk.start)
            engine += time.perf_counter() - t0
            if progress is not None:
                progress(n)
        ratios = union / k
        ws_sum += ratios.sum(axis=0)  # empty unions add 0 and are not counted
        ws_cnt += (union > 0).sum(axis=0)
        ws_parts.append(ratios[union > 0])

    def per(num: np.ndarray, den: np.ndarray, first: int = 0) -> list[float | None]:
        return [_ratio(num[i], den[i]) if i >= first else None for i in range(layers)]

    per_layer = {
        "new_lookup_fraction": per(fsum[F_NEW], icnt[I_NEW_PAIRS]),
        "persistence_mean_steps": per(icnt[I_SEL], icnt[I_STARTS]),
        "lookback_mean_steps": per(icnt[I_LB_SUM], icnt[I_LB_CNT]),
        "interlayer_overlap": per(fsum[F_INTER], icnt[I_INTER_PAIRS], first=1),
        "working_set_ratio": per(ws_sum, ws_cnt),
        "page_utilization": per(fsum[F_PAGE], icnt[I_PAGE_PAIRS]),
        "consecutive_overlap": per(icnt[I_NEW_PAIRS] - fsum[F_NEW], icnt[I_NEW_PAIRS]),
        "shifted_overlap": per(fsum[F_SHIFT], icnt[I_NEW_PAIRS]),
    }
    f, c = fsum.sum(axis=1), icnt.sum(axis=1)
    max_bin = int(np.flatnonzero(hist)[-1]) + 1 if hist.any() else 0
    reuse = {
        "bin_lo": [1] + [2 ** (i - 1) + 1 for i in range(1, max_bin)] if max_bin else [],
        "bin_hi": [2**i for i in range(max_bin)],  # inclusive
        "count": [int(x) for x in hist[:max_bin]],
        "cold": int(c[I_COLD]),
    }
    return AnalysisResult(
        source=trace.source,
        requests=len(trace.requests),
        steps=total_steps,
        layers=layers,
        top_k=k,
        accesses=int(c[I_SEL]),
        window=window,
        page_tokens=page_tokens,
        new_lookup_fraction=_ratio(f[F_NEW], c[I_NEW_PAIRS]),
        new_lookup_fraction_p95=_p95([m[~np.isnan(m)] for m in newfrac_by_request]),
        persistence_mean_steps=_ratio(c[I_SEL], c[I_STARTS]),
        lookback_mean_steps=_ratio(c[I_LB_SUM], c[I_LB_CNT]),
        interlayer_overlap=_ratio(f[F_INTER], c[I_INTER_PAIRS]),
        working_set_ratio=_ratio(ws_sum.sum(), ws_cnt.sum()),
        working_set_ratio_p95=_p95(ws_parts),
        page_utilization=_ratio(f[F_PAGE], c[I_PAGE_PAIRS]),
        consecutive_overlap=_ratio(c[I_NEW_PAIRS] - f[F_NEW], c[I_NEW_PAIRS]),
        shifted_overlap=_ratio(f[F_SHIFT], c[I_NEW_PAIRS]),
        per_layer=per_layer,
        reuse_distance_steps=reuse,
        engine_seconds=engine,
        new_lookup_by_step=newfrac_by_request,
        predictability=None if pred is None else pred.result(),
    )
