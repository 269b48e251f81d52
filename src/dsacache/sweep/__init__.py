"""sweep/: grids of simulations + perf-model runs, committed atomically to a parquet store."""

from dsacache.sweep.config import Run, SweepConfig, load_config, parse_config
from dsacache.sweep.runner import run_sweep
from dsacache.sweep.store import ResultStore

__all__ = ["ResultStore", "Run", "SweepConfig", "load_config", "parse_config", "run_sweep"]
