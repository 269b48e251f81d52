"""Where the serving model's buffer hit rate comes from: a simulation of the HBM buffers on a
trace (`dsacache hierarchy`'s), the given trace or one generated with the model's geometry.

The generated trace is `dsacache synth`'s default generator (the indexer model, calibrated to
DeepSeek-V3.2's public measurements) with the model's indexer, top-k and KV row: a reduced model
of GENERATED_LAYERS layers that sample the model's depth evenly (layer groups differ: the early
layers select almost at random, the deep ones change more from step to step than the middle
ones), up to GENERATED_STEPS decode steps from the middle of the decode steps whose context
outgrows the buffer, growing by one token a step. Each (request, layer) buffer is simulated on
its own, so more layers add samples. The decode steps whose context still fits the buffer hit
(HiSparse keeps a short sequence's whole KV on the GPU): the hit rate is blended over both.
"""

from __future__ import annotations

from collections.abc import Callable

from dsacache.errors import DsacacheError
from dsacache.perf.serving import FITS_BUFFER, BufferStats, ServingWorkload
from dsacache.perf.serving_models import ServingModel
from dsacache.sim.hierarchy import HierarchyConfig, HierarchyResult, simulate_hierarchy
from dsacache.trace.generate import DEFAULT_GENERATOR, Indexer, generate, progress_total
from dsacache.trace.geometry import Geometry, indexer_preset
from dsacache.trace.indexer_model import calibrated
from dsacache.trace.model import Trace

GENERATED_LAYERS = 4
GENERATED_STEPS = 1000  # the indexer generator: about 30 s for 4 layers from 32K tokens
GENERATED_BLOCK_TOKENS = 64  # vLLM's and SGLang's KV pages for DSA models
GENERATED_SEED = 0
# each serving model's indexer (heads, head dim, rope) among the generator's presets
INDEXER_OF_MODEL = {"deepseek-v3.2": "deepseek-v3.2", "glm-5.1": "glm-5"}


def stats_from_result(result: HierarchyResult, source: str) -> BufferStats:
    """The buffer's hit rate, and the miss rate of its p99 step (host bytes / KV row over the
    step's mean selections)."""
    if result.accesses == 0:
        raise DsacacheError(f"{source}: the trace selects no tokens: no hit rate to measure")
    p99 = result.host_bytes_per_step["p99"]
    return BufferStats.from_host_bytes(
        result.hit_rate, p99, result.selections_per_step, result.kv_bytes_per_token, source
    )


def generated_window(work: ServingWorkload) -> tuple[int, int]:
    """(first context, steps) of the generated trace: up to GENERATED_STEPS steps from the
    middle of the decode steps that outgrow the buffer."""
    fit, over = work.decode_split()
    steps = max(1, min(over, GENERATED_STEPS))
    return work.input_tokens + fit + (over - steps) // 2, steps


def blended(hit_rate: float, work: ServingWorkload) -> float:
    """The hit rate over a whole request's decode: its steps that fit the buffer hit, the
    others at the simulated rate."""
    fit, over = work.decode_split()
    return (fit + over * hit_rate) / work.output_tokens


def progress_units(
    model: ServingModel, kv_bytes: int, work: ServingWorkload, trace: Trace | None
) -> int:
    """What buffer_stats reports progress in: the simulation's steps, after the generator's
    units when it generates the trace."""
    if trace is not None:
        return trace.steps
    steps = generated_window(work)[1]
    return progress_total(DEFAULT_GENERATOR, _generated_geometry(model, kv_bytes), steps, 1) + steps


def _generated_geometry(model: ServingModel, kv_bytes: int) -> Geometry:
    return Geometry(GENERATED_LAYERS, model.top_k, kv_bytes, model.index_bytes_per_token,
                    GENERATED_BLOCK_TOKENS)  # fmt: skip


def generated_trace(
    model: ServingModel,
    kv_bytes: int,
    work: ServingWorkload,
    progress: Callable[[int], None] | None = None,
) -> Trace:
    """A synthetic trace of the model's geometry for the workload (module doc)."""
    g = _generated_geometry(model, kv_bytes)
    indexer = Indexer(indexer_preset(INDEXER_OF_MODEL[model.name]), calibrated(), model.layers)
    first, steps = generated_window(work)
    return generate(
        DEFAULT_GENERATOR, g, steps, first, indexer=indexer, seed=GENERATED_SEED,
        progress=progress,
    )  # fmt: skip


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
    A request's decode steps whose context fits the buffer never miss
    (ServingWorkload.decode_split): when all do, nothing is simulated; otherwise the simulated
    rate stands for the other steps."""
    cfg = HierarchyConfig(work.buffer_tokens, policy)
    fit, over = work.decode_split()
    if over == 0:
        return FITS_BUFFER
    if trace is None:
        trace = generated_trace(model, kv_bytes, work, progress)
        first = int(trace.requests[0].context_lens[0])
        source = (
            f"{policy} on a generated trace ({DEFAULT_GENERATOR} generator, {model.label}'s "
            f"indexer and top-k {model.top_k}, {trace.geometry.layers} layers sampling its "
            f"{model.layers}, {trace.steps} steps from {first} tokens)"
        )
    else:
        k = trace.geometry.top_k
        if k != model.top_k:
            raise DsacacheError(
                f"{trace.source}: the trace's top-k {k} is not {model.label}'s {model.top_k}: "
                "its buffer hit rate does not carry over"
            )
        if max(r.max_context for r in trace.requests) <= work.buffer_tokens:
            raise DsacacheError(
                f"{trace.source}: every request of the trace fits a buffer of "
                f"{work.buffer_tokens} rows, so it never misses, but the workload's requests "
                f"grow to {work.peak_context} tokens: its hit rate does not carry over"
            )
        source = f"{policy} on {trace.source}"
    stats = stats_from_result(simulate_hierarchy(trace, cfg, progress), source)
    if fit == 0:
        return stats
    note = f"; the first {fit} of {work.output_tokens} decode steps fit the buffer and hit"
    return BufferStats(blended(stats.hit_rate, work), stats.p99_miss_rate, stats.source + note)
