"""Recording: trace shape, geometry, meta, -1 slots and near-miss ranks; sampling flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsacache import __version__
from dsacache.dsa.decode import Sampling, decode
from dsacache.dsa.hooks import attach
from dsacache.dsa.record import record
from dsacache.errors import DsacacheError
from test_dsa_common import VOCAB, tiny_indexer, tiny_model

K, M, NEW = 5, 3, 6


class CharTokenizer:
    """Characters -> ids mod the vocabulary: enough for record() (encode/decode)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) % VOCAB for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(65 + i % 26) for i in ids)


@pytest.fixture(scope="module")
def recorded():  # noqa: ANN201
    """Two requests recorded, plus the index scores every layer saw at every step (a spy)."""
    model = tiny_model("llama")
    att = attach(model, tiny_indexer(model), top_k=K)
    rt = att.runtime
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    orig = rt.index_scores

    def spy(layer: int, total: int, tq: int) -> torch.Tensor:
        s = orig(layer, total, tq)
        seen[layer].append(s[0, -1].clone())  # the step's query row
        return s

    rt.index_scores = spy
    prompts = ["abc", "the quick"]  # 3 tokens: shorter than k at first; 9 tokens
    try:
        rec = record(model, CharTokenizer(), att, prompts, NEW, K, near_miss=M, meta={"model": "t"})
    finally:
        rt.index_scores = orig
        att.detach()
    return prompts, rec, seen


def test_trace_shape_geometry_meta(recorded) -> None:  # noqa: ANN001
    prompts, rec, _ = recorded
    t = rec.trace
    assert len(t.requests) == 2
    g = t.geometry
    # 2 KV heads x 16 dims x (K+V) x fp32; bf16 index key of 16 dims
    assert (g.layers, g.top_k, g.kv_bytes_per_token, g.index_bytes_per_token) == (2, K, 256, 32)
    assert g.block_tokens == 64
    for r, p in zip(t.requests, prompts, strict=True):
        assert r.indices.shape == (NEW, 2, K) and r.indices.dtype == np.int32
        assert r.near_miss.shape == (NEW, 2, M) and r.near_miss.dtype == np.int32
        np.testing.assert_array_equal(r.context_lens, len(p) + np.arange(NEW))
    first = t.requests[0]
    assert (first.indices[0] == -1).sum(-1).tolist() == [K - 3, K - 3]  # context 3 < k
    assert (first.near_miss[0] == -1).all()
    assert (t.requests[1].indices >= 0).all()
    assert t.meta["family"] == "llama" and t.meta["model"] == "t"
    assert t.meta["prompts"] == prompts and t.meta["dsacache_version"] == __version__
    assert t.meta["params"]["top_k"] == K and t.meta["params"]["near_miss"] == M
    t.validate()


def test_selections_are_indexer_ranks(recorded) -> None:  # noqa: ANN001
    """Slots hold ranks 0..k-1 of the step's index scores, near-miss ranks k..k+M-1 (ties in
    the scores, e.g. several exact zeros after ReLU, may be broken either way)."""
    prompts, rec, seen = recorded
    for r, p in enumerate(prompts):
        req = rec.trace.requests[r]
        for layer in range(2):
            for step in range(NEW):
                scores = seen[layer][r * NEW + step]
                ctx = len(p) + step
                assert scores.shape == (ctx,)
                top = req.indices[step, layer]
                near = req.near_miss[step, layer]
                n_top, n_near = min(K, ctx), min(M, max(0, ctx - K))
                assert (top[:n_top] >= 0).all() and (top[n_top:] == -1).all()
                assert (near[:n_near] >= 0).all() and (near[n_near:] == -1).all()
                ranked = np.concatenate([top[:n_top], near[:n_near]])
                vals = scores[torch.from_numpy(ranked).long()].numpy()
                rest = np.setdiff1d(np.arange(ctx), ranked)
                assert np.all(np.diff(vals) <= 0)  # descending index score
                if rest.size:
                    assert vals.min() >= scores[torch.from_numpy(rest).long()].max().item()


def test_sampling_flags_are_seeded() -> None:
    model = tiny_model("gpt2")
    ids = torch.tensor([[1, 2, 3]])
    greedy = decode(model, ids, 8).tokens
    assert torch.equal(decode(model, ids, 8, sampling=Sampling(0.0)).tokens, greedy)
    a = decode(model, ids, 8, sampling=Sampling(1.5, 0.9, seed=1)).tokens
    b = decode(model, ids, 8, sampling=Sampling(1.5, 0.9, seed=1)).tokens
    c = [decode(model, ids, 8, sampling=Sampling(1.5, 1.0, seed=s)).tokens for s in (2, 3, 4)]
    assert torch.equal(a, b)
    assert any(not torch.equal(x, greedy) for x in c)
    nucleus = decode(model, ids, 8, sampling=Sampling(1.0, 1e-6, seed=5)).tokens
    assert torch.equal(nucleus, greedy)  # a vanishing top-p keeps only the argmax
    with pytest.raises(DsacacheError, match="top-p"):
        Sampling(1.0, 0.0)
