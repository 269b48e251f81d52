"""Access-pattern metrics: hand-computed traces, edge rules, streaming, and a reference model."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsacache.analysis import PAPER, AnalysisResult, analyze
from dsacache.analysis.metrics import METRICS, OVERLAPS, first_row_out_of_range
from dsacache.errors import DsacacheError
from dsacache.trace import Geometry, RequestTrace, Trace


def geom(layers: int, k: int) -> Geometry:
    return Geometry(layers, k, 656, 132, 64)


def trace_of(idx: list, context: int = 8) -> Trace:
    a = np.array(idx, dtype=np.int32)
    return Trace.from_arrays(a, np.full(a.shape[0], context), geom(a.shape[1], a.shape[2]))


# Trace A: 4 steps, 2 layers, k=3, context 8.  Sets S(t, l):
#   t   layer 0      layer 1
#   0   {0, 1, 2}    {0, 1}
#   1   {1, 2, 3}    {}          (all slots -1)
#   2   {0, 3}       {0, 3, 6}
#   3   {0, 3, 5}    {3, 6, 7}
A = [
    [[0, 1, 2], [0, 1, -1]],
    [[1, 2, 3], [-1, -1, -1]],
    [[0, 3, -1], [6, 0, 3]],
    [[5, 3, 0], [3, 6, 7]],
]


@pytest.fixture
def result_a() -> AnalysisResult:
    return analyze(trace_of(A), window=2, page_tokens=2)


def test_new_lookup_fraction(result_a):
    # layer 0: t1 {3} new of 3 -> 1/3; t2 {0} of 2 -> 1/2; t3 {5} of 3 -> 1/3
    # layer 1: t1 empty, skipped; t2 all new after an empty step -> 3/3; t3 {7} of 3 -> 1/3
    # mean (1/3 + 1/2 + 1/3 + 1 + 1/3) / 5 = 2.5 / 5 = 0.5
    assert result_a.new_lookup_fraction == pytest.approx(0.5)
    # P95 of sorted [1/3, 1/3, 1/3, 1/2, 1]: position 0.95 * 4 = 3.8 -> 1/2 + 0.8 * (1 - 1/2)
    assert result_a.new_lookup_fraction_p95 == pytest.approx(0.9)
    # per layer: (1/3 + 1/2 + 1/3) / 3 = 7/18; (1 + 1/3) / 2 = 2/3
    assert result_a.per_layer["new_lookup_fraction"] == pytest.approx([7 / 18, 2 / 3])


def test_persistence(result_a):
    # layer 0 runs: token 0 [t0], [t2-t3]; 1 [t0-t1]; 2 [t0-t1]; 3 [t1-t3]; 5 [t3]
    #   -> 1, 2, 2, 2, 3, 1: 11 selections / 6 runs
    # layer 1 runs: token 0 [t0], [t2]; 1 [t0]; 3 [t2-t3]; 6 [t2-t3]; 7 [t3]
    #   -> 1, 1, 1, 2, 2, 1: 8 selections / 6 runs (the empty step t1 cuts token 0's run)
    # pooled: 19 / 12
    assert result_a.persistence_mean_steps == pytest.approx(19 / 12)
    assert result_a.per_layer["persistence_mean_steps"] == pytest.approx([11 / 6, 8 / 6])


def test_lookback_and_histogram(result_a):
    # layer 0 re-selections: t1 tokens 1, 2 (d=1, 1); t2 token 0 (d=2), 3 (d=1);
    #   t3 tokens 0, 3 (d=1, 1) -> sum 7 over 6; cold: t0 x3, t1 token 3, t3 token 5 = 5
    # layer 1 re-selections: t2 token 0 (d=2, since t0); t3 tokens 3, 6 (d=1, 1) -> 4 over 3;
    #   cold: t0 x2, t2 tokens 3, 6, t3 token 7 = 5
    # pooled: 11 / 9
    assert result_a.lookback_mean_steps == pytest.approx(11 / 9)
    assert result_a.per_layer["lookback_mean_steps"] == pytest.approx([7 / 6, 4 / 3])
    # distances: 1 x 7 (5 in layer 0, 2 in layer 1), 2 x 2
    assert result_a.reuse_distance_steps == {
        "bin_lo": [1, 2],
        "bin_hi": [1, 2],
        "count": [7, 2],
        "cold": 10,
    }


def test_interlayer_overlap(result_a):
    # l=1: t0 {0,1} & {0,1,2} = 2 of 2 -> 1; t1 empty, skipped;
    #   t2 {0,3,6} & {0,3} = 2 of 3; t3 {3,6,7} & {0,3,5} = {3} -> 1/3
    # mean (1 + 2/3 + 1/3) / 3 = 2/3; layer 0 has no layer below it
    assert result_a.interlayer_overlap == pytest.approx(2 / 3)
    assert result_a.per_layer["interlayer_overlap"][0] is None
    assert result_a.per_layer["interlayer_overlap"][1] == pytest.approx(2 / 3)


def test_consecutive_and_shifted_overlap(result_a):
    # shifted: |S(t,l) & (S(t-1,l) + 1)| / |S(t,l)| over the new-lookup pairs
    #   layer 0: t1 {1,2,3} & {1,2,3} -> 1; t2 {0,3} & {2,3,4} -> 1/2; t3 {0,3,5} & {1,4} -> 0
    #   layer 1: t1 empty, skipped; t2 {0,3,6} & {} -> 0; t3 {3,6,7} & {1,4,7} -> 1/3
    # mean (1 + 1/2 + 0 + 0 + 1/3) / 5 = 11/30; per layer 1/2 and 1/6
    assert result_a.shifted_overlap == pytest.approx(11 / 30)
    assert result_a.per_layer["shifted_overlap"] == pytest.approx([1 / 2, 1 / 6])
    # consecutive = 1 - new lookups, pair by pair: 1 - 0.5; per layer 1 - 7/18, 1 - 2/3
    assert result_a.consecutive_overlap == pytest.approx(0.5)
    assert result_a.per_layer["consecutive_overlap"] == pytest.approx([11 / 18, 1 / 3])
    d = result_a.to_dict()
    assert d["shifted_overlap"] == pytest.approx(11 / 30) and "predictability" not in d


def test_shifted_overlap_of_a_sliding_window_is_one():
    # S(t) = the last 4 positions: every selection is the previous one moved by one.
    steps = [[[t + j for j in range(4)]] for t in range(6)]
    r = analyze(trace_of(steps, context=10))
    assert r.shifted_overlap == pytest.approx(1.0)
    assert r.consecutive_overlap == pytest.approx(3 / 4)


def test_working_set_ratio_w2(result_a):
    # W=2, k=3: windows [t0,t1], [t2,t3]
    #   layer 0: {0,1,2,3} -> 4/3; {0,3,5} -> 3/3
    #   layer 1: {0,1} -> 2/3;     {0,3,6,7} -> 4/3
    # mean (4/3 + 1 + 2/3 + 4/3) / 4 = 13/12
    assert result_a.working_set_ratio == pytest.approx(13 / 12)
    # P95 of sorted [2/3, 1, 4/3, 4/3]: position 2.85, between two 4/3 -> 4/3
    assert result_a.working_set_ratio_p95 == pytest.approx(4 / 3)
    assert result_a.per_layer["working_set_ratio"] == pytest.approx([7 / 6, 1.0])


def test_working_set_partial_window_ignored():
    # W=3: one full window [t0..t2]; t3 (partial window) is ignored.
    #   layer 0: {0,1,2,3} -> 4/3; layer 1: {0,1,3,6} -> 4/3 (token 7 only appears at t3)
    r = analyze(trace_of(A), window=3)
    assert r.working_set_ratio == pytest.approx(4 / 3)
    assert r.per_layer["working_set_ratio"] == pytest.approx([4 / 3, 4 / 3])


def test_working_set_fewer_steps_than_window():
    # W=5 > 4 steps: one window of all steps.
    #   layer 0: {0,1,2,3,5} -> 5/3; layer 1: {0,1,3,6,7} -> 5/3
    r = analyze(trace_of(A), window=5)
    assert r.working_set_ratio == pytest.approx(5 / 3)
    assert r.working_set_ratio_p95 == pytest.approx(5 / 3)


def test_page_utilization(result_a):
    # P=2, page = token // 2
    #   layer 0: t0 {0,1,2} pages {0,1} -> 3/4; t1 {1,2,3} {0,1} -> 3/4;
    #            t2 {0,3} {0,1} -> 2/4; t3 {0,3,5} {0,1,2} -> 3/6
    #   layer 1: t0 {0,1} {0} -> 2/2; t1 skipped; t2 {0,3,6} {0,1,3} -> 3/6; t3 {3,6,7} {1,3} -> 3/4
    # mean (3/4 + 3/4 + 1/2 + 1/2 + 1 + 1/2 + 3/4) / 7 = 4.75 / 7 = 19/28
    assert result_a.page_utilization == pytest.approx(19 / 28)
    assert result_a.per_layer["page_utilization"] == pytest.approx([5 / 8, 3 / 4])


def test_counts_and_to_dict(result_a):
    d = result_a.to_dict()
    assert d["accesses"] == 19
    assert (d["steps"], d["layers"], d["top_k"], d["requests"]) == (4, 2, 3, 1)
    assert (d["window"], d["page_tokens"]) == (2, 2)
    for name in METRICS:
        assert isinstance(d[name], float)
        assert len(d["per_layer"][name]) == 2
    assert d["per_layer"]["interlayer_overlap"][0] is None
    assert d["engine_seconds"] >= 0


def test_page_size_one_is_full_utilization():
    # Every token is its own page: |S| / (1 * |S|) = 1 for every pair.
    assert analyze(trace_of(A), page_tokens=1).page_utilization == pytest.approx(1.0)


def test_single_layer_has_no_interlayer():
    # One layer: t0 {0,1}, t1 {1,2}: new 1/2; runs token 0 [1], 1 [2], 2 [1] -> 4/3;
    # lookback: token 1, d=1 -> 1
    r = analyze(trace_of([[[0, 1]], [[2, 1]]]))
    assert r.interlayer_overlap is None
    assert r.per_layer["interlayer_overlap"] == [None]
    assert r.to_dict()["interlayer_overlap"] is None
    assert r.new_lookup_fraction == pytest.approx(0.5)
    assert r.persistence_mean_steps == pytest.approx(4 / 3)
    assert r.lookback_mean_steps == pytest.approx(1.0)


def test_single_step_has_no_new_lookup_or_lookback():
    r = analyze(trace_of([[[0, 1, 2], [4, 3, -1]]]))
    assert r.new_lookup_fraction is None and r.new_lookup_fraction_p95 is None
    assert r.lookback_mean_steps is None
    assert r.reuse_distance_steps == {"bin_lo": [], "bin_hi": [], "count": [], "cold": 5}
    # every token one run of 1 step; working set of 1 step = |S| / k: (3/3 + 2/3) / 2
    assert r.persistence_mean_steps == pytest.approx(1.0)
    assert r.working_set_ratio == pytest.approx(5 / 6)


def test_all_empty_trace_gives_none():
    r = analyze(trace_of([[[-1, -1]], [[-1, -1]]]))
    d = r.to_dict()
    assert d["accesses"] == 0
    for name in METRICS:
        assert d[name] is None
    assert d["new_lookup_fraction_p95"] is None and d["working_set_ratio_p95"] is None


def test_empty_pairs_skipped_not_counted_as_zero():
    # t0 {0}, t1 {} , t2 {0}: the t1 pair is skipped, t2 is all new (t1 was empty) -> 1.0;
    # a kernel that counted the empty pair as 0 would give 0.5.
    r = analyze(trace_of([[[0]], [[-1]], [[0]]]))
    assert r.new_lookup_fraction == pytest.approx(1.0)
    # two runs of 1 (cut by the empty step); lookback 2
    assert r.persistence_mean_steps == pytest.approx(1.0)
    assert r.lookback_mean_steps == pytest.approx(2.0)


def test_long_distance_histogram_bins():
    # token 0 at steps 0, 1, 3, 7, 12: distances 1, 2, 4, 5 -> bins [1,1], [2,2], [3,4], [5,8]
    steps = [[[0]] if t in (0, 1, 3, 7, 12) else [[-1]] for t in range(13)]
    h = analyze(trace_of(steps)).reuse_distance_steps
    assert h == {"bin_lo": [1, 2, 3, 5], "bin_hi": [1, 2, 4, 8], "count": [1, 1, 1, 1], "cold": 1}


def test_batch_pools_over_requests():
    # Request B: 2 steps, layer 0: {0,1,2} twice; layer 1: {4}, then {4,5}.
    b = np.array([[[0, 1, 2], [4, -1, -1]], [[2, 1, 0], [5, 4, -1]]], dtype=np.int32)
    a = np.array(A, dtype=np.int32)
    tr = Trace([RequestTrace(a, np.full(4, 8)), RequestTrace(b, np.full(2, 8))], geom(2, 3))
    r = analyze(tr, window=2, page_tokens=2)
    # new lookup: A's five values sum 2.5; B: layer 0 t1 0/3, layer 1 t1 {5} of 2 -> 1/2
    # pooled (2.5 + 0 + 0.5) / 7 = 3/7
    assert r.new_lookup_fraction == pytest.approx(3 / 7)
    # persistence: A 19 sel / 12 runs; B layer 0 3 runs of 2, layer 1 token 4 run 2, 5 run 1
    # -> 9 sel / 5 runs; pooled 28 / 17
    assert r.persistence_mean_steps == pytest.approx(28 / 17)
    # lookback: A 11 over 9; B 4 re-selections at d=1 (state does not leak from A) -> 15 / 13
    assert r.lookback_mean_steps == pytest.approx(15 / 13)
    assert r.reuse_distance_steps["cold"] == 10 + 5
    # working set: A's four windows sum 13/3; B one window per layer: {0,1,2} 1, {4,5} 2/3
    # pooled (13/3 + 1 + 2/3) / 6 = 6 / 6
    assert r.working_set_ratio == pytest.approx(1.0)
    assert (r.accesses, r.steps, r.requests) == (19 + 9, 6, 2)


def test_parameters_validated():
    tr = trace_of(A)
    for kwargs in ({"window": 0}, {"page_tokens": 0}, {"window": -3}, {"window": 1.5}):
        with pytest.raises(DsacacheError) as e:
            analyze(tr, **kwargs)
        assert "\n" not in str(e.value)


def test_first_row_out_of_range():
    """The check both kernels rely on (validated traces never fail it): the first row with a
    token >= size, padding (-1) ignored; -1 when there is none or no row at all."""
    idx = np.array([[[0, 1]], [[1, -1]], [[-1, 8]], [[9, 2]]], dtype=np.int32)
    assert first_row_out_of_range(idx, 8) == 2
    assert first_row_out_of_range(idx, 9) == 3
    assert first_row_out_of_range(idx, 10) == -1
    assert first_row_out_of_range(idx[:0], 1) == -1


def test_progress_reports_every_step(tmp_path):
    tr = trace_of(A)
    tr.save(tmp_path / "t", chunk_steps=3)
    lazy = Trace.load(tmp_path / "t", lazy=True)
    seen: list[int] = []
    analyze(lazy, progress=seen.append)
    assert seen == [3, 1]


def _random_indices(rng: np.random.Generator, steps: int, layers: int, k: int, ctx: int):
    idx = np.full((steps, layers, k), -1, dtype=np.int32)
    for t in range(steps):
        for layer in range(layers):
            n = int(rng.integers(0, min(k, ctx) + 1))
            idx[t, layer, rng.permutation(k)[:n]] = rng.choice(ctx, size=n, replace=False)
    return idx


def test_chunked_lazy_equals_in_memory(tmp_path):
    rng = np.random.default_rng(7)
    reqs = [RequestTrace(_random_indices(rng, s, 3, 6, 20), np.full(s, 20)) for s in (17, 9, 4)]
    tr = Trace(reqs, geom(3, 6))
    tr.save(tmp_path / "t", chunk_steps=3)
    lazy = Trace.load(tmp_path / "t", lazy=True)
    assert lazy.requests[0].is_lazy
    a = analyze(tr, window=4, page_tokens=4).to_dict()
    b = analyze(lazy, window=4, page_tokens=4).to_dict()
    a.pop("engine_seconds"), b.pop("engine_seconds"), a.pop("source"), b.pop("source")
    assert a == b


def test_paper_values_match_architecture_doc():
    """PAPER must be the numbers in docs/architecture.md's metric table (the repository's own)."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
    rows = {}
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) == 3 and cells[0].split("(")[0] in PAPER:
            rows[cells[0].split("(")[0]] = [float(x) for x in re.findall(r"\d+\.\d+", cells[2])]
    assert set(rows) == set(METRICS)  # one row per metric, none lost in an edit
    assert rows["new_lookup_fraction"] == [
        PAPER["new_lookup_fraction"],
        PAPER["new_lookup_fraction_p95"],
    ]
    assert rows["persistence_mean_steps"] == [PAPER["persistence_mean_steps"]]
    assert rows["lookback_mean_steps"] == [PAPER["lookback_mean_steps"]]
    assert rows["interlayer_overlap"] == [PAPER["interlayer_overlap"]]
    assert rows["working_set_ratio"] == [PAPER["working_set_ratio"], PAPER["working_set_ratio_p95"]]
    assert rows["page_utilization"] == [PAPER["page_utilization"]]


