"""Torch references of the kernels (CPU or GPU, fp32): what the Triton output is checked on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from dsacache.gpu.layouts import DS_LATENT, GQA_KV_HEADS, KVCache, dequant_ds, dequant_gqa

if TYPE_CHECKING:
    import torch


def read_rows(
    cache: KVCache, layer: int, request: int, tokens: torch.Tensor, slots: torch.Tensor | None
) -> torch.Tensor:
    """uint8 [n, row_bytes]: each token's row from its slot (slot >= 0) or its pool page."""
    import torch

    rows = cache.rows(layer, request, tokens.long())
    if slots is not None and cache.slots > 0:
        inbuf = slots >= 0
        rows = torch.where(inbuf[:, None], cache.buffer[layer, slots.clamp(min=0).long()], rows)
    return rows


def _request_rows(
    cache: KVCache, layer: int, idx: torch.Tensor, slot: torch.Tensor | None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(request, uint8 rows of its valid slots) for each request with at least one."""
    for r in range(idx.shape[0]):
        ok = idx[r] >= 0
        if not bool(ok.any()):
            continue
        sl = None if slot is None else slot[r][ok]
        yield r, read_rows(cache, layer, r, idx[r][ok], sl)


def ref_ds(
    cache: KVCache,
    layer: int,
    q: torch.Tensor,
    idx: torch.Tensor,
    slot: torch.Tensor | None,
    sm_scale: float,
) -> torch.Tensor:
    """fp32 [requests, H, 512]: MLA absorbed-form attention over each request's valid rows."""
    import torch

    out = torch.zeros(q.shape[0], q.shape[1], DS_LATENT, dtype=torch.float32, device=q.device)
    for r, rows in _request_rows(cache, layer, idx, slot):
        x = dequant_ds(rows)
        p = torch.softmax((q[r].float() @ x.T) * sm_scale, dim=-1)
        out[r] = p @ x[:, :DS_LATENT]
    return out


def ref_gqa(
    cache: KVCache,
    layer: int,
    q: torch.Tensor,
    idx: torch.Tensor,
    slot: torch.Tensor | None,
    sm_scale: float,
) -> torch.Tensor:
    """fp32 [requests, 8 x G, 128]: grouped-query attention over each request's valid rows."""
    import torch

    n_req, n_heads, d = q.shape
    g = n_heads // GQA_KV_HEADS
    out = torch.zeros(n_req, n_heads, d, dtype=torch.float32, device=q.device)
    for r, rows in _request_rows(cache, layer, idx, slot):
        kk, vv = dequant_gqa(rows)  # [n, 8, 128]
        qh = q[r].float().view(GQA_KV_HEADS, g, d)
        p = torch.softmax(torch.einsum("hgd,nhd->hgn", qh, kk) * sm_scale, dim=-1)
        out[r] = torch.einsum("hgn,nhd->hgd", p, vv).reshape(n_heads, d)
    return out
