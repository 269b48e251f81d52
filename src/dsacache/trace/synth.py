"""Calibrated synthetic DSA traces, for scales no CPU can decode.

The generator hits new_lookup_fraction and interlayer_overlap by construction (see
synth_kernel.py); persistence follows from the new-lookup fraction (every run starts with a new
lookup, so persistence ≈ 1/f). Working-set ratio and lookback are steered, not guaranteed: a
share of the new lookups revisit tokens the layer dropped d ≥ 2 steps ago (d geometric), the
rest are fresh draws from a position mix of attention sinks, a recent window and a uniform
long tail.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dsacache.errors import DsacacheError
from dsacache.trace.geometry import Geometry
from dsacache.trace.model import DEFAULT_CHUNK_STEPS, RequestTrace, Trace
from dsacache.trace.store import TraceWriter
from dsacache.trace.synth_kernel import generate_chunk, seed_rng

HISTORY_STEPS = 64  # revisits reach back at most this many steps


@dataclass(frozen=True)
class SynthTargets:
    """Statistical targets; defaults are the paper's means (analysis/paper.py), PAPER_TARGETS adds
    the paper's spread of the new-lookup fraction (P95 0.90)."""

    new_lookup_fraction: float = 0.55
    new_lookup_p95: float | None = None  # spread over (step, layer) pairs; None = constant
    interlayer_overlap: float = 0.36
    working_set_ratio: float = 5.15  # over windows of `window` steps
    lookback_mean_steps: float = 3.29
    window: int = 50
    sink_tokens: int = 4
    sink_share: float = 0.02  # of fresh draws
    recent_window: int = 1024
    recent_share: float = 0.3  # of fresh draws; the rest is a uniform long tail

    def validate(self) -> None:
        f, o = self.new_lookup_fraction, self.interlayer_overlap
        if not 0.0 < f <= 1.0:
            raise DsacacheError(f"new_lookup_fraction must be in (0, 1], got {f}")
        p95 = self.new_lookup_p95
        if p95 is not None and not f <= p95 < 1.0:
            raise DsacacheError(f"new_lookup_p95 must be in [new_lookup_fraction, 1), got {p95}")
        if not 0.0 <= o <= 1.0:
            raise DsacacheError(f"interlayer_overlap must be in [0, 1], got {o}")
        if not all(
            math.isfinite(x) for x in (f, o, self.working_set_ratio, self.lookback_mean_steps)
        ):
            raise DsacacheError("synth targets must be finite numbers")
        if self.working_set_ratio < 1.0:
            raise DsacacheError(f"working_set_ratio must be >= 1, got {self.working_set_ratio}")
        if self.lookback_mean_steps < 1.0:
            raise DsacacheError(f"lookback_mean_steps must be >= 1, got {self.lookback_mean_steps}")
        if self.window < 2:
            raise DsacacheError(f"window must be >= 2, got {self.window}")
        if self.sink_tokens < 1 or self.recent_window < 1:
            raise DsacacheError("sink_tokens and recent_window must be >= 1")
        if not (
            0 <= self.sink_share
            and 0 <= self.recent_share
            and self.sink_share + self.recent_share <= 1
        ):
            raise DsacacheError("sink_share and recent_share must be >= 0 and sum to <= 1")

    @property
    def persistence_mean_steps(self) -> float:
        return 1.0 / self.new_lookup_fraction


PAPER_TARGETS = SynthTargets(new_lookup_p95=0.90)


@dataclass(frozen=True)
class Knobs:
    """What the kernel is actually driven with: found by `calibrate` from the targets."""

    fresh_share: float  # of the free new lookups: fresh draws (the rest revisit)
    mean_revisit_distance: float  # steps back a revisit reaches, mean (>= 2)
    new_lookup_concentration: float = 0.0  # Beta concentration of the per-pair fraction; 0 = none

    @property
    def geometric_p(self) -> float:
        return 1.0 / (self.mean_revisit_distance - 1.0)


