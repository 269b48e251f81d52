"""Quality of DSA at k < context on held-out text: top-k agreement and perplexity delta.

Two teacher-forced passes over the same tokens, both through the `dsa` attention function:
dense (top_k None) gives the dense log-likelihood and, per layer and query, the dense attention
probabilities summed over heads, against whose own top-k the indexer's top-k is scored
(recall, `quality.topk_recall`: queries with more than k visible keys only); sparse (top_k = k,
one top-k per query token, exactly what decode does) gives the sparse log-likelihood.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from dsacache.dsa.hooks import Attached
from dsacache.dsa.quality import topk_recall
from dsacache.errors import DsacacheError


@dataclass(frozen=True)
class EvalResult:
    tokens: int
    top_k: int
    recall: float  # pooled over layers and eligible queries
    recall_per_layer: list[float]
    ppl_dense: float
    ppl_sparse: float

    @property
    def ppl_delta(self) -> float:
        return self.ppl_sparse - self.ppl_dense

    def to_dict(self) -> dict:
        return {**asdict(self), "ppl_delta": self.ppl_delta}


def _nll(logits: Tensor, ids: Tensor) -> float:
    lp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    return float(-lp.gather(-1, ids[0, 1:, None]).mean())


@torch.inference_mode()
def evaluate(model: nn.Module, attached: Attached, ids: Tensor, top_k: int) -> EvalResult:
    """Recall of the indexer vs dense top-k and perplexity dense vs sparse on `ids` [1, T]."""
    t = ids.shape[1]
    if t <= top_k + 1:
        raise DsacacheError(
            f"evaluation text has {t} tokens; it needs more than top-k + 1 = {top_k + 1}"
        )
    rt = attached.runtime
    saved = rt.top_k, rt.dense_probe
    hits: list[list[Tensor]] = [[] for _ in range(rt.num_layers)]

    def probe(layer: int, dense_p: Tensor, index_scores: Tensor) -> None:
        hits[layer].append(topk_recall(index_scores, dense_p, top_k))

    try:
        rt.top_k, rt.dense_probe = None, probe
        rt.reset()
        dense = _nll(model(input_ids=ids, use_cache=False).logits, ids)
        attached.check_routed()
        rt.top_k, rt.dense_probe = top_k, None
        rt.reset()
        sparse = _nll(model(input_ids=ids, use_cache=False).logits, ids)
    finally:
        rt.top_k, rt.dense_probe = saved
        rt.reset()
    per_layer = [torch.cat(h) for h in hits]
    pooled = torch.cat(per_layer)
    return EvalResult(
        tokens=t,
        top_k=top_k,
        recall=float(pooled.mean()),
        recall_per_layer=[float(r.mean()) for r in per_layer],
        ppl_dense=math.exp(dense),
        ppl_sparse=math.exp(sparse),
    )
