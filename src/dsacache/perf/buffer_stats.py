"""Where the serving model's buffer hit rate comes from: a simulation of the HBM buffers on a
trace (`dsacache hierarchy`'s), the given trace or one generated with the model's geometry.

The generated trace is `dsacache synth`'s calibrated generator (the paper's DeepSeek-V3.2
statistics) with the model's top-k and KV row: GENERATED_LAYERS layers (each (request, layer)
buffer is simulated on its own, so more layers add samples, not a different answer) and up to
GENERATED_STEPS decode steps, starting from the input's context and growing by one token a step.
"""

from __future__ import annotations

from collections.abc import Callable

from dsacache.errors import DsacacheError
from dsacache.perf.serving import BufferStats, ServingWorkload
from dsacache.perf.serving_models import ServingModel
from dsacache.sim.hierarchy import HierarchyConfig, HierarchyResult, simulate_hierarchy
from dsacache.trace.geometry import Geometry
from dsacache.trace.model import Trace

GENERATED_LAYERS = 2
GENERATED_STEPS = 2000
GENERATED_BLOCK_TOKENS = 64  # vLLM's and SGLang's KV pages for DSA models
GENERATED_SEED = 0


def stats_from_result(result: HierarchyResult, source: str) -> BufferStats:
    """The buffer's hit rate, and the miss rate of its p99 step (host bytes / KV row over the
    step's mean selections)."""
    if result.accesses == 0:
        raise DsacacheError(f"{source}: the trace selects no tokens: no hit rate to measure")
    p99 = result.host_bytes_per_step["p99"]
    return BufferStats.from_host_bytes(
        result.hit_rate, p99, result.selections_per_step, result.kv_bytes_per_token, source
    )


def generated_steps(work: ServingWorkload) -> int:
    return max(1, min(work.output_tokens, GENERATED_STEPS))


def generated_trace(model: ServingModel, kv_bytes: int, work: ServingWorkload) -> Trace:
    """A synthetic trace of the model's geometry for the workload (module doc)."""
    from dsacache.trace.synth import synthesize

    g = Geometry(GENERATED_LAYERS, model.top_k, kv_bytes, model.index_bytes_per_token,
                 GENERATED_BLOCK_TOKENS)  # fmt: skip
    return synthesize(g, generated_steps(work), work.input_tokens, seed=GENERATED_SEED)


def buffer_stats(
    model: ServingModel,
    kv_bytes: int,
    work: ServingWorkload,
    policy: str,
    trace: Trace | None = None,
    progress: Callable[[int], None] | None = None,
) -> BufferStats:
    """Simulate the buffers of `work.buffer_tokens` rows under `policy` on `trace` (its top-k
    must be the model's), or on a generated trace of the model's geometry when trace is None.
    A request whose input + output fits the buffer never misses: no simulation then."""
    cfg = HierarchyConfig(work.buffer_tokens, policy)
    if work.peak_context <= work.buffer_tokens:
        return BufferStats(1.0, source="every request fits its buffer: no misses")
    if trace is None:
        trace = generated_trace(model, kv_bytes, work)
        source = (
            f"{policy} on a generated trace (synth, {model.label}'s top-k "
            f"{model.top_k}, {trace.geometry.layers} layers, {trace.steps} steps from "
            f"{work.input_tokens} tokens)"
        )
    else:
        k = trace.geometry.top_k
        if k != model.top_k:
            raise DsacacheError(
                f"{trace.source}: the trace's top-k {k} is not {model.label}'s {model.top_k}: "
                "its buffer hit rate does not carry over"
            )
        source = f"{policy} on {trace.source}"
    return stats_from_result(simulate_hierarchy(trace, cfg, progress), source)
