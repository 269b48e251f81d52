"""Tiny random-weight causal LMs of several families for the DSA tests (helpers, no tests)."""

from __future__ import annotations

import pytest
import torch

VOCAB = 97
HIDDEN = 64
LAYERS = 2


def tiny_config(family: str, **overrides: object):  # noqa: ANN201 - a transformers config
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS)
    common.update(overrides)  # constructor kwargs: derived fields (layer_types) follow them
    llama_like = dict(common, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
    if family == "llama":
        cfg = tf.LlamaConfig(**llama_like)
    elif family == "qwen2":
        cfg = tf.Qwen2Config(**llama_like)
    elif family == "qwen3":
        cfg = tf.Qwen3Config(**llama_like, head_dim=16)
    elif family == "mistral":
        cfg = tf.MistralConfig(**llama_like)
    elif family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(**common, intermediate_size=128, num_attention_heads=4)
    elif family == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=common["vocab_size"], n_embd=HIDDEN, n_layer=LAYERS, n_head=4,
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
    elif family == "bloom":
        cfg = tf.BloomConfig(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=4)
    else:
        raise ValueError(family)
    return cfg


def tiny_model(family: str, seed: int = 0, **overrides: object) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(family, **overrides)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def tiny_gqa_llama(
    vocab_size: int, seed: int = 0, init: float = 0.2, attn: str | None = None
) -> torch.nn.Module:
    """A random 2-layer GQA LlamaForCausalLM (4 query, 2 kv heads); a large init makes its
    attention far from uniform."""
    from transformers import LlamaForCausalLM

    extra = {} if attn is None else {"attn_implementation": attn}
    cfg = tiny_config(
        "llama", vocab_size=vocab_size, max_position_embeddings=256, initializer_range=init, **extra
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # noqa: ANN201 - a fixture generator
    """Import into a test module: tiny matmuls on one thread avoid OpenMP spin-waits on a
    shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_indexer(model: torch.nn.Module, seed: int = 0):  # noqa: ANN201
    from dsacache.dsa.indexer import IndexerConfig, LightningIndexer

    return LightningIndexer(
        IndexerConfig(heads=4, dim=16, rope_dims=8), model.config.hidden_size,
        model.config.num_hidden_layers, seed=seed,
    )  # fmt: skip


FAMILIES = ["llama", "qwen2", "qwen3", "mistral", "gpt_neox", "gpt2"]
