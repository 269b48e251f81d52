"""Model presets for the serving model: DeepSeek-V3.2 and GLM-5.1, from their published configs.

Every dimension is the model's config.json value (sources per field in `sources`); parameter
counts and bytes per token are derived from them, and the tests check the derived totals against
the published ones (671 B / 37 B activated for DeepSeek-V3.2, 744 B / 40 B for GLM-5). Both models
are MLA (one latent KV row per token per layer: kv_lora_rank values + qk_rope_head_dim RoPE
values) with a DSA lightning indexer (one index key of index_head_dim per token per layer) and a
MoE feed-forward after `dense_layers` dense ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from dsacache.errors import DsacacheError, lookup

KV_DTYPES = ("fp8", "bf16")
# FlashMLA's FP8 sparse KV row: 512 FP8 latent values + 4 fp32 scales (16 B) + 64 bf16 RoPE
# values (128 B) = 656 B for kv_lora_rank 512 / rope 64 (FlashMLA documentation).
FP8_SCALE_BYTES_PER_128 = 4
# The index key: index_head_dim FP8 values + one fp32 scale (132 B for 128 dims; DeepSeek-V3.2
# inference code, FlashMLA documentation).
INDEX_SCALE_BYTES = 4


@dataclass(frozen=True)
class ServingModel:
    """One DSA model's architecture (config.json names in comments)."""

    name: str
    label: str
    layers: int  # num_hidden_layers
    dense_layers: int  # first_k_dense_replace
    hidden: int  # hidden_size
    vocab: int  # vocab_size
    heads: int  # num_attention_heads
    q_lora_rank: int
    kv_lora_rank: int
    qk_rope_dim: int  # qk_rope_head_dim
    qk_nope_dim: int  # qk_nope_head_dim
    v_head_dim: int
    index_heads: int  # index_n_heads
    index_head_dim: int
    top_k: int  # index_topk
    experts: int  # n_routed_experts
    experts_per_token: int  # num_experts_per_tok
    shared_experts: int  # n_shared_experts
    moe_intermediate: int  # moe_intermediate_size
    dense_intermediate: int  # intermediate_size
    published_total_params: float
    published_active_params: float
    sources: Mapping[str, str] = field(default_factory=dict)

    # ---- parameters per layer (weights of the linear layers; norms are negligible) ----
    @property
    def attention_params(self) -> int:
        """MLA projections plus the indexer's, per layer."""
        h = self.heads
        mla = (
            self.hidden * self.q_lora_rank  # q_a_proj
            + self.q_lora_rank * h * (self.qk_nope_dim + self.qk_rope_dim)  # q_b_proj
            + self.hidden * (self.kv_lora_rank + self.qk_rope_dim)  # kv_a_proj_with_mqa
            + self.kv_lora_rank * h * (self.qk_nope_dim + self.v_head_dim)  # kv_b_proj
            + h * self.v_head_dim * self.hidden  # o_proj
        )
        indexer = (
            self.q_lora_rank * self.index_heads * self.index_head_dim  # wq_b
            + self.hidden * self.index_head_dim  # wk
            + self.hidden * self.index_heads  # weights_proj
        )
        return mla + indexer

    @property
    def expert_params(self) -> int:
        """One expert (gate, up, down)."""
        return 3 * self.hidden * self.moe_intermediate

    @property
    def dense_ffn_params(self) -> int:
        return 3 * self.hidden * self.dense_intermediate

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers

    @property
    def router_params(self) -> int:
        return self.hidden * self.experts

    @property
    def embedding_params(self) -> int:
        """The input embedding; the (untied) output head has as many."""
        return self.vocab * self.hidden

    def ffn_params(self, routed: float) -> float:
        """Feed-forward parameters of every layer with `routed` routed experts per MoE layer
        (all of them, those one token picks, or the expected number a batch touches) plus the
        shared ones and the router."""
        moe = (routed + self.shared_experts) * self.expert_params + self.router_params
        return self.dense_layers * self.dense_ffn_params + self.moe_layers * moe

    @property
    def total_params(self) -> int:
        return (
            self.layers * self.attention_params
            + self.ffn_params(self.experts)
            + 2 * self.embedding_params
        )

    @property
    def active_params(self) -> int:
        """Parameters one token computes with: every matrix but the input embedding (a table
        lookup), with `experts_per_token` routed experts plus the shared ones."""
        return (
            self.layers * self.attention_params
            + self.ffn_params(self.experts_per_token)
            + self.embedding_params  # the output head
        )

    # ---- bytes ----
    def kv_bytes_per_token(self, dtype: str) -> int:
        """One token's latent KV row in one layer."""
        latent, rope = self.kv_lora_rank, self.qk_rope_dim
        if dtype == "bf16":
            return 2 * (latent + rope)
        if dtype == "fp8":
            return latent + FP8_SCALE_BYTES_PER_128 * (latent // 128) + 2 * rope
        raise DsacacheError(f"unknown KV dtype {dtype!r} (known: {', '.join(KV_DTYPES)})")

    @property
    def index_bytes_per_token(self) -> int:
        return self.index_head_dim + INDEX_SCALE_BYTES

    # FP8 checkpoints keep the embeddings and the output head in BF16 (DeepSeek-V3 technical
    # report, FP8 framework: "the embedding module, the output head ... retain BF16"); the linear
    # layers are FP8 with 128x128 block scales (1 fp32 per 16,384 weights: negligible).
    WEIGHT_BYTES = 1
    EMBEDDING_BYTES = 2

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "sources"}
        out["total_params"] = self.total_params
        out["active_params"] = self.active_params
        out["kv_bytes_per_token"] = {d: self.kv_bytes_per_token(d) for d in KV_DTYPES}
        out["index_bytes_per_token"] = self.index_bytes_per_token
        out["sources"] = dict(self.sources)
        return out


