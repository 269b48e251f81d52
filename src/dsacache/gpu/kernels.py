"""Triton kernels of one layer's decode sparse attention over the hot buffer + paged pool.

All rows live in one uint8 tensor `kv` (layouts.KVCache): a token's row is read from its hot
buffer slot when the LRU left it resident at the end of the step (slot >= 0), else from its
pool page. Views of the same memory as fp32 and bf16 read the scales, rope and GQA values.

- copy: writes the rows of missed tokens that ended resident (hit == 0, slot >= 0) from the
  pool into their slots (before the gather).
- ds gather (MLA absorbed form): q [requests, H, 576]; score = q . dequant(row) (512 latent +
  64 rope) x sm_scale; softmax over the k selected; out = sum p x latent (512 dims).
- gqa gather: q [requests, kv_heads x G, 128]; each KV head's G query heads attend over its K
  rows; out = sum p x V.
Both split the k rows over NSPLIT programs per request (as FlashMLA splits KV) and a combine
kernel merges the partial softmaxes; -1 slots are ignored; no valid slot gives a zero output.
"""

# Triton kernel arguments stay unannotated: Triton reads annotations as type specialisations.
# ruff: noqa: ANN001

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from dsacache.gpu.layouts import (
    DS_LATENT,
    DS_ROPE,
    DS_ROPE_BF16_OFF,
    DS_SCALE_F32_OFF,
    DS_SCALE_GROUP,
    GQA_HEAD_DIM,
    GQA_KV_HEADS,
    KVCache,
)

if TYPE_CHECKING:
    import torch

# finite "minus infinity": an all-empty tile never makes exp(-inf + inf); a constexpr because
# compiled Triton (unlike its interpreter) reads no plain module globals
NEG = tl.constexpr(-1.0e30)