def initial_knobs(t: SynthTargets) -> Knobs:
    """Closed-form first guess.

    Union over a window ≈ k + (W-1)·f·k·fresh  →  fresh.  Re-selections are (1-f)·k kept
    (distance 1) and f·k·(1-fresh) revisits (mean E[d]); their mean is the lookback  →  E[d].
    """
    f, w = t.new_lookup_fraction, t.window
    fresh = float(np.clip((t.working_set_ratio - 1.0) / ((w - 1) * f), 0.0, 1.0))
    kept, revisits = 1.0 - f, f * (1.0 - fresh)
    mean_d = 2.0
    if revisits > 1e-9:
        mean_d = (t.lookback_mean_steps * (kept + revisits) - kept) / revisits
    return Knobs(
        fresh,
        float(np.clip(mean_d, 2.0, HISTORY_STEPS / 2)),
        beta_concentration(f, t.new_lookup_p95),
    )


def beta_concentration(mean: float, p95: float | None) -> float:
    """Concentration c of Beta(mean·c, (1-mean)·c) whose 95th percentile is `p95` (0: none)."""
    if p95 is None or p95 <= mean or mean >= 1.0:
        return 0.0
    u = np.random.default_rng(0)
    lo, hi = np.log(0.05), np.log(1e5)  # the P95 falls as the concentration grows
    for _ in range(40):
        c = np.exp((lo + hi) / 2)
        q = np.percentile(u.beta(mean * c, (1 - mean) * c, 20000), 95)
        lo, hi = (np.log(c), hi) if q > p95 else (lo, np.log(c))
    return float(np.exp((lo + hi) / 2))


def calibrate(
    geometry: Geometry, context: int, targets: SynthTargets, seed: int, rounds: int = 5
) -> tuple[Knobs, dict[str, float]]:
    """Steer working-set ratio and lookback with short pilot runs of the same geometry.

    Each round measures both on a pilot (<= 8 layers, 2 windows) and rescales the knob that
    drives each; returns the knobs and the last pilot's measurements.
    """
    pilot = Geometry(
        min(geometry.layers, 4), geometry.top_k, geometry.kv_bytes_per_token,
        geometry.index_bytes_per_token, geometry.block_tokens,
    )  # fmt: skip
    burn_in = HISTORY_STEPS
    steps = burn_in + 2 * targets.window
    knobs = initial_knobs(targets)
    measured: dict[str, float] = {}
    for _ in range(rounds):
        gen = _RequestGenerator(pilot, steps, context, targets, knobs, DEFAULT_CHUNK_STEPS, burn_in)
        for _chunk in gen.chunks(seed):
            pass
        measured = gen.measured()
        ws, lb = measured["working_set_ratio"], measured["lookback_mean_steps"]
        fresh = knobs.fresh_share
        if ws > 1.0:
            fresh *= (targets.working_set_ratio - 1.0) / (ws - 1.0)
        d = knobs.mean_revisit_distance
        if lb > 1.0:
            d = 1.0 + (d - 1.0) * (targets.lookback_mean_steps - 1.0) / (lb - 1.0)
        knobs = Knobs(
            float(np.clip(fresh, 0.0, 1.0)),
            float(np.clip(d, 2.0, HISTORY_STEPS / 2)),
            knobs.new_lookup_concentration,
        )
    return knobs, measured


