"""topk_recall: hand-checked cases, perfect and reversed indexers, eligibility, decode rows."""

from __future__ import annotations

import pytest
import torch

from dsacache.dsa.quality import topk_recall
from dsacache.errors import DsacacheError


def test_hand_checked_single_query() -> None:
    # One decode query at position 3 sees keys 0..3 (4 > k=2 keys: eligible).
    dense = torch.tensor([[0.4, 0.3, 0.2, 0.1]])  # top-2 = {0, 1}
    index = torch.tensor([[0.1, 0.4, 0.3, 0.2]])  # top-2 = {1, 2}: one of two found
    r = topk_recall(index, dense, k=2)
    assert r.tolist() == [0.5]


def test_hand_checked_prefill_causal_and_eligibility() -> None:
    # Prefill of 4 tokens, k=2: queries 0 and 1 see <= 2 keys -> skipped; 2 and 3 count.
    dense = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.5, 0.5, 0.0, 0.0],
            [0.1, 0.6, 0.3, 0.0],  # top-2 {1, 2}
            [0.4, 0.1, 0.2, 0.3],  # top-2 {0, 3}
        ]
    )
    # Future keys get huge scores: must be ignored (causal).
    index = torch.tensor(
        [
            [0.0, 9.0, 9.0, 9.0],
            [0.0, 0.0, 9.0, 9.0],
            [0.0, 2.0, 1.0, 9.0],  # top-2 {1, 2}: recall 1
            [3.0, 2.0, 1.0, 0.0],  # top-2 {0, 1}: recall 1/2
        ]
    )
    r = topk_recall(index, dense, k=2)
    assert r.tolist() == [1.0, 0.5]


def test_perfect_indexer_is_one_and_reversed_is_low() -> None:
    g = torch.Generator().manual_seed(0)
    b, t, k = 2, 64, 8
    logits = torch.randn(b, t, t, generator=g) * 3
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    p = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)
    perfect = topk_recall(torch.log(p), p, k)
    assert perfect.numel() == b * (t - k)  # queries at positions k..t-1
    assert perfect.min().item() == 1.0
    reversed_ = topk_recall(-p, p, k)
    # A query at position t picks the k least-attended of t+1 keys: overlap only when t+1 < 2k.
    assert reversed_.mean().item() < 0.1
    expected = [max(0, 2 * k - (pos + 1)) / k for pos in range(k, t)] * b
    assert reversed_.tolist() == pytest.approx(expected)


def test_decode_rows_with_query_positions_and_batch_dims() -> None:
    dense = torch.tensor([[[0.1, 0.2, 0.7, 0.0, 0.0]]])  # [1, 1, 5]: query at position 2
    index = torch.tensor([[[0.0, 1.0, 2.0, 5.0, 5.0]]])
    # With position 2 the future keys 3, 4 are invisible: top-2 {1, 2} vs dense {1, 2}.
    r = topk_recall(index, dense, k=2, query_positions=torch.tensor([2]))
    assert r.tolist() == [1.0]
    # Default position = last key (4): everything visible, index picks {3, 4}; dense {2, 1}.
    assert topk_recall(index, dense, k=2).tolist() == [0.0]
    # k >= visible keys: nothing to choose, no rows.
    assert topk_recall(index, dense, k=3, query_positions=torch.tensor([2])).numel() == 0


def test_bad_input_raises() -> None:
    with pytest.raises(DsacacheError, match="shapes"):
        topk_recall(torch.zeros(2, 3), torch.zeros(3, 3), 1)
    with pytest.raises(DsacacheError, match="k must be"):
        topk_recall(torch.zeros(3, 3), torch.zeros(3, 3), 0)
