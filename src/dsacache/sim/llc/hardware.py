"""The line-level LLC's view of the hardware table (dsacache/hardware.py): capacity, latency,
bandwidth, and the modelled power-of-two geometry.

The facts (and their source notes) live in the one hardware table; this module adds only what the
LLC engine needs on top: `model_geometry`, `CacheShape` and the `Hardware` view. Every table row
with L2 and DRAM latencies is a preset here.

The engine indexes sets with the low bits of the line id (or an XOR fold of it), so it needs a
power-of-two set count. Real capacities (50, 60, 126.5, 256 MiB) are not powers of two, so each
preset carries a *modelled* geometry chosen by `model_geometry`: the largest power-of-two set
count that still leaves at least 16 ways, and ways = round(lines / sets). That reproduces H100
(16384 sets x 25 ways = 50 MiB), H200 (16384 x 30 = 60 MiB) and MI300X (131072 x 16 = 256 MiB)
exactly; B200 is modelled as 32768 x 32 = 128 MiB (+1.2 % over the measured 126.5 MiB). The
associativities are a modelling choice (ASSUMED): vendors do not publish them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from dsacache.errors import DsacacheError, lookup
from dsacache.hardware import GPUS, SET_ASIDE_FRACTION, GpuSpec
from dsacache.units import LINE_BYTES, MIB, SECTOR_BYTES

__all__ = [
    "LINE_BYTES",
    "MIB",
    "PRESETS",
    "SECTOR_BYTES",
    "SET_ASIDE_FRACTION",
    "CacheShape",
    "Hardware",
    "from_spec",
    "hardware",
    "is_power_of_two",
    "model_geometry",
]

MAX_LINES = 1 << 26  # state is ~8 B per line: at most 512 MiB of arrays (real LLCs: < 1 M lines)
MIN_WAYS = 16  # the modelled geometry keeps at least this many ways (ASSUMED)


def model_geometry(capacity_bytes: int, min_ways: int = MIN_WAYS) -> tuple[int, int]:
    """(sets, ways): sets the largest power of two with sets * min_ways <= lines,
    ways = round(lines / sets)."""
    lines = capacity_bytes // LINE_BYTES
    if lines < min_ways:
        raise DsacacheError(f"capacity {capacity_bytes} B is below {min_ways} lines")
    sets = 1 << int(math.floor(math.log2(lines / min_ways)))
    return sets, int(round(lines / sets))


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class CacheShape:
    """The modelled cache: sets (a power of two) x ways of 128-byte lines."""

    sets: int
    ways: int

    def __post_init__(self) -> None:
        for name in ("sets", "ways"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DsacacheError(f"{name} must be a positive integer, got {v!r}")
        if not is_power_of_two(self.sets):
            raise DsacacheError(f"sets must be a power of two, got {self.sets}")
        if self.ways > 255:
            raise DsacacheError(f"ways must be at most 255, got {self.ways}")
        if self.sets * self.ways > MAX_LINES:
            raise DsacacheError(
                f"{self.sets} sets x {self.ways} ways = {self.sets * self.ways:,} lines is too "
                f"large to model (at most {MAX_LINES:,} lines, {MAX_LINES * LINE_BYTES >> 30} GiB)"
            )

    @property
    def lines(self) -> int:
        return self.sets * self.ways

    @property
    def capacity_bytes(self) -> int:
        return self.lines * LINE_BYTES


@dataclass(frozen=True)
class Hardware:
    """One accelerator's last-level cache and memory, with a source note per number."""

    name: str
    label: str
    llc_bytes: int  # real (reported or measured) LLC capacity
    sets: int  # modelled geometry (see module docstring)
    ways: int
    llc_hit_cycles: int  # load latency, LLC hit
    dram_cycles: int  # load latency, LLC miss to HBM
    clock_ghz: float
    hbm_bytes_per_s: float
    set_aside_max_bytes: int  # largest persisting / reserved region the hardware allows
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> CacheShape:
        return CacheShape(self.sets, self.ways)

    @property
    def modelled_bytes(self) -> int:
        return self.sets * self.ways * LINE_BYTES

    def with_shape(self, sets: int | None = None, ways: int | None = None) -> CacheShape:
        """The modelled shape with user overrides (capacity = sets x ways x 128 B)."""
        return CacheShape(self.sets if sets is None else sets, self.ways if ways is None else ways)

    def set_aside_limit(self, shape: CacheShape) -> int:
        """Largest set-aside for `shape`: the preset's limit, and at most 75 % of the cache."""
        return min(self.set_aside_max_bytes, int(SET_ASIDE_FRACTION * shape.capacity_bytes))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "llc_bytes": self.llc_bytes,
            "sets": self.sets,
            "ways": self.ways,
            "line_bytes": LINE_BYTES,
            "sector_bytes": SECTOR_BYTES,
            "modelled_bytes": self.modelled_bytes,
            "llc_hit_cycles": self.llc_hit_cycles,
            "dram_cycles": self.dram_cycles,
            "clock_ghz": self.clock_ghz,
            "hbm_bytes_per_s": self.hbm_bytes_per_s,
            "set_aside_max_bytes": self.set_aside_max_bytes,
            "sources": dict(self.sources),
        }


_LINE_NOTE = "CUDA programming guide: L2 lines of 128 B in 4 x 32 B sectors"
# The view's fields and the table fields they come from.
_FROM_TABLE = {
    "llc_bytes": "l2_bytes",
    "llc_hit_cycles": "llc_hit_cycles",
    "dram_cycles": "dram_cycles",
    "clock_ghz": "clock_ghz",
    "hbm_bytes_per_s": "hbm_bytes_per_s",
    "set_aside_max_bytes": "set_aside_max_bytes",
}


def from_spec(spec: GpuSpec) -> Hardware:
    """The LLC view of one hardware-table row (which must carry L2 and DRAM latencies)."""
    if spec.llc_hit_cycles is None or spec.dram_cycles is None:
        raise DsacacheError(f"{spec.name}: the hardware table has no L2 / DRAM latencies")
    sets, ways = model_geometry(spec.l2_bytes)
    geometry_note = (
        f"modelled {sets} sets x {ways} ways x 128 B = {sets * ways * LINE_BYTES / MIB:g} MiB "
        f"(real {spec.l2_bytes / MIB:g} MiB); associativity ASSUMED (not published)"
    )
    notes = {"sets": geometry_note, "ways": geometry_note, "line_bytes": _LINE_NOTE}
    for mine, theirs in _FROM_TABLE.items():
        notes[mine] = spec.sources.get(theirs, "")
    if "line_bytes" in spec.sources:
        notes["line_bytes"] = spec.sources["line_bytes"]
    return Hardware(
        spec.name,
        spec.label,
        spec.l2_bytes,
        sets,
        ways,
        spec.llc_hit_cycles,
        spec.dram_cycles,
        spec.clock_ghz,
        spec.hbm_bytes_per_s,
        spec.set_aside_max_bytes,
        notes,
    )


# Every table row with the latencies the LLC model needs.
PRESETS: dict[str, Hardware] = {
    name: from_spec(spec) for name, spec in GPUS.items() if spec.has_llc_latencies
}


def hardware(name: str) -> Hardware:
    """The preset called `name` (case-insensitive)."""
    return lookup(PRESETS, name, "hardware")
