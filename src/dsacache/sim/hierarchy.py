"""The KV hierarchy of DSA serving with host offload (SGLang's HiSparse): a hot buffer in HBM per
(request, layer) over the full KV in host memory, optionally with the LLC token region of
`simulate` in front of the buffer's rows (docs/hierarchy.md, "The simulation").

HBM level. One buffer of N >= k slots per (request, layer), empty at the start, under a demand
policy (token-lru is HiSparse's). At each step, with the row's selection S: the hits are the
tokens of S already resident; a miss is always inserted (no bypass), and a full buffer evicts a
resident that is not in S, chosen by the policy (the attention reads every token of S from the
buffer, so none may leave while the row is read); S's tokens are touched in slot order. A
request whose largest context_len <= N keeps all its KV on the GPU: every access hits. These
are the policy driver's row rules (RowRules: protect_row, no_bypass, whole_hits) over a
per-(request, layer) partition of N tokens each. A cold miss is a token the (request, layer)
never selected before. Every miss is one KV row read from host memory:
host_bytes = misses x kv_bytes_per_token, and per step, summed over its requests and layers.

LLC level (optional). The token region of `simulate` (one region of floor(M MiB / KV row)
tokens, shared by every request and layer) caches the rows the attention reads. Where a GPU
reads: the swap-in consults only the buffer, and the attention reads all k rows from the buffer,
through L2. So the region sees the same gathers in the same order and decides exactly as
`simulate` does on the trace; a read is served from L2 when the region holds the token AND the
buffer held it (a row just copied from host memory landed in a slot whose old lines belong to
another token: read from HBM). L2 only holds rows that are in the buffer, so it never saves a
host read: what misses the buffer misses everywhere and crosses the host link.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from dsacache.errors import DsacacheError
from dsacache.hardware import gpu
from dsacache.sim.config import SimConfig
from dsacache.sim.partition import parse_partition, scoped
from dsacache.sim.policies import HISPARSE, POLICIES, Counters
from dsacache.sim.policies.driver import prepare_pass, warm_up
from dsacache.trace.blocks import StepBlocks
from dsacache.trace.model import Trace
from dsacache.units import MIB

DEFAULT_BUFFER_POLICY = "token-lru"  # HiSparse's
DEFAULT_LLC_POLICY = "token-lru"  # the paper's
DEFAULT_HARDWARE = "h200"  # the public HiSparse setting's GPU


def level_policies() -> list[str]:
    """The policies that can run a level: demand policies over whole tokens (a prefetching
    policy's extra host reads have no per-step count; line-lru caches 128-byte lines, not the
    rows a swap-in copies)."""
    return sorted(n for n, c in POLICIES.items() if not c.prefetches and not c.counts_lines)


def _policy(name: Any, what: str) -> str:
    usable = level_policies()
    if not isinstance(name, str) or name not in usable:
        why = ""
        if isinstance(name, str) and name in POLICIES:
            why = " (it prefetches or caches lines, not whole rows)"
        raise DsacacheError(f"{what} {name!r} cannot run this level{why} (usable: "
                            f"{', '.join(usable)})")  # fmt: skip
    return name


@dataclass(frozen=True)
class HierarchyConfig:
    """buffer_tokens: N, the slots of each (request, layer) buffer (>= the trace's top-k);
    buffer_policy: its policy. The LLC level (optional): a token region of llc_reserve_mib MiB or
    llc_reserve_tokens tokens (at most one; neither: no LLC level) under llc_policy, split as
    `simulate --partition` splits it (llc_partition), and no larger than the LLC of
    `hardware`."""

    buffer_tokens: int
    buffer_policy: str = DEFAULT_BUFFER_POLICY
    llc_reserve_mib: float | None = None
    llc_policy: str = DEFAULT_LLC_POLICY
    hardware: str = DEFAULT_HARDWARE
    llc_reserve_tokens: int | None = None
    llc_partition: str = "global"

    def __post_init__(self) -> None:
        n = self.buffer_tokens
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise DsacacheError(f"--buffer-tokens must be an integer >= 1, got {n!r}")
        _policy(self.buffer_policy, "buffer policy")
        _policy(self.llc_policy, "LLC policy")
        gpu(self.hardware)  # one line for an unknown name
        m, tok = self.llc_reserve_mib, self.llc_reserve_tokens
        if m is not None and tok is not None:
            raise DsacacheError("give the LLC region in MiB or in tokens, not both")
        if m is not None:
            if isinstance(m, bool) or not isinstance(m, Real) or not math.isfinite(m) or m < 0:
                raise DsacacheError(f"--llc-reserve-mib must be a finite number >= 0, got {m!r}")
            self._check_llc_bytes(m * MIB)
        if self.has_llc:
            self.llc_config()  # one line for a bad capacity or partition

    @property
    def has_llc(self) -> bool:
        return self.llc_reserve_mib is not None or self.llc_reserve_tokens is not None

    def _check_llc_bytes(self, n_bytes: float) -> None:
        hw = gpu(self.hardware)
        if n_bytes > hw.l2_bytes:
            raise DsacacheError(
                f"the LLC region of {n_bytes / MIB:g} MiB is larger than the {hw.label}'s LLC "
                f"({hw.l2_bytes / MIB:g} MiB)"
            )

    def check_top_k(self, k: int, name: str, whose: str) -> None:
        """N >= k: the attention reads all k selected rows from the buffer (name: how the
        caller calls N; whose: whose top-k, in words)."""
        if self.buffer_tokens < k:
            raise DsacacheError(
                f"{name} {self.buffer_tokens} is below {whose}: the attention reads every "
                "selected token from the buffer"
            )

    def check(self, trace: Trace) -> None:
        """What needs the trace: N >= k (the attention reads all k selected rows from the
        buffer), and an LLC region given in tokens fits the LLC."""
        k = trace.geometry.top_k
        self.check_top_k(k, "--buffer-tokens", f"the trace's top-k {k}")
        if self.llc_reserve_tokens is not None:
            self._check_llc_bytes(self.llc_reserve_tokens * trace.geometry.kv_bytes_per_token)

    def llc_config(self) -> SimConfig:
        """The LLC region as `simulate` runs it."""
        return SimConfig(
            self.llc_policy, self.llc_reserve_tokens, self.llc_reserve_mib, self.llc_partition
        )


def step_stats(per_step: np.ndarray) -> dict[str, float]:
    """mean, p50, p99 and max of a per-step series (numpy's linear percentiles)."""
    x = np.asarray(per_step, np.float64)
    if x.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    p50, p99 = np.percentile(x, [50, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p99": float(p99), "max": float(x.max())}


@dataclass
class LLCLevel:
    """The LLC token region in front of the buffer's rows. region_hits: the region's own hits
    (`simulate`'s on the same trace); hits: reads served from L2 (region and buffer both hit)."""

    policy: str
    partition: str
    reserve_mib: float | None  # as asked (None: asked in tokens)
    capacity_tokens: int  # what the regions hold in all
    hardware: str
    accesses: int
    region_hits: int
    hits: int

    @property
    def misses(self) -> int:
        return self.accesses - self.hits

    def to_dict(self, kv_bytes: int) -> dict[str, Any]:
        n = self.accesses
        return {
            "policy": self.policy,
            "partition": self.partition,
            "reserve_mib": self.reserve_mib,
            "capacity_tokens": int(self.capacity_tokens),
            "hardware": self.hardware,
            "accesses": int(n),
            "hits": int(self.hits),
            "misses": int(self.misses),
            "hit_rate": self.hits / n if n else 0.0,
            "region_hits": int(self.region_hits),
            "region_hits_buffer_missed": int(self.region_hits - self.hits),
            "hbm_read_bytes": int(self.misses) * kv_bytes,
        }


@dataclass
class HierarchyResult:
    """Outcome of one hierarchy simulation. misses_per_step: int64 [steps], the buffers' misses
    of each step summed over its requests and layers."""

    config: HierarchyConfig
    source: str
    steps: int
    requests: int
    layers: int
    top_k: int
    kv_bytes_per_token: int
    whole_requests: int  # requests whose largest context fits the buffer (they never miss)
    hits: int
    misses: int
    cold_misses: int
    misses_per_step: np.ndarray
    llc: LLCLevel | None
    engine_seconds: float

    @property
    def accesses(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.accesses if self.accesses else 0.0

    @property
    def host_bytes(self) -> int:
        return int(self.misses) * self.kv_bytes_per_token

    @property
    def host_bytes_per_step(self) -> dict[str, float]:
        return step_stats(self.misses_per_step * self.kv_bytes_per_token)

    @property
    def selections_per_step(self) -> float:
        """Accesses of a mean step (its requests x layers x valid slots)."""
        return self.accesses / self.steps if self.steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: plain Python numbers."""
        c = self.config
        return {
            "trace": self.source,
            "steps": self.steps,
            "requests": self.requests,
            "layers": self.layers,
            "top_k": self.top_k,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "hbm": {
                "policy": c.buffer_policy,
                "buffer_tokens": int(c.buffer_tokens),
                "whole_requests": self.whole_requests,
                "accesses": int(self.accesses),
                "hits": int(self.hits),
                "misses": int(self.misses),
                "cold_misses": int(self.cold_misses),
                "hit_rate": self.hit_rate,
            },
            "llc": None if self.llc is None else self.llc.to_dict(self.kv_bytes_per_token),
            "host_bytes": self.host_bytes,
            "host_bytes_per_step": self.host_bytes_per_step,
            "engine_seconds": float(self.engine_seconds),
        }


def simulate_hierarchy(
    trace: Trace, cfg: HierarchyConfig, progress: Callable[[int], None] | None = None
) -> HierarchyResult:
    """Replay `trace` through the HBM buffers (and the LLC region when cfg asks for one).

    progress: called with the number of steps of each block once it has been replayed."""
    cfg.check(trace)
    g = trace.geometry
    blocks = StepBlocks(trace)
    buf_cls = POLICIES[cfg.buffer_policy]
    warm_up(buf_cls, HISPARSE, cold=True)
    part = scoped("per-request-layer", g.layers, cfg.buffer_tokens)
    buf = buf_cls(blocks, part, g, HISPARSE)
    counters = Counters.zeros(g.layers, cold=True)
    llc = llc_counters = None
    if cfg.has_llc:
        llc_cls = POLICIES[cfg.llc_policy]
        warm_up(llc_cls)
        llc_part = parse_partition(cfg.llc_partition, g.layers, cfg.llc_config().tokens(g))
        llc = llc_cls(blocks, llc_part, g)
        llc_counters = Counters.zeros(g.layers)
    engine = prepare_pass(buf, blocks) + (0.0 if llc is None else prepare_pass(llc, blocks))
    per_step = np.zeros(trace.steps, np.int64)
    served = 0
    for block in blocks:
        t0 = time.perf_counter()
        shape = block.indices.shape
        counters.hit_mask = np.zeros(shape, np.uint8)
        buf.run_block(block, counters)
        hit = counters.hit_mask.view(bool)
        miss = (block.indices >= 0) & ~hit
        per_step[block.start : block.stop] = np.count_nonzero(miss.reshape(shape[0], -1), axis=1)
        if llc is not None and llc_counters is not None:
            llc_counters.hit_mask = np.zeros(shape, np.uint8)
            llc.run_block(block, llc_counters)
            served += int(np.count_nonzero(llc_counters.hit_mask.view(bool) & hit))
        engine += time.perf_counter() - t0
        if progress is not None:
            progress(block.stop - block.start)
    counters.hit_mask = None
    hits, misses = int(counters.hits.sum()), int(counters.misses.sum())
    cold = counters.cold_misses
    level = None
    if llc is not None and llc_counters is not None:
        level = LLCLevel(
            cfg.llc_policy,
            llc.partition.spec,
            None if cfg.llc_reserve_mib is None else float(cfg.llc_reserve_mib),
            int(llc.partition.capacity.sum()),
            gpu(cfg.hardware).name,
            hits + misses,
            int(llc_counters.hits.sum()),
            served,
        )
    return HierarchyResult(
        config=cfg,
        source=trace.source,
        steps=trace.steps,
        requests=len(trace.requests),
        layers=g.layers,
        top_k=g.top_k,
        kv_bytes_per_token=g.kv_bytes_per_token,
        whole_requests=sum(r.max_context <= cfg.buffer_tokens for r in trace.requests),
        hits=hits,
        misses=misses,
        cold_misses=0 if cold is None else int(cold.sum()),
        misses_per_step=per_step,
        llc=level,
        engine_seconds=engine,
    )
