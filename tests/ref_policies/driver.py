"""The one replay walk of the token policies: a kernel factory over small per-policy hooks.

`make_replay(name, hooks)` returns a compiled kernel that owns everything the policies share: the
walk step -> layer -> request -> slot over an interleaved block, skipping empty (-1) slots, the
range check of every index, bypass (a layer with of_layer == -1 or a region of capacity 0: every
valid slot a miss), the per-layer hit / miss counters, the per-access hit mask and the running
access number. The policy supplies only what it decides (in the spirit of libCacheSim's
find / hit / miss / evict and ChampSim's find_victim / update_replacement_state), as functions
compiled with `@njit(inline="always")`, which numba pastes into the kernel before optimisation:

    begin(st, t, step, layer, p, c) -> g   before the accesses of (step, layer) to region p,
                                           whose capacity is c tokens (c > 0)
    row(st, g) -> g                        before each request's row of that (step, layer)
    find(st, key, g) -> bool               is `key` resident? (a hit)
    hit(st, key, g, i) -> g                after a hit (e.g. move the key to the MRU end)
    miss(st, key, g, i) -> g               after a miss (insert, evict, or bypass the key)
    end(st, p, g) -> None                  after the (step, layer): write `g` back into `st`

`st` is the policy's state: a tuple of numpy arrays and numbers it builds per block
(`DrivenPolicy.state`). `g` is whatever the policy keeps in registers while one (step, layer) is
replayed: a number or a tuple (the region's fill level, its capacity, ...); writing it back only
in `end` keeps per-access loads and stores of the state arrays out of the hot loop. `t` is the
row in the block, `step` = the block's first step + t, `key` the dense key id of (request,
layer, token) and `i` the access's number within the block (every valid slot counts, bypassed
ones too), for a policy that precomputed something per access (MIN's next uses). A policy whose
hit and miss do the same thing (keep-previous) sets Hooks.same_update: the kernel then counts
hits without branching on the lookup (a mispredicted branch per access cost keep-previous 2x).

Speed. The kernel is compiled without numba's reference counting (_nrt=False): with it, every
read of an array out of `st` inside the loop paid an atomic increment and decrement (the kernels
ran 1.7-4x slower). So hooks must not allocate arrays. With it off, the driven token-lru, fifo,
keep-previous and min run as fast as the hand-written kernels they replaced
(benchmarks/bench_policy_driver.py).

Adding a policy: subclass `DrivenPolicy` in a new module of this package (every module is
imported, so @register is all it takes), write its hooks, build its state in `state()` and its
kernel with `make_replay` at module level; lru.py (with list_moves.py) and keep_previous.py are
short examples. A policy that needs more than one lookup per access (line-lru), accesses that
are not demand (near-miss's prefetches) or two passes over a row (hazard) implements run_block
with its own kernel instead.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numba import njit

from dsacache.sim.partition import parse_partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry
from dsacache.trace.model import RequestTrace, Trace
from ref_policies.base import Counters, TokenPolicy
from ref_policies.common import count_bypassed


class Hooks(NamedTuple):
    """A policy's decisions, each compiled with @njit(inline="always") (see the module doc)."""

    begin: Callable
    row: Callable
    find: Callable
    hit: Callable
    miss: Callable
    end: Callable
    same_update: bool = False  # hit and miss are the same function: replay without a branch


@njit(inline="always")
def same_g(st: Any, g: Any) -> Any:
    """`row` hook of a policy with nothing to reset per request row."""
    return g


# The hooks the kernel template calls: make_replay compiles a copy of _replay_block whose globals
# bind these names to one policy's hooks. (Globals, not a closure: numba keys its on-disk cache
# by a pickle of the closure's cells, which differs in every process, so a closure would never
# be loaded from the cache.)
begin = row = find = hit = miss = end = None
same_update = False

_KERNELS: dict[str, Hooks] = {}


def _replay_block(
    block: np.ndarray,
    step0: int,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    of_layer: np.ndarray,
    cap: np.ndarray,
    st: Any,
    hits: np.ndarray,
    misses: np.ndarray,
    mask: np.ndarray | None = None,
) -> int:
    """Replay block [steps, layers, requests, k] whose row 0 is step `step0`; return -1, or
    the block row of an index out of range (the state is then undefined). mask: None (the
    branch is pruned at compile time) or uint8 of the block's shape, zeros on entry, that
    gets 1 at every hit."""
    nb, nl, nr, k = block.shape
    i = 0
    for t in range(nb):
        step = step0 + t
        for layer in range(nl):
            p = of_layer[layer]
            if p < 0 or cap[p] == 0:  # bypass: every valid slot a miss
                m = count_bypassed(block, t, layer, max_ctx)
                if m < 0:
                    return t
                i += m
                misses[layer] += m
                continue
            g = begin(st, t, step, layer, p, cap[p])
            h = 0
            i0 = i
            for r in range(nr):
                lim = max_ctx[r]
                base = key_off[r] + layer * lim
                g = row(st, g)
                for s in range(k):
                    tok = block[t, layer, r, s]
                    if tok < 0:
                        continue
                    if tok >= lim:
                        return t
                    key = base + tok
                    found = find(st, key, g)
                    if same_update:  # a compile-time constant: one of the branches is pruned
                        h += found  # without a branch: hits are hard to predict
                        if mask is not None:
                            mask[t, layer, r, s] = found
                        g = hit(st, key, g, i)
                    elif found:
                        h += 1
                        if mask is not None:
                            mask[t, layer, r, s] = 1
                        g = hit(st, key, g, i)
                    else:
                        g = miss(st, key, g, i)
                    i += 1
            end(st, p, g)
            hits[layer] += h
            misses[layer] += i - i0 - h
    return -1


