"""perf/: turn hits and misses into decode step time, throughput and slowdown."""

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

__all__ = [
    "DEFAULT_MLP_LINES",
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
    "slowdown_at",
    "step_time",
    "workload_from_sim",
]
