"""trace/generate.py: the one entry point every user of synthetic traces goes through."""

from __future__ import annotations

import numpy as np
import pytest

from dsacache.errors import DsacacheError
from dsacache.gpu.predict import DecodeConfig
from dsacache.trace.generate import (
    DEFAULT_GENERATOR,
    describe,
    generate,
    generate_preset,
    indexer_setup,
    progress_total,
)
from dsacache.trace.geometry import preset
from dsacache.trace.synth import synthesize
from dsacache.trace.synth_indexer import synthesize_indexer


def test_every_user_defaults_to_the_same_generator() -> None:
    assert DEFAULT_GENERATOR == "indexer"
    cfg = DecodeConfig("x", "deepseek-v3.2", 2, 1, 300, 3, 1, 16, 0, 0)
    assert cfg.generator == DEFAULT_GENERATOR
    assert cfg.trace().meta["generator"] == DEFAULT_GENERATOR


def test_generate_preset_is_each_generator_itself() -> None:
    g = preset("deepseek-v3.2").with_overrides(layers=3, top_k=16)
    stats = generate_preset("stats", "deepseek-v3.2", 5, 200, layers=3, top_k=16, seed=2)
    assert np.array_equal(stats.indices, synthesize(g, 5, 200, seed=2).indices)
    geometry, indexer = indexer_setup("deepseek-v3.2", layers=3, top_k=16)
    assert geometry == g and indexer.model_layers == 61
    ix = generate_preset("indexer", "deepseek-v3.2", 5, 200, layers=3, top_k=16, seed=2)
    direct = synthesize_indexer(g, indexer.spec, 5, 200, seed=2, model_layers=61)
    assert np.array_equal(ix.indices, direct.indices)
    assert describe(ix.meta) != describe(stats.meta) == describe({})  # unnamed: stats


def test_indexer_setup_full_depth_and_hf_config() -> None:
    _, indexer = indexer_setup("glm-5")
    assert indexer.model_layers is None  # all 78 layers: not a reduced model
    cfg = {"num_hidden_layers": 10, "index_n_heads": 4, "index_head_dim": 32,
           "qk_rope_head_dim": 8, "index_topk": 64}  # fmt: skip
    g, indexer = indexer_setup("glm-5", layers=5, hf_config=cfg, params={"deep": {"flicker": 3}})
    assert (g.layers, g.top_k, indexer.model_layers) == (5, 64, 10)
    assert (indexer.spec.heads, indexer.spec.head_dim, indexer.spec.rope.dims) == (4, 32, 8)
    assert indexer.model.deep.flicker == 3 and indexer.model.deep.relu_bias > 0  # merged
    for bad in ({"index_n_heads": "many"}, {"index_topk": 2.5}, {"num_hidden_layers": True}):
        with pytest.raises(DsacacheError, match="must be an integer >= 1"):
            indexer_setup("glm-5", hf_config=bad)


def test_progress_units_and_misuse() -> None:
    g = preset("deepseek-v3.2").with_overrides(layers=3, top_k=16)
    assert progress_total("indexer", g, 5, 2) == 30 and progress_total("stats", g, 5, 2) == 10
    seen: list[int] = []
    generate_preset("indexer", "deepseek-v3.2", 5, 100, layers=3, top_k=16, progress=seen.append)
    assert sum(seen) == progress_total("indexer", g, 5, 1)
    with pytest.raises(DsacacheError, match="must be one of"):
        generate("dice", g, 5, 100)
    with pytest.raises(DsacacheError, match="needs an indexer"):
        generate("indexer", g, 5, 100)
    with pytest.raises(DsacacheError, match="indexer generator only"):
        generate("stats", g, 5, 100, scores=True)
