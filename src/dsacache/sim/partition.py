"""How the reserved region is split: among layers (global, per-layer, pinned layers), and
optionally once per request.

Two ways to make one. `parse_partition` reads the user's spec and divides one capacity N among
the regions (`simulate --partition`). `scoped` gives every region the same capacity, for a
buffer per layer, per request or per (request, layer) (an HBM hot buffer of N tokens each).
A region never shares a key with another: keys are per (request, layer, token).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsacache.errors import DsacacheError

# Capacities are int64 counts of tokens, lines and bytes: a region is refused from 2**62 bytes
# (4 EiB, far above any trace's key space), so no count can overflow.
MAX_CAPACITY_BYTES = 1 << 62


SCOPES = ("global", "per-layer", "per-request", "per-request-layer")


@dataclass(frozen=True)
class Partition:
    """spec: the user's string; of_layer[l]: region id of layer l (-1: layer bypasses the
    reservation, every access a miss); capacity[p]: tokens region p holds. per_request: every
    request has its own copy of these regions (same capacities); `region_map` numbers them."""

    spec: str
    of_layer: np.ndarray  # int32 [layers]
    capacity: np.ndarray  # int64 [regions] (of one request, when per_request)
    per_request: bool = False

    @property
    def regions(self) -> int:
        """Regions of one copy (all of them unless per_request)."""
        return int(self.capacity.shape[0])

    def region_map(self, requests: int) -> tuple[np.ndarray, np.ndarray]:
        """(region of every (request, layer): int32 [requests, layers], -1 = bypass; the
        capacity of every region: int64). Per request, request r's copy of region p is
        r * regions + p."""
        of = np.broadcast_to(self.of_layer.astype(np.int32), (requests, self.of_layer.shape[0]))
        if not self.per_request:
            return np.ascontiguousarray(of), self.capacity.astype(np.int64)
        shift = (np.arange(requests, dtype=np.int32) * self.regions)[:, None]
        region_of = np.where(of >= 0, of + shift, -1).astype(np.int32)
        return region_of, np.tile(self.capacity.astype(np.int64), requests)


def scoped(scope: str, layers: int, capacity_tokens: int) -> Partition:
    """Every region holds `capacity_tokens`: one region (`global`), one per layer, one per
    request, or one per (request, layer) (SCOPES)."""
    if scope not in SCOPES:
        raise DsacacheError(f"unknown partition scope {scope!r} ({', '.join(SCOPES)})")
    _check_capacity(capacity_tokens)
    by_layer = scope in ("per-layer", "per-request-layer")
    of_layer = np.arange(layers, dtype=np.int32) if by_layer else np.zeros(layers, np.int32)
    cap = np.full(layers if by_layer else 1, capacity_tokens, np.int64)
    spec = f"{scope} ({capacity_tokens} each)"
    return Partition(spec, of_layer, cap, per_request=scope.startswith("per-request"))


def _check_capacity(capacity_tokens: int) -> None:
    if capacity_tokens < 0:
        raise DsacacheError(f"capacity must be >= 0 tokens, got {capacity_tokens}")
    if capacity_tokens >= MAX_CAPACITY_BYTES:
        raise DsacacheError(f"capacity {capacity_tokens} tokens is too large (limit 2**62)")


def parse_partition(spec: str, layers: int, capacity_tokens: int) -> Partition:
    """`global` | `per-layer` (floor(N / layers) each) | `pinned:L1,L2,...` (those share N)."""
    _check_capacity(capacity_tokens)
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
