"""The bundled public L2 footprint sweeps (data/README.md) and their conversion to hit rates.

With B_l2 the plateau (the median bandwidth over data sets from 8 MiB to half the L2: large
enough that L1 and start-up effects are gone, small enough that every line fits) and B_dram the
tail (the median over data sets of at least twice the L2), a sweep at bandwidth B is served
from L2 for the fraction h = (1/B_dram - 1/B) / (1/B_dram - 1/B_l2) of its bytes: the time per
byte is h / B_l2 + (1 - h) / B_dram.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from dsacache.errors import DsacacheError

PLATEAU_MIN_KIB = 8 * 1024
MEASURED = {"h200": "l2-sweep-h200.tsv", "a100-80gb": "l2-sweep-a100-80gb.tsv"}


@dataclass(frozen=True)
class MeasuredSweep:
    name: str
    sizes_kib: np.ndarray  # int64
    gb_per_s: np.ndarray
    b_l2: float  # plateau GB/s
    b_dram: float  # tail GB/s
    hit_rate: np.ndarray

    def at(self, size_kib: int) -> float | None:
        """The measured hit rate at exactly `size_kib`, or None if the sweep has no such point."""
        i = np.flatnonzero(self.sizes_kib == size_kib)
        return float(self.hit_rate[i[0]]) if i.size else None


def hit_rates(
    sizes_kib: np.ndarray, gbps: np.ndarray, l2_kib: float
) -> tuple[float, float, np.ndarray]:
    """(B_l2, B_dram, h per point) of a sweep over an L2 of `l2_kib` KiB (module docstring)."""
    plateau = gbps[(sizes_kib >= PLATEAU_MIN_KIB) & (sizes_kib <= l2_kib / 2)]
    tail = gbps[sizes_kib >= 2 * l2_kib]
    if plateau.size == 0 or tail.size == 0:
        raise DsacacheError("the sweep needs points from 8 MiB to L2/2 and beyond 2 x L2")
    b_l2, b_dram = float(np.median(plateau)), float(np.median(tail))
    h = (1 / b_dram - 1 / gbps) / (1 / b_dram - 1 / b_l2)
    return b_l2, b_dram, h


def bandwidth_equivalent_hit_rate(
    near: np.ndarray,
    far: np.ndarray,
    b_l2: float,
    b_dram: float,
    far_cost: float,
    overlap: float = 0.0,
) -> np.ndarray:
    """The hit rate the measured curves would show for a model with `near` and `far` fractions of
    requests served by the near / far L2 partition (the rest from DRAM), converted with the same
    formula as the measured bandwidths (module docstring). The modelled time per request is
    (1 - overlap) x serial + overlap x concurrent, with B_l2 the plateau (where requests are
    near) and a far hit `far_cost` times as slow as a near one:
    serial = (near + far x far_cost) / B_l2 + miss / B_dram (L2 and DRAM take turns, the
    conversion's own assumption: the result is near + far when far_cost is 1);
    concurrent = max((1 + far x (far_cost - 1)) / B_l2, miss / B_dram) (every request passes
    L2 while DRAM serves the misses at the same time: whichever is busier sets the pace)."""
    if not b_l2 > b_dram > 0:
        raise DsacacheError(f"need B_l2 > B_dram > 0, got {b_l2} and {b_dram}")
    if far_cost < 1:
        raise DsacacheError(f"a far hit cannot be faster than a near one: far_cost {far_cost}")
    if not 0.0 <= overlap <= 1.0:
        raise DsacacheError(f"overlap must be in [0, 1], got {overlap}")
    near, far = np.asarray(near, np.float64), np.asarray(far, np.float64)
    miss = 1.0 - near - far
    l2_time = (near + far * far_cost) / b_l2
    serial = l2_time + miss / b_dram
    concurrent = np.maximum((1.0 + far * (far_cost - 1.0)) / b_l2, miss / b_dram)
    t = (1.0 - overlap) * serial + overlap * concurrent
    return (1 / b_dram - t) / (1 / b_dram - 1 / b_l2)


def measured_sweep(name: str, l2_bytes: int) -> MeasuredSweep:
    """The bundled sweep of GPU `name` (h200, a100-80gb)."""
    if name not in MEASURED:
        known = ", ".join(MEASURED)
        raise DsacacheError(f"no measured L2 sweep for {name!r} (bundled: {known})")
    text = resources.files("dsacache.sim.llc").joinpath("data", MEASURED[name]).read_text()
    rows = [ln.split("\t") for ln in text.splitlines() if ln and ln[0].isdigit()]
    sizes = np.array([int(r[0]) for r in rows], np.int64)
    gbps = np.array([float(r[1]) for r in rows])
    b_l2, b_dram, h = hit_rates(sizes, gbps, l2_bytes / 1024)
    return MeasuredSweep(name, sizes, gbps, b_l2, b_dram, h)
