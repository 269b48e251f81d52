"""The indexer-model generator: exact top-k, scores recomputed independently, determinism,
window / chunk independence, the layer groups' behaviour, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsacache.analysis import analyze
from dsacache.cli.app import run
from dsacache.errors import DsacacheError
from dsacache.trace import Geometry, Trace
from dsacache.trace.geometry import INDEXERS, IndexerSpec
from dsacache.trace.indexer_model import (
    GROUPS,
    PROBE_FIELDS,
    IndexerModel,
    calibrated,
    calibration_record,
)
from dsacache.trace.rope import Rope
from dsacache.trace.synth_indexer import (
    _LayerKeys,
    _LayerQueries,
    _stream,
    _Structure,
    generate_request,
    jump_steps,
    synthesize_indexer,
)
from dsacache.trace.synth_indexer_kernel import select_block, topk_row

SMALL = Geometry(layers=5, top_k=64, kv_bytes_per_token=656, index_bytes_per_token=132,
                 block_tokens=64)  # fmt: skip
SPEC = IndexerSpec(16, 32, Rope(16, 10000.0, "yarn", 40.0, 4096))


def reference_topk(score: np.ndarray, ctx: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: sort (-score, index), keep k; pad with -1 / NaN."""
    order = np.lexsort((np.arange(ctx), -score[:ctx].astype(np.float64)))[:k]
    idx = np.full(k, -1, np.int32)
    sc = np.full(k, np.nan, np.float32)
    idx[: order.size] = order
    sc[: order.size] = score[order]
    return idx, sc


@settings(max_examples=100, deadline=None)
@given(
    ctx=st.integers(1, 120),
    k=st.integers(1, 40),
    levels=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_topk_row_is_exact_with_ties(ctx: int, k: int, levels: int, seed: int) -> None:
    # Few distinct values: ties at the threshold are the rule, not the exception.
    rng = np.random.default_rng(seed)
    score = rng.integers(0, levels, ctx + 5).astype(np.float32)
    idx, sc = np.empty(k, np.int32), np.empty(k, np.float32)
    topk_row(score, ctx, idx, sc, np.empty(ctx + 5, np.float32), np.empty(k, np.int64))
    ref_idx, ref_sc = reference_topk(score, ctx, k)
    assert np.array_equal(idx, ref_idx)
    assert np.array_equal(sc, ref_sc, equal_nan=True)


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 5), heads=st.integers(1, 4), n=st.integers(1, 90),
       k=st.integers(1, 30), seed=st.integers(0, 2**31))  # fmt: skip
