"""Distillation: exact dense targets (GQA, several families), the KL loss, training, resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers")

from dsacache.dsa import distill as D  # noqa: E402
from dsacache.dsa.indexer import IndexerConfig, LightningIndexer  # noqa: E402
from dsacache.errors import DsacacheError  # noqa: E402
from test_dsa_common import one_thread, tiny_gqa_llama  # noqa: E402, F401 - autouse fixture

CPU = torch.device("cpu")


def tiny_llama(seed: int = 0, attn: str = "sdpa", init: float = 0.2) -> torch.nn.Module:
    """The GQA Llama of test_dsa_common, vocabulary 101, prepared as a frozen backbone."""
    return D.prepare_backbone(tiny_gqa_llama(101, seed=seed, init=init, attn=attn), CPU)


CFG = D.TrainConfig(
    seq=24, batch=3, lr=3e-3, warmup=2, seed=1, indexer=IndexerConfig(heads=2, dim=16, rope_dims=8)
)


def test_dense_probe_matches_eager_attentions_gqa() -> None:
    model = tiny_llama(attn="eager")
    ids = torch.randint(0, 101, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids, output_attentions=True)
        with D.DenseProbe(model) as probe:
            hidden, probs = D.dense_targets(model, probe, ids)
            logits = model(ids).logits  # the probe's own dense output
    assert model.config._attn_implementation == "eager"  # restored
    assert len(probs) == 2 and probs[0].shape == (2, 20, 20)
    for layer in range(2):
        torch.testing.assert_close(probs[layer], ref.attentions[layer].mean(1))
        assert hidden[layer].shape == (2, 20, 64)
    torch.testing.assert_close(logits, ref.logits)
    rows = probs[0].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))  # L1-normalised per query
    assert probs[0].triu(1).abs().max().item() == 0.0  # causal


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral", "gpt_neox", "gpt2"])
def test_dense_probe_matches_eager_on_other_families(family: str) -> None:
    from test_dsa_common import tiny_model

    model = tiny_model(family, attn_implementation="eager")
    model.set_attn_implementation("eager")
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids, output_attentions=True)
        with D.DenseProbe(model) as probe:
            _, probs = D.dense_targets(model, probe, ids)
    for layer, p in enumerate(probs):
        torch.testing.assert_close(p, ref.attentions[layer].float().mean(1))


def test_kl_is_zero_for_an_indexer_that_matches_p() -> None:
    # indexer_kl's formula on a hand-made case: scores = log p gives KL 0, others > 0.
    model = tiny_llama()
    ids = torch.randint(0, 101, (2, 16), generator=torch.Generator().manual_seed(0))
    with D.DenseProbe(model) as probe:
        hidden, probs = D.dense_targets(model, probe, ids)
    indexer = LightningIndexer(CFG.indexer, 64, 2, seed=0)
    loss, per = D.indexer_kl(indexer, hidden, probs)
    assert loss.item() > 0 and per.shape == (2,)
    torch.testing.assert_close(loss, per.sum())
    # Replace the scorer by log p itself: the KL must vanish (masked keys excluded on both sides).
    orig = D.layer_scores
    try:
        D.layer_scores = lambda ix, layer, h: torch.log(probs[layer].clamp_min(1e-30))
        zero, _ = D.indexer_kl(indexer, hidden, probs)
    finally:
        D.layer_scores = orig
    assert abs(zero.item()) < 1e-5


def test_loss_decreases_on_a_fixed_batch() -> None:
    model = tiny_llama()
    tokens = torch.randint(0, 101, (500,), generator=torch.Generator().manual_seed(0))
    ids = D.batch_windows(tokens, CFG.seq, CFG.batch, seed=0, step=0)
    state = D.new_state(model, CFG, "x", CPU)
    with D.DenseProbe(model) as probe:
        hidden, probs = D.dense_targets(model, probe, ids)
    losses = []
    for _ in range(30):
        loss, _ = D.indexer_kl(state.indexer, hidden, probs)
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_training_raises_heldout_recall(tmp_path) -> None:
    model = tiny_llama()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 101, (2000,), generator=g)
    windows = D.heldout_windows(torch.randint(0, 101, (200,), generator=g), CFG.seq, 4)
    cfg = dataclasses.replace(CFG, lr=1e-2)
    state = D.new_state(model, cfg, D.token_fingerprint(tokens), CPU)
    before = D.evaluate(model, state.indexer, windows, 4, 4, CPU)
    state = D.train(model, state, tokens, 120, CPU, tmp_path / "ix.safetensors", 0)
    after = D.evaluate(model, state.indexer, windows, 4, 4, CPU)
    assert len(after.per_layer) == 2 and after.queries_per_layer == 4 * (CFG.seq - 4)
    assert after.overall > before.overall + 0.08, (before, after)
    assert sum(after.kl_per_layer) < sum(before.kl_per_layer)


def test_checkpoint_resume_equals_one_run(tmp_path) -> None:
    model = tiny_llama()
    tokens = torch.randint(0, 101, (1000,), generator=torch.Generator().manual_seed(0))
    sha = D.token_fingerprint(tokens)
    n = 3
    one = tmp_path / "one.safetensors"
    full = D.train(model, D.new_state(model, CFG, sha, CPU), tokens, 2 * n, CPU, one, n)
    half = tmp_path / "half.safetensors"
    D.train(model, D.new_state(model, CFG, sha, CPU), tokens, n, CPU, half, 0)
    resumed = D.load_checkpoint(half, model, CFG, sha, CPU)
    assert resumed.step == n and len(resumed.losses) == n
    resumed = D.train(model, resumed, tokens, 2 * n, CPU, tmp_path / "two.safetensors", 0)
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6, abs=1e-7)
    ref = LightningIndexer.load(one).state_dict()
    got = LightningIndexer.load(tmp_path / "two.safetensors").state_dict()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-6, atol=1e-7)
    # Resuming the weights without the Adam moments does not reproduce the run (the check bites).
    ix = LightningIndexer.load(half)
    naive = D.TrainState(ix, D._optimizer(ix, CFG), n, CFG, sha)
    D.train(model, naive, tokens, 2 * n, CPU, tmp_path / "naive.safetensors", 0)
    bad = LightningIndexer.load(tmp_path / "naive.safetensors").state_dict()
    assert any(not torch.allclose(bad[k], ref[k], rtol=1e-6, atol=1e-7) for k in ref)


def test_resume_refuses_other_settings_or_data(tmp_path) -> None:
    model = tiny_llama()
    tokens = torch.randint(0, 101, (300,), generator=torch.Generator().manual_seed(0))
    sha = D.token_fingerprint(tokens)
    ck = tmp_path / "ck.safetensors"
    D.train(model, D.new_state(model, CFG, sha, CPU), tokens, 1, CPU, ck, 0)
    assert D.state_path(ck).is_file()
    with pytest.raises(DsacacheError, match="batch=5"):
        D.load_checkpoint(ck, model, D.TrainConfig(**{**CFG.__dict__, "batch": 5}), sha, CPU)
    with pytest.raises(DsacacheError, match="training text"):
        D.load_checkpoint(ck, model, CFG, "other", CPU)
    D.state_path(ck).unlink()
    with pytest.raises(DsacacheError, match="training state"):
        D.load_checkpoint(ck, model, CFG, sha, CPU)


def test_batches_depend_on_seed_and_step_only() -> None:
    tokens = torch.arange(1000)
    a = D.batch_windows(tokens, 16, 4, seed=3, step=7)
    assert torch.equal(a, D.batch_windows(tokens, 16, 4, seed=3, step=7))
    assert not torch.equal(a, D.batch_windows(tokens, 16, 4, seed=3, step=8))
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 15, dtype=a.dtype))  # contiguous
    with pytest.raises(DsacacheError, match="fewer than --seq"):
        D.batch_windows(tokens[:10], 16, 4, 0, 0)
