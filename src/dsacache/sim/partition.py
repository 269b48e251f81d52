"""How the reserved region is split among layers: global, per-layer, or pinned layers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsacache.errors import DsacacheError

# Capacities are int64 counts of tokens, lines and bytes: a region is refused from 2**62 bytes
# (4 EiB, far above any trace's key space), so no count can overflow.
MAX_CAPACITY_BYTES = 1 << 62


@dataclass(frozen=True)
class Partition:
    """spec: the user's string; of_layer[l]: region id of layer l (-1: layer bypasses the
    reservation, every access a miss); capacity[p]: tokens region p holds."""

    spec: str
    of_layer: np.ndarray  # int32 [layers]
    capacity: np.ndarray  # int64 [regions]

    @property
    def regions(self) -> int:
        return int(self.capacity.shape[0])


def parse_partition(spec: str, layers: int, capacity_tokens: int) -> Partition:
    """`global` | `per-layer` (floor(N / layers) each) | `pinned:L1,L2,...` (those share N)."""
    if capacity_tokens < 0:
        raise DsacacheError(f"capacity must be >= 0 tokens, got {capacity_tokens}")
    if capacity_tokens >= MAX_CAPACITY_BYTES:
        raise DsacacheError(f"capacity {capacity_tokens} tokens is too large (limit 2**62)")
    s = spec.strip()
    if s == "global":
        return Partition(s, np.zeros(layers, np.int32), np.array([capacity_tokens], np.int64))
    if s == "per-layer":
        return Partition(
            s,
            np.arange(layers, dtype=np.int32),
            np.full(layers, capacity_tokens // layers, np.int64),
        )
    if s.startswith("pinned:"):
        try:
            pinned = sorted({int(x) for x in s[len("pinned:") :].split(",") if x.strip()})
        except ValueError:
            raise DsacacheError(f"partition {spec!r}: pinned layers must be integers") from None
        if not pinned:
            raise DsacacheError(f"partition {spec!r}: name at least one layer")
        bad = [x for x in pinned if not 0 <= x < layers]
        if bad:
            raise DsacacheError(f"partition {spec!r}: layer {bad[0]} not in 0..{layers - 1}")
        of_layer = np.full(layers, -1, np.int32)
        of_layer[pinned] = 0
        return Partition(s, of_layer, np.array([capacity_tokens], np.int64))
    raise DsacacheError(f"unknown partition {spec!r} (global, per-layer, pinned:L1,L2,...)")
