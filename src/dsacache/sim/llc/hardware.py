"""Hardware presets for the line-level LLC: capacity, line, latency, bandwidth.

Every number carries a source note naming its public source (the table is in docs/architecture.md,
"Facts the presets use, and their sources"); a number no source gives is marked ASSUMED.

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

from dsacache.errors import DsacacheError

MIB = 1 << 20
LINE_BYTES = 128  # all presets: 128-byte lines of 4 x 32-byte sectors (CUDA programming guide)
SECTOR_BYTES = 32
MAX_LINES = 1 << 26  # state is ~8 B per line: at most 512 MiB of arrays (real LLCs: < 1 M lines)
SECTORS_PER_LINE = LINE_BYTES // SECTOR_BYTES
MIN_WAYS = 16  # the modelled geometry keeps at least this many ways (ASSUMED)
# CUDA programming guide: the persisting-L2 set-aside is at most 75 % of L2.
SET_ASIDE_FRACTION = 0.75


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


def _preset(
    name: str,
    label: str,
    llc_bytes: int,
    latency: tuple[int, int],
    clock_ghz: float,
    hbm: float,
    set_aside: int,
    sources: dict[str, str],
) -> Hardware:
    sets, ways = model_geometry(llc_bytes)
    geometry_note = (
        f"modelled {sets} sets x {ways} ways x 128 B = {sets * ways * LINE_BYTES / MIB:g} MiB "
        f"(real {llc_bytes / MIB:g} MiB); associativity ASSUMED (not published)"
    )
    notes = {"sets": geometry_note, "ways": geometry_note, "line_bytes": _LINE_NOTE, **sources}
    return Hardware(name, label, llc_bytes, sets, ways, *latency, clock_ghz, hbm, set_aside, notes)


_LINE_NOTE = "CUDA programming guide: L2 lines of 128 B in 4 x 32 B sectors"
_CHASE = "public pointer-chase microbenchmarks: "
# cudaDeviceProp of the H200 the GPU prototype ran on, recorded in its results JSON.
_H200_DEVICE = "reported by an H200 (benchmarks/gpu/results/h200-run1.json): "
_CUDA_75 = "CUDA programming guide: persisting-L2 set-aside at most 75 % of L2"

PRESETS: dict[str, Hardware] = {
    "h100": _preset(
        "h100",
        "NVIDIA H100 SXM",
        50 * MIB,
        (291, 700),
        1.98,
        3.35e12,
        int(0.75 * 50 * MIB),
        {
            "llc_bytes": "NVIDIA H100 architecture whitepaper: H100 SXM L2 50 MiB",
            "llc_hit_cycles": _CHASE + "L2 load latency ~291 cycles (H100)",
            "dram_cycles": _CHASE + "DRAM load latency ~700 cycles (H100)",
            "clock_ghz": "ASSUMED: 1.98 GHz boost clock (NVIDIA H100 SXM spec)",
            "hbm_bytes_per_s": "NVIDIA H100 datasheet: HBM3 3.35 TB/s (H100 SXM)",
            "set_aside_max_bytes": _CUDA_75 + ": 37.5 MiB",
        },
    ),
    "h200": _preset(
        "h200",
        "NVIDIA H200",
        60 * MIB,
        (291, 700),
        1.98,
        4.8e12,
        int(37.5 * MIB),
        {
            "llc_bytes": _H200_DEVICE + "l2CacheSize 62,914,560 B = 60 MiB",
            "llc_hit_cycles": "ASSUMED: as H100 (same GH100 die), 291 cycles",
            "dram_cycles": "ASSUMED: as H100 (same GH100 die), 700 cycles",
            "clock_ghz": "ASSUMED: 1.98 GHz boost clock, as H100 SXM",
            "hbm_bytes_per_s": "NVIDIA H200 datasheet: HBM3e 4.8 TB/s",
            "set_aside_max_bytes": _H200_DEVICE
            + "persistingL2CacheMaxSize 39,321,600 B = 37.5 MiB",
        },
    ),
    "b200": _preset(
        "b200",
        "NVIDIA B200",
        int(126.5 * MIB),
        (295, 860),
        1.965,
        8e12,
        int(0.75 * 126.5 * MIB),
        {
            "llc_bytes": "public microbenchmarks: B200 L2 126.5 MiB (measured)",
            "llc_hit_cycles": _CHASE + "L2 load latency ~295 cycles (B200)",
            "dram_cycles": _CHASE + "DRAM load latency ~860 cycles (B200)",
            "clock_ghz": "ASSUMED: 1.965 GHz boost clock (no latency source states its clock)",
            "hbm_bytes_per_s": "NVIDIA B200 specifications: HBM3e 8 TB/s",
            "set_aside_max_bytes": _CUDA_75 + ": 94.875 MiB",
        },
    ),
    "mi300x": _preset(
        "mi300x",
        "AMD Instinct MI300X",
        256 * MIB,
        (500, 900),
        2.1,
        5.3e12,
        int(0.75 * 256 * MIB),
        {
            "llc_bytes": "AMD CDNA 3 architecture whitepaper: MI300X Infinity Cache 256 MiB",
            "line_bytes": "ASSUMED: 128 B lines of 32 B sectors like the NVIDIA parts",
            "llc_hit_cycles": "ASSUMED: 500 cycles, placeholder (no public measurement used)",
            "dram_cycles": "ASSUMED: 900 cycles, placeholder (no public measurement used)",
            "clock_ghz": "ASSUMED: 2.1 GHz peak engine clock (AMD MI300X datasheet)",
            "hbm_bytes_per_s": "AMD MI300X datasheet: HBM3 5.3 TB/s",
            "set_aside_max_bytes": "ASSUMED: no persisting control documented; 75 % by "
            "analogy with CUDA's set-aside (a what-if)",
        },
    ),
}


def hardware(name: str) -> Hardware:
    """The preset called `name` (case-insensitive)."""
    try:
        return PRESETS[name.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(PRESETS)
        raise DsacacheError(f"unknown hardware {name!r} (known: {known})") from None