def make_replay(name: str, hooks: Hooks, cache: bool = True) -> Callable:
    """A compiled replay kernel specialised to `hooks` (call once per policy, at import).

    `name` (a Python identifier, unique among the kernels) names the kernel in numba's cache.
    cache=False for hooks defined outside this package (tests): the cache is keyed by the
    package's source only, so a kernel of hooks from elsewhere could outlive an edit of them."""
    if not name.isidentifier() or _KERNELS.get(name, hooks) != hooks:
        raise ValueError(f"replay kernel name {name!r} is not a fresh identifier")
    _KERNELS[name] = hooks
    scope = dict(globals(), **hooks._asdict())
    fn = types.FunctionType(
        _replay_block.__code__, scope, f"replay_{name}", _replay_block.__defaults__
    )
    fn.__qualname__ = fn.__name__
    fn.__doc__ = _replay_block.__doc__
    return njit(cache=cache, boundscheck=False, _nrt=False)(fn)


class DrivenPolicy(TokenPolicy):
    """A token policy replayed by a `make_replay` kernel: subclasses set `kernel` and `state`.

    Every driven policy emits per-access hit masks (the driver does it). `state(block)` returns
    the tuple the hooks see as `st` (the same arrays every block, plus per-block values).
    """

    kernel: ClassVar[Callable]
    emits_hit_mask = True

    def state(self, block: StepBlock) -> tuple:
        """The hooks' state for `block` (arrays are updated in place across blocks)."""
        raise NotImplementedError

    def run_block(self, block: StepBlock, counters: Counters) -> None:
        keys = self.blocks.keys
        bad = type(self).kernel(
            block.indices,
            block.start,
            keys.key_offset,
            keys.max_context,
            np.ascontiguousarray(self.partition.of_layer, np.int32),  # no copy when it is
            np.ascontiguousarray(self.partition.capacity, np.int64),
            self.state(block),
            counters.hits,
            counters.misses,
            counters.hit_mask,
        )
        if bad >= 0:
            raise self.index_error(block.start + bad)

    @classmethod
    def warmup(cls) -> None:
        warm_up(cls)


def replay(
    policy: TokenPolicy,
    blocks: StepBlocks,
    counters: Counters,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Run `policy` over `blocks` (its backward pass first, when it needs one); return the
    engine seconds: the policy's calls only, never the reading of a block."""
    engine = 0.0
    if policy.needs_backward_pass:
        for block in blocks.reversed():
            t0 = time.perf_counter()
            policy.prepare_block(block)
            engine += time.perf_counter() - t0
    t0 = time.perf_counter()
    policy.prepare()
    engine += time.perf_counter() - t0
    for block in blocks:
        t0 = time.perf_counter()
        policy.run_block(block, counters)
        engine += time.perf_counter() - t0
        if progress is not None:
            progress(block.stop - block.start)
    return engine


def tiny_trace() -> Trace:
    """Two requests of different lengths, 2 layers, k = 3, with hits, misses and empty slots."""
    a = np.array([[[0, 1, -1], [2, 0, 1]], [[1, 2, 0], [-1, 2, 3]], [[3, 0, 1], [0, 1, 2]]])
    b = np.array([[[1, 0, 2], [0, -1, 1]], [[2, 1, 0], [1, 0, 2]]])
    requests = [RequestTrace(x.astype(np.int32), np.full(x.shape[0], 4)) for x in (a, b)]
    return Trace(requests, Geometry(2, 3, 256, 132, 64), source="warm-up")


def warm_up(cls: type[TokenPolicy]) -> None:
    """Compile `cls`'s kernels by replaying a tiny trace (with and without hit masks, a small
    and a full region, a bypassed layer), so that engine time excludes the JIT."""
    trace = tiny_trace()
    for spec, cap in (("global", 3), ("pinned:1", 100)):
        for mask in (False, True):
            blocks = StepBlocks(trace, near_miss=cls.uses_near_miss)
            policy = cls(blocks, parse_partition(spec, 2, cap), trace.geometry)
            counters = Counters.zeros(2, lines=cls.counts_lines)
            if mask and cls.emits_hit_mask:
                counters.hit_mask = np.zeros((trace.steps, 2, 2, 3), np.uint8)
            replay(policy, blocks, counters)
