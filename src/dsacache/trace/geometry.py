"""Model geometry a trace carries: what turns indices into bytes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from dsacache.errors import DsacacheError, lookup
from dsacache.trace.rope import Rope


@dataclass(frozen=True)
class Geometry:
    """Per-layer cache geometry of the model that produced a trace.

    layers: attention layers recorded; top_k: slots per (step, layer);
    kv_bytes_per_token / index_bytes_per_token: bytes of one token's KV row / index key
    in one layer; block_tokens: tokens per paged-KV block.
    """

    layers: int
    top_k: int
    kv_bytes_per_token: int
    index_bytes_per_token: int
    block_tokens: int

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DsacacheError(f"geometry: {name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        names = ("layers", "top_k", "kv_bytes_per_token", "index_bytes_per_token", "block_tokens")
        missing = [n for n in names if n not in data]
        if missing:
            raise DsacacheError(f"geometry: missing {', '.join(missing)}")
        return cls(**{n: data[n] for n in names})

    def with_overrides(self, **overrides: int | None) -> Geometry:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# Sources: docs/architecture.md "Facts the presets use, and their sources".
PRESETS: dict[str, Geometry] = {
    # 61 layers, top-k 2048, FlashMLA FP8 sparse KV row 656 B, FP8 index key + fp32 scale 132 B,
    # 64-token KV pages (vLLM, SGLang).
    "deepseek-v3.2": Geometry(61, 2048, 656, 132, 64),
    # 80 layers, 8 KV heads x 128 dims x (K+V) x bf16 = 4096 B; an attached DSA indexer with
    # DeepSeek's index-key format (132 B); vLLM's default 16-token blocks.
    "llama-3.1-70b": Geometry(80, 2048, 4096, 132, 16),
    # GLM-5: 78 layers, DSA with top-k 2048 and DeepSeek-V3.2's cache formats (MLA latent 512 +
    # rope 64: the same 656 B FP8 row; FP8 index key of 128 dims + scale: 132 B), 64-token pages.
    "glm-5": Geometry(78, 2048, 656, 132, 64),
}


@dataclass(frozen=True)
class IndexerSpec:
    """The lightning indexer's shape: `heads` index heads of `head_dim` dims sharing one key per
    token, rotary position embedding on `rope.dims` of those dims."""

    heads: int
    head_dim: int
    rope: Rope

    def __post_init__(self) -> None:
        if self.heads < 1 or self.head_dim < 1 or not 0 <= self.rope.dims <= self.head_dim:
            raise DsacacheError(
                f"indexer: heads, head_dim must be >= 1 and rope dims in 0..head_dim, got "
                f"{self.heads}, {self.head_dim}, {self.rope.dims}"
            )


# Sources: docs/indexer-model.md "The presets".
INDEXERS: dict[str, IndexerSpec] = {
    # config.json: index_n_heads 64, index_head_dim 128, qk_rope_head_dim 64, rope_theta 10000,
    # rope_scaling yarn factor 40 over original_max_position_embeddings 4096, beta 32 / 1.
    "deepseek-v3.2": IndexerSpec(64, 128, Rope(64, 10000.0, "yarn", 40.0, 4096, 32.0, 1.0)),
    # config.json: index_n_heads 32, index_head_dim 128, qk_rope_head_dim 64, rope_theta 1e6,
    # no rope scaling.
    "glm-5": IndexerSpec(32, 128, Rope(64, 1_000_000.0)),
    # An attached DeepSeek-style indexer (64 x 128, rope on 64 dims) rotated with Llama 3.1's own
    # rope: theta 500000, llama3 scaling factor 8 over 8192 (low / high freq factor 1 / 4).
    "llama-3.1-70b": IndexerSpec(
        64, 128, Rope(64, 500000.0, "llama3", 8.0, 8192, low_freq_factor=1.0, high_freq_factor=4.0)
    ),
}


def preset(name: str) -> Geometry:
    return lookup(PRESETS, name, "geometry preset")


def indexer_preset(name: str) -> IndexerSpec:
    return lookup(INDEXERS, name, "indexer preset")
