"""k < context: attention is restricted to the indexer's top-k; indexer; unsupported families."""

from __future__ import annotations

import pytest
import torch

from dsacache.dsa.attention import dsa_attention_forward
from dsacache.dsa.hooks import attach, attention_modules, check_context
from dsacache.dsa.indexer import IndexerConfig, LightningIndexer
from dsacache.dsa.sparse import DsaRuntime
from dsacache.errors import DsacacheError
from test_dsa_common import VOCAB, tiny_indexer, tiny_model

HID, B, HQ, HKV, D = 32, 1, 4, 2, 8


class _Module(torch.nn.Module):
    is_causal = True


def _setup(k: int, tq: int, tk: int, seed: int = 0):  # noqa: ANN202
    g = torch.Generator().manual_seed(seed)
    ix = LightningIndexer(IndexerConfig(heads=2, dim=8, rope_dims=4), HID, 1, seed=seed)
    rt = DsaRuntime(ix, k, 1)
    mod = _Module()
    mod._dsa_handle = (rt, 0)
    hidden = torch.randn(B, tk, HID, generator=g)
    q = torch.randn(B, HQ, tk, D, generator=g)
    kv = torch.randn(B, HKV, tk, D, generator=g), torch.randn(B, HKV, tk, D, generator=g)
    # The expected selection, computed independently from the indexer's public API.
    pos = torch.arange(tk)
    scores = ix.scores(0, hidden, pos, ix.keys(0, hidden, pos))[0]
    scores = scores.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
    return rt, mod, hidden, q, kv, scores[tk - tq :]


def _run(rt, mod, hidden, q, kv, tq):  # noqa: ANN001, ANN202
    tk = kv[0].shape[2]
    if tq < tk:  # decode-style: earlier tokens' index keys are already cached
        rt.pending[0] = hidden[:, : tk - tq]
        rt.index_scores(0, tk - tq, tk - tq)
    rt.pending[0] = hidden[:, tk - tq :]
    k_in, v_in = kv
    return dsa_attention_forward(mod, q[:, :, tk - tq :], k_in, v_in, None, scaling=D**-0.5)


def test_prefill_weights_zero_outside_topk() -> None:
    k, t = 4, 12
    rt, mod, hidden, q, kv, scores = _setup(k, t, t)
    _, probs = _run(rt, mod, hidden, q, kv, t)
    for row in range(t):
        want = set(scores[row].topk(min(k, row + 1)).indices.tolist())
        got = set(torch.nonzero(probs[0, :, row].sum(0) > 0).flatten().tolist())
        assert got == want, row  # all heads share the one selected set
    assert torch.all(probs[0].sum(-1).sub(1).abs() < 1e-5)


@pytest.mark.parametrize("tq", [1, 12])
def test_unselected_values_do_not_matter(tq: int) -> None:
    k, t = 4, 12
    rt, mod, hidden, q, kv, scores = _setup(k, tq, t)
    out, _ = _run(rt, mod, hidden, q, kv, tq)
    chosen = scores[-1].topk(k).indices
    others = torch.tensor([s for s in range(t) if s not in set(chosen.tolist())])
    keys, values = kv[0].clone(), kv[1].clone()
    keys[:, :, others] += 5.0
    values[:, :, others] -= 3.0
    rt.reset()
    out2, _ = _run(rt, mod, hidden, q, (keys, values), tq)
    assert torch.allclose(out[:, -1], out2[:, -1], atol=1e-6)
    values[:, :, chosen[0]] += 1.0
    rt.reset()
    out3, _ = _run(rt, mod, hidden, q, (keys, values), tq)
    assert not torch.allclose(out[:, -1], out3[:, -1], atol=1e-3)


def test_decode_gather_matches_prefill_mask() -> None:
    k, t = 5, 16
    rt, mod, hidden, q, kv, _ = _setup(k, t, t)
    full, _ = _run(rt, mod, hidden, q, kv, t)
    rt.reset()
    one, _ = _run(rt, mod, hidden, q, kv, 1)
    assert torch.allclose(full[:, -1], one[:, 0], atol=1e-6)


def test_indexer_score_formula_and_roundtrip(tmp_path) -> None:
    cfg = IndexerConfig(heads=3, dim=8, rope_dims=0)
    ix = LightningIndexer(cfg, HID, 2, seed=3)
    h, pos = torch.randn(2, 5, HID), torch.arange(5)
    keys = ix.keys(1, h, pos)
    m = ix.layers[1]
    q = m.wq(h).view(2, 5, 3, 8) * 8**-0.5
    w = m.ww(h) * 3**-0.5
    want = torch.einsum("bth,bths->bts", w, torch.einsum("bthd,bsd->bths", q, keys).relu())
    assert torch.allclose(ix.scores(1, h, pos, keys), want, atol=1e-5)
    assert cfg.key_bytes() == 16
    ix.save(tmp_path / "ix.safetensors")
    back = LightningIndexer.load(tmp_path / "ix.safetensors")
    assert back.config == cfg and back.num_layers == 2 and back.hidden_size == HID
    assert torch.equal(back.scores(1, h, pos, back.keys(1, h, pos)), ix.scores(1, h, pos, keys))
    with pytest.raises(DsacacheError, match="not a dsacache indexer"):
        (tmp_path / "bad.safetensors").write_bytes(b"nope")
        LightningIndexer.load(tmp_path / "bad.safetensors")


def test_rope_is_relative() -> None:
    """Index scores depend on positions only through their difference (rotary)."""
    ix = LightningIndexer(IndexerConfig(heads=2, dim=8, rope_dims=8), HID, 1, seed=0)
    h = torch.randn(1, 6, HID)
    p = torch.arange(6)
    a = ix.scores(0, h, p, ix.keys(0, h, p))
    b = ix.scores(0, h, p + 100, ix.keys(0, h, p + 100))
    assert torch.allclose(a, b, atol=1e-4)


def test_unsupported_families_refused() -> None:
    with pytest.raises(DsacacheError, match="AttentionInterface"):
        attention_modules(tiny_model("bloom"))
    with pytest.raises(DsacacheError, match="non-causal"):
        attention_modules(tiny_model("llama", is_causal=False))


def test_sliding_window_refused() -> None:
    model = tiny_model("mistral", sliding_window=8)
    check_context(model, 8)
    with pytest.raises(DsacacheError, match="sliding window"):
        check_context(model, 9)
    att = attach(model, tiny_indexer(model), top_k=4)
    try:  # the attention function itself refuses too, whoever calls it
        with pytest.raises(DsacacheError, match="sliding window"), torch.no_grad():
            model(torch.randint(0, VOCAB, (1, 12)))
    finally:
        att.detach()
    qwen = tiny_model("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=0)
    with pytest.raises(DsacacheError, match="sliding window"):
        check_context(qwen, 10)
