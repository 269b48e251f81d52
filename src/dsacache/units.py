"""Units every stage shares: byte multiples and the GPU cache line.

One definition each, so a size means the same thing everywhere: sizes given as MiB are 2**20
bytes (the `*_mib` options), and a cache line is 128 bytes of four 32-byte sectors on every
GPU preset (CUDA programming guide, "device memory accesses").
"""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
LINE_BYTES = 128
LINE_SHIFT = 7  # byte address >> LINE_SHIFT = line id
SECTOR_BYTES = 32
SECTOR_SHIFT = 5
SECTORS_PER_LINE = LINE_BYTES // SECTOR_BYTES

assert 1 << LINE_SHIFT == LINE_BYTES and 1 << SECTOR_SHIFT == SECTOR_BYTES


def to_mib(n_bytes: float) -> float:
    """Bytes as MiB (2**20 bytes)."""
    return n_bytes / MIB


def from_mib(mib: float) -> int:
    """MiB as whole bytes, rounded down (every reservation rounds down)."""
    return int(mib * MIB)


def lines_of(n_bytes: int) -> int:
    """Whole 128-byte lines in `n_bytes` (rounded down)."""
    return n_bytes >> LINE_SHIFT
