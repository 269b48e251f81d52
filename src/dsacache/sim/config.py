"""What one token-level simulation runs: policy, reserved capacity, partition.

Capacity is given either in tokens or in MiB. A token here is one key (request, layer, token):
one KV row of one layer, `geometry.kv_bytes_per_token` bytes. So `capacity_mb` X means
floor(X * 2**20 / kv_bytes_per_token) tokens (MiB = 2**20 bytes, rounded down: the region never
holds more bytes than it was given). Zero capacity is valid: every access misses. A capacity
of 2**62 bytes (4 EiB) or more is refused with a one-line error (counts are int64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from dsacache.errors import DsacacheError
from dsacache.sim.partition import MAX_CAPACITY_BYTES
from dsacache.sim.policies import POLICIES
from dsacache.trace.geometry import Geometry

MIB = 1 << 20


def known_policies() -> str:
    return ", ".join(sorted(POLICIES))


@dataclass(frozen=True)
class SimConfig:
    """policy: a name in POLICIES; exactly one of capacity_tokens / capacity_mb (MiB);
    partition: `global`, `per-layer` or `pinned:L1,L2,...` (checked against the trace's layers
    when the simulation starts)."""

    policy: str
    capacity_tokens: int | None = None
    capacity_mb: float | None = None
    partition: str = "global"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise DsacacheError(f"unknown policy {self.policy!r} (known: {known_policies()})")
        tok, mb = self.capacity_tokens, self.capacity_mb
        if (tok is None) == (mb is None):
            raise DsacacheError(
                "give exactly one capacity: capacity_tokens (--capacity-tokens) or "
                "capacity_mb (--capacity-mb)"
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
                raise DsacacheError(f"capacity_mb must be a finite number, got {mb!r}")
            if mb < 0:
                raise DsacacheError(f"capacity must be >= 0 MiB, got {mb}")
            if float(mb) * MIB >= MAX_CAPACITY_BYTES:
                raise DsacacheError(f"capacity {mb} MiB is too large (limit 2**42 MiB)")
        if not isinstance(self.partition, str) or not self.partition.strip():
            raise DsacacheError(f"partition must be a non-empty string, got {self.partition!r}")

    def tokens(self, geometry: Geometry) -> int:
        """Reserved capacity in tokens (capacity_mb: floor(MiB * 2**20 / kv_bytes_per_token))."""
        kv = geometry.kv_bytes_per_token
        if self.capacity_tokens is None:
            return int(math.floor(float(self.capacity_mb) * MIB / kv))
        tok = int(self.capacity_tokens)
        if tok * kv >= MAX_CAPACITY_BYTES:
            raise DsacacheError(f"capacity {tok} tokens x {kv} B is too large (limit 2**62 bytes)")
        return tok
