"""perf/: turn hits and misses into decode step time, throughput and slowdown."""

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
    "max_batch",
    "model",
    "perf_params",
    "step_time",
    "workload_from_sim",
]
