"""Triton gather/copy kernels (interpreter on CPU) equal a torch reference of the same layout
and dense attention over the gathered dequantized rows; -1 slots are ignored."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from dsacache.gpu.kernels import GatherWork, copy_rows, gather_ds, gather_gqa  # noqa: E402
from dsacache.gpu.layouts import (  # noqa: E402
    DS_ROW_BYTES,
    GQA_ROW_BYTES,
    build_cache,
    dequant_ds,
    dequant_gqa,
)
from dsacache.gpu.reference import ref_ds, ref_gqa  # noqa: E402
from dsacache.gpu.slot_lru import SlotLRU  # noqa: E402

F = torch.nn.functional
L, R, CTX, K, S = 2, 2, 150, 40, 45


def indices(seed: int, n_valid: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.full((L, R, K), -1, dtype=torch.int32)
    for layer in range(L):
        for r in range(R):
            idx[layer, r, :n_valid] = torch.randperm(70, generator=g)[:n_valid].int()
            idx[layer, r] = idx[layer, r][torch.randperm(K, generator=g)]
    return idx


def test_row_sizes():
    assert DS_ROW_BYTES == 656 and GQA_ROW_BYTES == 4096
    c = build_cache("ds", 1, 1, 70, 0)
    assert c.pool.shape[1:] == (64, 656) and torch.isfinite(dequant_ds(c.pool[0])).all()


@pytest.mark.parametrize("layout", ["ds", "gqa"])
def test_gather_equals_reference_and_dense_attention(layout):
    cache = build_cache(layout, L, R, CTX, S, seed=3)
    lru = SlotLRU(L, R, CTX, S)
    heads, d = (16, 576) if layout == "ds" else (16, 128)
    work = GatherWork(R, heads, 512 if layout == "ds" else 128, 3, "cpu")
    gather, ref = (gather_ds, ref_ds) if layout == "ds" else (gather_gqa, ref_gqa)
    hits = 0
    for step in range(2):
        idx = indices(step)
        res = lru.step(idx)
        hits += int(res.hit.sum())
        layer = step % L
        copy_rows(cache, layer, idx[layer], res.hit[layer], res.slot[layer])
        q = torch.randn(R, heads, d, generator=torch.Generator().manual_seed(step))
        out = gather(cache, layer, q, idx[layer], res.slot[layer], work, 0.08).clone()
        want = ref(cache, layer, q, idx[layer], res.slot[layer], 0.08)
        torch.testing.assert_close(out, want, rtol=1e-3, atol=1e-5)
        for r in range(R):  # dense attention over the gathered, dequantized rows
            tok = idx[layer, r][idx[layer, r] >= 0].long()
            rows = cache.rows(layer, r, tok)
            if layout == "ds":
                x = dequant_ds(rows)
                dense = F.scaled_dot_product_attention(
                    q[r][None], x[None], x[None, :, :512], scale=0.08
                )[0]
            else:
                kk, vv = dequant_gqa(rows)
                g = heads // 8
                dense = F.scaled_dot_product_attention(
                    q[r].view(8, g, 1, 128),
                    kk.transpose(0, 1)[:, None].expand(8, g, -1, 128),
                    vv.transpose(0, 1)[:, None].expand(8, g, -1, 128),
                    scale=0.08,
                ).reshape(heads, 128)
            torch.testing.assert_close(out[r], dense, rtol=1e-3, atol=1e-5)
    assert hits > 0


def test_gather_reads_the_buffer_and_copy_fills_it():
    cache = build_cache("ds", L, R, CTX, S, seed=5)
    lru = SlotLRU(L, R, CTX, S)
    idx = indices(7)
    res = lru.step(idx)
    fill = res.fill[0]
    assert fill.any()
    q = torch.randn(R, 16, 576)
    work = GatherWork(R, 16, 512, 2, "cpu")
    from_pool = gather_ds(cache, 0, q, idx[0], None, work, 0.05).clone()
    stale = gather_ds(cache, 0, q, idx[0], res.slot[0], work, 0.05).clone()  # buffer still 0
    assert not torch.allclose(stale, from_pool)
    copy_rows(cache, 0, idx[0], res.hit[0], res.slot[0])
    for r in range(R):
        tok = idx[0, r][fill[r]].long()
        sl = res.slot[0, r][fill[r]].long()
        assert torch.equal(cache.buffer[0, sl], cache.rows(0, r, tok))
    assert not cache.buffer[1].any()  # only layer 0 was written
    filled = gather_ds(cache, 0, q, idx[0], res.slot[0], work, 0.05)
    torch.testing.assert_close(filled, from_pool, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["ds", "gqa"])
def test_empty_slots_are_ignored(layout):
    cache = build_cache(layout, 1, R, CTX, 0, seed=1)
    heads, d = (16, 576) if layout == "ds" else (16, 128)
    dv = 512 if layout == "ds" else 128
    gather = gather_ds if layout == "ds" else gather_gqa
    work = GatherWork(R, heads, dv, 2, "cpu")
    q = torch.randn(R, heads, d)
    idx = torch.full((R, K), -1, dtype=torch.int32)
    idx[0, 5], idx[0, 17] = 3, 60  # request 1: every slot empty
    out = gather(cache, 0, q, idx, None, work, 0.1).clone()
    assert torch.equal(out[1], torch.zeros(heads, dv))
    compact = torch.tensor([[3, 60]], dtype=torch.int32)
    work1 = GatherWork(1, heads, dv, 1, "cpu")
    want = gather(cache, 0, q[:1], compact, None, work1, 0.1)
    torch.testing.assert_close(out[0], want[0], rtol=1e-4, atol=1e-6)
