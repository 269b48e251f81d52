"""Model geometry a trace carries: what turns indices into bytes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from dsacache.errors import DsacacheError


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
}


def preset(name: str) -> Geometry:
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise DsacacheError(f"unknown geometry preset {name!r} (known: {known})") from None
