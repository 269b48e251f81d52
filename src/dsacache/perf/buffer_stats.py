"""Where the serving model's buffer hit rate comes from: a simulation of the HBM buffers on a
trace (`dsacache hierarchy`'s), the given trace or one generated with the model's geometry.

The generated trace is `dsacache synth`'s default generator (the indexer model, calibrated to
DeepSeek-V3.2's public measurements) with the model's indexer, top-k and KV row: a reduced model
of GENERATED_LAYERS layers that sample the model's depth evenly (layer groups differ: the early
layers select almost at random, the deep ones change more from step to step than the middle
ones), up to GENERATED_STEPS decode steps, starting from the input's context and growing by one
token a step. Each (request, layer) buffer is simulated on its own, so more layers add samples.
"""

from __future__ import annotations

from collections.abc import Callable

from dsacache.errors import DsacacheError
from dsacache.perf.serving import BufferStats, ServingWorkload
from dsacache.perf.serving_models import ServingModel
from dsacache.sim.hierarchy import HierarchyConfig, HierarchyResult, simulate_hierarchy
from dsacache.trace.generate import DEFAULT_GENERATOR, Indexer, generate
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


def generated_steps(work: ServingWorkload) -> int:
    return max(1, min(work.output_tokens, GENERATED_STEPS))


def progress_units(work: ServingWorkload, trace: Trace | None) -> int:
    """What buffer_stats reports progress in: the simulation's steps, after the generated
    trace's (step, layer) pairs when it generates one."""
    if trace is not None:
        return trace.steps
    return generated_steps(work) * (GENERATED_LAYERS + 1)


def generated_trace(
    model: ServingModel,
    kv_bytes: int,
    work: ServingWorkload,
    progress: Callable[[int], None] | None = None,
) -> Trace:
    """A synthetic trace of the model's geometry for the workload (module doc)."""
    g = Geometry(GENERATED_LAYERS, model.top_k, kv_bytes, model.index_bytes_per_token,
                 GENERATED_BLOCK_TOKENS)  # fmt: skip
    indexer = Indexer(indexer_preset(INDEXER_OF_MODEL[model.name]), calibrated(), model.layers)
    return generate(
        DEFAULT_GENERATOR, g, generated_steps(work), work.input_tokens, indexer=indexer,
        seed=GENERATED_SEED, progress=progress,
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
    A request whose input + output fits the buffer never misses: no simulation then."""
    cfg = HierarchyConfig(work.buffer_tokens, policy)
    if work.peak_context <= work.buffer_tokens:
        return BufferStats(1.0, source="every request fits its buffer: no misses")
    if trace is None:
        trace = generated_trace(model, kv_bytes, work, progress)
        source = (
            f"{policy} on a generated trace ({DEFAULT_GENERATOR} generator, {model.label}'s "
            f"indexer and top-k {model.top_k}, {trace.geometry.layers} layers sampling its "
            f"{model.layers}, {trace.steps} steps from {work.input_tokens} tokens)"
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
