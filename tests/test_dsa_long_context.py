"""The bundled backbone decodes past 2048 tokens through the sparse (DSA) path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dsacache.dsa.decode import decode  # noqa: E402
from dsacache.dsa.hooks import attach  # noqa: E402
from dsacache.dsa.indexer import LightningIndexer  # noqa: E402
from dsacache.dsa.models import load_backbone, tiny_path  # noqa: E402
from dsacache.dsa.record import encode  # noqa: E402
from dsacache.dsa.sparse import Recorder  # noqa: E402

PROMPT_TOKENS, NEW, K = 2040, 12, 64


@pytest.mark.slow
def test_tiny_decodes_past_2048_tokens_sparse():
    model, tok = load_backbone("tiny")
    ix = LightningIndexer.load(tiny_path() / "indexer.safetensors")
    layers = ix.num_layers
    att = attach(model, ix, K)
    try:
        text = (tiny_path() / "heldout.txt").read_text(encoding="utf-8")
        ids = encode(tok, text[: 8 * PROMPT_TOKENS])[:PROMPT_TOKENS]
        assert len(ids) == PROMPT_TOKENS
        rec = Recorder(NEW, layers, K, device="cpu")
        out = decode(model, torch.tensor([ids]), NEW, attached=att, recorder=rec, keep_logits=True)
    finally:
        att.detach()
    assert out.logits.shape == (NEW, model.config.vocab_size)
    assert torch.isfinite(out.logits).all()
    # A real distribution at every step, not a collapsed or constant one.
    assert (out.logits.std(-1) > 0.1).all()
    ctx = rec.context_lens
    assert ctx.tolist() == list(range(PROMPT_TOKENS, PROMPT_TOKENS + NEW))
    assert int(ctx.max()) >= 2048
    idx = rec.indices  # [steps, layers, k]: context > k, so every slot is filled
    assert idx.shape == (NEW, layers, K) and (idx >= 0).all()
    assert (idx < ctx[:, None, None]).all()
    assert all(len(set(row.tolist())) == K for row in idx.reshape(-1, K))
    # Past position 2048 the indexer still reaches back into the prompt, not only recent tokens.
    assert (idx[-1] < PROMPT_TOKENS - 256).any()
