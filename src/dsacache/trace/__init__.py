"""trace/: the trace format (in memory and on disk), its validation, import and export."""

from dsacache.trace.geometry import PRESETS, Geometry, preset
from dsacache.trace.io import open_trace
from dsacache.trace.model import Chunk, RequestTrace, Trace
from dsacache.trace.store import TraceWriter

__all__ = [
    "PRESETS",
    "Chunk",
    "Geometry",
    "RequestTrace",
    "Trace",
    "TraceWriter",
    "open_trace",
    "preset",
]