_DSV32_CFG = "DeepSeek-V3.2 inference config (config_671B_v3.2.json)"
_GLM5_CFG = (
    "GLM-5 config.json (zai-org/GLM-5; GLM-5.1 has the same architecture and weight shapes, "
    "NVIDIA Megatron Bridge GLM-5/5.1 notes)"
)

_DSV32 = ServingModel(
    "deepseek-v3.2",
    "DeepSeek-V3.2",
    layers=61,
    dense_layers=3,
    hidden=7168,
    vocab=129280,
    heads=128,
    q_lora_rank=1536,
    kv_lora_rank=512,
    qk_rope_dim=64,
    qk_nope_dim=128,
    v_head_dim=128,
    index_heads=64,
    index_head_dim=128,
    top_k=2048,
    experts=256,
    experts_per_token=8,
    shared_experts=1,
    moe_intermediate=2048,
    dense_intermediate=18432,
    published_total_params=671e9,
    published_active_params=37e9,
    sources={
        "dimensions": _DSV32_CFG + ": n_layers 61, n_dense_layers 3, dim 7168, "
        "n_heads 128, q_lora_rank 1536, kv_lora_rank 512, qk_rope_head_dim 64, "
        "qk_nope_head_dim 128, v_head_dim 128, index_n_heads 64, index_head_dim 128, "
        "index_topk 2048, n_routed_experts 256, n_activated_experts 8, "
        "n_shared_experts 1, moe_inter_dim 2048, inter_dim 18432, vocab 129280",
        "published_params": "DeepSeek-V3 technical report: 671 B total, 37 B activated "
        "per token (V3.2 keeps V3's shapes and adds the indexer)",
        "kv_bytes_per_token": "FlashMLA documentation: 656 B FP8 sparse row; BF16 = 2 x (512 + 64)",
        "index_bytes_per_token": "DeepSeek-V3.2 inference code: FP8 index key + fp32 scale = 132 B",
    },
)

# GLM-5's config.json gives the values it shares with DeepSeek-V3.2 (dense layers, MLA latent
# and RoPE dims, index key dims, top-k, experts and their size) as its own: its source lists
# every dimension.
MODELS: dict[str, ServingModel] = {
    m.name: m
    for m in (
        _DSV32,
        replace(
            _DSV32,
            name="glm-5.1",
            label="GLM-5.1",
            layers=78,
            hidden=6144,
            vocab=154880,
            heads=64,
            q_lora_rank=2048,
            qk_nope_dim=192,
            v_head_dim=256,
            index_heads=32,
            dense_intermediate=12288,
            published_total_params=744e9,
            published_active_params=40e9,
            sources={
                "dimensions": _GLM5_CFG + ": num_hidden_layers 78, first_k_dense_replace 3, "
                "hidden_size 6144, num_attention_heads 64, q_lora_rank 2048, kv_lora_rank 512, "
                "qk_rope_head_dim 64, qk_nope_head_dim 192, v_head_dim 256, index_n_heads 32, "
                "index_head_dim 128, index_topk 2048, n_routed_experts 256, "
                "num_experts_per_tok 8, n_shared_experts 1, moe_intermediate_size 2048, "
                "intermediate_size 12288, vocab_size 154880",
                "published_params": "Hugging Face Transformers GlmMoeDsa docs: GLM-5 744 B "
                "parameters, 40 B active (GLM-5.1-FP8's 754 B adds the MTP layer, not loaded "
                "without speculative decoding)",
                "kv_bytes_per_token": "as DeepSeek-V3.2 (same MLA latent 512 + RoPE 64; "
                "FlashMLA documentation)",
                "index_bytes_per_token": "as DeepSeek-V3.2 (index_head_dim 128, FP8 + fp32 scale)",
            },
        ),
    )
}


def serving_model(name: str) -> ServingModel:
    """The model preset `name` (case-insensitive)."""
    return lookup(MODELS, name, "model")
