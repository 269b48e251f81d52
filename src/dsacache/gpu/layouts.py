"""KV row layouts and the paged pool the kernels gather from.

DeepSeek-V3.2 (`ds`): one row = 656 B/token/layer in FlashMLA's sparse FP8 format: 512 B of
fp8 e4m3 latent, 16 B = 4 fp32 scales (one per 128 latent dims), 128 B = 64 bf16 rope dims;
pages of 64 tokens. GQA (`gqa`): bf16 K then V, 8 KV heads x 128 dims each = 4096 B/token;
pages of 16 tokens.

All rows of every (layer, request) live in ONE flat uint8 tensor `kv`: the hot buffer first
(layers x S slots, contiguous, so one access-policy window covers it), then the pool of pages
[num_pages, page, row_bytes]. A block table [layers, requests, pages_per_request] maps a
(layer, request)'s logical page to a physical page (shuffled, as a paged allocator leaves them).
One base pointer lets a kernel read a row from either region with one int64 byte offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dsacache.trace.geometry import PRESETS

if TYPE_CHECKING:
    import torch

DS_LATENT = 512
DS_ROPE = 64
DS_SCALE_GROUP = 128
DS_SCALES = DS_LATENT // DS_SCALE_GROUP  # 4 fp32
DS_ROW_BYTES = DS_LATENT + 4 * DS_SCALES + 2 * DS_ROPE  # 656
DS_PAGE = PRESETS["deepseek-v3.2"].block_tokens  # 64
DS_SCALE_F32_OFF = DS_LATENT // 4  # scales start at fp32 index 128 of a row
DS_ROPE_BF16_OFF = (DS_LATENT + 4 * DS_SCALES) // 2  # rope starts at bf16 index 264 of a row

GQA_KV_HEADS = 8
GQA_HEAD_DIM = 128
GQA_ROW_BYTES = 2 * GQA_KV_HEADS * GQA_HEAD_DIM * 2  # K + V, bf16: 4096
GQA_PAGE = PRESETS["llama-3.1-70b"].block_tokens  # 16

ALIGN = 4096  # the pool starts on a 4 KiB boundary after the hot buffer


@dataclass(frozen=True)
class Layout:
    name: str
    row_bytes: int
    page_tokens: int


LAYOUTS = {
    "ds": Layout("ds", DS_ROW_BYTES, DS_PAGE),
    "gqa": Layout("gqa", GQA_ROW_BYTES, GQA_PAGE),
}


def layout(name: str) -> Layout:
    from dsacache.errors import DsacacheError

    try:
        return LAYOUTS[name]
    except KeyError:
        raise DsacacheError(f"unknown KV layout {name!r} (known: ds, gqa)") from None


@dataclass
class KVCache:
    """kv: uint8 [buffer_bytes + pool bytes]; block_table: int32 [layers, requests, pages];
    slots: hot-buffer slots per layer (0: no buffer)."""

    layout: Layout
    kv: torch.Tensor
    block_table: torch.Tensor
    layers: int
    requests: int
    max_context: int
    slots: int
    pool_offset: int  # byte offset of page 0 in kv

    @property
    def buffer_bytes(self) -> int:
        return self.layers * self.slots * self.layout.row_bytes

    @property
    def buffer(self) -> torch.Tensor:
        """uint8 [layers, slots, row_bytes] view of the hot buffer."""
        n = self.buffer_bytes
        return self.kv[:n].view(self.layers, self.slots, self.layout.row_bytes)

    @property
    def pool(self) -> torch.Tensor:
        """uint8 [num_pages, page, row_bytes] view of the pool."""
        lay = self.layout
        return self.kv[self.pool_offset :].view(-1, lay.page_tokens, lay.row_bytes)

    def rows(self, layer: int, request: int, tokens: torch.Tensor) -> torch.Tensor:
        """uint8 [n, row_bytes]: the pool rows of `tokens` (int64) of one (layer, request)."""
        page = self.layout.page_tokens
        phys = self.block_table[layer, request].long()[tokens // page]
        return self.pool[phys, tokens % page]


def build_cache(
    name: str,
    layers: int,
    requests: int,
    max_context: int,
    slots: int = 0,
    *,
    device: str = "cpu",
    seed: int = 0,
) -> KVCache:
    """A cache whose pool holds random valid rows for every token < max_context of every
    (layer, request), pages in a shuffled physical order; the hot buffer is zeroed."""
    import torch

    lay = layout(name)
    pages_per = -(-max_context // lay.page_tokens)
    num_pages = layers * requests * pages_per
    buf = layers * slots * lay.row_bytes
    pool_off = -(-buf // ALIGN) * ALIGN
    kv = torch.zeros(
        pool_off + num_pages * lay.page_tokens * lay.row_bytes, dtype=torch.uint8, device=device
    )
    gen = torch.Generator(device="cpu").manual_seed(seed)
    perm = torch.randperm(num_pages, generator=gen).to(torch.int32)
    table = perm.view(layers, requests, pages_per).to(device)
    pool = kv[pool_off:].view(num_pages, lay.page_tokens * lay.row_bytes)
    per_layer = requests * pages_per
    for layer in range(layers):  # one layer at a time: bounded temporary memory on the GPU
        rows = random_rows(name, per_layer * lay.page_tokens, device=device, seed=seed + layer)
        pool[perm[layer * per_layer : (layer + 1) * per_layer].to(device).long()] = rows.view(
            per_layer, -1
        )
    return KVCache(lay, kv, table, layers, requests, max_context, slots, pool_off)


def random_rows(name: str, n: int, *, device: str = "cpu", seed: int = 0) -> torch.Tensor:
    """uint8 [n, row_bytes] of valid random rows (finite fp8 / fp32 / bf16 values)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    lay = layout(name)
    out = torch.empty(n, lay.row_bytes, dtype=torch.uint8, device=device)
    if name == "ds":
        lat = torch.randn(n, DS_LATENT, generator=gen, device=device).to(torch.float8_e4m3fn)
        scale = torch.rand(n, DS_SCALES, generator=gen, device=device) * 0.1 + 0.01
        rope = torch.randn(n, DS_ROPE, generator=gen, device=device).to(torch.bfloat16)
        out[:, :DS_LATENT] = lat.view(torch.uint8)
        out[:, DS_LATENT : DS_LATENT + 4 * DS_SCALES] = scale.view(torch.uint8)
        out[:, DS_LATENT + 4 * DS_SCALES :] = rope.view(torch.uint8)
    else:
        kv = torch.randn(n, 2 * GQA_KV_HEADS * GQA_HEAD_DIM, generator=gen, device=device)
        out[:] = kv.to(torch.bfloat16).view(torch.uint8)
    return out


def dequant_ds(rows: torch.Tensor) -> torch.Tensor:
    """fp32 [n, 576] = 512 dequantized latent dims (fp8 x its group's scale) + 64 rope dims."""
    import torch

    lat = rows[:, :DS_LATENT].contiguous().view(torch.float8_e4m3fn).float()
    scale = rows[:, DS_LATENT : DS_LATENT + 4 * DS_SCALES].contiguous().view(torch.float32)
    lat = lat * scale.repeat_interleave(DS_SCALE_GROUP, dim=1)
    rope = rows[:, DS_LATENT + 4 * DS_SCALES :].contiguous().view(torch.bfloat16).float()
    return torch.cat([lat, rope], dim=1)


def dequant_gqa(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, V) fp32 [n, kv_heads, head_dim] each."""
    import torch

    x = rows.contiguous().view(torch.bfloat16).float().view(-1, 2, GQA_KV_HEADS, GQA_HEAD_DIM)
    return x[:, 0], x[:, 1]