def test_select_block_matches_plain_numpy(steps: int, heads: int, n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    dots = rng.standard_normal((steps, heads, n)).astype(np.float32)
    weights = rng.random((steps, heads)).astype(np.float32)
    ctx = rng.integers(1, n + 1, steps).astype(np.int64)
    bias = np.float32(rng.random() * 0.5)
    idx = np.empty((steps, k), np.int32)
    sc = np.empty((steps, k), np.float32)
    select_block(dots, weights, bias, ctx, idx, sc)
    for b in range(steps):
        total = (weights[b][:, None] * np.maximum(dots[b] - bias, 0)).sum(axis=0)
        ref_idx, ref_sc = reference_topk(total.astype(np.float32), int(ctx[b]), k)
        # Same set and order; float sums may differ in the last bit, so compare scores loosely
        # and indices only where the reference scores are not (near) tied.
        assert np.allclose(sc[b], ref_sc, rtol=1e-5, atol=1e-6, equal_nan=True)
        valid = ref_idx >= 0
        assert np.array_equal(idx[b] >= 0, valid)
        gaps = np.diff(np.r_[ref_sc[valid], -np.inf])
        clear = np.abs(gaps) > 1e-4
        assert np.array_equal(idx[b][valid][clear], ref_idx[valid][clear])


def _model(**changes: object) -> IndexerModel:
    return replace(calibrated(), **changes)


def _generate(model: IndexerModel, steps: int = 12, context: int = 700, seed: int = 3,
              window: int = 128) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    sels = list(generate_request(SMALL, SPEC, model, steps, context, seed, 0, window))
    return np.concatenate([s.indices for s in sels]), np.concatenate([s.scores for s in sels])


@pytest.mark.parametrize("model_layers", [None, 61])
def test_scores_and_selection_match_an_independent_recomputation(model_layers) -> None:
    """Rebuild keys and queries with the generator's own parts, then score every token in
    float64 with plain numpy: the stored scores equal the recomputed ones and the selection is
    the exact top-k of them (also for a reduced model, whose layers take sampled groups)."""
    model = _model()
    steps, context, seed = 10, 700, 5
    trace = synthesize_indexer(
        SMALL, SPEC, steps, context, model, seed=seed, scores=True, model_layers=model_layers
    )
    groups = model.layer_groups(SMALL.layers, model_layers)
    assert trace.meta["indexer"]["model_layers"] == model_layers
    idx, sc = trace.indices, np.asarray(trace.requests[0].scores)
    n = context + steps - 1
    structure = _Structure(model, n, SMALL.top_k, seed, 0)
    jumps = jump_steps(steps, model.jump_rate, _stream(seed, 0, 4))
    keys = _LayerKeys(model, SPEC, structure, n)
    queries = _LayerQueries(model, SPEC, groups, structure.topics, jumps)
    ctx = np.arange(context, context + steps)
    for layer in range(SMALL.layers):
        k = keys.next_layer(seed, 0, layer).astype(np.float64)
        q, w = queries.window(seed, 0, layer, range(steps), ctx - 1, keys.topic_units())
        bias = getattr(model, groups[layer]).relu_bias
        for t in range(steps):
            full = w[t][:, None] * np.maximum(q[t].astype(np.float64) @ k[: ctx[t]].T - bias, 0)
            full = full.sum(axis=0)
            sel = idx[t, layer]
            assert np.allclose(sc[t, layer], full[sel], rtol=1e-4, atol=1e-4)
            others = np.setdiff1d(np.arange(ctx[t]), sel)
            assert full[sel].min() >= full[others].max() - 1e-4
            assert np.all(np.diff(sc[t, layer]) <= 1e-6)  # rank order


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    model = _model()
    a, sa = _generate(model, seed=1)
    b, sb = _generate(model, seed=1)
    c, _ = _generate(model, seed=2)
    assert np.array_equal(a, b) and np.array_equal(sa, sb, equal_nan=True)
    assert not np.array_equal(a, c)


def test_window_size_does_not_change_the_trace() -> None:
    model = _model(jump_rate=0.3)  # restarts inside the windows too
    whole, s_whole = _generate(model, steps=14, window=128)
    parts, s_parts = _generate(model, steps=14, window=3)
    assert np.array_equal(whole, parts)
    assert np.allclose(s_whole, s_parts, rtol=1e-6, equal_nan=True)


def test_store_streams_chunks_and_matches_memory(tmp_path) -> None:
    model = _model()
    mem = synthesize_indexer(SMALL, SPEC, 11, 500, model, seed=4)
    disk = synthesize_indexer(SMALL, SPEC, 11, 500, model, seed=4, out=tmp_path / "t.zarr",
                              chunk_steps=4, window_steps=5, scores=True)  # fmt: skip
    assert disk.requests[0].is_lazy
    assert np.array_equal(np.asarray(disk.indices[:]), mem.indices)
    _, sc = _generate(model, steps=11, context=500, seed=4)
    assert np.array_equal(np.asarray(disk.requests[0].scores[:]), sc, equal_nan=True)
    assert np.array_equal(disk.context_lens, np.arange(500, 511))
    Trace.load(tmp_path / "t.zarr")  # validates
    assert disk.meta["generator"] == "indexer"
    assert disk.meta["indexer"]["rope"]["scaling"] == "yarn"


def test_subject_changes_come_at_their_rate() -> None:
    for seed in range(20):
        j = jump_steps(200, 0.025, np.random.default_rng(seed))
        assert j.sum() == 5  # every 40 steps from a random phase
        assert np.all(np.isin(np.diff(np.flatnonzero(j)), (39, 40, 41)))
    assert not jump_steps(50, 0.0, np.random.default_rng(0)).any()


def test_short_context_fills_what_exists() -> None:
    idx, sc = _generate(_model(), steps=3, context=40)  # k = 64 > context
    for t in range(3):
        row = idx[t, 0]
        assert sorted(row[row >= 0].tolist()) == list(range(40 + t))
        assert np.all(row[40 + t :] == -1) and np.all(np.isnan(sc[t, 0, 40 + t :]))


def test_progress_counts_step_layer_pairs() -> None:
    seen: list[int] = []
    synthesize_indexer(SMALL, SPEC, 7, 300, _model(), requests=2, window_steps=4,
                       progress=seen.append)  # fmt: skip
    assert sum(seen) == 2 * 7 * SMALL.layers


def test_early_layers_are_memoryless_and_deep_layers_persist() -> None:
    """The calibrated groups keep their character at a small scale: the first layers pick a
    fresh set every step (new-lookup near 1 - k/context), the deep layers keep much of it."""
    g = Geometry(6, 128, 656, 132, 64)
    model = replace(calibrated(), deep_from=3 / 6)
    trace = synthesize_indexer(g, INDEXERS["deepseek-v3.2"], 40, 8192, model, seed=0)
    nl = analyze(trace).per_layer["new_lookup_fraction"]
    assert min(nl[0], nl[1]) > 0.9
    assert max(nl[3:]) < 0.8


def test_calibration_record_is_consistent() -> None:
    """The shipped calibration loads, names parameters the model has, and records for every
    fitted target what the fit reached."""
    rec = calibration_record()
    model = calibrated()
    fields = set(model.to_dict()) | {f"{g}.{k}" for g in GROUPS for k in model.to_dict()[g]}
    for f in rec["fitted"]:
        assert f["parameter"] in fields or f["parameter"] in model.to_dict()["deep"]
        assert f["target"] in rec["achieved_pilot"]
    # The record predates the default-off rotary probe fields (indexer_model.PROBE_FIELDS):
    # every recorded value is the model's, and what it leaves out is a probe field at 0.
    full = model.to_dict()
    for g in GROUPS:
        missing = set(full[g]) - set(rec["model"][g])
        assert missing <= set(PROBE_FIELDS) and all(full[g][f] == 0.0 for f in missing)
        full[g] = {k: v for k, v in full[g].items() if k in rec["model"][g]}
    assert rec["model"] == full


def test_bad_parameters_are_one_clear_error() -> None:
    with pytest.raises(DsacacheError, match="topic_share"):
        IndexerModel.from_dict({"topic_share": 1.5})
    with pytest.raises(DsacacheError, match="unknown"):
        IndexerModel.from_dict({"nonsense": 1})
    with pytest.raises(DsacacheError, match="deep.topic_memory"):
        IndexerModel.from_dict({"deep": {"topic_memory": 1.0}})
    with pytest.raises(DsacacheError, match="positive"):
        synthesize_indexer(SMALL, SPEC, 0, 100)


@pytest.mark.parametrize(
    "bad",
    [{"early_layers": "x"}, {"jump_rate": "0.1"}, {"deep_from": None}, {"heads": 2.5},
     {"early_layers": 1.5}, {"middle": {"flicker": True}}],
)  # fmt: skip
def test_parameters_of_the_wrong_type_are_one_line_errors(bad) -> None:
    base = calibrated().to_dict()
    if "middle" in bad:
        bad = {"middle": {**base["middle"], **bad["middle"]}}
    with pytest.raises(DsacacheError, match="must be (an integer|a finite number)"):
        IndexerModel.from_dict({**base, **bad})


def test_layer_groups_of_a_reduced_model() -> None:
    m = calibrated()  # early: layers 0-1; deep from round(20 / 61 x layers)
    assert m.layer_groups(4) == ["early", "early", "deep", "deep"]
    assert m.layer_groups(4, 4) == m.layer_groups(4)  # not reduced
    assert m.layer_groups(2, 61) == ["middle", "deep"]  # model layers 15, 45
    # model layers 3, 11, 19, 26, 34, 41, 49, 57
    assert m.layer_groups(8, 61) == ["middle"] * 3 + ["deep"] * 5
    assert m.layer_groups(61, 61).count("early") == 2


def test_cli_indexer_writes_a_trace(tmp_path, capsys) -> None:
    out = tmp_path / "t.zarr"
    rc = run(["synth", "--out", str(out), "--layers", "4", "--top-k", "64", "--steps", "6",
              "--context", "512", "--check", "--scores"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "4 layers x k=64" in text and "0.550 (paper)" in text
    # 4 of DeepSeek-V3.2's 61 layers: model layers 7, 22, 38, 53 (one middle, three deep)
    assert "sample the model's 61" in text and "middle (trace layers 0-0)" in text
    assert "deep (trace layers 1-3)" in text
    trace = Trace.load(out)
    assert trace.meta["generator"] == "indexer" and trace.steps == 6 and trace.has_scores


def test_cli_hf_config_and_params(tmp_path) -> None:
    cfg = {"index_n_heads": 8, "index_head_dim": 64, "qk_rope_head_dim": 32,
           "num_hidden_layers": 3, "index_topk": 32, "rope_theta": 50000.0,
           "rope_scaling": {"type": "linear", "factor": 2.0}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "p.json").write_text(json.dumps({"heads": 4, "deep": {"flicker": 3.0}}))
    out = tmp_path / "t.zarr"
    cfg_path, params = str(tmp_path / "config.json"), str(tmp_path / "p.json")
    rc = run(["synth", "--out", str(out), "--steps", "3", "--context", "300", "--hf-config",
              cfg_path, "--indexer-params", params])  # fmt: skip
    assert rc == 0
    meta = Trace.load(out).meta
    assert Trace.load(out).geometry.layers == 3 and Trace.load(out).geometry.top_k == 32
    assert meta["indexer"]["rope"]["scaling"] == "linear" and meta["indexer"]["head_dim"] == 64
    assert meta["indexer"]["model"]["heads"] == 4
    assert meta["indexer"]["model"]["deep"]["flicker"] == 3.0
    assert meta["indexer"]["model"]["deep"]["topic_weight"] == calibrated().deep.topic_weight


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--generator", "magic"], "--generator must be one of"),
        (["--new-lookup", "0.3"], "--new-lookup: only with --generator stats"),
        (["--generator", "stats", "--hf-config", "x.json"], "--hf-config: only with"),
        (["--generator", "stats", "--scores"], "--scores: only with"),
        (["--hf-config", "missing.json"], "cannot read"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "t.zarr"
    rc = run(["synth", "--out", str(out), "--steps", "2", "--context", "100", *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
