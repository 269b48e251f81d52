"""The parallel LRU step of parallel_lru.py as three Triton kernels (the GPU side).

Same state, same arithmetic and the same slot choices as ParallelTokenLRU's torch path (tested
equal, state included, under the interpreter), in three launches per step for all layers:

1. lookup, one program per layer: each access's old slot and recency rank, its position among
   the layer's valid accesses (a running prefix sum over chunks), and rank -> position of the
   touched residents;
2. hits, one program per (layer, block of BI accesses): the dominance count
   #{j < i : r_j < r_i} in BJ x BI tiles and hit = r_i < S and pos_i + r_i - count < S; a block
   whose first position is already >= S (all misses) skips the tiles;
3. update, one program per layer: new ranks of the untouched residents (a prefix sum over ranks),
   evictions, the free-slot list, entering keys' slots, the new recency permutation.

The shapes (accesses per layer N, slots S) are constexprs: Triton's interpreter cannot loop to a
runtime scalar, and a bench compiles one variant per geometry. Programs 1 and 3 read in a later
phase what other threads of the program stored in an earlier one: a barrier between phases,
volatile loads of those scratch arrays.
"""

# Triton kernel arguments stay unannotated: Triton reads annotations as type specialisations.
# ruff: noqa: ANN001

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from dsacache.gpu.parallel_lru import NOT_RESIDENT

if TYPE_CHECKING:
    import torch

    from dsacache.gpu.parallel_lru import ParallelTokenLRU

BI, BJ = 128, 64  # dominance tile: BI accesses compared with BJ earlier ones at a time
MAX_BLOCK = 2048  # chunk of the per-layer programs