# --- reference model: the definitions, written as plainly as possible -------------------------


def reference(requests: list[np.ndarray], k: int, window: int, page: int) -> dict:
    layers = requests[0].shape[1]
    names = ("new", "inter", "ws", "page", "lookback", "runs", "cons", "shift")
    items: dict[str, list[list[float]]] = {n: [[] for _ in range(layers)] for n in names}
    cold = 0
    for idx in requests:
        steps = idx.shape[0]
        S = [[{int(x) for x in idx[t, ly] if x >= 0} for ly in range(layers)] for t in range(steps)]
        for ly in range(layers):
            last: dict[int, int] = {}
            for t in range(steps):
                s = S[t][ly]
                if s:
                    if t >= 1:
                        items["new"][ly].append(len(s - S[t - 1][ly]) / len(s))
                        items["cons"][ly].append(len(s & S[t - 1][ly]) / len(s))
                        moved = {x + 1 for x in S[t - 1][ly]}
                        items["shift"][ly].append(len(s & moved) / len(s))
                    if ly >= 1:
                        items["inter"][ly].append(len(s & S[t][ly - 1]) / len(s))
                    items["page"][ly].append(len(s) / (page * len({x // page for x in s})))
                for x in s:
                    if x in last:
                        items["lookback"][ly].append(t - last[x])
                    else:
                        cold += 1
                    last[x] = t
            # maximal runs, token by token
            for x in set().union(*(S[t][ly] for t in range(steps))):
                run = 0
                for t in range(steps):
                    if x in S[t][ly]:
                        run += 1
                    elif run:
                        items["runs"][ly].append(run)
                        run = 0
                if run:
                    items["runs"][ly].append(run)
            if steps >= window:
                wins = [range(i * window, (i + 1) * window) for i in range(steps // window)]
            else:
                wins = [range(steps)]
            for win in wins:
                u = set().union(*(S[t][ly] for t in win))
                if u:
                    items["ws"][ly].append(len(u) / k)

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    def pooled(name: str) -> list[float]:
        return [v for per in items[name] for v in per]

    keys = {
        "new_lookup_fraction": "new",
        "persistence_mean_steps": "runs",
        "lookback_mean_steps": "lookback",
        "interlayer_overlap": "inter",
        "working_set_ratio": "ws",
        "page_utilization": "page",
        "consecutive_overlap": "cons",
        "shifted_overlap": "shift",
    }
    out: dict = {m: mean(pooled(n)) for m, n in keys.items()}
    out["per_layer"] = {m: [mean(per) for per in items[n]] for m, n in keys.items()}
    out["per_layer"]["interlayer_overlap"][0] = None
    for m, n in (("new_lookup_fraction_p95", "new"), ("working_set_ratio_p95", "ws")):
        vals = pooled(n)
        out[m] = float(np.percentile(vals, 95)) if vals else None
    hist: dict[int, int] = {}
    for d in pooled("lookback"):
        b = 0
        while 2**b < d:
            b += 1
        hist[b] = hist.get(b, 0) + 1
    nb = max(hist) + 1 if hist else 0
    out["hist"] = [hist.get(b, 0) for b in range(nb)]
    out["cold"] = cold
    out["accesses"] = sum(int((r >= 0).sum()) for r in requests)
    return out


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_requests=st.integers(1, 3),
    max_steps=st.integers(1, 12),
    layers=st.integers(1, 4),
    k=st.integers(1, 6),
    ctx=st.integers(1, 16),
    window=st.integers(1, 6),
    page=st.integers(1, 5),
)
def test_kernel_matches_reference(seed, n_requests, max_steps, layers, k, ctx, window, page):
    rng = np.random.default_rng(seed)
    arrays = [
        _random_indices(rng, int(rng.integers(1, max_steps + 1)), layers, k, ctx)
        for _ in range(n_requests)
    ]
    tr = Trace([RequestTrace(a, np.full(a.shape[0], ctx)) for a in arrays], geom(layers, k))
    got = analyze(tr, window=window, page_tokens=page).to_dict()
    want = reference(arrays, k, window, page)
    for m in (*METRICS, *OVERLAPS, "new_lookup_fraction_p95", "working_set_ratio_p95"):
        assert close(got[m], want[m]), (m, got[m], want[m])
    for m in METRICS + OVERLAPS:
        for ly in range(layers):
            assert close(got["per_layer"][m][ly], want["per_layer"][m][ly]), (m, ly)
    h = got["reuse_distance_steps"]
    assert h["count"] == want["hist"]
    assert h["cold"] == want["cold"]
    assert h["bin_hi"] == [2**i for i in range(len(want["hist"]))]
    assert got["accesses"] == want["accesses"]
