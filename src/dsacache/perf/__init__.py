"""perf/: turn hits and misses into decode step time, throughput and slowdown; the serving
model (throughput vs concurrency with KV in HBM or offloaded behind an HBM buffer)."""

from dsacache.perf.inverse import hit_rate_for_slowdown, mlp_for_slowdown, slowdown_at
from dsacache.perf.model import (
    PerfResult,
    StepTime,
    Workload,
    check_batch,
    max_batch,
    model,
    step_time,
    workload_from_sim,
)
from dsacache.perf.presets import DEFAULT_MLP_LINES, PerfParams, perf_params
from dsacache.perf.serving import (
    BufferStats,
    Deployment,
    ServingParams,
    ServingResult,
    ServingWorkload,
    serving_rows,
)
from dsacache.perf.serving_models import MODELS, ServingModel, serving_model

__all__ = [
    "DEFAULT_MLP_LINES",
    "MODELS",
    "BufferStats",
    "Deployment",
    "ServingModel",
    "ServingParams",
    "ServingResult",
    "ServingWorkload",
    "PerfParams",
    "PerfResult",
    "StepTime",
    "Workload",
    "check_batch",
    "hit_rate_for_slowdown",
    "max_batch",
    "mlp_for_slowdown",
    "model",
    "perf_params",
    "serving_model",
    "serving_rows",
    "slowdown_at",
    "step_time",
    "workload_from_sim",
]
