"""k >= context: DSA attention equals the model's own attention on every supported family."""

from __future__ import annotations

import pytest
import torch

from dsacache.dsa.decode import decode
from dsacache.dsa.hooks import attach
from test_dsa_common import FAMILIES, VOCAB, tiny_indexer, tiny_model

PROMPT, NEW = 12, 8


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_equivalence(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(0, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    ref = decode(model, ids, NEW, keep_logits=True)  # the model's own attention (sdpa)
    with torch.no_grad():
        full_ref = model(torch.cat([ids, ref.tokens[None]], 1)).logits
    att = attach(model, tiny_indexer(model), top_k=PROMPT + NEW)  # k >= every context
    try:
        assert model.config._attn_implementation == "dsa"
        got = decode(model, ids, NEW, attached=att, keep_logits=True)
        with torch.no_grad():
            full_got = model(torch.cat([ids, ref.tokens[None]], 1)).logits
    finally:
        att.detach()
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(got.tokens, ref.tokens)
    assert (got.logits - ref.logits).abs().max().item() < 1e-4
    assert (full_got - full_ref).abs().max().item() < 1e-4
    assert all(c > 0 for c in att.runtime.calls)  # every layer went through `dsa`


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_small_k_changes_output(family: str) -> None:
    """The same model with k < context really attends fewer keys: logits move."""
    model = tiny_model(family)
    ids = torch.randint(0, VOCAB, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense = model(ids).logits
    att = attach(model, tiny_indexer(model), top_k=3)
    try:
        with torch.no_grad():
            sparse = model(ids).logits
    finally:
        att.detach()
    # Rows with at most k visible keys are exact, the rest differ.
    assert (sparse[0, :3] - dense[0, :3]).abs().max().item() < 1e-4
    assert (sparse[0, 3:] - dense[0, 3:]).abs().amax(-1).min().item() > 1e-4
