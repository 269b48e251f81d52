"""Per-model DSA state and the sparse attention math: index-key caches, top-k, gathers.

`DsaRuntime` is what the registered `dsa` attention function (attention.py) consults for a
layer: the indexer, top-k, the layer's cached index keys, the attention input captured by the
forward pre-hook (hooks.py), and optional observers (a `Recorder`, a dense-attention probe).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dsacache.dsa.indexer import LightningIndexer
from dsacache.errors import DsacacheError

# (layer, dense probabilities summed over heads [B, Tq, Tk], masked index scores [B, Tq, Tk])
DenseProbe = Callable[[int, Tensor, Tensor], None]


class KeyCache:
    """One layer's index keys [B, T, dim], in a buffer that grows by doubling (amortised O(1))."""

    def __init__(self) -> None:
        self.buf: Tensor | None = None
        self.length = 0

    def reset(self) -> None:
        self.buf, self.length = None, 0

    def set_or_append(self, new: Tensor, total: int) -> Tensor:
        """Store the keys of the newest tokens; `total` = tokens the KV cache holds after them."""
        n = new.shape[1]
        if total == n:  # a fresh forward (prefill, or no KV cache): start over
            self.buf, self.length = None, 0
        elif self.length != total - n:
            raise DsacacheError(
                f"index-key cache holds {self.length} tokens but the KV cache holds {total - n}: "
                "the model was called out of step with its cache"
            )
        if self.buf is None or self.buf.shape[0] != new.shape[0] or self.buf.shape[1] < total:
            cap = max(total, 2 * (self.buf.shape[1] if self.buf is not None else 0), 64)
            grown = new.new_empty(new.shape[0], cap, new.shape[2])
            if self.length:
                grown[:, : self.length] = self.buf[:, : self.length]
            self.buf = grown
        self.buf[:, self.length : total] = new
        self.length = total
        return self.buf[:, :total]


@dataclass
class Recorder:
    """Selected indices [steps, layers, k] (+ near-miss [steps, layers, m]) of one request.

    The decode loop sets `step` before each forward; the attention function hands over the
    ranked row of the step's last query token for every layer. The hot path is two plain copies
    into buffers on the model's device (no host sync); -1 filling and the split into top-k and
    near-miss happen once, vectorised, in `indices` / `near`.
    """

    steps: int
    layers: int
    k: int
    near_miss: int = 0
    device: torch.device | str = "cpu"
    step: int = 0
    raw_idx: Tensor = field(init=False)
    raw_valid: Tensor = field(init=False)
    contexts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.steps, self.layers, self.k + self.near_miss)
        self.raw_idx = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.raw_valid = torch.zeros(shape, dtype=torch.bool, device=self.device)
        self.contexts = [0] * self.steps

    def write(self, layer: int, idx: Tensor, valid: Tensor, context: int) -> None:
        """idx/valid [n] of the step's query, by descending index score (top-k then near-miss)."""
        n = idx.shape[0]
        self.raw_idx[self.step, layer, :n] = idx
        self.raw_valid[self.step, layer, :n] = valid
        if layer == 0:
            self.contexts[self.step] = context

    def _ranked(self) -> Tensor:
        return torch.where(self.raw_valid, self.raw_idx, -1).to(torch.int32)

    @property
    def indices(self) -> Tensor:
        return self._ranked()[..., : self.k]

    @property
    def near(self) -> Tensor:
        return self._ranked()[..., self.k :]

    @property
    def context_lens(self) -> Tensor:
        return torch.tensor(self.contexts, dtype=torch.int64)


