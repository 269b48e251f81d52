"""The L2 footprint sweep on the device: the access pattern of RRZE gpu-benches' gpu-l2-cache.

A launch has `blocks` programs (the public curves: 100,000 blocks of 1024 threads); program b
reads chunk (b mod n_chunks) of a data set of n_chunks chunks of `chunk` bytes, so every SM
re-reads the same data set again and again, many SMs at once. Bytes read / time = the effective
bandwidth B. While the data set fits in L2, B is the L2's bandwidth; once it no longer fits, the
DRAM's. With B_l2 the plateau at small sizes and B_dram the tail at large ones, the fraction of
reads L2 served is

    h = (1/B_dram - 1/B) / (1/B_dram - 1/B_l2)

(each byte costs 1/B_l2 on a hit and 1/B_dram on a miss; B is their h-weighted harmonic mean),
with the plateau and tail chosen as for the bundled public curves (sweep_hit_rates).
"""

# Triton kernel arguments stay unannotated: Triton reads annotations as type specialisations.
# ruff: noqa: ANN001

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import triton
import triton.language as tl

from dsacache.errors import DsacacheError

if TYPE_CHECKING:
    import torch

KIB = 1024
SWEEP_BLOCK = 4096  # fp32 elements per load tile: 16 B per thread per load at 1024 threads
SWEEP_WARPS = 32  # 1024 threads per program, as the public benchmark's blocks


@triton.jit
def _sweep_read_kernel(buf_ptr, out_ptr, n_chunks, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """Program b sums chunk (b mod n_chunks) of buf (CHUNK fp32 elements) into out[b]."""
    b = tl.program_id(0)
    base = (b % n_chunks).to(tl.int64) * CHUNK
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), tl.float32)
    for i in range(0, CHUNK, BLOCK):
        acc += tl.load(buf_ptr + base + i + offs)
    tl.store(out_ptr + b, tl.sum(acc, 0))


def sweep_read(buf: torch.Tensor, out: torch.Tensor, n_chunks: int, chunk_elems: int) -> None:
    """One launch of out.numel() programs over the first n_chunks x chunk_elems of buf (fp32)."""
    if chunk_elems % SWEEP_BLOCK or n_chunks < 1 or n_chunks * chunk_elems > buf.numel():
        raise DsacacheError(
            f"L2 sweep: {n_chunks} chunks of {chunk_elems} elements do not fit a buffer of "
            f"{buf.numel()} (chunk must be a multiple of {SWEEP_BLOCK} fp32)"
        )
    _sweep_read_kernel[(out.numel(),)](
        buf, out, n_chunks, CHUNK=chunk_elems, BLOCK=SWEEP_BLOCK, num_warps=SWEEP_WARPS
    )


@dataclass(frozen=True)
class SweepPoint:
    size_kib: int  # the data set actually swept: n_chunks x chunk
    ms: float  # median time of one launch
    gb_per_s: float  # bytes read per launch / ms


def measure_sweep(
    sizes_kib: Sequence[int],
    *,
    chunk_kib: int,
    blocks: int,
    repeats: int,
    device: str,
    timer: Callable[[Callable[[], None]], float],
) -> list[SweepPoint]:
    """Time the sweep at every data set size (rounded down to whole chunks). timer(fn) returns
    the ms of one call of fn (CUDA events on a GPU, wall clock on CPU). One warm-up launch per
    size, then the median of `repeats` launches."""
    import torch

    chunk_elems = chunk_kib * KIB // 4
    if chunk_kib < 1 or chunk_elems % SWEEP_BLOCK:
        raise DsacacheError(f"L2 sweep: chunk {chunk_kib} KiB is not a multiple of 16 KiB")
    n_max = max(max(int(s) // chunk_kib, 1) for s in sizes_kib)
    buf = torch.rand(n_max * chunk_elems, device=device, dtype=torch.float32)
    out = torch.empty(blocks, device=device, dtype=torch.float32)
    points = []
    for s in sizes_kib:
        n = max(int(s) // chunk_kib, 1)
        sweep_read(buf, out, n, chunk_elems)
        ms = float(np.median([timer(lambda n=n: sweep_read(buf, out, n, chunk_elems))
                              for _ in range(repeats)]))  # fmt: skip
        read = blocks * chunk_elems * 4
        points.append(SweepPoint(n * chunk_kib, ms, read / (ms * 1e-3) / 1e9))
    return points


def sweep_hit_rates(points: Sequence[SweepPoint], l2_bytes: int) -> dict[str, Any]:
    """The measured sweep as hit rates, with the same plateau and tail as the bundled public
    curves (dsacache.sim.llc.l2_measured: B_l2 the median from 8 MiB to half the L2, B_dram the
    median from twice the L2): `measured_hit_rate` clipped to [0, 1], `_raw` not."""
    from dsacache.sim.llc.l2_measured import hit_rates

    sizes = np.array([p.size_kib for p in points], np.int64)
    bw = np.array([p.gb_per_s for p in points], np.float64)
    b_l2, b_dram, h = hit_rates(sizes, bw, l2_bytes / KIB)
    if not b_l2 > b_dram:
        raise DsacacheError(f"L2 sweep: plateau {b_l2:.4g} GB/s is not above the tail {b_dram:.4g}")
    return {
        "measured_hit_rate": [float(x) for x in np.clip(h, 0.0, 1.0)],
        "measured_hit_rate_raw": [float(x) for x in h],
        "b_l2_gb_per_s": b_l2,
        "b_dram_gb_per_s": b_dram,
        "l2_bytes": int(l2_bytes),
    }
