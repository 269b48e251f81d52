"""Top-k recall of an indexer against dense attention's own top-k (DSA selection quality).

Public API (reused by `distill` and by `record --eval`):

    topk_recall(index_scores, dense_scores, k, query_positions=None) -> Tensor
        index_scores, dense_scores: [..., Tq, Tk] (any float dtype; larger = more relevant; the
        dense side is attention probabilities, logits or log-probabilities, only the order counts)
        k: top-k size; query_positions: [Tq] absolute positions of the query rows (key s is
        visible to the query at position t when s <= t); default: the queries are the last Tq
        keys (prefill: Tq == Tk; one decode step: Tq == 1).
        Returns the recall |index top-k ∩ dense top-k| / k of every query with MORE than k visible
        keys (others are skipped: any selection of all of them is exact), flattened to 1-D fp32;
        `.mean()` of the concatenation over batches and layers is the pooled recall.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dsacache.errors import DsacacheError


def topk_recall(
    index_scores: Tensor,
    dense_scores: Tensor,
    k: int,
    query_positions: Tensor | None = None,
) -> Tensor:
    """Recall@k of the indexer's top-k against dense attention's top-k, one value per query.

    Only queries with more than k visible (causal) keys count; the result is 1-D fp32.
    """
    if index_scores.shape != dense_scores.shape or index_scores.dim() < 2:
        raise DsacacheError(
            f"topk_recall: shapes differ or rank < 2: {tuple(index_scores.shape)} vs "
            f"{tuple(dense_scores.shape)}"
        )
    if k < 1:
        raise DsacacheError(f"topk_recall: k must be >= 1, got {k}")
    tq, tk = index_scores.shape[-2:]
    device = index_scores.device
    if query_positions is None:
        query_positions = torch.arange(tk - tq, tk, device=device)
    pos = query_positions.to(device=device, dtype=torch.long).reshape(tq)
    if k >= tk:
        return torch.empty(0, dtype=torch.float32, device=device)
    visible = torch.arange(tk, device=device).unsqueeze(0) <= pos.unsqueeze(1)  # [Tq, Tk]
    eligible = pos + 1 > k  # [Tq]: queries that must choose
    if not bool(eligible.any()):
        return torch.empty(0, dtype=torch.float32, device=device)
    # Restrict to eligible rows first: less work, and every kept row has >= k + 1 visible keys.
    idx = index_scores[..., eligible, :].float().masked_fill(~visible[eligible], float("-inf"))
    den = dense_scores[..., eligible, :].float().masked_fill(~visible[eligible], float("-inf"))
    top_i = idx.topk(k, dim=-1).indices
    top_d = den.topk(k, dim=-1).indices
    chosen = torch.zeros(den.shape, dtype=torch.bool, device=device)
    chosen.scatter_(-1, top_d, True)
    hits = chosen.gather(-1, top_i).sum(-1)  # indices within one top-k are distinct
    return (hits.float() / k).reshape(-1)