class DsaRuntime:
    """What the `dsa` attention function needs, per model. top_k None = dense attention."""

    def __init__(self, indexer: LightningIndexer, top_k: int | None, num_layers: int) -> None:
        if top_k is not None and top_k < 1:
            raise DsacacheError(f"top-k must be >= 1, got {top_k}")
        if indexer.num_layers != num_layers:
            raise DsacacheError(
                f"indexer has {indexer.num_layers} layers but the model has {num_layers}"
            )
        self.indexer = indexer
        self.top_k = top_k
        self.num_layers = num_layers
        self.key_caches = [KeyCache() for _ in range(num_layers)]
        self.pending: list[Tensor | None] = [None] * num_layers
        self.calls = [0] * num_layers
        self.recorder: Recorder | None = None
        self.dense_probe: DenseProbe | None = None

    def reset(self) -> None:
        """Forget every cached index key (a new request)."""
        for c in self.key_caches:
            c.reset()
        self.pending = [None] * self.num_layers
        self.calls = [0] * self.num_layers

    def index_scores(self, layer: int, total: int, tq: int) -> Tensor:
        """Index scores [B, Tq, Tk] of this forward's queries (no mask), caching their keys."""
        hidden = self.pending[layer]
        if hidden is None:
            raise DsacacheError(
                f"layer {layer}: the attention input was not captured (indexer hooks not attached)"
            )
        self.pending[layer] = None
        self.calls[layer] += 1
        pos = torch.arange(total - tq, total, device=hidden.device)
        keys = self.key_caches[layer].set_or_append(self.indexer.keys(layer, hidden, pos), total)
        return self.indexer.scores(layer, hidden, pos, keys)


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """[B, Hkv, T, D] -> [B, Hkv*groups, T, D] (grouped-query attention)."""
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


def allowed_mask(
    attention_mask: Tensor | None, b: int, tq: int, tk: int, device: torch.device
) -> Tensor:
    """Keys each query may see [B, Tq, Tk]: the model's mask if given, else causal by offset."""
    if attention_mask is not None:
        m = attention_mask[:, 0] if attention_mask.dim() == 4 else attention_mask
        if m.dtype != torch.bool:  # additive float mask: 0 keep, dtype-min drop
            m = m > torch.finfo(m.dtype).min / 2
        return m.expand(b, tq, tk)
    q_pos = torch.arange(tk - tq, tk, device=device)
    return (torch.arange(tk, device=device)[None, :] <= q_pos[:, None]).expand(b, tq, tk)


def select(scores: Tensor, allowed: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """The `width` best allowed keys per query by index score: (idx, valid) [B, Tq, width]."""
    masked = scores.masked_fill(~allowed, float("-inf"))
    vals, idx = masked.topk(min(width, scores.shape[-1]), dim=-1, sorted=True)
    return idx, vals > float("-inf")


def gathered_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    idx: Tensor,
    valid: Tensor,
    scaling: float,
) -> Tensor:
    """One query token attending only its selected keys: gathers k KV rows, not the context.

    query [B, Hq, 1, D]; key/value [B, Hkv, Tk, D]; idx/valid [B, 1, k]. Returns [B, 1, Hq, D].
    """
    b, hq, _, d = query.shape
    hkv, k = key.shape[1], idx.shape[-1]
    gidx = idx.view(b, 1, k, 1).expand(b, hkv, k, key.shape[-1])
    ks = repeat_kv(key.gather(2, gidx), hq // hkv)
    vs = repeat_kv(value.gather(2, gidx.expand(b, hkv, k, value.shape[-1])), hq // hkv)
    logits = torch.matmul(query, ks.transpose(2, 3)) * scaling  # [B, Hq, 1, k]
    logits = logits.masked_fill(~valid.view(b, 1, 1, k), float("-inf"))
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(probs, vs).transpose(1, 2)


def masked_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    keep: Tensor,
    scaling: float,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, Tensor]:
    """Attention over the keys `keep` [B, Tq, Tk] allows. Returns ([B, Tq, Hq, D], probs)."""
    groups = query.shape[1] // key.shape[1]
    logits = torch.matmul(query, repeat_kv(key, groups).transpose(2, 3)) * scaling
    logits = logits.masked_fill(~keep[:, None], float("-inf"))
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout and training:
        probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
    return torch.matmul(probs, repeat_kv(value, groups)).transpose(1, 2), probs
