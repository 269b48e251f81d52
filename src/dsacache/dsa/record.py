"""Record DSA selections: decode each prompt with top-k sparse attention into a Trace.

Step i of a request is the forward that produces generated token i (step 0 = the prefill's last
position, then one step per decode token); its context length is the tokens cached when it ran,
the new token's own KV included. Slots are in descending index-score order; near-miss holds
ranks k..k+M-1 of the same scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dsacache import __version__
from dsacache.dsa.decode import Sampling, decode
from dsacache.dsa.hooks import Attached, check_context
from dsacache.dsa.indexer import IndexerConfig
from dsacache.dsa.sparse import Recorder
from dsacache.errors import DsacacheError
from dsacache.trace import RequestTrace, Trace
from dsacache.trace.geometry import Geometry


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` with a transformers tokenizer or a raw `tokenizers.Tokenizer`."""
    out = tokenizer.encode(text)
    return list(out.ids if hasattr(out, "ids") else out)


def decode_text(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids))


def kv_bytes_per_token(model: nn.Module, dtype_bytes: int | None = None) -> int:
    """K+V bytes of one token in one layer: KV heads x head dim x 2 x dtype bytes.

    dtype_bytes None: the dtype the model runs in."""
    cfg = model.config
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    if dtype_bytes is None:
        dtype_bytes = next(model.parameters()).dtype.itemsize
    return kv_heads * head_dim * 2 * dtype_bytes


def geometry_for(
    model: nn.Module,
    indexer_config: IndexerConfig,
    top_k: int,
    layers: int,
    block_tokens: int,
    kv_dtype_bytes: int | None = None,
) -> Geometry:
    return Geometry(
        layers=layers,
        top_k=top_k,
        kv_bytes_per_token=kv_bytes_per_token(model, kv_dtype_bytes),
        index_bytes_per_token=indexer_config.key_bytes(),
        block_tokens=block_tokens,
    )


@dataclass
class Recording:
    trace: Trace
    texts: list[str]  # generated continuation of each prompt


def record(
    model: nn.Module,
    tokenizer: Any,
    attached: Attached,
    prompts: Sequence[str],
    max_new_tokens: int,
    top_k: int,
    *,
    near_miss: int = 0,
    sampling: Sampling | None = None,
    block_tokens: int = 64,
    kv_dtype_bytes: int | None = None,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Recording:
    """Decode every prompt (one request each) with DSA top-k and record its selections."""
    if not prompts:
        raise DsacacheError("no prompt given")
    if top_k < 1:
        raise DsacacheError(f"--top-k must be >= 1, got {top_k}")
    if near_miss < 0:
        raise DsacacheError(f"--near-miss must be >= 0, got {near_miss}")
    sampling = sampling or Sampling()
    device = next(model.parameters()).device
    encoded = []
    for i, p in enumerate(prompts):
        ids = encode(tokenizer, p)
        if not ids:
            raise DsacacheError(f"prompt {i + 1} is empty after tokenization: {p!r}")
        encoded.append(ids)
    check_context(model, max(len(e) for e in encoded) + max_new_tokens)
    rt = attached.runtime
    rt.top_k = top_k
    requests, texts = [], []
    for ids in encoded:
        rec = Recorder(max_new_tokens, rt.num_layers, top_k, near_miss, device=device)
        x = torch.tensor([ids], dtype=torch.long, device=device)
        out = decode(
            model, x, max_new_tokens, attached=attached, sampling=sampling, recorder=rec,
            progress=progress,
        )  # fmt: skip
        requests.append(
            RequestTrace(
                rec.indices.cpu().numpy(),
                rec.context_lens.numpy(),
                rec.near.cpu().numpy() if near_miss else None,
            )
        )
        texts.append(decode_text(tokenizer, out.tokens.tolist()))
    geometry = geometry_for(
        model, rt.indexer.config, top_k, rt.num_layers, block_tokens, kv_dtype_bytes
    )
    full_meta = {
        "source": "dsacache record",
        "family": getattr(model.config, "model_type", "?"),
        "prompts": list(prompts),
        "prompt_tokens": [len(e) for e in encoded],
        "generated": texts,
        "params": {
            "max_new_tokens": max_new_tokens,
            "top_k": top_k,
            "near_miss": near_miss,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "indexer": rt.indexer.config.to_dict(),
        },
        "dsacache_version": __version__,
        "torch_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        **(meta or {}),
    }
    return Recording(Trace(requests, geometry, full_meta, source="record"), texts)
