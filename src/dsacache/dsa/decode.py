"""The decode loop: prefill, then one token per step with a KV cache (transformers DynamicCache).

Works on any causal LM, with or without DSA attached; the index-key caches of an attached
model follow the KV cache (see sparse.KeyCache). Greedy by default; temperature / top-p
sampling with a private seeded generator. Runs a fixed number of steps (no stop at EOS) so a
recording has a known length.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dsacache.dsa.hooks import Attached
from dsacache.dsa.sparse import Recorder
from dsacache.errors import DsacacheError


@dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy; else softmax(logits / temperature) cut to the top_p mass."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise DsacacheError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DsacacheError(f"--top-p must be in (0, 1], got {self.top_p}")


@dataclass
class DecodeResult:
    tokens: Tensor  # [new] int64, the generated tokens
    logits: Tensor | None  # [new, vocab] fp32 of each step when asked for


def _cache_kwarg(model: nn.Module) -> str:
    # transformers renamed past_key_values -> cache (deprecated name kept until 5.40).
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _next_token(logits: Tensor, s: Sampling, gen: torch.Generator | None) -> Tensor:
    if s.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / s.temperature, dim=-1)
    if s.top_p < 1:
        sp, si = probs.sort(dim=-1, descending=True)
        drop = sp.cumsum(-1) - sp > s.top_p  # keep the smallest prefix reaching top_p
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, si, sp)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@torch.inference_mode()
def decode(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    attached: Attached | None = None,
    sampling: Sampling | None = None,
    recorder: Recorder | None = None,
    keep_logits: bool = False,
    progress: Callable[[int], None] | None = None,
) -> DecodeResult:
    """Generate `max_new_tokens` tokens after `input_ids` [1, T].

    Step i (0 = the prefill's last position) produces token i; a recorder gets each step's
    selections of every layer.
    """
    from transformers import DynamicCache

    if max_new_tokens < 1:
        raise DsacacheError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise DsacacheError(
            f"decode needs one non-empty prompt, got shape {tuple(input_ids.shape)}"
        )
    s = sampling or Sampling()
    gen = None
    if s.temperature > 0:
        gen = torch.Generator(device=input_ids.device).manual_seed(s.seed)
    if attached is not None:
        attached.runtime.reset()
        attached.runtime.recorder = recorder
    cache_name = _cache_kwarg(model)
    cache = DynamicCache(config=model.config)
    tokens = torch.empty(max_new_tokens, dtype=torch.long, device=input_ids.device)
    kept = [] if keep_logits else None
    ids = input_ids
    try:
        for step in range(max_new_tokens):
            if recorder is not None:
                recorder.step = step
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_name: cache})
            logits = out.logits[:, -1]
            if step == 0 and attached is not None:
                attached.check_routed()
            if kept is not None:
                kept.append(logits[0].float())
            nxt = _next_token(logits, s, gen)
            tokens[step] = nxt[0]
            ids = nxt.view(1, 1)
            if progress is not None:
                progress(1)
    finally:
        if attached is not None:
            attached.runtime.recorder = None
    return DecodeResult(tokens, torch.stack(kept) if kept is not None else None)
