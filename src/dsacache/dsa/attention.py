"""The `dsa` attention function, registered with transformers' AttentionInterface.

Models whose attention modules call `ALL_ATTENTION_FUNCTIONS.get_interface(...)` (Llama, Qwen2/3,
Mistral, GPT-2, GPT-NeoX, ...) run this instead of eager/sdpa once their config says "dsa". It
scores the cached tokens with the layer's lightning indexer, keeps one top-k per query token
(shared by all heads, as DSA does) and attends only those keys. With k >= context it is dense
causal attention, so logits match the model's normal attention.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dsacache.dsa.sparse import (
    DsaRuntime,
    allowed_mask,
    gathered_attention,
    masked_attention,
    select,
)
from dsacache.errors import DsacacheError

ATTN_NAME = "dsa"
_registered = False


def register_interface(name: str, forward: Callable[..., tuple], mask: str) -> None:
    """Register `forward` with transformers' AttentionInterface as `name`, with the mask builder
    transformers.masking_utils.<mask> (e.g. "sdpa_mask", "eager_mask")."""
    from transformers import AttentionInterface, masking_utils

    AttentionInterface.register(name, forward)
    masking_utils.AttentionMaskInterface.register(name, getattr(masking_utils, mask))


def register() -> None:
    """Register `dsa` with transformers (attention function + the sdpa-style boolean mask)."""
    global _registered
    if _registered:
        return
    register_interface(ATTN_NAME, dsa_attention_forward, "sdpa_mask")
    _registered = True


def _handle(module: torch.nn.Module) -> tuple[DsaRuntime, int]:
    h = getattr(module, "_dsa_handle", None)
    if h is None:
        raise DsacacheError(
            f"{type(module).__name__}: 'dsa' attention without an attached indexer "
            "(use dsacache.dsa.hooks.attach)"
        )
    return h


def dsa_attention_forward(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    s_aux: Tensor | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """query [B, Hq, Tq, D], key/value [B, Hkv, Tk, D] (cache included) -> ([B, Tq, Hq, D], w)."""
    rt, layer = _handle(module)
    b, _, tq, d = query.shape
    tk = key.shape[2]
    if sliding_window is not None and tk > sliding_window:
        raise DsacacheError(
            f"layer {layer}: context {tk} exceeds the model's sliding window {sliding_window}; "
            "DSA over sliding-window attention is not supported"
        )
    if softcap is not None or s_aux is not None:
        raise DsacacheError(f"layer {layer}: attention softcapping / sinks are not supported")
    scale = d**-0.5 if scaling is None else float(scaling)
    scores = rt.index_scores(layer, tk, tq)  # [B, Tq, Tk]
    allowed = allowed_mask(attention_mask, b, tq, tk, query.device)
    rec = rt.recorder
    if rt.top_k is None:  # dense reference (evaluation, distillation targets)
        out, probs = masked_attention(query, key, value, allowed, scale, dropout, module.training)
        if rt.dense_probe is not None:
            masked = scores.masked_fill(~allowed, float("-inf"))
            rt.dense_probe(layer, probs.float().sum(1), masked)
        return out, probs
    width = rt.top_k + (rec.near_miss if rec is not None else 0)
    idx, valid = select(scores, allowed, width)
    if rec is not None:
        rec.write(layer, idx[0, -1], valid[0, -1], tk)
    k = min(rt.top_k, idx.shape[-1])
    idx, valid = idx[..., :k], valid[..., :k]
    if tq == 1:  # decode: gather the k selected KV rows only
        return gathered_attention(query, key, value, idx, valid, scale), None
    keep = torch.zeros(b, tq, tk, dtype=torch.bool, device=query.device)
    keep.scatter_(-1, idx, valid)
    out, probs = masked_attention(query, key, value, keep, scale, dropout, module.training)
    return out, probs
