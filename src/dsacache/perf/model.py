"""Decode step time from hits and misses: the formula of docs/perf-model.md.

Per decode step, on one GPU holding L layers and serving a batch of B requests:

    T_weights = L * W / BW                                  (streamed once, shared by the batch)
    T_index   = B * L * ctx * I / BW                        (indexer scans every cached key)
    N         = B * L * g * ceil(KV / line)                 (blocking gather loads, 128 B lines)
    T_lat     = N * (h * t_llc + (1 - h) * t_hbm) / MLP     (Little's law: MLP loads in flight)
    T_bw      = N * (1 - h) * line / BW                     (HBM bytes the misses pull)
    T_gather  = max(T_lat, T_bw)
    T         = T_weights + T_index + T_gather

B is the batch a trace holds (its requests, simulated together: workload_from_sim), g the KV
tokens gathered per request per layer per step, over the (request, step) pairs the trace has.
h is the fraction of gather loads served by the LLC (the reserved region); the ideal step has
h = 1. Output: T, tokens/s per user 1 / T, per GPU B / T, slowdown T / T_ideal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dsacache.errors import DsacacheError
from dsacache.perf.presets import PerfParams
from dsacache.sim.simulate import SimResult
from dsacache.trace.model import Trace


def _check(name: str, value: float, *, integer: bool = False, low: float = 0.0) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if not bad and integer and not isinstance(value, int):
        bad = True
    if bad or not math.isfinite(value) or value < low:
        kind = "an integer" if integer else "a finite number"
        raise DsacacheError(f"{name} must be {kind} >= {low:g}, got {value!r}")


@dataclass(frozen=True)
class Workload:
    """One GPU's decode step: layers on it, batch, bytes per layer, and the gathers' fate.

    context_tokens: mean tokens cached per request (the indexer scans all of them);
    gathers_per_layer: KV tokens gathered per request per layer per step (valid top-k slots);
    hit_rate: fraction of gather loads served by the LLC / reserved region.
    """

    layers_per_gpu: int
    batch: int
    weights_bytes_per_layer: int
    context_tokens: float
    index_bytes_per_token: int
    kv_bytes_per_token: int
    gathers_per_layer: float
    hit_rate: float

    def __post_init__(self) -> None:
        _check("layers_per_gpu", self.layers_per_gpu, integer=True, low=1)
        _check("batch", self.batch, integer=True, low=1)
        _check("weights_bytes_per_layer", self.weights_bytes_per_layer, integer=True)
        _check("context_tokens", self.context_tokens)
        _check("index_bytes_per_token", self.index_bytes_per_token, integer=True)
        _check("kv_bytes_per_token", self.kv_bytes_per_token, integer=True, low=1)
        _check("gathers_per_layer", self.gathers_per_layer)
        _check("hit_rate", self.hit_rate)
        if self.hit_rate > 1.0:
            raise DsacacheError(f"hit_rate must be in [0, 1], got {self.hit_rate!r}")

    def with_(self, **changes: Any) -> Workload:
        return Workload(**{**asdict(self), **changes})


@dataclass(frozen=True)
class StepTime:
    """The modelled step, every term in seconds."""

    weights_s: float
    index_s: float
    gather_loads: float
    gather_latency_s: float
    gather_bandwidth_s: float

    @property
    def gather_s(self) -> float:
        return max(self.gather_latency_s, self.gather_bandwidth_s)

    @property
    def total_s(self) -> float:
        return self.weights_s + self.index_s + self.gather_s

    def to_dict(self) -> dict[str, float]:
        return {
            "weights_seconds": self.weights_s,
            "index_scan_seconds": self.index_s,
            "gather_loads": self.gather_loads,
            "gather_latency_seconds": self.gather_latency_s,
            "gather_bandwidth_seconds": self.gather_bandwidth_s,
            "gather_seconds": self.gather_s,
            "step_seconds": self.total_s,
        }


def step_time(p: PerfParams, w: Workload) -> StepTime:
    """The formula of the module docstring, term by term."""
    bw = p.hbm_bytes_per_s
    lines_per_token = math.ceil(w.kv_bytes_per_token / p.line_bytes)
    n = w.batch * w.layers_per_gpu * w.gathers_per_layer * lines_per_token
    h = w.hit_rate
    mean_ns = h * p.llc_hit_ns + (1.0 - h) * p.hbm_ns
    return StepTime(
        weights_s=w.layers_per_gpu * w.weights_bytes_per_layer / bw,
        index_s=w.batch * w.layers_per_gpu * w.context_tokens * w.index_bytes_per_token / bw,
        gather_loads=n,
        gather_latency_s=n * mean_ns * 1e-9 / p.mlp_lines,
        gather_bandwidth_s=n * (1.0 - h) * p.line_bytes / bw,
    )


@dataclass(frozen=True)
class PerfResult:
    params: PerfParams
    workload: Workload
    step: StepTime
    ideal: StepTime  # the same step with every gather hitting (h = 1)

    @property
    def step_seconds(self) -> float:
        return self.step.total_s

    @property
    def slowdown(self) -> float:
        return self.step.total_s / self.ideal.total_s

    @property
    def tokens_per_s_per_user(self) -> float:
        return 1.0 / self.step.total_s

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.workload.batch / self.step.total_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardware": self.params.name,
            "step_seconds": self.step_seconds,
            "ideal_step_seconds": self.ideal.total_s,
            "slowdown": self.slowdown,
            "tokens_per_s_per_user": self.tokens_per_s_per_user,
            "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
            "terms": self.step.to_dict(),
            "ideal_terms": self.ideal.to_dict(),
            "workload": asdict(self.workload),
            "params": self.params.to_dict(),
        }


def model(p: PerfParams, w: Workload) -> PerfResult:
    """Step time, throughput and slowdown against the all-hit ideal."""
    ideal = step_time(p, w.with_(hit_rate=1.0))
    if ideal.total_s <= 0:
        raise DsacacheError("the step moves no bytes: give layers, weights or gathers > 0")
    return PerfResult(p, w, step_time(p, w), ideal)


def max_batch(p: PerfParams, w: Workload, tokens_per_s_per_user: float) -> int:
    """Largest batch whose *ideal* step still gives each user `tokens_per_s_per_user`.

    The ideal step is linear in the batch: T(B) = T_weights + B * (per-request terms)."""
    _check("tokens per second per user", tokens_per_s_per_user)
    if tokens_per_s_per_user <= 0:
        raise DsacacheError(f"tokens per second per user must be > 0, got {tokens_per_s_per_user}")
    budget = 1.0 / tokens_per_s_per_user
    one = step_time(p, w.with_(batch=1, hit_rate=1.0))
    per_request = one.index_s + one.gather_s
    if one.total_s > budget:
        raise DsacacheError(
            f"{tokens_per_s_per_user:g} tok/s per user is out of reach on {p.name}: even batch 1 "
            f"takes {one.total_s * 1e3:.3f} ms per step (budget {budget * 1e3:.3f} ms)"
        )
    if per_request <= 0:
        raise DsacacheError("per-request work is zero: the batch is unbounded")
    return max(1, int(math.floor((budget - one.weights_s) / per_request + 1e-9)))


def workload_from_sim(
    trace: Trace,
    result: SimResult,
    *,
    weights_bytes_per_layer: int,
    layers_per_gpu: int | None = None,
) -> Workload:
    """The Workload a simulation of `trace` describes. The batch is the trace's requests: they
    shared the simulated region, so the hit rate is theirs together (128 B line hits for a
    line-granular policy, token hits otherwise). layers_per_gpu defaults to the trace's
    layers."""
    lh, lm = result.line_hits, result.line_misses
    if lh is not None and lm is not None and lh + lm > 0:
        h = lh / (lh + lm)
    else:
        h = result.hits / result.accesses if result.accesses else 0.0
    return gather_workload(
        trace, h, result.accesses,
        weights_bytes_per_layer=weights_bytes_per_layer, layers_per_gpu=layers_per_gpu,
    )  # fmt: skip


def gather_workload(
    trace: Trace,
    hit_rate: float,
    accesses: int,
    *,
    weights_bytes_per_layer: int,
    layers_per_gpu: int | None = None,
) -> Workload:
    """The Workload of `trace` whose `accesses` KV gathers hit the LLC at `hit_rate`. Gathers
    per request per layer per step and the mean context count each request's own steps (a
    ragged batch: a request that ends early adds no steps after it ends)."""
    g = trace.geometry
    request_steps = sum(r.steps for r in trace.requests)
    pairs = request_steps * g.layers
    if pairs == 0 or accesses == 0:
        raise DsacacheError("the simulation saw no accesses: nothing to model")
    ctx = float(np.mean(np.concatenate([np.asarray(r.context_lens) for r in trace.requests])))
    return Workload(
        layers_per_gpu=g.layers if layers_per_gpu is None else layers_per_gpu,
        batch=len(trace.requests),
        weights_bytes_per_layer=weights_bytes_per_layer,
        context_tokens=ctx,
        index_bytes_per_token=g.index_bytes_per_token,
        kv_bytes_per_token=g.kv_bytes_per_token,
        gathers_per_layer=accesses / pairs,
        hit_rate=float(hit_rate),
    )


def check_batch(trace: Trace, batch: int | None) -> int:
    """The trace's request count; a `batch` given that differs is an error (the batch is the
    requests the trace holds and the simulation shares the region among; a hit rate simulated
    for fewer requests says nothing about more of them contending for the region)."""
    n = len(trace.requests)
    if batch is not None and batch != n:
        raise DsacacheError(
            f"--batch {batch} does not match the trace's {n} request(s): the batch is the "
            f"trace's requests (make a trace with {batch}, e.g. dsacache synth --requests {batch})"
        )
    return n
