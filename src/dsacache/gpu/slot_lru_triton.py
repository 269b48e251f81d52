"""The slot-table LRU update of slot_lru.py as one Triton kernel (the GPU side).

One program per layer walks that layer's accesses (request -> slot) serially with scalar loads
and stores, O(1) per access through the doubly-linked recency list; layers run in parallel.
State and outputs are those of slot_lru.SlotLRU (same tensors, moved to the device).

On a GPU, a scalar store and a later load of the same address by another thread of the program
need ordering: the kernel runs with one warp, loads mutable state as volatile (no stale L1) and
puts a barrier after each group of stores. The serial walk is latency-bound by design; the
bench times it separately from the gather and checks it against the CPU walk.
"""

# Triton kernel arguments stay unannotated: Triton reads annotations as type specialisations.
# ruff: noqa: ANN001

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

if TYPE_CHECKING:
    import torch

    from dsacache.gpu.slot_lru import SlotLRU


@triton.jit
def _lru_kernel(
    idx_ptr,
    table_ptr,
    key_ptr,
    link_ptr,
    size_ptr,
    hit_ptr,
    slot_ptr,
    k,
    max_ctx,
    nslots,
    key_stride,
    N_ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # N_ACC (requests x k) is a constexpr: the interpreter cannot loop to a runtime scalar
    n_acc = N_ACC
    layer = tl.program_id(0).to(tl.int64)
    idx_ptr += layer * n_acc
    hit_ptr += layer * n_acc
    slot_ptr += layer * n_acc
    n_req = n_acc // k
    table_ptr += layer * n_req * max_ctx
    key_ptr += layer * key_stride
    link_ptr += layer * 2 * (nslots + 1)
    head = nslots
    sz = tl.load(size_ptr + layer)
    for i in range(0, N_ACC):
        tok = tl.load(idx_ptr + i)
        r = i // k
        tl.store(hit_ptr + i, tl.zeros((), tl.uint8))
        if tok >= 0:
            if nslots > 0:
                tpos = r.to(tl.int64) * max_ctx + tok
                cur = tl.load(table_ptr + tpos, volatile=True)
                if cur >= 0:
                    tl.store(hit_ptr + i, tl.full((), 1, tl.uint8))
                    first = tl.load(link_ptr + 2 * head + 1, volatile=True)
                    if first != cur:
                        pv = tl.load(link_ptr + 2 * cur, volatile=True)
                        nx = tl.load(link_ptr + 2 * cur + 1, volatile=True)
                        tl.store(link_ptr + 2 * pv + 1, nx)
                        tl.store(link_ptr + 2 * nx, pv)
                        tl.debug_barrier()
                        tl.store(link_ptr + 2 * cur, head)
                        tl.store(link_ptr + 2 * cur + 1, first)
                        tl.store(link_ptr + 2 * first, cur)
                        tl.store(link_ptr + 2 * head + 1, cur)
                        tl.debug_barrier()
                else:
                    v = sz
                    if sz < nslots:
                        sz += 1
                    else:
                        v = tl.load(link_ptr + 2 * head, volatile=True)
                        vp = tl.load(link_ptr + 2 * v, volatile=True)
                        tl.store(link_ptr + 2 * vp + 1, head)
                        tl.store(link_ptr + 2 * head, vp)
                        old = tl.load(key_ptr + v, volatile=True)
                        tl.store(table_ptr + old.to(tl.int64), -1)
                        tl.debug_barrier()
                    tl.store(key_ptr + v, (r * max_ctx + tok).to(tl.int32))
                    tl.store(table_ptr + tpos, v)
                    first = tl.load(link_ptr + 2 * head + 1, volatile=True)
                    tl.store(link_ptr + 2 * v, head)
                    tl.store(link_ptr + 2 * v + 1, first)
                    tl.store(link_ptr + 2 * first, v)
                    tl.store(link_ptr + 2 * head + 1, v)
                    tl.debug_barrier()
    tl.store(size_ptr + layer, sz)
    tl.debug_barrier()
    # slots at the end of the step, vectorised
    for start in range(0, N_ACC, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inb = offs < n_acc
        tok = tl.load(idx_ptr + offs, mask=inb, other=-1)
        ok = (tok >= 0) & (nslots > 0)
        tpos = (offs // k).to(tl.int64) * max_ctx + tl.where(ok, tok, 0)
        sl = tl.load(table_ptr + tpos, mask=ok, other=-1, volatile=True)
        tl.store(slot_ptr + offs, sl, mask=inb)


def lru_step_triton(
    lru: SlotLRU, indices: torch.Tensor, hit: torch.Tensor, slot: torch.Tensor
) -> None:
    """One step for all layers on lru's device: indices int32 [layers, requests, k]
    (contiguous, same device); writes hit (uint8) and slot (int32) of the same shape."""
    n_layers, n_req, k = indices.shape
    _lru_kernel[(n_layers,)](
        indices,
        lru.table,
        lru.slot_key,
        lru.link,
        lru.size,
        hit,
        slot,
        k,
        lru.max_context,
        lru.slots,
        lru.slot_key.shape[1],
        N_ACC=n_req * k,
        BLOCK=1024,
        num_warps=1,
        num_stages=1,
    )
