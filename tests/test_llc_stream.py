"""The per-step stream: runs in docs/architecture.md's order, with addresses from the layout."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_trace
from dsacache.sim.llc.layout import Layout, line_span
from dsacache.sim.llc.stream import (
    INDEX_SCAN,
    KV_APPEND,
    KV_GATHER,
    WEIGHTS,
    Runs,
    iter_runs,
)
from dsacache.trace import Geometry, Trace


def reference_runs(
    trace: Trace, layout: Layout, merge: bool = True
) -> list[list[tuple[int, int, int, int, int]]]:
    """Per step: (first, count, class, m0, m1) of every run, built access by access; with
    merge, an index block right after the previous one, on a line boundary, joins its run."""
    g = trace.geometry
    idx = [np.asarray(r.indices[:]) for r in trace.requests]

    def span(start, nbytes, cls):
        f, last, m0, m1 = (int(x) for x in line_span(int(start), int(nbytes)))
        return (f, last - f + 1, cls, m0, m1)

    steps = []
    for t in range(trace.steps):
        runs = []
        live = [r for r in range(len(idx)) if t < idx[r].shape[0]]
        for layer in range(g.layers):
            if layout.weights_bytes:
                runs.append(span(layout.weights_base[layer], layout.weights_bytes, WEIGHTS))
            for r in live:
                ctx = int(trace.requests[r].context_lens[t])
                end = -1  # byte after the previous block of this request
                for b in range(-(-ctx // g.block_tokens)):
                    ntok = min(g.block_tokens, ctx - b * g.block_tokens)
                    start = int(layout.index_key_start(layer, r, b * g.block_tokens))
                    run = span(start, ntok * g.index_bytes_per_token, INDEX_SCAN)
                    if merge and start == end and start % 128 == 0:
                        f, _, c, m0, _ = runs.pop()
                        run = (f, run[0] + run[1] - f, c, m0, run[4])
                    runs.append(run)
                    end = start + ntok * g.index_bytes_per_token
            for r in live:
                for tok in idx[r][t, layer]:
                    if tok >= 0:
                        start = layout.kv_row_start(layer, r, int(tok))
                        runs.append(span(start, g.kv_bytes_per_token, KV_GATHER))
            for r in live:
                new = int(trace.requests[r].context_lens[t]) - 1  # the token being decoded
                if new < 0:
                    continue
                runs.append(
                    span(layout.kv_row_start(layer, r, new), g.kv_bytes_per_token, KV_APPEND)
                )
                runs.append(
                    span(layout.index_key_start(layer, r, new), g.index_bytes_per_token, KV_APPEND)
                )
        steps.append(runs)
    return steps


def flatten(runs_list: list[Runs]) -> list[list[tuple[int, ...]]]:
    out = []
    for runs in runs_list:
        for t in range(runs.steps):
            a, b = runs.step_start[t], runs.step_start[t + 1]
            out.append(
                [
                    (
                        int(runs.first[i]),
                        int(runs.count[i]),
                        int(runs.cls[i]),
                        int(runs.m0[i]),
                        int(runs.m1[i]),
                    )
                    for i in range(a, b)
                ]
            )
    return out


@pytest.mark.parametrize("weights", [0, 5000])
@pytest.mark.parametrize("block_elements", [1, 10_000])
def test_stream_matches_reference(weights, block_elements):
    trace = make_trace([5, 3], layers=2, k=6, context=[9, 4], requests=2, seed=4)
    ctx = [r.context_lens for r in trace.requests]
    layout = Layout.build(trace.geometry, ctx, weights, align=1024)
    got = list(iter_runs(trace, layout, block_elements=block_elements))
    assert sum(r.steps for r in got) == 5
    assert [r.start for r in got] == ([0, 1, 2, 3, 4] if block_elements == 1 else [0])
    assert flatten(got) == reference_runs(trace, layout)


def test_stream_order_and_classes():
    trace = make_trace(2, layers=3, k=4, context=6, seed=1)
    layout = Layout.build(trace.geometry, [trace.context_lens], 300, align=1024)
    (runs,) = iter_runs(trace, layout)
    cls = runs.cls[runs.step_start[0] : runs.step_start[1]].tolist()
    # per layer: weights, index blocks (6 tokens in pages of 4: 2 runs), gathers, 2 appends
    per_layer = [WEIGHTS] + [INDEX_SCAN] * 2
    n_valid = (np.asarray(trace.indices[0]) >= 0).sum(axis=1)
    expected = []
    for layer in range(3):
        expected += per_layer + [KV_GATHER] * int(n_valid[layer]) + [KV_APPEND] * 2
    assert cls == expected
    assert (runs.count >= 1).all()
    # steps limit
    (first2,) = iter_runs(trace, layout, steps=1)
    assert first2.steps == 1


def expand(steps: list[list[tuple[int, ...]]]) -> list[tuple[int, int, int]]:
    """Every line access (line, class, sector mask) in order."""
    out = []
    for runs in steps:
        for f, n, c, m0, m1 in runs:
            for j in range(n):
                out.append((f + j, c, m0 if j == 0 else m1 if j == n - 1 else 0xF))
    return out


@pytest.mark.parametrize("block_tokens", [4, 3])  # 4 x 128 B blocks: aligned; 3 x 96 B: 1 in 4
def test_index_blocks_merge_exactly(block_tokens):
    g = Geometry(2, 6, 200, 128 if block_tokens == 4 else 96, block_tokens)
    trace = make_trace([5, 3], layers=2, k=6, context=[30, 20], requests=2, seed=4, geometry=g)
    layout = Layout.build(g, [r.context_lens for r in trace.requests], 5000, align=1024)
    got = flatten(list(iter_runs(trace, layout, block_elements=50)))
    assert got == reference_runs(trace, layout)
    per_block = reference_runs(trace, layout, merge=False)
    assert expand(got) == expand(per_block)  # the same line accesses, in the same order
    n_scan = sum(r[2] == INDEX_SCAN for step in got for r in step)
    n_blocks = sum(r[2] == INDEX_SCAN for step in per_block for r in step)
    if block_tokens == 4:
        assert n_scan < n_blocks / 3  # prompt blocks are consecutive: a few runs per scan
    else:  # 288-byte blocks: only every 4th boundary (1152 B) is on a line
        assert n_blocks / 2 < n_scan < n_blocks


def test_recorded_trace_appends_the_decoded_token() -> None:
    """On a trace the recorder wrote: context_len counts the token being decoded (it can be
    selected, and it is the position the step appends), and the stream appends one KV row and
    one index key per (request, step, layer), at token context_len - 1."""
    from dsacache.dsa.hooks import attach
    from dsacache.dsa.record import record
    from test_dsa_common import VOCAB, tiny_indexer, tiny_model

    class Chars:
        def encode(self, text: str) -> list[int]:
            return [ord(c) % VOCAB for c in text]

        def decode(self, ids: list[int]) -> str:
            return "".join(chr(65 + i % 26) for i in ids)

    k, new, prompts = 4, 5, ["ab", "hello"]
    model = tiny_model("llama")
    att = attach(model, tiny_indexer(model), top_k=k)
    try:
        trace = record(model, Chars(), att, prompts, new, k).trace
    finally:
        att.detach()
    g = trace.geometry
    for prompt, req in zip(prompts, trace.requests, strict=True):
        ctx = np.asarray(req.context_lens)
        # step t decodes the token at position len(prompt) - 1 + t: context = that + 1
        assert ctx.tolist() == [len(prompt) + t for t in range(new)]
        idx = np.asarray(req.indices)
        for t in np.flatnonzero(ctx <= k):  # while everything fits in the top-k, the
            assert (idx[t] == ctx[t] - 1).any(axis=1).all()  # decoded token selects itself
    layout = Layout.build(g, [r.context_lens for r in trace.requests], 0, align=1024)
    (runs,) = iter_runs(trace, layout)
    for t in range(trace.steps):
        a, b = runs.step_start[t], runs.step_start[t + 1]
        got = runs.first[a:b][runs.cls[a:b] == KV_APPEND].tolist()
        want = []
        for layer in range(g.layers):
            for r, req in enumerate(trace.requests):
                pos = int(req.context_lens[t]) - 1
                want += [
                    int(layout.kv_row_start(layer, r, pos)) >> 7,
                    int(layout.index_key_start(layer, r, pos)) >> 7,
                ]
        assert got == want  # 2 runs x layers x requests, in stream order
    # every row appended lies inside the request's allocated blocks
    assert (layout.block_table >= 0).sum() == sum(
        -(-int(np.max(r.context_lens)) // g.block_tokens) for r in trace.requests
    )