@triton.jit
def _plru_lookup_kernel(
    idx_ptr,
    table_ptr,
    slot_rank_ptr,
    rank_ptr,
    cur_ptr,
    pos_ptr,
    touch_ptr,
    nvalid_ptr,
    k,
    max_ctx,
    table_stride,
    state_stride,
    N: tl.constexpr,
    S: tl.constexpr,
    BLOCK: tl.constexpr,
    NOT_RES: tl.constexpr,
):
    layer = tl.program_id(0).to(tl.int64)
    idx_ptr += layer * N
    rank_ptr += layer * N
    cur_ptr += layer * N
    pos_ptr += layer * N
    table_ptr += layer * table_stride
    slot_rank_ptr += layer * state_stride
    touch_ptr += layer * S
    for start in range(0, S, BLOCK):  # rank -> position of its access, -1: untouched
        rho = start + tl.arange(0, BLOCK)
        tl.store(touch_ptr + rho, tl.full((BLOCK,), -1, tl.int32), mask=rho < S)
    tl.debug_barrier()
    seen = tl.full((), 0, tl.int32)
    for start in range(0, N, BLOCK):
        o = start + tl.arange(0, BLOCK)
        inb = o < N
        tok = tl.load(idx_ptr + o, mask=inb, other=-1)
        valid = tok >= 0
        key = (o // k).to(tl.int64) * max_ctx + tl.where(valid, tok, 0)
        cur = tl.load(table_ptr + key, mask=valid, other=-1)
        res = cur >= 0
        rank = tl.load(slot_rank_ptr + tl.where(res, cur, 0), mask=res, other=NOT_RES)
        v32 = valid.to(tl.int32)
        pos = seen + tl.cumsum(v32, 0) - 1
        tl.store(rank_ptr + o, rank, mask=inb)
        tl.store(cur_ptr + o, cur, mask=inb)
        tl.store(pos_ptr + o, pos, mask=inb)
        tl.store(touch_ptr + tl.where(res, rank, 0), pos, mask=res)
        seen += tl.sum(v32, 0)
    tl.store(nvalid_ptr + layer, seen)


@triton.jit
def _plru_hit_kernel(
    rank_ptr,
    pos_ptr,
    hit_ptr,
    N: tl.constexpr,
    S: tl.constexpr,
    BI: tl.constexpr,
    BJ: tl.constexpr,
    NOT_RES: tl.constexpr,
):
    layer = tl.program_id(0).to(tl.int64)
    first = tl.program_id(1) * BI
    rank_ptr += layer * N
    pos_ptr += layer * N
    oi = first + tl.arange(0, BI)
    ini = oi < N
    ri = tl.load(rank_ptr + oi, mask=ini, other=NOT_RES)
    pi = tl.load(pos_ptr + oi, mask=ini, other=S)
    live = tl.load(pos_ptr + first) < S  # positions only grow: else the whole block misses
    acc = tl.zeros((BJ, BI), tl.int32)  # reduced once after the loop, not per tile
    for j0 in range(0, N, BJ):
        if live & (j0 < first + BI):
            oj = j0 + tl.arange(0, BJ)
            rj = tl.load(rank_ptr + oj, mask=oj < N, other=NOT_RES)
            acc += ((rj[:, None] < ri[None, :]) & (oj[:, None] < oi[None, :])).to(tl.int32)
    cnt = tl.sum(acc, 0)
    hit = (ri < S) & (pi + ri - cnt < S)
    tl.store(hit_ptr + layer * N + oi, hit.to(tl.uint8), mask=ini)


@triton.jit
def _plru_update_kernel(
    idx_ptr,
    table_ptr,
    slot_key_ptr,
    rank_slot_ptr,
    slot_rank_ptr,
    size_ptr,
    cur_ptr,
    pos_ptr,
    touch_ptr,
    nvalid_ptr,
    free_ptr,
    order_ptr,
    slot_ptr,
    k,
    max_ctx,
    table_stride,
    state_stride,
    N: tl.constexpr,
    S: tl.constexpr,
    BLOCK: tl.constexpr,
):
    layer = tl.program_id(0).to(tl.int64)
    idx_ptr += layer * N
    cur_ptr += layer * N
    pos_ptr += layer * N
    slot_ptr += layer * N
    table_ptr += layer * table_stride
    slot_key_ptr += layer * state_stride
    rank_slot_ptr += layer * state_stride
    slot_rank_ptr += layer * state_stride
    touch_ptr += layer * S
    free_ptr += layer * S
    order_ptr += layer * S
    nvalid = tl.load(nvalid_ptr + layer)
    size = tl.load(size_ptr + layer)
    n_touched = tl.full((), 0, tl.int32)
    n_free = tl.full((), 0, tl.int32)
    n_keep = tl.full((), 0, tl.int32)
    # old residents by rank: the untouched move down by the step's keys above them
    for start in range(0, S, BLOCK):
        rho = start + tl.arange(0, BLOCK)
        inr = rho < S
        at = tl.load(touch_ptr + rho, mask=inr, other=-1)
        touched = at >= 0
        t32 = touched.to(tl.int32)
        above = n_touched + tl.cumsum(t32, 0) - t32
        new_q = tl.where(touched, nvalid - 1 - at, nvalid + rho - above)
        keep = inr & (rho < size) & (new_q < S)
        evict = inr & (rho < size) & (new_q >= S)
        s = tl.load(rank_slot_ptr + rho, mask=inr, other=0)
        ev_key = tl.load(slot_key_ptr + s, mask=evict, other=0)
        tl.store(table_ptr + ev_key.to(tl.int64), tl.full((BLOCK,), -1, tl.int32), mask=evict)
        tl.store(slot_key_ptr + s, tl.full((BLOCK,), -1, tl.int32), mask=evict)
        free = inr & ~keep
        f32 = free.to(tl.int32)
        tl.store(free_ptr + n_free + tl.cumsum(f32, 0) - 1, s, mask=free)
        untouched_keep = keep & ~touched
        tl.store(order_ptr + tl.where(untouched_keep, new_q, 0), s, mask=untouched_keep)
        n_touched += tl.sum(t32, 0)
        n_free += tl.sum(f32, 0)
        n_keep += tl.sum(keep.to(tl.int32), 0)
    tl.debug_barrier()
    # the step's keys: the last S survive; entering ones take free slots in access order
    n_enter = tl.full((), 0, tl.int32)
    for start in range(0, N, BLOCK):
        o = start + tl.arange(0, BLOCK)
        inb = o < N
        tok = tl.load(idx_ptr + o, mask=inb, other=-1)
        valid = tok >= 0
        pos = tl.load(pos_ptr + o, mask=inb, other=0)
        cur = tl.load(cur_ptr + o, mask=inb, other=-1)
        q = nvalid - 1 - pos
        surv = valid & (q < S)
        enter = surv & (cur < 0)
        e32 = enter.to(tl.int32)
        nth = n_enter + tl.cumsum(e32, 0) - 1
        es = tl.load(free_ptr + tl.where(enter, nth, 0), mask=enter, other=-1, volatile=True)
        slot = tl.where(surv, tl.where(enter, es, cur), -1)
        tl.store(slot_ptr + o, slot, mask=inb)
        key = (o // k).to(tl.int64) * max_ctx + tl.where(valid, tok, 0)
        tl.store(table_ptr + key, es, mask=enter)
        tl.store(slot_key_ptr + tl.where(enter, es, 0), key.to(tl.int32), mask=enter)
        tl.store(order_ptr + tl.where(surv, q, 0), slot, mask=surv)
        n_enter += tl.sum(e32, 0)
    tl.debug_barrier()
    # the free slots nobody took go below the residents
    new_size = n_enter + n_keep
    for start in range(0, S, BLOCK):
        f = start + tl.arange(0, BLOCK)
        left = (f >= n_enter) & (f < n_free)
        fs = tl.load(free_ptr + f, mask=left, other=0, volatile=True)
        tl.store(order_ptr + tl.where(left, new_size + f - n_enter, 0), fs, mask=left)
    tl.debug_barrier()
    for start in range(0, S, BLOCK):
        rho = start + tl.arange(0, BLOCK)
        inr = rho < S
        sl = tl.load(order_ptr + rho, mask=inr, other=0, volatile=True)
        tl.store(rank_slot_ptr + rho, sl, mask=inr)
        tl.store(slot_rank_ptr + sl, rho, mask=inr)
    tl.store(size_ptr + layer, new_size)


def parallel_lru_step_triton(
    lru: ParallelTokenLRU, indices: torch.Tensor, hit: torch.Tensor, slot: torch.Tensor
) -> None:
    """One step for all layers on lru's device in three launches: indices int32 [layers,
    requests, k] (contiguous, same device); writes hit (uint8) and slot (int32), same shape."""
    n_layers, n_req, k = indices.shape
    n, S = n_req * k, lru.slots
    if S == 0 or n == 0:
        hit.zero_()
        slot.fill_(-1)
        return
    sc = lru.scratch(n)
    block = min(MAX_BLOCK, triton.next_power_of_2(max(n, S, 16)))
    strides = (k, lru.max_context, lru._table.shape[1], S + 1)
    _plru_lookup_kernel[(n_layers,)](
        indices, lru._table, lru._slot_rank, sc["rank"], sc["cur"], sc["pos"], sc["touch"],
        sc["nvalid"], *strides, N=n, S=S, BLOCK=block, NOT_RES=NOT_RESIDENT, num_warps=8,
    )  # fmt: skip
    _plru_hit_kernel[(n_layers, triton.cdiv(n, BI))](
        sc["rank"], sc["pos"], hit, N=n, S=S, BI=BI, BJ=BJ, NOT_RES=NOT_RESIDENT, num_warps=4
    )
    _plru_update_kernel[(n_layers,)](
        indices, lru._table, lru._slot_key, lru._rank_slot, lru._slot_rank, lru.size,
        sc["cur"], sc["pos"], sc["touch"], sc["nvalid"], sc["free"], sc["order"], slot,
        *strides, N=n, S=S, BLOCK=block, num_warps=8,
    )  # fmt: skip
