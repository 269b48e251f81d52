"""Performance-model parameters per hardware preset, built on the hardware table's facts.

The LLC / HBM latencies, clock and HBM bandwidth are the hardware table's own numbers
(dsacache/hardware.py, each with its source there); every row with L2 and DRAM latencies is a
preset. The one number the model adds is the memory-level parallelism of the
blocking KV gathers (MLP: 128-byte gather loads in flight per GPU). Default, from Little's law
on the paper's H200 measurement (Levy 2026, NCU, sparse decode used 7.3 % of HBM bandwidth):

    MLP = 0.073 x 4.8e12 B/s x (700 cycles / 1.98 GHz) / 128 B ~= 968 lines in flight.

MLP is a property of the SMs (loads in flight), not of the HBM, so H100 (same GH100 die and SM
count) uses the same value; for B200 and MI300X it is ASSUMED the same (no measurement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from dsacache.errors import DsacacheError
from dsacache.hardware import GPUS, GpuSpec, gpu
from dsacache.units import LINE_BYTES

# Levy 2026 (arXiv 2603.13430): H200 NCU, sparse decode HBM bandwidth utilisation 7.3 %.
SPARSE_HBM_UTILISATION = 0.073
_H200 = gpu("h200")
DEFAULT_MLP_LINES = (
    SPARSE_HBM_UTILISATION
    * _H200.hbm_bytes_per_s
    * (_H200.dram_cycles / (_H200.clock_ghz * 1e9))
    / LINE_BYTES
)
_MLP_NOTE = (
    "Little's law on Levy 2026's H200 NCU sparse-decode HBM utilisation 7.3 %: "
    "0.073 x 4.8 TB/s x 700 cycles / 1.98 GHz / 128 B"
)
_MLP_SOURCES = {
    "h100": _MLP_NOTE + "; H100 shares the GH100 die and SM count (ASSUMED transfer)",
    "h200": _MLP_NOTE,
    "gh200": _MLP_NOTE + "; GH200's GPU is a GH100 with the same SM count (ASSUMED transfer)",
    "b200": "ASSUMED: " + _MLP_NOTE + ", transferred unchanged to B200 (no measurement)",
    "mi300x": "ASSUMED: " + _MLP_NOTE + ", transferred unchanged to MI300X (no measurement)",
}


@dataclass(frozen=True)
class PerfParams:
    """Hardware numbers the step-time model uses (all overridable).

    hbm_bytes_per_s: streaming and gather bandwidth; llc_hit_ns / hbm_ns: latency of one
    blocking load that hits the LLC (or the reserved region) / goes to HBM; mlp_lines: gather
    loads in flight; line_bytes: one load.
    """

    name: str
    hbm_bytes_per_s: float
    llc_hit_ns: float
    hbm_ns: float
    mlp_lines: float
    line_bytes: int = LINE_BYTES
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for f in ("hbm_bytes_per_s", "llc_hit_ns", "hbm_ns", "mlp_lines", "line_bytes"):
            v = getattr(self, f)
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v <= 0:
                raise DsacacheError(f"perf parameter {f} must be a finite number > 0, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["sources"] = dict(self.sources)
        return out


def params_from_hardware(hw: GpuSpec, mlp_lines: float | None = None) -> PerfParams:
    """PerfParams from a hardware-table row (cycles -> ns at the row's clock)."""
    if hw.llc_hit_cycles is None or hw.dram_cycles is None:
        with_latencies = ", ".join(n for n, g in GPUS.items() if g.has_llc_latencies)
        raise DsacacheError(
            f"hardware {hw.name!r} has no public L2 / DRAM latencies, which the perf model "
            f"needs (presets with them: {with_latencies})"
        )
    ns_per_cycle = 1.0 / hw.clock_ghz
    src = hw.sources
    clock = src.get("clock_ghz", "")
    return PerfParams(
        name=hw.name,
        hbm_bytes_per_s=hw.hbm_bytes_per_s,
        llc_hit_ns=hw.llc_hit_cycles * ns_per_cycle,
        hbm_ns=hw.dram_cycles * ns_per_cycle,
        mlp_lines=DEFAULT_MLP_LINES if mlp_lines is None else mlp_lines,
        line_bytes=LINE_BYTES,
        sources={
            "hbm_bytes_per_s": src.get("hbm_bytes_per_s", ""),
            "llc_hit_ns": f"{src.get('llc_hit_cycles', '')}; at clock {clock}",
            "hbm_ns": f"{src.get('dram_cycles', '')}; at clock {clock}",
            "mlp_lines": _MLP_SOURCES.get(hw.name, "ASSUMED: " + _MLP_NOTE),
            "line_bytes": src.get(
                "line_bytes", "CUDA programming guide: L2 lines of 128 B in 4 x 32 B sectors"
            ),
        },
    )


def perf_params(name: str, **overrides: float | None) -> PerfParams:
    """The preset `name` (h100, h200, b200, gh200, mi300x) with overrides (None = keep); an
    overridden number's source becomes "given"."""
    p = params_from_hardware(gpu(name))
    given = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in fields(PerfParams)} - {"name", "sources"}
    bad = sorted(set(given) - known)
    if bad:
        raise DsacacheError(
            f"unknown perf parameter {bad[0]!r} (known: {', '.join(sorted(known))})"
        )
    if not given:
        return p
    sources = {**p.sources, **{k: "given" for k in given}}
    return replace(p, **given, sources=sources)