@triton.jit
def _row_offsets(
    idx_ptr, slot_ptr, bt_ptr, r, n0, k, layer, nslots, pool_off, pages_per,
    ROW: tl.constexpr, PAGE: tl.constexpr, HAS_BUF: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """(valid mask, int64 byte offset of each row in kv) for slots n0 .. n0 + BLOCK_N - 1 of
    request r."""
    base = r.to(tl.int64) * k
    idx_ptr += base
    slot_ptr += base
    bt_ptr += r * pages_per
    offs_n = n0 + tl.arange(0, BLOCK_N)
    inb = offs_n < k
    tok = tl.load(idx_ptr + offs_n, mask=inb, other=-1)
    ok = tok >= 0
    tok = tl.where(ok, tok, 0)
    page = tl.load(bt_ptr + tok // PAGE, mask=ok, other=0).to(tl.int64)
    row = pool_off + (page * PAGE + (tok % PAGE)) * ROW
    if HAS_BUF:
        sl = tl.load(slot_ptr + offs_n, mask=ok, other=-1)
        row = tl.where(sl >= 0, (layer * nslots + sl.to(tl.int64)) * ROW, row)
    return ok, row


@triton.jit
def _softmax_init(BLOCK: tl.constexpr, DV: tl.constexpr):
    """(running max, running sum, accumulator) of an empty online softmax over BLOCK heads."""
    return (
        tl.full((BLOCK,), NEG, tl.float32),
        tl.zeros((BLOCK,), tl.float32),
        tl.zeros((BLOCK, DV), tl.float32),
    )


@triton.jit
def _softmax_step(s, ok, v, m_i, l_i, acc, sm_scale, PREC: tl.constexpr):
    """One tile of the online softmax: scores s [heads, n] (invalid rows masked by ok) over
    values v [n, DV]; returns the updated (m_i, l_i, acc)."""
    s = tl.where(ok[None, :], s * sm_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PREC)
    return m_new, l_i, acc


@triton.jit
def _store_partial(part_ptr, ml_ptr, pb, heads, hmask, acc, m_i, l_i, DV: tl.constexpr):
    """A split's partial softmax for heads (flat index pb + heads): acc to part, (m, l) to ml."""
    dv = tl.arange(0, DV)
    tl.store(part_ptr + (pb + heads[:, None]) * DV + dv[None, :], acc, mask=hmask[:, None])
    tl.store(ml_ptr + (pb + heads) * 2, m_i, mask=hmask)
    tl.store(ml_ptr + (pb + heads) * 2 + 1, l_i, mask=hmask)


@triton.jit
def _copy_kernel(
    kv_ptr, idx_ptr, hit_ptr, slot_ptr, bt_ptr, k, layer, nslots, pool_off, pages_per,
    ROW: tl.constexpr, ROW_PAD: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    base = r.to(tl.int64) * k
    inb = offs_n < k
    tok = tl.load(idx_ptr + base + offs_n, mask=inb, other=-1)
    hit = tl.load(hit_ptr + base + offs_n, mask=inb, other=1)
    sl = tl.load(slot_ptr + base + offs_n, mask=inb, other=-1)
    fill = (tok >= 0) & (hit == 0) & (sl >= 0)
    tok = tl.where(fill, tok, 0)
    page = tl.load(bt_ptr + r * pages_per + tok // PAGE, mask=fill, other=0).to(tl.int64)
    src = pool_off + (page * PAGE + (tok % PAGE)) * ROW
    dst = (layer * nslots + sl.to(tl.int64)) * ROW
    cols = tl.arange(0, ROW_PAD)
    m = fill[:, None] & (cols[None, :] < ROW)
    row = tl.load(kv_ptr + src[:, None] + cols[None, :], mask=m)
    tl.store(kv_ptr + dst[:, None] + cols[None, :], row, mask=m)


@triton.jit
def _ds_gather_kernel(
    q_ptr, kv_u8, kv_f32, kv_bf16, idx_ptr, slot_ptr, bt_ptr,
    part_ptr, ml_ptr, k, n_heads, layer, nslots, pool_off, pages_per, sm_scale,
    HAS_BUF: tl.constexpr, ROW: tl.constexpr, PAGE: tl.constexpr, NSPLIT: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, DL: tl.constexpr, DR: tl.constexpr,
    GROUP: tl.constexpr, SC_OFF: tl.constexpr, RP_OFF: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0)
    sp = tl.program_id(1)
    offs_h = tl.arange(0, BLOCK_H)
    hmask = offs_h < n_heads
    dl = tl.arange(0, DL)
    dr = tl.arange(0, DR)
    qb = q_ptr + r.to(tl.int64) * n_heads * (DL + DR)
    q_lat = tl.load(qb + offs_h[:, None] * (DL + DR) + dl[None, :], mask=hmask[:, None], other=0.0)
    q_rope = tl.load(
        qb + offs_h[:, None] * (DL + DR) + DL + dr[None, :], mask=hmask[:, None], other=0.0
    )
    m_i, l_i, acc = _softmax_init(BLOCK_H, DL)
    # ROWS (rows per split) is a constexpr: the interpreter loops to it
    for n0 in range(0, ROWS, BLOCK_N):
        ok, row = _row_offsets(
            idx_ptr, slot_ptr, bt_ptr, r, sp * ROWS + n0, k, layer, nslots, pool_off, pages_per,
            ROW, PAGE, HAS_BUF, BLOCK_N,
        )  # fmt: skip
        lat = tl.load(kv_u8 + row[:, None] + dl[None, :], mask=ok[:, None], other=0)
        lat = lat.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        sc = tl.load(
            kv_f32 + row[:, None] // 4 + SC_OFF + dl[None, :] // GROUP, mask=ok[:, None], other=0.0
        )
        lat = lat * sc
        rope = tl.load(
            kv_bf16 + row[:, None] // 2 + RP_OFF + dr[None, :], mask=ok[:, None], other=0
        )
        rope = rope.to(tl.float32)
        s = tl.dot(q_lat, tl.trans(lat), input_precision=PREC)
        s += tl.dot(q_rope, tl.trans(rope), input_precision=PREC)
        m_i, l_i, acc = _softmax_step(s, ok, lat, m_i, l_i, acc, sm_scale, PREC)
    pb = (r * NSPLIT + sp).to(tl.int64) * n_heads
    _store_partial(part_ptr, ml_ptr, pb, offs_h, hmask, acc, m_i, l_i, DL)


@triton.jit
def _gqa_gather_kernel(
    q_ptr, kv_bf16, idx_ptr, slot_ptr, bt_ptr,
    part_ptr, ml_ptr, k, group, layer, nslots, pool_off, pages_per, sm_scale,
    HAS_BUF: tl.constexpr, ROW: tl.constexpr, PAGE: tl.constexpr, NSPLIT: tl.constexpr,
    ROWS: tl.constexpr,
    KVH: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0)
    h = tl.program_id(1)
    sp = tl.program_id(2)
    n_heads = KVH * group
    offs_g = tl.arange(0, BLOCK_G)
    gmask = offs_g < group
    d = tl.arange(0, D)
    heads = h * group + offs_g
    qb = q_ptr + r.to(tl.int64) * n_heads * D
    q = tl.load(qb + heads[:, None] * D + d[None, :], mask=gmask[:, None], other=0.0)
    m_i, l_i, acc = _softmax_init(BLOCK_G, D)
    # ROWS (rows per split) is a constexpr: the interpreter loops to it
    for n0 in range(0, ROWS, BLOCK_N):
        ok, row = _row_offsets(
            idx_ptr, slot_ptr, bt_ptr, r, sp * ROWS + n0, k, layer, nslots, pool_off, pages_per,
            ROW, PAGE, HAS_BUF, BLOCK_N,
        )  # fmt: skip
        kb = row[:, None] // 2 + h * D + d[None, :]
        kk = tl.load(kv_bf16 + kb, mask=ok[:, None], other=0).to(tl.float32)
        vv = tl.load(kv_bf16 + kb + KVH * D, mask=ok[:, None], other=0).to(tl.float32)
        s = tl.dot(q, tl.trans(kk), input_precision=PREC)
        m_i, l_i, acc = _softmax_step(s, ok, vv, m_i, l_i, acc, sm_scale, PREC)
    pb = (r * NSPLIT + sp).to(tl.int64) * n_heads
    _store_partial(part_ptr, ml_ptr, pb, heads, gmask, acc, m_i, l_i, D)


@triton.jit
def _combine_kernel(
    part_ptr, ml_ptr, out_ptr, n_heads,
    NSPLIT: tl.constexpr, BLOCK_S: tl.constexpr, DV: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0)
    hd = tl.program_id(1)
    sp = tl.arange(0, BLOCK_S)
    smask = sp < NSPLIT
    pb = (r * NSPLIT + sp).to(tl.int64) * n_heads + hd
    m = tl.load(ml_ptr + pb * 2, mask=smask, other=NEG)
    lsum = tl.load(ml_ptr + pb * 2 + 1, mask=smask, other=0.0)
    mx = tl.max(m, 0)
    w = tl.where(smask, tl.exp(m - mx), 0.0)
    dv = tl.arange(0, DV)
    part = tl.load(part_ptr + pb[:, None] * DV + dv[None, :], mask=smask[:, None], other=0.0)
    num = tl.sum(part * w[:, None], 0)
    den = tl.sum(lsum * w, 0)
    out = tl.where(den > 0, num / tl.maximum(den, 1e-30), 0.0)
    tl.store(out_ptr + (r.to(tl.int64) * n_heads + hd) * DV + dv, out)


def _split(k: int, nsplit: int, block_n: int) -> int:
    """Rows per split, a multiple of block_n."""
    per = -(-k // nsplit)
    return -(-per // block_n) * block_n


def copy_rows(
    cache: KVCache, layer: int, idx: torch.Tensor, hit: torch.Tensor, slot: torch.Tensor
) -> None:
    """Write the rows of one layer's missed-and-resident tokens into their slots.
    idx/hit/slot: [requests, k] views of that layer (contiguous)."""
    if cache.slots == 0:
        return
    n_req, k = idx.shape
    lay = cache.layout
    block_n = 16
    _copy_kernel[(n_req, triton.cdiv(k, block_n))](
        cache.kv, idx, hit, slot, cache.block_table[layer], k, layer, cache.slots,
        cache.pool_offset, cache.block_table.shape[2],
        ROW=lay.row_bytes, ROW_PAD=triton.next_power_of_2(lay.row_bytes), PAGE=lay.page_tokens,
        BLOCK_N=block_n, num_warps=4,
    )  # fmt: skip


class GatherWork:
    """Preallocated partial-result buffers of one layout's gather (reused every layer)."""

    def __init__(self, requests: int, heads: int, dv: int, nsplit: int, device: str) -> None:
        import torch

        self.nsplit = nsplit
        self.part = torch.empty(requests, nsplit, heads, dv, dtype=torch.float32, device=device)
        self.ml = torch.empty(requests, nsplit, heads, 2, dtype=torch.float32, device=device)
        self.out = torch.empty(requests, heads, dv, dtype=torch.float32, device=device)


def gather_ds(
    cache: KVCache,
    layer: int,
    q: torch.Tensor,
    idx: torch.Tensor,
    slot: torch.Tensor | None,
    work: GatherWork,
    sm_scale: float,
    *,
    block_n: int = 32,
    precision: str = "ieee",
) -> torch.Tensor:
    """DeepSeek layer: q fp32 [requests, H, 576], idx/slot int32 [requests, k] (slot None: no
    buffer, every row from the pool). Returns work.out fp32 [requests, H, 512]."""
    import torch

    n_req, n_heads, _ = q.shape
    k = idx.shape[1]
    lay = cache.layout
    rows = _split(k, work.nsplit, block_n)
    kv = cache.kv
    has_buf = slot is not None and cache.slots > 0
    _ds_gather_kernel[(n_req, work.nsplit)](
        q, kv, kv.view(torch.float32), kv.view(torch.bfloat16), idx,
        slot if has_buf else idx, cache.block_table[layer], work.part, work.ml,
        k, n_heads, layer, cache.slots, cache.pool_offset, cache.block_table.shape[2],
        sm_scale,
        HAS_BUF=has_buf, ROW=lay.row_bytes, PAGE=lay.page_tokens, NSPLIT=work.nsplit, ROWS=rows,
        BLOCK_H=max(16, triton.next_power_of_2(n_heads)), BLOCK_N=block_n, DL=DS_LATENT,
        DR=DS_ROPE, GROUP=DS_SCALE_GROUP, SC_OFF=DS_SCALE_F32_OFF, RP_OFF=DS_ROPE_BF16_OFF,
        PREC=precision, num_warps=8,
    )  # fmt: skip
    _combine(work, n_heads, DS_LATENT)
    return work.out


def gather_gqa(
    cache: KVCache,
    layer: int,
    q: torch.Tensor,
    idx: torch.Tensor,
    slot: torch.Tensor | None,
    work: GatherWork,
    sm_scale: float,
    *,
    block_n: int = 32,
    precision: str = "ieee",
) -> torch.Tensor:
    """GQA layer: q fp32 [requests, 8 x G, 128]; returns work.out fp32 [requests, 8 x G, 128]."""
    import torch

    n_req, n_heads, _ = q.shape
    group = n_heads // GQA_KV_HEADS
    k = idx.shape[1]
    lay = cache.layout
    rows = _split(k, work.nsplit, block_n)
    has_buf = slot is not None and cache.slots > 0
    _gqa_gather_kernel[(n_req, GQA_KV_HEADS, work.nsplit)](
        q, cache.kv.view(torch.bfloat16), idx, slot if has_buf else idx,
        cache.block_table[layer], work.part, work.ml, k, group, layer, cache.slots,
        cache.pool_offset, cache.block_table.shape[2], sm_scale,
        HAS_BUF=has_buf, ROW=lay.row_bytes, PAGE=lay.page_tokens, NSPLIT=work.nsplit, ROWS=rows,
        KVH=GQA_KV_HEADS, BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=block_n,
        D=GQA_HEAD_DIM, PREC=precision, num_warps=4,
    )  # fmt: skip
    _combine(work, n_heads, GQA_HEAD_DIM)
    return work.out


def _combine(work: GatherWork, n_heads: int, dv: int) -> None:
    n_req = work.out.shape[0]
    _combine_kernel[(n_req, n_heads)](
        work.part, work.ml, work.out, n_heads,
        NSPLIT=work.nsplit, BLOCK_S=max(2, triton.next_power_of_2(work.nsplit)), DV=dv,
        num_warps=4,
    )  # fmt: skip
