"""The indexer-model generator: top-k selections of a simulated DeepSeek-V3.2 lightning indexer.

Every step scores every cached token with I(t, s) = Σ_j w(t, j)·ReLU(q(t, j)·k(s)) and keeps the
exact top-k, so selections persist for the reasons they do in a real model (score margin, a
query that drifts slowly, topical clusters, contiguous spans, the rotary offset pattern), not by
a drawn statistic. docs/indexer-model.md describes the keys and queries; indexer_model.py holds
their parameters; benchmarks/fit_indexer.py fitted them to public measurements.

Work is layer-major inside a window of steps: one layer's keys are built once per window, all
its queries for the window are drawn ahead, and every block of steps is one BLAS matrix product
(queries × keys) followed by the compiled ReLU-weighted sum and top-k (synth_indexer_kernel.py).
Windows bound memory (one layer's keys plus a window of selections), and chunks of finished
steps stream to the trace store. Every random draw comes from a stream named by
(seed, request, layer, step), so the result does not depend on the window or chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsacache.errors import DsacacheError
from dsacache.trace.geometry import Geometry, IndexerSpec
from dsacache.trace.indexer_model import GROUPS, IndexerModel, calibrated
from dsacache.trace.model import DEFAULT_CHUNK_STEPS, RequestTrace, Trace
from dsacache.trace.store import TraceWriter
from dsacache.trace.synth_indexer_kernel import select_block

WINDOW_STEPS = 256  # steps per window: bounds the selection buffer to window x layers x k
BLOCK_STEPS = 8  # steps per matrix product: bounds the dot-product buffer to block x heads x ctx

# Stream tags: which random input a stream feeds.
_STRUCTURE, _KEYS, _QUERY, _STEP, _JUMPS = range(5)


@dataclass
class Selection:
    """A window of one request's selections: indices int32 and scores float32 [steps, layers, k]
    (scores NaN where a slot is empty)."""

    start: int
    indices: np.ndarray
    scores: np.ndarray


def _stream(seed: int, *path: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *path])))


def _runs(n: int, mean: float, rng: np.random.Generator, floor: float = 1.0) -> np.ndarray:
    """Run id of each of n positions; run lengths floor + geometric, with the given mean."""
    floor = min(max(1.0, floor), mean)
    lens = (
        np.floor(floor).astype(np.int64)
        + rng.geometric(min(1.0, 1.0 / (mean - np.floor(floor) + 1.0)), size=n)
        - 1
    )
    lens = np.maximum(lens, 1)
    return np.searchsorted(np.cumsum(lens), np.arange(n), side="right")


def jump_steps(steps: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """bool [steps]: the steps where the subject changes: every 1 / rate steps, from a random
    phase. A regular beat, not a memoryless one: a 200-step trace always sees its share of
    changes, so the statistics that hinge on them (the new-lookup P95, the working set) do not
    swing with the seed.
    """
    out = np.zeros(steps, dtype=bool)
    if rate <= 0:
        return out
    t = rng.random() / rate
    while t < steps:
        out[int(t)] = True
        t += 1.0 / rate
    return out


def _couple(prev: np.ndarray | None, fresh: np.ndarray, eta: float) -> np.ndarray:
    """The next layer's copy of a random input: keeps 1 - eta of the previous layer's variance."""
    if prev is None:
        return fresh
    return (np.sqrt(1.0 - eta) * prev + np.sqrt(eta) * fresh).astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1), 1e-12)[..., None]).astype(np.float32)


class _Structure:
    """One request's token structure, shared by all layers: topic and span of every token."""

    def __init__(self, model: IndexerModel, n: int, k: int, seed: int, request: int) -> None:
        rng = _stream(seed, request, _STRUCTURE)
        # Sections: half their mean length at least, so topics come in similar sizes.
        mean = max(1.0, model.section_k * k)
        section = _runs(n, mean, rng, floor=mean / 2)
        sections = int(section[-1]) + 1
        # Every topic gets topic_sections sections, scattered over the context.
        self.topics = -(-sections // model.topic_sections)
        self.topic = (rng.permutation(sections) // model.topic_sections)[section]
        # A span never crosses a section boundary.
        span_cut = np.r_[True, np.diff(_runs(n, model.span_tokens, rng)) != 0]
        span_cut |= np.r_[True, np.diff(section) != 0]
        self.span = np.cumsum(span_cut) - 1
        self.spans = int(self.span[-1]) + 1


class _LayerKeys:
    """Every layer's index keys in turn, each layer's random inputs coupled to the layer below.

    Content dims: a topic part (the unit vector of the token's topic, length sqrt(topic_share))
    and a detail part (span vector + the token's own, length sqrt(1 - topic_share)): the content
    has unit length, as a layer-normalised key has a fixed length (with ReLU and many heads, a
    longer key would win every query). Rope dims: rope_mean + rope_spread·N(0, 1) per dim, rotated
    by the token's position.
    """

    def __init__(self, model: IndexerModel, spec: IndexerSpec, st: _Structure, n: int) -> None:
        self.m, self.st, self.n = model, st, n
        self.content = spec.head_dim - spec.rope.dims
        self.rope, self.rope_dims = spec.rope, spec.rope.dims
        self.tables = spec.rope.tables(np.arange(n))  # every layer rotates the same positions
        self.banks: dict[str, np.ndarray] | None = None

    def next_layer(self, seed: int, request: int, layer: int) -> np.ndarray:
        """Keys [n, head_dim] of `layer` (call for layers 0, 1, 2, ... in order)."""
        m, st, c, r = self.m, self.st, self.content, self.rope_dims
        ct = c // 2
        rng = _stream(seed, request, _KEYS, layer)
        fresh = {
            "topic": rng.standard_normal((st.topics, ct), dtype=np.float32),
            "span": rng.standard_normal((st.spans, c - ct), dtype=np.float32),
            "token": rng.standard_normal((self.n, c - ct), dtype=np.float32),
            "rope": rng.standard_normal((self.n, r), dtype=np.float32),
        }
        prev = None if layer == 0 else self.banks
        self.banks = {
            k: _couple(None if prev is None else prev[k], v, m.layer_coupling)
            for k, v in fresh.items()
        }
        b = self.banks
        keys = np.empty((self.n, c + r), dtype=np.float32)
        keys[:, :ct] = self.topic_units()[st.topic] * np.float32(np.sqrt(m.topic_share))
        detail = np.sqrt(m.span_share) * b["span"][st.span]
        detail += np.sqrt(1.0 - m.span_share) * b["token"]
        keys[:, ct:c] = _unit_rows(detail) * np.float32(np.sqrt(1.0 - m.topic_share))
        raw = (m.rope_mean + m.rope_spread * b["rope"]) / np.float32(np.sqrt(max(r, 1)))
        keys[:, c:] = self.rope.rotate(raw, np.arange(self.n), self.tables)
        return keys

    def topic_units(self) -> np.ndarray:
        """This layer's topic directions, unit vectors [topics, topic dims]."""
        return _unit_rows(self.banks["topic"])


class _LayerQueries:
    """Every layer's queries for a window of steps, in layer order; AR(1) states carry over to
    the next window. Constant parts and per-step innovations are coupled to the layer below's.
    """

    def __init__(
        self,
        model: IndexerModel,
        spec: IndexerSpec,
        groups: list[str],
        topics: int,
        jumps: np.ndarray,
    ) -> None:
        self.m, self.spec, self.groups, self.topics, self.jumps = model, spec, groups, topics, jumps
        layers = len(groups)
        self.content = spec.head_dim - spec.rope.dims
        self.fixed: dict[str, np.ndarray] | None = None  # the layer below's constant parts
        self.innov: dict[str, np.ndarray] | None = None  # the layer below's, this window
        self.state: list[dict[str, np.ndarray] | None] = [None] * layers

    def window(
        self,
        seed: int,
        request: int,
        layer: int,
        steps: range,
        positions: np.ndarray,
        topic_units: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Queries [steps, heads, head_dim] and head weights [steps, heads] of `layer`."""
        m, c, r = self.m, self.content, self.spec.rope.dims
        ct, h, t, w = c // 2, m.heads, self.topics, len(steps)
        g = getattr(m, self.groups[layer])
        rng = _stream(seed, request, _QUERY, layer)
        fixed = {
            "persistent": rng.standard_normal((h, c - ct), dtype=np.float32),
            "rope": rng.standard_normal((h, r), dtype=np.float32),
            "topic0": rng.standard_normal((h, t), dtype=np.float32),
            "drift0": rng.standard_normal((h, c - ct), dtype=np.float32),
            # Drawn last, so the draws above do not depend on it.
            "scatter": rng.standard_normal((h, r), dtype=np.float32),
            "scatter_common": rng.standard_normal((1, r), dtype=np.float32),
        }
        below = None if layer == 0 else self.fixed
        self.fixed = {
            k: _couple(None if below is None else below[k], v, m.layer_coupling)
            for k, v in fixed.items()
        }
        innov = {
            "topic": np.empty((w, h, t), np.float32),
            "drift": np.empty((w, h, c - ct), np.float32),
            "flicker": np.empty((w, h, c - ct), np.float32),
            "weight": np.empty((w, h), np.float32),
        }
        for i, step in enumerate(steps):  # each step its own stream: windows cannot matter
            srng = _stream(seed, request, _STEP, layer, step)
            for arr in innov.values():
                arr[i] = srng.standard_normal(arr.shape[1:], dtype=np.float32)
        below = None if layer == 0 else self.innov
        self.innov = innov = {
            k: _couple(None if below is None else below[k], v, m.layer_coupling)
            for k, v in innov.items()
        }
        st = self.state[layer] or {
            "topic": self.fixed["topic0"].copy(),
            "drift": self.fixed["drift0"].copy(),
        }
        topic = np.empty((w, h, t), np.float32)
        drift = np.empty((w, h, c - ct), np.float32)
        for i, step in enumerate(steps):
            if step > 0:  # step 0 keeps the stationary initial draw
                jump = bool(self.jumps[step])
                rt = 0.0 if jump else g.topic_memory
                rd = 0.0 if jump else g.drift_memory
                st["topic"] = rt * st["topic"] + np.sqrt(1 - rt * rt) * innov["topic"][i]
                st["drift"] = rd * st["drift"] + np.sqrt(1 - rd * rd) * innov["drift"][i]
            topic[i], drift[i] = st["topic"], st["drift"]
        self.state[layer] = st
        q = np.empty((w, h, c + r), np.float32)
        focus = np.exp(g.topic_peak * (topic - topic.max(axis=2, keepdims=True)))
        q[:, :, :ct] = g.topic_weight * _unit_rows(_unit_rows(focus) @ topic_units)
        detail = np.sqrt(g.persistent) * self.fixed["persistent"][None]
        detail = detail + np.sqrt(g.drift) * drift + np.sqrt(g.flicker) * innov["flicker"]
        q[:, :, ct:c] = detail
        raw = m.rope_mean + m.rope_spread * self.fixed["rope"]
        if g.rope_scatter > 0:  # off by default: the calibrated queries stay bit for bit
            own, common = self.fixed["scatter"], self.fixed["scatter_common"]
            scatter = np.sqrt(1 - g.rope_shared) * own + np.sqrt(g.rope_shared) * common
            raw = raw + g.rope_scatter * scatter * self._tilt(g.rope_tilt)
        raw = raw * np.float32(g.rope_gain)
        raw /= np.float32(np.sqrt(max(r, 1)))
        q[:, :, c:] = self.spec.rope.rotate(raw, positions[:, None])  # [steps, heads, r]
        weights = np.exp(g.head_spread * innov["weight"]).astype(np.float32)
        return q, weights

    def _tilt(self, tilt: float) -> np.ndarray:
        """Per rope dim: (ω / ω_max)^tilt of its pair, scaled to mean square 1 over the dims."""
        w = self.spec.rope.inv_freq()
        share = np.repeat((w / w.max()) ** tilt, 2)
        return (share / np.sqrt(np.mean(share * share))).astype(np.float32)


def generate_request(
    geometry: Geometry,
    spec: IndexerSpec,
    model: IndexerModel,
    steps: int,
    context: int,
    seed: int,
    request: int = 0,
    window_steps: int = WINDOW_STEPS,
    progress: Callable[[int], None] | None = None,
    model_layers: int | None = None,
) -> Iterator[Selection]:
    """One request's selections, window by window (context starts at `context`, +1 per step).

    progress(n) is called after each layer of a window with its n steps (the calls add up to
    steps x layers). model_layers: the depth of the model a reduced trace samples
    (IndexerModel.layer_groups).
    """
    layers, k = geometry.layers, geometry.top_k
    if spec.head_dim - spec.rope.dims < 1:
        raise DsacacheError("indexer: the index key needs at least one content (non-rope) dim")
    n = context + steps - 1  # tokens of the last step's context
    st = _Structure(model, n, k, seed, request)
    jumps = jump_steps(steps, model.jump_rate, _stream(seed, request, _JUMPS))
    groups = model.layer_groups(layers, model_layers)
    queries = _LayerQueries(model, spec, groups, st.topics, jumps)
    keys = _LayerKeys(model, spec, st, n)
    for w0 in range(0, steps, window_steps):
        w1 = min(steps, w0 + window_steps)
        ctx = np.arange(context + w0, context + w1, dtype=np.int64)
        idx = np.empty((w1 - w0, layers, k), np.int32)
        sc = np.empty((w1 - w0, layers, k), np.float32)
        for layer in range(layers):
            kl = keys.next_layer(seed, request, layer)
            q, wts = queries.window(
                seed, request, layer, range(w0, w1), ctx - 1, keys.topic_units()
            )
            bias = np.float32(getattr(model, groups[layer]).relu_bias)
            for b0 in range(0, w1 - w0, BLOCK_STEPS):
                b1 = min(w1 - w0, b0 + BLOCK_STEPS)
                top = int(ctx[b1 - 1])
                qb = q[b0:b1].reshape(-1, q.shape[2])
                dots = (qb @ kl[:top].T).reshape(b1 - b0, model.heads, top)
                select_block(
                    dots, wts[b0:b1], bias, ctx[b0:b1], idx[b0:b1, layer], sc[b0:b1, layer]
                )
            if progress:
                progress(w1 - w0)
        yield Selection(w0, idx, sc)


def synthesize_indexer(
    geometry: Geometry,
    spec: IndexerSpec,
    steps: int,
    context: int,
    model: IndexerModel | None = None,
    *,
    seed: int = 0,
    requests: int = 1,
    out: str | Path | None = None,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    window_steps: int = WINDOW_STEPS,
    scores: bool = False,
    progress: Callable[[int], None] | None = None,
    model_layers: int | None = None,
) -> Trace:
    """An indexer-model trace: context starts at `context` tokens and grows by one per step.

    With `out`, windows stream to a trace store (memory stays bounded) and the returned trace
    reads it lazily; without, the trace is built in memory. model: the calibrated parameters
    unless given. scores: store each selection's index score beside it (float32, NaN at empty
    slots). progress(n): called with (step, layer) pairs done (they add up to
    requests x steps x layers). model_layers: with more layers than the geometry's, the trace
    is a reduced model of that depth whose layers sample it evenly (IndexerModel.layer_groups).
    """
    model = model or calibrated()
    model.validate()
    if steps < 1 or context < 1 or requests < 1 or window_steps < 1 or chunk_steps < 1:
        raise DsacacheError("steps, context, requests, window and chunk steps must be positive")
    if context + steps - 1 > np.iinfo(np.int32).max:
        raise DsacacheError(f"context {context} + {steps} steps exceeds int32 token indices")
    meta = {
        "source_model": "synthetic",
        "generator": "indexer",
        "seed": seed,
        "prompt": None,
        "indexer": {
            "heads": spec.heads,
            "head_dim": spec.head_dim,
            "rope": spec.rope.to_dict(),
            "model": model.to_dict(),
            "model_layers": model_layers,
        },
    }
    ctx_lens = np.arange(context, context + steps, dtype=np.int64)

    def windows(r: int) -> Iterator[Selection]:
        return generate_request(
            geometry, spec, model, steps, context, seed, r, window_steps, progress, model_layers
        )

    if out is None:
        reqs = []
        for r in range(requests):
            shape = (steps, geometry.layers, geometry.top_k)
            idx = np.empty(shape, np.int32)
            sc = np.empty(shape, np.float32) if scores else None
            for sel in windows(r):
                idx[sel.start : sel.start + len(sel.indices)] = sel.indices
                if sc is not None:
                    sc[sel.start : sel.start + len(sel.indices)] = sel.scores
            reqs.append(RequestTrace(idx, ctx_lens.copy(), scores=sc))
        return Trace(reqs, geometry, meta, source="<synthetic>", validate=False)
    with TraceWriter(out, geometry, meta, chunk_steps) as writer:
        for r in range(requests):
            rw = writer.add_request(steps, scores=scores)
            for sel in windows(r):
                for c0 in range(0, len(sel.indices), chunk_steps):
                    c1 = min(len(sel.indices), c0 + chunk_steps)
                    s0 = sel.start + c0
                    rw.write(
                        s0, sel.indices[c0:c1], ctx_lens[s0 : s0 + c1 - c0],
                        scores=sel.scores[c0:c1] if scores else None,
                    )  # fmt: skip
    return Trace.load(out, lazy=True, validate=False)


__all__ = ["GROUPS", "Selection", "generate_request", "synthesize_indexer"]
