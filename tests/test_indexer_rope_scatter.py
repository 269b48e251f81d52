"""The default-off rotary probe parameters (GroupParams.rope_scatter / rope_tilt / rope_shared,
benchmarks/probe_positional.py): off they change nothing, on they give each head a persistent
rotary direction whose score depends on the offset alone, a high tilt puts it in the fastest
pairs and rope_shared lines the heads up, so an early layer picks isolated offsets that move
with the query."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dsacache.analysis import analyze
from dsacache.errors import DsacacheError
from dsacache.trace import Geometry
from dsacache.trace.geometry import INDEXERS, IndexerSpec
from dsacache.trace.indexer_model import GROUPS, IndexerModel, calibrated
from dsacache.trace.rope import Rope
from dsacache.trace.synth_indexer import _LayerQueries, synthesize_indexer

SMALL = Geometry(layers=5, top_k=64, kv_bytes_per_token=656, index_bytes_per_token=132,
                 block_tokens=64)  # fmt: skip
SPEC = IndexerSpec(16, 32, Rope(16, 10000.0, "yarn", 40.0, 4096))


def _trace(model: IndexerModel, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    tr = synthesize_indexer(SMALL, SPEC, 8, 600, model, seed=seed, scores=True, model_layers=61)
    return np.asarray(tr.indices), np.asarray(tr.requests[0].scores)


def test_tilt_without_scatter_and_zero_scatter_change_nothing() -> None:
    base = calibrated()
    idx, sc = _trace(base)
    off = base
    for g in GROUPS:
        off = off.with_group(g, rope_scatter=0.0, rope_tilt=3.0, rope_shared=0.5)
    idx2, sc2 = _trace(off)
    assert np.array_equal(idx, idx2) and np.array_equal(sc, sc2, equal_nan=True)
    on = base.with_group("deep", rope_scatter=4.0, rope_gain=2.0)
    idx3, _ = _trace(on)
    assert not np.array_equal(idx, idx3)
    assert np.array_equal(idx[:, :2], idx3[:, :2])  # layers 0-1 are early: untouched


def _rotary_query(tilt: float, spec: IndexerSpec) -> np.ndarray:
    """Rotary dims [steps, heads, r] of a one-layer early group with a scattered rotary part."""
    model = calibrated().with_group("early", rope_scatter=5.0, rope_gain=2.0, rope_tilt=tilt)
    queries = _LayerQueries(model, spec, ["early"], 4, np.zeros(6, bool))
    topics = np.eye(4, (spec.head_dim - spec.rope.dims) // 2, dtype=np.float32)
    q, _ = queries.window(0, 0, 0, range(6), np.arange(100, 106), topics)
    return q[:, :, spec.head_dim - spec.rope.dims :]


def test_scattered_rotary_score_depends_on_the_offset_alone() -> None:
    """Against a constant rotary key part rotated by its position (a Toeplitz key), the rotary
    score of a head at offset Δ is the same at every step: the selected offsets move with the
    query."""
    spec = SPEC
    rq = _rotary_query(2.0, spec).astype(np.float64)
    raw = np.full(spec.rope.dims, 1 / np.sqrt(spec.rope.dims), np.float32)
    pos = np.arange(0, 106)
    keys = spec.rope.rotate(np.broadcast_to(raw, (pos.size, raw.size)), pos).astype(np.float64)
    by_offset = []
    for t in range(6):
        s = rq[t] @ keys[: 100 + t].T  # [heads, tokens]; the query sits at position 100 + t
        by_offset.append(s[:, ::-1][:, :100])  # column d: offset Δ = d + ... same for every t
    for t in range(1, 6):
        assert np.allclose(by_offset[t][:, 1:], by_offset[0][:, 1:], atol=1e-4)
    assert np.ptp(by_offset[0]) > 1.0  # and it is not flat


def test_high_tilt_puts_the_scatter_in_the_fastest_pair() -> None:
    spec = INDEXERS["deepseek-v3.2"]
    for tilt, least in ((0.0, None), (8.0, 0.8)):
        rq = _rotary_query(tilt, spec).astype(np.float64)
        energy = (rq**2).reshape(*rq.shape[:2], -1, 2).sum(axis=(0, 1, 3))  # per pair
        share = energy[0] / energy.sum()
        if least is None:
            assert share < 0.2  # flat: the fastest of 32 pairs holds little
        else:
            assert share > least  # (ω1 / ω0)^16 = 0.75^16 ≈ 0.01 of the first pair


def test_shared_scatter_is_one_direction_for_all_heads() -> None:
    """rope_shared 1 with no per-head rope_spread: every head's rotary part is the same."""
    model = replace(calibrated(), rope_spread=0.0)
    for shared, same in ((1.0, True), (0.5, False)):
        m = model.with_group("early", rope_scatter=5.0, rope_gain=2.0, rope_shared=shared)
        queries = _LayerQueries(m, SPEC, ["early"], 4, np.zeros(2, bool))
        topics = np.eye(4, 8, dtype=np.float32)
        q, _ = queries.window(0, 0, 0, range(2), np.arange(10, 12), topics)
        rot = q[:, :, SPEC.head_dim - SPEC.rope.dims :]
        assert np.allclose(rot, rot[:, :1], atol=1e-5) == same
        assert np.abs(rot).max() > 1.0


def test_bad_rope_shared_is_one_clear_error() -> None:
    with pytest.raises(DsacacheError, match="rope_shared"):
        calibrated().with_group("deep", rope_shared=1.5).validate()


def test_fast_persistent_rotary_query_overlaps_less_than_random() -> None:
    """An early layer whose query is a persistent scattered rotary part in the fastest pairs
    selects isolated offsets: consecutive steps share fewer tokens than a random query's
    k / context, and the offset-shifted overlap is high (what the calibrated memoryless early
    layer, overlapping at about k / context, does not do)."""
    g = Geometry(1, 64, 656, 132, 64)
    model = replace(calibrated(), early_layers=1, rope_spread=0.0).with_group(
        "early", rope_scatter=32.0, rope_gain=4.0, rope_tilt=4.0, flicker=0.1
    )
    context = 8192
    trace = synthesize_indexer(g, INDEXERS["deepseek-v3.2"], 20, context, model, seed=0)
    per = analyze(trace).per_layer
    assert per["consecutive_overlap"][0] < 0.3 * g.top_k / context
    assert per["shifted_overlap"][0] > 0.8
    base = replace(calibrated(), early_layers=1)
    per0 = analyze(synthesize_indexer(g, INDEXERS["deepseek-v3.2"], 20, context, base)).per_layer
    assert per0["consecutive_overlap"][0] > 0.5 * g.top_k / context


def test_shared_phases_keep_an_early_layer_below_random_on_every_seed() -> None:
    """With the 16 heads' rotary directions shared, the fast comb stays below a random query's
    overlap whatever the draw (per-head directions do not: their sum flattens the comb)."""
    g = Geometry(1, 64, 656, 132, 64)
    model = replace(calibrated(), early_layers=1).with_group(
        "early", rope_scatter=32.0, rope_gain=4.0, rope_tilt=8.0, flicker=0.1, rope_shared=1.0
    )
    context = 8192
    for seed in range(3):
        trace = synthesize_indexer(g, INDEXERS["deepseek-v3.2"], 12, context, model, seed=seed)
        assert analyze(trace).per_layer["consecutive_overlap"][0] < 0.5 * g.top_k / context
