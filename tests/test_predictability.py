"""P(selected at t+1 | streak, rank): hand-computed cases, a plain-Python reference, the CLI."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_request_arrays
from dsacache.analysis import analyze
from dsacache.analysis.predictability import (
    NR,
    NS,
    RANK_LABELS,
    STREAK_LABELS,
    parse_layer_groups,
)
from dsacache.cli.app import run
from dsacache.errors import DsacacheError
from dsacache.trace import Geometry, RequestTrace, Trace


def geom(layers: int, k: int) -> Geometry:
    return Geometry(layers, k, 656, 132, 64)


# One layer, k=3, context 8.  S(t): {0,1,2}, {1,2,3}, {2,3,4}, {2,5}.
B = np.array([[[0, 1, 2]], [[1, 2, 3]], [[2, 3, 4]], [[2, 5, -1]]], dtype=np.int32)


def test_hand_computed_slot_order() -> None:
    # selection (t, token): streak, slot rank of n=3 -> quarter rank*4//3, selected at t+1?
    #   t0: 0 s1 r0 q0 no;  1 s1 r1 q1 yes; 2 s1 r2 q2 yes
    #   t1: 1 s2 r0 q0 no;  2 s2 r1 q1 yes; 3 s1 r2 q2 yes
    #   t2: 2 s3 r0 q0 yes; 3 s2 r1 q1 no;  4 s1 r2 q2 no
    #   t3: the last step has no t+1: not counted
    p = analyze(Trace.from_arrays(B, np.full(4, 8), geom(1, 3)), predictability=True)
    pred = p.predictability
    assert pred.rank_source == "slot"
    totals, hits = pred.totals[0], pred.hits[0]
    assert totals[0].tolist() == [1, 1, 3, 0]  # streak 1
    assert hits[0].tolist() == [0, 1, 2, 0]
    assert totals[1].tolist() == [1, 2, 0, 0]  # streak 2
    assert hits[1].tolist() == [0, 1, 0, 0]
    assert totals[2].tolist() == [1, 0, 0, 0] and hits[2].tolist() == [1, 0, 0, 0]
    assert totals[3:].sum() == 0
    p1, p3, lift = pred.lift((0, 0))
    assert (p1, p3, lift) == pytest.approx((3 / 5, 1.0, 0.4))
    group = pred.to_dict()["groups"][0]
    assert group["layers"] == "0" and group["selections"] == 9
    assert group["streak_lift"] == pytest.approx(0.4)
    assert group["p_by_streak"][:3] == pytest.approx([3 / 5, 1 / 3, 1.0])
    assert group["p_by_streak"][3:] == [None, None, None]
    assert group["p_by_rank"][:3] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert group["p_by_rank"][3] is None


def test_hand_computed_score_rank() -> None:
    # Scores reorder t0 and t1: t0 ranks token 1 first (0.9), then 2 (0.5), then 0 (0.1);
    # t1 has a tie (2 and 3 at 0.7): slot order breaks it -> 2 before 3, 1 last (0.2).
    scores = np.full(B.shape, np.nan, dtype=np.float32)
    scores[0, 0] = [0.1, 0.9, 0.5]
    scores[1, 0] = [0.2, 0.7, 0.7]
    scores[2, 0] = [3.0, 2.0, 1.0]
    scores[3, 0, :2] = [1.0, 1.0]
    tr = Trace.from_arrays(B, np.full(4, 8), geom(1, 3), scores=scores)
    pred = analyze(tr, predictability=True).predictability
    assert pred.rank_source == "score"
    #   t0: 0 s1 r2 q2 no;  1 s1 r0 q0 yes; 2 s1 r1 q1 yes
    #   t1: 1 s2 r2 q2 no;  2 s2 r0 q0 yes; 3 s1 r1 q1 yes
    #   t2: 2 s3 r0 q0 yes; 3 s2 r1 q1 no;  4 s1 r2 q2 no
    assert pred.totals[0, 0].tolist() == [1, 2, 2, 0]
    assert pred.hits[0, 0].tolist() == [1, 2, 0, 0]
    assert pred.totals[0, 1].tolist() == [1, 1, 1, 0]
    assert pred.hits[0, 1].tolist() == [1, 0, 0, 0]
    # --rank-by slot on the same trace ignores the scores
    slot = analyze(tr, predictability=True, rank_by="slot").predictability
    assert slot.rank_source == "slot" and slot.totals[0, 0].tolist() == [1, 1, 3, 0]


def test_empty_step_resets_streak_and_last_step_not_counted() -> None:
    # token 0 at t0, t1, (t2 empty), t3, t4: streaks 1, 2, -, 1, 2; t4 is the last step
    idx = np.array([[[0]], [[0]], [[-1]], [[0]], [[0]]], dtype=np.int32)
    pred = analyze(Trace.from_arrays(idx, np.full(5, 4), geom(1, 1)), predictability=True)
    t, h = pred.predictability.totals[0], pred.predictability.hits[0]
    # t0 s1 -> yes; t1 s2 -> no (t2 empty); t3 s1 -> yes; single slot: rank quarter 0
    assert t[:, 0].tolist() == [2, 1, 0, 0, 0, 0] and h[:, 0].tolist() == [2, 0, 0, 0, 0, 0]


def test_long_streak_buckets() -> None:
    # token 7 selected at all 20 steps: streaks 1..19 counted (step 19 has no next), all hits
    idx = np.full((20, 1, 2), -1, dtype=np.int32)
    idx[:, 0, 0] = 7
    pred = analyze(Trace.from_arrays(idx, np.full(20, 9), geom(1, 2)), predictability=True)
    by_streak = pred.predictability.totals[0].sum(axis=1).tolist()
    assert by_streak == [1, 1, 1, 4, 8, 4]  # 1, 2, 3, 4-7, 8-15, 16-19
    assert (pred.predictability.hits == pred.predictability.totals).all()


def test_requests_pool_without_leaking_state() -> None:
    # The same token in request 1 starts a fresh streak (keys are per request).
    a = np.array([[[3]], [[3]]], dtype=np.int32)
    b = np.array([[[3]], [[4]]], dtype=np.int32)
    tr = Trace([RequestTrace(a, np.full(2, 5)), RequestTrace(b, np.full(2, 5))], geom(1, 1))
    pred = analyze(tr, predictability=True).predictability
    assert pred.totals[0, 0, 0] == 2 and pred.hits[0, 0, 0] == 1


def test_layer_groups() -> None:
    assert parse_layer_groups(None, 4) == [(0, 3)]
    assert parse_layer_groups(None, 61) == [(0, 60), (0, 1), (20, 60)]
    assert parse_layer_groups(" 0-1, 5 ,2-3", 6) == [(0, 1), (5, 5), (2, 3)]
    bad_specs = [("0-6", "outside"), ("a-b", "not a layer"), ("3-1", "outside"), ("", "not a")]
    for bad, needle in bad_specs:
        with pytest.raises(DsacacheError, match=needle):
            parse_layer_groups(bad, 6)


def test_rank_by_score_needs_scores() -> None:
    tr = Trace.from_arrays(B, np.full(4, 8), geom(1, 3))
    with pytest.raises(DsacacheError, match="needs a trace that stores scores"):
        analyze(tr, predictability=True, rank_by="score")
    with pytest.raises(DsacacheError, match="rank_by must be one of"):
        analyze(tr, predictability=True, rank_by="best")


# --- the reference: the definition, written as plainly as possible ---------------------------


def streak_bucket(s: int) -> int:
    if s >= 16:
        return 5
    if s >= 8:
        return 4
    if s >= 4:
        return 3
    return s - 1


def reference(requests: list[RequestTrace], layers: int, by_score: bool):  # noqa: ANN201
    hits = np.zeros((layers, NS, NR), dtype=np.int64)
    totals = np.zeros((layers, NS, NR), dtype=np.int64)
    for req in requests:
        idx, sc = req.indices, req.scores
        steps = idx.shape[0]
        for ly in range(layers):
            prev: set[int] = set()
            streak: dict[int, int] = {}
            for t in range(steps):
                row = [(j, int(x)) for j, x in enumerate(idx[t, ly]) if x >= 0]
                if by_score:
                    row.sort(key=lambda jx: (-float(sc[t, ly, jx[0]]), jx[0]))
                rank = {x: p for p, (_, x) in enumerate(row)}
                now = {x: (streak[x] + 1 if x in prev else 1) for x in rank}
                if t + 1 < steps:
                    following = {int(x) for x in idx[t + 1, ly] if x >= 0}
                    for x, s in now.items():
                        cell = (ly, streak_bucket(s), rank[x] * NR // len(rank))
                        totals[cell] += 1
                        hits[cell] += x in following
                prev, streak = set(rank), now
    return hits, totals


@st.composite
def scored_traces(draw: st.DrawFn) -> Trace:
    layers, k = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    reqs = []
    for _ in range(draw(st.integers(1, 3))):
        steps = draw(st.integers(0, 30))
        ctx = draw(st.integers(1, k + 3))  # few tokens: long streaks happen
        pad = draw(st.sampled_from([0.0, 0.2, 0.6]))
        idx, lens, _ = make_request_arrays(steps, layers, k, ctx, 0, pad, rng)
        lens = np.full(steps, ctx + steps)  # the context does not grow: tokens recur
        values = rng.integers(0, 3, size=idx.shape).astype(np.float32)  # ties on purpose
        reqs.append(RequestTrace(idx, lens, scores=np.where(idx >= 0, values, np.nan)))
    return Trace(reqs, geom(layers, k))


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=scored_traces(), by_score=st.booleans(), chunk_steps=st.integers(1, 7))
def test_kernel_matches_reference(trace: Trace, by_score: bool, chunk_steps: int) -> None:
    rank_by = "score" if by_score else "slot"
    want_hits, want_totals = reference(trace.requests, trace.geometry.layers, by_score)
    with tempfile.TemporaryDirectory() as tmp:  # lazily, in chunks: state crosses chunks
        trace.save(Path(tmp) / "t.zarr", chunk_steps=chunk_steps)
        lazy = Trace.load(Path(tmp) / "t.zarr", lazy=True)
        pred = analyze(lazy, predictability=True, rank_by=rank_by).predictability
    np.testing.assert_array_equal(pred.totals, want_totals)
    np.testing.assert_array_equal(pred.hits, want_hits)
    groups = pred.to_dict()["groups"]
    assert groups[0]["selections"] == int(want_totals.sum())


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "b.zarr"
    Trace.from_arrays(B, np.full(4, 8), geom(1, 3)).save(path)
    return path


def test_cli_json(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["analyze", str(store), "--predictability", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    p = d["predictability"]
    assert p["rank_source"] == "slot"
    assert p["streak_buckets"] == list(STREAK_LABELS) and p["rank_buckets"] == list(RANK_LABELS)
    assert p["groups"][0]["streak_lift"] == pytest.approx(0.4)
    assert p["groups"][0]["count"][0] == [1, 1, 3, 0]
    assert p["per_layer"]["selections"][0][:4] == [1, 1, 3, 0]
    assert p["per_layer"]["streak_lift"] == [pytest.approx(0.4)]
    assert d["shifted_overlap"] is not None


def test_cli_table(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["analyze", str(store), "--predictability"]) == 0
    out = capsys.readouterr().out
    assert "shifted_overlap" in out and "rank by slot order" in out
    assert "streak lift" in out and "0.400" in out  # the summary row of layer group 0
    assert "0.600 (5)" in out  # P(next | streak 1) with its count, in the streak table


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--layer-groups", "0-3"], "outside the trace's layers 0-0"),
        (["--rank-by", "score"], "needs a trace that stores scores"),
        (["--rank-by", "x"], "--rank-by must be one of auto, score, slot"),
    ],
)
def test_cli_errors(store: Path, capsys: pytest.CaptureFixture[str], args, needle) -> None:  # noqa: ANN001
    assert run(["analyze", str(store), "--predictability", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and needle in err


def test_public_reference_matches_the_docs() -> None:
    """The DeepSeek-V3.2 overlaps `analyze` prints beside its own are the ones docs cite."""
    from dsacache.analysis import PUBLIC_DSV32

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    text = " ".join(doc.split())
    for key, words in [
        ("consecutive_overlap layers 20-60", "{:.2f}–{:.2f} on average in layers 20–60"),
        ("consecutive_overlap layers 0-1", "{:.2f}–{:.2f} in layers 0–1"),
    ]:
        assert words.format(*PUBLIC_DSV32[key]) in text, key
    assert f"keeps ~{PUBLIC_DSV32['shifted_overlap'][0]:.2f}" in text
