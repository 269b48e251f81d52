"""The LLC reservation for KV: way-partitioning, capacity set-aside, or none.

Every reservation rounds the requested bytes DOWN to its unit (whole ways, 128-byte lines;
the token-level region of front.py: whole ways, then whole tokens), so it never holds more than
it was given; `requested_bytes` and `effective_bytes` are both reported.

Which accesses are *reserved*: those of the reserved classes (default: kv-gather only).

- `way` (Intel CAT style): the first R ways of every set, R = floor(reserve / (sets x 128 B))
  (CAT reserves whole ways, so the reservation is rounded down to a whole number of ways; the
  effective size is reported). A reserved access that misses may allocate only in ways [0, R);
  any other access only in ways [R, ways). Hits are found in any way.
- `set-aside` (NVIDIA persisting-L2 style; the hardware's mechanism is not documented, this is
  the model): reserve / 128 B lines of quota, spread over the sets (set s gets
  floor(lines / sets) + (1 if s < lines mod sets)). A line is *persisting* when a reserved
  access allocated it under quota, or hit it while its set was under quota. Every miss fills an
  invalid or non-persisting way, by the normal policy (so normal traffic uses the set-aside
  capacity whenever persisting lines do not). A reserved miss in a set under quota makes its line
  persisting; at quota (a quota of 0 included) it falls back to a normal fill: the line is
  installed non-persisting, evicting per the normal policy, like CUDA's `missProp` for accesses
  beyond the persisting capacity (so a set-aside never bypasses what `none` would cache). Only
  when every way of the set is persisting does a reserved miss replace the victim among the
  persisting lines (it stays persisting); a normal miss then bypasses. A normal hit leaves the
  flag alone.
  Limit: the hardware's set-aside maximum (75 % of L2 on H100/B200, 37.5 MiB measured on H200).
- `none`: no reservation.

With no way an access may allocate in, it bypasses (counts as a miss, installs nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsacache.errors import DsacacheError
from dsacache.sim.llc.hardware import CacheShape
from dsacache.sim.llc.kernels import RES_NONE, RES_SETASIDE, RES_WAY
from dsacache.sim.llc.stream import CLASSES, KV_GATHER
from dsacache.units import LINE_BYTES, MIB

RESERVATIONS = {"none": RES_NONE, "way": RES_WAY, "set-aside": RES_SETASIDE}


def class_ids(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Class ids of class names (CLASSES)."""
    out = []
    for name in names:
        if name not in CLASSES:
            raise DsacacheError(f"unknown class {name!r} (known: {', '.join(CLASSES)})")
        out.append(CLASSES.index(name))
    if not out:
        raise DsacacheError("reserved classes: give at least one class")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class Reservation:
    """mode in RESERVATIONS; reserve_bytes requested; classes: reserved class ids."""

    mode: str = "none"
    reserve_bytes: int = 0
    classes: tuple[int, ...] = (KV_GATHER,)

    @classmethod
    def from_mib(
        cls, mode: str, reserve_mib: float, classes: tuple[str, ...] = ("kv-gather",)
    ) -> Reservation:
        """reserve_mib in MiB (2**20 bytes), rounded down to whole bytes."""
        m = reserve_mib
        if isinstance(m, bool) or not isinstance(m, int | float):
            raise DsacacheError(f"reserve MiB must be a number, got {m!r}")
        if not math.isfinite(m) or m < 0:
            raise DsacacheError(f"reserve MiB must be a finite number >= 0, got {m}")
        return cls(mode, int(m * MIB), class_ids(classes))

    def resolve(self, shape: CacheShape, set_aside_limit: int) -> ResolvedReservation:
        """Check against the cache and turn into ways / per-set quotas."""
        if self.mode not in RESERVATIONS:
            known = ", ".join(RESERVATIONS)
            raise DsacacheError(f"unknown reservation {self.mode!r} (known: {known}, token)")
        r = int(self.reserve_bytes)
        cap = shape.capacity_bytes
        mib = f"{r / MIB:g} MiB"
        if r < 0:
            raise DsacacheError(f"reservation must be >= 0 bytes, got {r}")
        if r > cap:
            raise DsacacheError(f"reservation {mib} exceeds the LLC ({cap / MIB:g} MiB)")
        quota = np.zeros(shape.sets, dtype=np.int64)
        if self.mode == "none":
            if r:
                raise DsacacheError(
                    f"reservation 'none' with {mib} reserved: choose 'way' or 'set-aside'"
                )
            return ResolvedReservation("none", RES_NONE, self.classes, 0, 0, quota, 0)
        if self.mode == "way":
            way_bytes = shape.sets * LINE_BYTES
            ways = r // way_bytes
            if ways < 1:
                raise DsacacheError(
                    f"way reservation {mib} is less than one way ({way_bytes / MIB:g} MiB)"
                )
            if ways >= shape.ways:
                raise DsacacheError(
                    f"way reservation {mib} takes all {shape.ways} ways; "
                    "leave at least one for the other classes"
                )
            return ResolvedReservation(
                "way", RES_WAY, self.classes, r, ways * way_bytes, quota, ways
            )
        if r > set_aside_limit:
            raise DsacacheError(
                f"set-aside {mib} exceeds the hardware's limit ({set_aside_limit / MIB:g} MiB)"
            )
        lines = r // LINE_BYTES
        if lines < 1:
            raise DsacacheError(f"set-aside {r} B is less than one 128-byte line")
        quota[:] = lines // shape.sets
        quota[: lines % shape.sets] += 1
        return ResolvedReservation(
            "set-aside", RES_SETASIDE, self.classes, r, lines * LINE_BYTES, quota, 0
        )


@dataclass(frozen=True)
class ResolvedReservation:
    mode: str
    mode_id: int
    classes: tuple[int, ...]
    requested_bytes: int
    effective_bytes: int
    quota: np.ndarray  # int64 [sets], set-aside only (zeros otherwise)
    ways: int  # reserved ways, way mode only

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "classes": [CLASSES[c] for c in self.classes],
            "requested_bytes": self.requested_bytes,
            "effective_bytes": self.effective_bytes,
            "ways": self.ways,
        }
