"""sim/llc/: the whole last-level cache under the DSA decode memory stream.

hardware (presets) -> layout (addresses) -> stream (runs of lines per step) -> engine
(set-associative LLC: LRU/SRRIP/DRRIP, sectors, reservation, and an exact LRU/SRRIP
streaming shortcut: kernels.py, sweep.py, replay.py) -> run (the driver: `simulate_llc`).
front.py: the `token` reservation, a token-level region (token-lru, fifo, keep-previous) in
front of the shared LLC.
"""

from dsacache.sim.llc.engine import EngineConfig, LLCEngine
from dsacache.sim.llc.hardware import PRESETS, CacheShape, Hardware, hardware
from dsacache.sim.llc.layout import Layout, line_span
from dsacache.sim.llc.reservation import Reservation, ResolvedReservation
from dsacache.sim.llc.run import MODEL_WEIGHTS, LLCConfig, LLCResult, simulate_llc
from dsacache.sim.llc.stream import CLASSES, Runs, build_runs, iter_runs

__all__ = [
    "CLASSES",
    "MODEL_WEIGHTS",
    "PRESETS",
    "CacheShape",
    "EngineConfig",
    "Hardware",
    "LLCConfig",
    "LLCEngine",
    "LLCResult",
    "Layout",
    "Reservation",
    "ResolvedReservation",
    "Runs",
    "build_runs",
    "hardware",
    "iter_runs",
    "line_span",
    "simulate_llc",
]