def synthesize(
    geometry: Geometry,
    steps: int,
    context: int,
    targets: SynthTargets | None = None,
    *,
    seed: int = 0,
    requests: int = 1,
    out: str | Path | None = None,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    progress: Callable[[int], None] | None = None,
) -> Trace:
    """Generate a trace whose context starts at `context` tokens and grows one per step.

    With `out`, chunks stream to a trace store there (memory stays bounded) and the returned
    trace reads it lazily; without, the trace is built in memory.
    """
    targets = targets or PAPER_TARGETS
    targets.validate()
    if steps < 1 or context < 1 or requests < 1:
        raise DsacacheError("steps, context and requests must be positive")
    if context + steps - 1 > np.iinfo(np.int32).max:
        raise DsacacheError(f"context {context} + {steps} steps exceeds int32 token indices")
    knobs, pilot = calibrate(geometry, context, targets, seed)
    meta = {
        "source_model": "synthetic",
        "generator": "stats",
        "seed": seed,
        "prompt": None,
        "synth_targets": asdict(targets),
        "synth_knobs": asdict(knobs),
        "synth_pilot": pilot,
    }
    gen = _RequestGenerator(geometry, steps, context, targets, knobs, chunk_steps)
    if out is None:
        reqs = []
        for r in range(requests):
            idx = np.empty((steps, geometry.layers, geometry.top_k), dtype=np.int32)
            for start, chunk in gen.chunks(seed + r):
                idx[start : start + chunk.shape[0]] = chunk
                if progress:
                    progress(chunk.shape[0])
            reqs.append(RequestTrace(idx, gen.context_lens.copy()))
        return Trace(reqs, geometry, meta, source="<synthetic>", validate=False)
    with TraceWriter(out, geometry, meta, chunk_steps) as writer:
        for r in range(requests):
            rw = writer.add_request(steps)
            for start, chunk in gen.chunks(seed + r):
                rw.write(start, chunk, gen.context_lens[start : start + chunk.shape[0]])
                if progress:
                    progress(chunk.shape[0])
    return Trace.load(out, lazy=True, validate=False)


class _RequestGenerator:
    """Runs the kernel chunk by chunk for one request, keeping its state between chunks."""

    def __init__(
        self,
        geometry: Geometry,
        steps: int,
        context: int,
        targets: SynthTargets,
        knobs: Knobs,
        chunk: int,
        stat_from: int | None = None,
    ) -> None:
        self.g, self.steps, self.t, self.knobs, self.chunk = geometry, steps, targets, knobs, chunk
        self.context_lens = np.arange(context, context + steps, dtype=np.int64)
        self.stats = np.zeros(3, dtype=np.int64)
        # Stats cost a third of the time: only pilots (which pass stat_from) collect them.
        self.stat_from = steps if stat_from is None else stat_from

    def chunks(self, seed: int) -> Iterator[tuple[int, np.ndarray]]:
        g, t, k = self.g, self.t, self.knobs
        max_ctx = int(self.context_lens[-1])
        hist = np.full((HISTORY_STEPS, g.layers, g.top_k), -1, dtype=np.int32)
        last_step = np.full((g.layers, max_ctx), -1, dtype=np.int32)
        win_mark = np.zeros((g.layers, max_ctx), dtype=np.int32)
        stamps = [np.zeros(max_ctx, dtype=np.int64) for _ in range(3)]
        scratch = [np.empty(g.top_k, dtype=np.int32) for _ in range(4)]
        debt = np.zeros((2, g.layers), dtype=np.float64)
        self.stats[:] = 0
        seed_rng(seed)
        for start in range(0, self.steps, self.chunk):
            stop = min(start + self.chunk, self.steps)
            out = np.empty((stop - start, g.layers, g.top_k), dtype=np.int32)
            generate_chunk(
                out, start, self.context_lens[start:stop],
                t.new_lookup_fraction, k.new_lookup_concentration, t.interlayer_overlap,
                k.fresh_share, k.geometric_p,
                t.sink_tokens, t.sink_share, t.recent_window, t.recent_share,
                hist, last_step, *stamps, *scratch,
                t.window, self.stat_from, win_mark, debt, self.stats,
            )  # fmt: skip
            yield start, out

    def measured(self) -> dict[str, float]:
        """Working-set ratio (whole windows; partial last one counted whole) and lookback."""
        windows = -(-(self.steps - self.stat_from) // self.t.window)
        resel, dist, union = (int(x) for x in self.stats)
        return {
            "working_set_ratio": union / (windows * self.g.layers * self.g.top_k),
            "lookback_mean_steps": dist / resel if resel else 0.0,
        }
