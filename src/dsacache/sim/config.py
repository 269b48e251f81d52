"""What one token-level simulation runs: policy, reserved capacity, partition, and where
the `near-miss` policy takes its prefetches from.

Capacity is given either in tokens or in MiB (2**20 bytes; the paper's "MB" read as 10**6 bytes
is `mb_to_mib`). A token here is one key (request, layer, token): one KV row of one layer,
`geometry.kv_bytes_per_token` bytes. So `capacity_mib` X means floor(X * 2**20 /
kv_bytes_per_token) tokens. The one rounding rule for every reservation in dsacache: round
DOWN to the unit the region is made of (tokens here, whole ways or 128-byte lines in the LLC
model), so a region never holds more bytes than it was given; the requested and the effective
size are both reported. Zero capacity is valid: every access misses. A capacity of 2**62 bytes
(4 EiB) or more is refused with a one-line error (counts are int64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from dsacache.errors import DsacacheError
from dsacache.sim.partition import MAX_CAPACITY_BYTES
from dsacache.sim.policies import POLICIES
from dsacache.sim.policies.base import Setting
from dsacache.sim.policies.near_miss import SOURCES, NearMiss
from dsacache.trace.geometry import Geometry
from dsacache.units import MIB

# where `near-miss` takes the tokens it prefetches: the trace's near-miss rows (the indexer's
# ranks k..k+m-1, recorded with `dsacache record --near-miss M`), or the layer below's top-k
# (the sweep's grid reads these two names)
NEAR_MISS_SOURCES = SOURCES
NEAR_MISS_POLICY = NearMiss.name


def all_settings() -> dict[str, Setting]:
    """Every policy setting a registered policy declares, by SimConfig field."""
    return {s.field: s for c in POLICIES.values() for s in c.settings}


def known_policies() -> str:
    return ", ".join(sorted(POLICIES))


def mb_to_mib(mb: float) -> float:
    """Decimal megabytes (10**6 B, as the paper's tables write MB) in MiB (2**20 B)."""
    return mb * 1e6 / MIB


@dataclass(frozen=True)
class SimConfig:
    """policy: a name in POLICIES; exactly one of capacity_tokens / capacity_mib (MiB);
    partition: `global`, `per-layer` or `pinned:L1,L2,...` (checked against the trace's layers
    when the simulation starts). The other fields are policy settings: each is required by the
    policies that declare it (TokenPolicy.settings, read in their `configure`) and refused for
    the others. near_miss_source: `near-miss`'s (NEAR_MISS_SOURCES): it never switches with the
    trace's contents."""

    policy: str
    capacity_tokens: int | None = None
    capacity_mib: float | None = None
    partition: str = "global"
    near_miss_source: str | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise DsacacheError(f"unknown policy {self.policy!r} (known: {known_policies()})")
        tok, mb = self.capacity_tokens, self.capacity_mib
        if (tok is None) == (mb is None):
            raise DsacacheError(
                "give exactly one capacity: capacity_tokens (--capacity-tokens) or "
                "capacity_mib (--capacity-mib)"
            )
        if tok is not None:
            if isinstance(tok, bool) or not isinstance(tok, Integral):
                raise DsacacheError(f"capacity_tokens must be an integer, got {tok!r}")
            if tok < 0:
                raise DsacacheError(f"capacity must be >= 0 tokens, got {tok}")
            if tok >= MAX_CAPACITY_BYTES:
                raise DsacacheError(f"capacity {tok} tokens is too large (limit 2**62 bytes)")
        else:
            if isinstance(mb, bool) or not isinstance(mb, Real) or not math.isfinite(mb):
                raise DsacacheError(f"capacity_mib must be a finite number, got {mb!r}")
            if mb < 0:
                raise DsacacheError(f"capacity must be >= 0 MiB, got {mb}")
            if float(mb) * MIB >= MAX_CAPACITY_BYTES:
                raise DsacacheError(f"capacity {mb} MiB is too large (limit 2**42 MiB)")
        if not isinstance(self.partition, str) or not self.partition.strip():
            raise DsacacheError(f"partition must be a non-empty string, got {self.partition!r}")
        self._check_settings()

    def _check_settings(self) -> None:
        """Each policy setting is given exactly where a policy declares it, with a known value."""
        mine = {s.field: s for s in POLICIES[self.policy].settings}
        for field, setting in all_settings().items():
            value = getattr(self, field)
            if field in mine:
                if value not in setting.values:
                    raise DsacacheError(
                        f"{self.policy} needs {setting.what} ({setting.flag}): "
                        f"{' or '.join(setting.values)}, got {value!r}"
                    )
            elif value is not None:
                owners = " / ".join(n for n, c in sorted(POLICIES.items()) if setting in c.settings)
                raise DsacacheError(
                    f"{field} {value!r} is for the {owners} policy only, not {self.policy!r}"
                )

    def tokens(self, geometry: Geometry) -> int:
        """Reserved capacity in tokens (capacity_mib: floor(MiB * 2**20 / kv_bytes_per_token))."""
        kv = geometry.kv_bytes_per_token
        if self.capacity_tokens is None:
            return int(math.floor(float(self.capacity_mib) * MIB / kv))
        tok = int(self.capacity_tokens)
        if tok * kv >= MAX_CAPACITY_BYTES:
            raise DsacacheError(f"capacity {tok} tokens x {kv} B is too large (limit 2**62 bytes)")
        return tok
