"""Miss-ratio curves: token-LRU hits at every reserved capacity from one pass over a trace.

Mattson's stack algorithm (kernels in mrc_kernels.py): every re-access gets its LRU stack
distance d (1 + distinct keys touched since the key's previous access, in its region), and an
LRU region of C tokens hits exactly the accesses with d <= C, so hits(C) is a cumulative sum
of the distance histogram. Cold (first) accesses never hit. Memory is O(keys), whatever the
trace length: per key an int32 last-access clock and an int64 histogram bin, plus per stack a
bitmap and a counting tree over at most 4 x its keys clock slots (compacted when full).

Partitions (as `simulate`'s token-lru):
- `global`: one stack over every access; hits_at(C) = accesses with d <= C.
- `per-layer`: one stack per layer; a total capacity of N tokens gives each layer
  floor(N / layers), so hits_at(N) = accesses with per-layer distance <= floor(N / layers).
  The curve changes at multiples of `layers` tokens.
- `pinned:L1,L2,...`: one stack over those layers' accesses; every access of another layer
  misses (counted in `bypassed`).

SHARDS sampling (Waldspurger et al., FAST 2015, fixed rate): with sample_rate R only keys with
hash(key) >> 40 < round(R * 2**24) (splitmix64) go through the stacks; a sampled distance d_s
stands for d_s / R, so a region of C tokens hits iff d_s <= C * R, and hit rates are the
sampled hits over the sampled accesses, scaled to the trace's exact access count. The error
comes from which keys the hash picks, so it shrinks with the number of sampled keys
(R x distinct keys), not with the trace length, and it is mostly *horizontal*: a distance d is
estimated with a relative spread of about 1 / sqrt(R * d), so a steep rise of the curve (DSA's
cliff near k x layers tokens, global partition) is smeared and the hit-rate error is largest
there. Measured (tests/test_mrc.py, benchmarks/bench_mrc.py; error = |sampled - exact| hits
over accesses at ~100 capacities): ~7 K keys, R = 0.25 and 0.5: max < 0.03; R = 0.1: mean
0.005, max 0.067; 20 M accesses, 334 K keys, R = 0.01: mean 0.003, max 0.15 (on the cliff).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsacache.errors import DsacacheError, TraceError
from dsacache.sim import mrc_kernels as K
from dsacache.sim.partition import MAX_CAPACITY_BYTES, parse_partition
from dsacache.trace.blocks import StepBlocks
from dsacache.trace.model import Trace
from dsacache.units import MIB

# A stack's clock runs to at least TIME_SLACK x its key count before it is compacted.
TIME_SLACK = 2


@dataclass
class MissRatioCurve:
    """Token-LRU hits at every capacity.

    capacities_tokens[i] (int64, increasing) is the smallest total reserved capacity at which
    hits[i] accesses hit; hits stay at hits[i] up to capacities_tokens[i + 1] - 1. Below
    capacities_tokens[0] there are no hits. With sampling, hits are estimates (rounded).
    """

    source: str
    partition: str
    layers: int
    top_k: int
    kv_bytes_per_token: int
    capacities_tokens: np.ndarray
    hits: np.ndarray
    accesses: int
    cold_misses: int
    bypassed: int = 0  # accesses of layers outside the reservation (pinned): always misses
    engine_seconds: float = 0.0
    sample_rate: float | None = None
    sampled_accesses: int = 0
    compactions: int = 0
    requests: int = 1
    steps: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.sample_rate is None

    @property
    def max_hits(self) -> int:
        """Hits of a region that never evicts (the curve's plateau)."""
        return int(self.hits[-1]) if self.hits.size else 0

    @property
    def saturation_tokens(self) -> int:
        """Smallest capacity reaching max_hits (0 when nothing can hit)."""
        return int(self.capacities_tokens[-1]) if self.capacities_tokens.size else 0

    def capacity_mib(self, tokens: Any) -> Any:
        """Reserved MiB of `tokens` tokens (tokens x kv_bytes_per_token / 2**20)."""
        return np.asarray(tokens, dtype=np.float64) * self.kv_bytes_per_token / MIB

    @property
    def max_tokens(self) -> int:
        """Largest capacity the curve reports: 2**62 bytes of tokens (every count stays int64;
        the curve is flat long before)."""
        return MAX_CAPACITY_BYTES // self.kv_bytes_per_token

    def tokens_of_mib(self, mib: float) -> int:
        """Tokens a region of `mib` MiB holds (rounded down, as SimConfig.capacity_mib), at most
        max_tokens."""
        if mib * MIB >= MAX_CAPACITY_BYTES:
            return self.max_tokens
        return min(int(math.floor(mib * MIB / self.kv_bytes_per_token)), self.max_tokens)

    def hits_at(self, capacity_tokens: int) -> int:
        """LRU hits with a reserved region of `capacity_tokens` tokens in all."""
        if capacity_tokens < 0:
            raise DsacacheError(f"capacity must be >= 0 tokens, got {capacity_tokens}")
        capacity_tokens = min(int(capacity_tokens), self.max_tokens)  # the curve is flat there
        i = int(np.searchsorted(self.capacities_tokens, capacity_tokens, side="right")) - 1
        return int(self.hits[i]) if i >= 0 else 0

    def hits_at_many(self, capacity_tokens: np.ndarray) -> np.ndarray:
        c = np.asarray(capacity_tokens, dtype=np.int64)
        i = np.searchsorted(self.capacities_tokens, c, side="right") - 1
        out = np.where(i >= 0, self.hits[np.maximum(i, 0)] if self.hits.size else 0, 0)
        return out.astype(np.int64)

    def hit_rate_at(self, capacity_tokens: int) -> float:
        return self.hits_at(capacity_tokens) / self.accesses if self.accesses else 0.0

    def points(self, n: int = 200, max_tokens: int | None = None) -> np.ndarray:
        """About n capacities (int64, increasing, from 0) up to max_tokens (default: the
        saturation point): every change point when there are fewer, else half on a linear
        and half on a log grid."""
        top = max(self.saturation_tokens if max_tokens is None else int(max_tokens), 0)
        top = min(top, max(self.max_tokens, self.saturation_tokens))
        caps = self.capacities_tokens[self.capacities_tokens <= top]
        if caps.size + 2 <= n:
            grid = caps
        else:
            half = max(n // 2, 2)
            grid = np.concatenate(
                [np.linspace(0, top, half), np.geomspace(1, max(top, 1), half)]
            ).astype(np.int64)
        return np.unique(np.concatenate([[0], grid, [top]]).astype(np.int64))

    def to_dict(self, n_points: int = 200, max_tokens: int | None = None) -> dict[str, Any]:
        """JSON-able: exact totals plus a sampled list of curve points."""
        caps = self.points(n_points, max_tokens)
        hits = self.hits_at_many(caps)
        acc = self.accesses
        return {
            "source": self.source,
            "partition": self.partition,
            "exact": self.exact,
            "sample_rate": self.sample_rate,
            "geometry": {
                "layers": self.layers,
                "top_k": self.top_k,
                "kv_bytes_per_token": self.kv_bytes_per_token,
            },
            "requests": self.requests,
            "steps": self.steps,
            "accesses": int(acc),
            "cold_misses": int(self.cold_misses),
            "bypassed": int(self.bypassed),
            "max_hits": self.max_hits,
            "max_hit_rate": self.max_hits / acc if acc else 0.0,
            "saturation_tokens": self.saturation_tokens,
            "saturation_mib": float(self.capacity_mib(self.saturation_tokens)),
            "sampled_accesses": int(self.sampled_accesses),
            "engine_seconds": float(self.engine_seconds),
            "points": [
                {
                    "capacity_tokens": int(c),
                    "capacity_mib": float(self.capacity_mib(c)),
                    "hits": int(h),
                    "hit_rate": int(h) / acc if acc else 0.0,
                }
                for c, h in zip(caps, hits, strict=True)
            ],
        }


# ---------------------------------------------------------------- the pass


@dataclass
class _Stacks:
    """State of every stack of one pass (flat arrays the kernel updates)."""

    last_time: np.ndarray  # [keys]: clock of the key's latest access in its stack, -1: none
    bits: np.ndarray  # uint64 [stacks, words]: the marks
    tree: np.ndarray  # int32 [stacks, 2 * words]: marks per completed word, summed up a tree
    state: np.ndarray  # int64 [stacks, 3]: clock, live keys, current word
    counters: np.ndarray  # int64 [N_COUNTERS]
    hist: np.ndarray  # int64 [stack_keys + 2]: re-accesses per stack distance

    @classmethod
    def allocate(
        cls, n_keys: int, stacks: int, stack_keys: int, time_dtype: type | None = None
    ) -> _Stacks:
        """State for `stacks` stacks of up to `stack_keys` keys each (dense ids < n_keys)."""
        words = _words(stack_keys)
        return cls(
            last_time=np.full(n_keys, -1, dtype=time_dtype or _time_dtype(stack_keys)),
            bits=np.zeros((stacks, words), dtype=np.uint64),
            tree=np.zeros((stacks, 2 * words), dtype=np.int32),
            state=np.zeros((stacks, 3), dtype=np.int64),
            counters=np.zeros(K.N_COUNTERS, dtype=np.int64),
            hist=np.zeros(stack_keys + 2, dtype=np.int64),
        )

    def run(
        self, block: np.ndarray, key_off: np.ndarray, max_ctx: np.ndarray, of_layer: np.ndarray,
        threshold: int,
    ) -> np.ndarray:  # fmt: skip
        return K.mrc_block(
            block, key_off, max_ctx, of_layer, threshold, self.last_time, self.bits,
            self.tree, self.state, self.counters, self.hist,
        )  # fmt: skip


def _words(stack_keys: int) -> int:
    """Bitmap words of one stack: a power of two, >= TIME_SLACK x keys + 64 clock slots."""
    need = -(-(TIME_SLACK * stack_keys + 64) // 64)
    return 1 << max(0, (need - 1).bit_length())


def _time_dtype(stack_keys: int) -> type:
    """int32 clocks where they fit (halves the per-key table)."""
    return np.int32 if _words(stack_keys) * 64 < 2**31 else np.int64


def _warmup(stack_keys: int) -> None:
    """Compile the kernel for this pass's array types before the engine clock starts."""
    st = _Stacks.allocate(1, 1, 1, _time_dtype(stack_keys))
    block = np.array([[[[0, -1, 0]]]], dtype=np.int32)
    one = np.ones(1, np.int64)
    st.run(block, np.zeros(1, np.int64), one, np.zeros(1, np.int32), K.SAMPLE_MODULUS)


def sample_threshold(sample_rate: float | None) -> int:
    """SHARDS threshold out of 2**24 for rate R (None: no sampling, every key)."""
    if sample_rate is None:
        return K.SAMPLE_MODULUS
    r = sample_rate
    if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r):
        raise DsacacheError(f"sample rate must be a number in (0, 1], got {r!r}")
    if not 0 < r <= 1:
        raise DsacacheError(f"sample rate must be in (0, 1], got {r}")
    thr = int(round(r * K.SAMPLE_MODULUS))
    if thr < 1:
        raise DsacacheError(f"sample rate {r} is below the hash resolution 2**-{K.SAMPLE_BITS}")
    return thr


def mrc(
    trace: Trace,
    partition: str = "global",
    sample_rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> MissRatioCurve:
    """Token-LRU hits for every reserved capacity, in one pass over `trace`.

    partition: `global`, `per-layer` or `pinned:L1,L2,...` (as simulate's token-lru).
    sample_rate: SHARDS fixed-rate key sampling in (0, 1]; None or 1 is exact.
    progress: called with the number of steps of each block once processed (sums to
    trace.steps).
    """
    threshold = sample_threshold(sample_rate)
    if threshold >= K.SAMPLE_MODULUS:
        sample_rate = None
    g = trace.geometry
    part = parse_partition(partition, g.layers, 0)
    blocks = StepBlocks(trace)
    keys = blocks.keys
    per_layer_keys = int(keys.max_context.sum())
    stacked_layers = int(np.count_nonzero(part.of_layer >= 0))
    stack_keys = per_layer_keys * (1 if part.spec == "per-layer" else stacked_layers)
    _warmup(stack_keys)
    st = _Stacks.allocate(keys.size, part.regions, stack_keys)
    of_layer = part.of_layer.astype(np.int32)
    key_off = keys.key_offset.astype(np.int64)
    max_ctx = keys.max_context.astype(np.int64)

    engine = 0.0
    for blk in blocks:
        t0 = time.perf_counter()
        bad = st.run(blk.indices, key_off, max_ctx, of_layer, threshold)
        engine += time.perf_counter() - t0
        if bad[0] >= 0:
            t, layer, r, s = (int(x) for x in bad)
            value = int(blk.indices[t, layer, r, s])
            fld = f"requests/{r}/indices" if len(trace.requests) > 1 else "indices"
            raise TraceError(
                trace.source,
                fld,
                f"invalid index {value} at step {blk.start + t}, layer {layer}, slot {s}",
            )
        if progress is not None:
            progress(blk.stop - blk.start)

    t0 = time.perf_counter()
    caps, hits, accesses, cold, sampled = _curve(st, part.spec, g.layers, threshold)
    engine += time.perf_counter() - t0
    c = st.counters
    return MissRatioCurve(
        source=trace.source,
        partition=part.spec,
        layers=g.layers,
        top_k=g.top_k,
        kv_bytes_per_token=g.kv_bytes_per_token,
        capacities_tokens=caps,
        hits=hits,
        accesses=accesses,
        cold_misses=cold,
        bypassed=int(c[K.BYPASSED]),
        engine_seconds=engine,
        sample_rate=sample_rate,
        sampled_accesses=sampled,
        compactions=int(c[K.COMPACTIONS]),
        requests=len(trace.requests),
        steps=trace.steps,
        meta=dict(trace.meta),
    )


def _curve(
    st: _Stacks, spec: str, layers: int, threshold: int
) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """(capacities, hits, accesses, cold, sampled) from the distance histogram."""
    c = st.counters
    accesses, sampled = int(c[K.ACCESSES]), int(c[K.SAMPLED])
    dist = np.flatnonzero(st.hist).astype(np.int64)
    hits = np.cumsum(st.hist[dist]).astype(np.int64)
    cold = int(c[K.COLD])
    if threshold < K.SAMPLE_MODULUS:
        # Region C hits iff d_s <= C * R  <=>  C >= ceil(d_s / R), R = threshold / 2**24.
        dist = -((-dist * K.SAMPLE_MODULUS) // threshold)
        stacked = accesses - int(c[K.BYPASSED])
        scale = stacked / sampled if sampled else 0.0
        hits = np.round(hits * scale).astype(np.int64)
        cold = int(round(cold * scale))
        dist, first = np.unique(dist, return_index=True)  # keep the last hits of equal caps
        last = np.r_[first[1:] - 1, hits.size - 1] if hits.size else first
        hits = hits[last]
    if spec == "per-layer":
        dist = dist * layers
    return dist, hits, accesses, cold, sampled
