"""The one replay walk of every token policy: a kernel factory over small per-policy hooks.

`make_replay(name, hooks)` returns compiled kernels that own everything the policies share:
the walk step -> layer -> request -> slot over an interleaved block, skipping empty (-1) slots,
the range check of every index, the regions (which (request, layer) maps to which region, its
capacity and occupancy), bypass (a (request, layer) outside every region or a region of
capacity 0: every valid slot a miss), the per-layer counters (hits, misses, prefetches, line
tallies, cold misses), the per-access hit mask, the running access number and the row rules
(base.RowRules). The policy supplies only what it decides (in the spirit of libCacheSim's
find / hit / miss / evict and ChampSim's find_victim / update_replacement_state), as functions
compiled with `@njit(inline="always")`, which numba pastes into the kernel before optimisation:

    begin_row(st, row, sel, u) -> g        before the gathers of one (step, layer, request) row
    find(st, x, g, s) -> bool              is unit x resident? (a hit)
    hit(st, x, g, i, s) -> g               after a hit (e.g. move x to the MRU end)
    admit(st, x, g, i, s, u, full)         after a miss: insert x, first evicting a victim when
        -> (g, inserted)                   `full`, or decline (bypass); inserted says which
    end_row(st, row, sel, g, u) -> None    after the row: write `g` back into `st`

`st` is the policy's state, a NamedTuple of numpy arrays and numbers it builds per block
(`DrivenPolicy.state`). `row` (a `Row`) says where the walk is: block row t, absolute step,
layer, request r, region p, the row's number `now` (unique, increasing in access order), the key
base and stride of the row's tokens (key = base + token * stride) and i0, the access number of
its first valid slot. `sel` is the row's whole selection (int32 [k], -1 = empty), seen before any
of its gathers. `u` is the region's occupancy, counted by the driver: it adds one for every
insertion into a region that was not full. `g` is whatever the policy keeps in registers during
the row; writing it back only in `end_row` keeps per-access loads and stores of the state arrays
out of the hot loop. `x` is the unit the access reads: the token's dense key, or one of its lines
for a line-granular policy; `i` the access's number within the block (every valid slot counts,
bypassed ones too), for a policy that precomputed something per access (MIN's next uses); `s` the
slot.

Options a policy sets on its Hooks (all compile-time: an unused one costs nothing):
- same_update: hit and admit do the same thing (keep-previous): hits are counted without
  branching on the lookup (a mispredicted branch per access cost keep-previous 2x);
- token_major: keys are key_offset[r] + token * layers + layer (a token's layers side by side)
  instead of key_offset[r] + layer * max_context[r] + token;
- reads_row: begin_row reads `sel`, so the driver range-checks the row before calling it (in
  one pass without exits; otherwise each access is checked as the gathers reach it);
- span(st, r, layer, token) -> (first, last): the access reads units first..last (line-lru's
  128-byte lines); it hits iff every unit hits, each unit a find / hit / admit of its own, and
  the driver counts line hits and misses;
- variant: an int the hooks read as row.variant (and carry in `g`): a compile-time constant, so
  one set of hooks compiles to kernels that differ where they branch on it;
- prefetch(st, block, near, t, layer, r, after) -> int32 row: tokens to bring in before the
  row's gathers (after=False) and after them (after=True); the driver inserts each one not
  resident with admit (counted in Counters.prefetches when inserted) and leaves resident ones
  untouched.

Row rules: with protect_row the driver marks every unit of the row's selection first
(`mark[x] = row.now`; only for hooks with marks=True, the policies whose victim choice reads the
marks: the others keep the row's units out of the victims their own way), and a policy's victim
choice skips marked units (row.protect says so: a compile-time constant, one kernel with and one
without, so the rule costs the default nothing);
with whole_hits a region that holds all its keys answers every access as a hit without calling
the policy; no_bypass is the policy's to honour in admit. Cold misses: when
Counters.cold_misses is set, the driver counts the misses of keys no access touched before (one
bit of state per key; a second kernel, so the default one is unchanged).

Speed. The kernel is compiled without numba's reference counting (_nrt=False): with it, every
read of an array out of `st` inside the loop paid an atomic increment and decrement (the kernels
ran 1.7-4x slower). So hooks must not allocate arrays. benchmarks/bench_policy_driver.py checks
every policy against its kernel from before the driver.

Adding a policy: subclass `DrivenPolicy` in a new module of this package (every module is
imported, so @register is all it takes), write its hooks, build its state in `build_state()`
(once) and `state()` (per block), and its kernels with `make_replay` at module level
(docs/policy-interface.md).
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies.base import NO_RULES, Counters, RowRules, TokenPolicy
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry
from dsacache.trace.model import RequestTrace, Trace


class Hooks(NamedTuple):
    """A policy's decisions, each compiled with @njit(inline="always") (see the module doc)."""

    begin_row: Callable
    find: Callable
    hit: Callable
    admit: Callable
    end_row: Callable
    same_update: bool = False  # hit and admit are the same function: replay without a branch
    token_major: bool = False  # key = key_offset[r] + token * layers + layer
    span: Callable | None = None  # (st, r, layer, token) -> (first, last) unit
    prefetch: Callable | None = None  # (st, block, near, t, layer, r, after) -> int32 row
    reads_row: bool = False  # begin_row reads the selection: range-check it first
    variant: int = 0  # handed to begin_row as row.variant: one set of hooks, several kernels
    marks: bool = False  # the victim choice reads mark[]: only then does protect_row mark rows


class Row(NamedTuple):
    """Where the walk is (what begin_row and end_row see)."""

    t: int  # row of the block
    step: int  # absolute step
    layer: int
    r: int  # request
    p: int  # region
    now: int  # (step * layers + layer) * requests + r: the row's number
    base: int  # key of token x: base + x * stride
    stride: int
    i0: int  # access number (within the block) of the row's first valid slot
    protect: bool  # RowRules.protect_row (a compile-time constant of the kernel)
    variant: int  # Hooks.variant (a compile-time constant of the kernel)


class Space(NamedTuple):
    """What the walk reads and never writes: keys and regions (one per run)."""

    key_off: np.ndarray  # int64 [requests]
    max_ctx: np.ndarray  # int64 [requests]
    region_of: np.ndarray  # int32 [requests, layers], -1: bypass
    cap: np.ndarray  # int64 [regions], in the policy's units
    whole: np.ndarray  # uint8 [regions]: every access hits (RowRules.whole_hits)


class Tally(NamedTuple):
    """The per-layer counters the walk adds to (int64 [layers]; line ones [1] if unused)."""

    hits: np.ndarray
    misses: np.ndarray
    prefetches: np.ndarray
    line_hits: np.ndarray
    line_misses: np.ndarray


@njit(inline="always")
def first_touch(seen: np.ndarray, key: int) -> int:
    """1 if `key` was never touched before (its bit in `seen` was clear), 0 if it was; sets it.
    A bit per key keeps the set in cache (a byte per key cost token-lru a third more)."""
    byte, bit = key >> 3, key & 7
    was = (seen[byte] >> bit) & 1
    seen[byte] |= 1 << bit
    return 1 - was


@njit(inline="always")
def no_row(st: Any, row: Row, sel: np.ndarray, g: Any, u: int) -> None:
    """`end_row` of a policy with nothing to write back."""


# The hooks the kernel template calls: make_replay compiles a copy of _replay_block whose globals
# bind these names to one policy's hooks. (Globals, not a closure: numba keys its on-disk cache
# by a pickle of the closure's cells, which differs in every process, so a closure would never
# be loaded from the cache.)
begin_row = find = hit = admit = end_row = span = prefetch = prefetch_row = None
same_update = token_major = reads_row = spans = prefetches = protect_row = mark_row = False
variant = 0

_KERNELS: dict[str, Hooks] = {}


def _replay_block(
    block: np.ndarray,
    near: np.ndarray,
    step0: int,
    space: Space,
    used: np.ndarray,
    st: Any,
    tally: Tally,
    mark: np.ndarray,
    seen: np.ndarray,
    cold: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> int:
    """Replay block [steps, layers, requests, k] whose row 0 is step `step0`; return -1, or the
    block row of an index out of range (the state is then undefined). near: the block's
    near-miss rows for a prefetching policy ([.., 0] if none). used: occupancy per region.
    mark: int64 per unit (RowRules.protect_row), seen: a bit per key (cold misses). cold and
    mask: None (the branches are pruned at compile time) or the cold-miss counters and the
    uint8 hit mask of the block's shape (zeros on entry, 1 at every hit)."""
    nb, nl, nr, k = block.shape
    key_off, max_ctx, region_of, cap, whole = space
    hits, misses = tally.hits, tally.misses
    i = 0
    for t in range(nb):
        step = step0 + t
        for layer in range(nl):
            i_layer = i  # the (step, layer)'s valid slots: i - i_layer
            h = 0
            pf = 0
            lh = 0
            lm = 0
            cm = 0
            for r in range(nr):
                lim = max_ctx[r]
                if token_major:
                    base = key_off[r] + layer
                    stride = nl
                else:
                    base = key_off[r] + layer * lim
                    stride = 1
                sel = block[t, layer, r]
                p = region_of[r, layer]
                aside = p < 0 or cap[p] == 0 or whole[p]  # bypass, or a region that never misses
                checked = reads_row or protect_row or aside
                if checked:  # the row's range first: a loop without exits
                    top = -1
                    for s in range(k):
                        top = max(top, sel[s])
                    if top >= lim:
                        return t
                if aside:
                    hits_all = p >= 0 and cap[p] > 0
                    for s in range(k):
                        tok = sel[s]
                        if tok < 0:
                            continue
                        i += 1
                        units = 1
                        if spans:
                            a, b = span(st, r, layer, tok)
                            units = b - a + 1
                        if hits_all:
                            h += 1
                            lh += units
                            if mask is not None:
                                mask[t, layer, r, s] = 1
                        else:
                            lm += units
                            if cold is not None:
                                cm += first_touch(seen, base + tok * stride)
                    continue
                now = (step * nl + layer) * nr + r
                if mark_row:  # mark the row's units (for a policy that reads the marks)
                    for s in range(k):
                        tok = sel[s]
                        if tok >= 0:
                            if spans:
                                a, b = span(st, r, layer, tok)
                                for x in range(a, b + 1):
                                    mark[x] = now
                            else:
                                mark[base + tok * stride] = now
                row = Row(t, step, layer, r, p, now, base, stride, i, protect_row, variant)
                c = cap[p]
                u = used[p]
                g = begin_row(st, row, sel, u)
                if prefetches:  # tokens brought in before the gathers
                    pre = prefetch(st, block, near, t, layer, r, False)
                    g, u, n_pf = prefetch_row(st, pre, g, u, c, base, stride, lim, i)
                    if n_pf < 0:
                        return t
                    pf += n_pf
                for s in range(k):
                    tok = sel[s]
                    if tok < 0:
                        continue
                    if not checked and tok >= lim:
                        return t
                    key = base + tok * stride
                    if spans:
                        a, b = span(st, r, layer, tok)
                        found = True
                        for x in range(a, b + 1):
                            if find(st, x, g, s):
                                lh += 1
                                g = hit(st, x, g, i, s)
                            else:
                                lm += 1
                                found = False
                                full = u >= c
                                g, ins = admit(st, x, g, i, s, u, full)
                                if ins and not full:
                                    u += 1
                        if found:
                            h += 1
                            if mask is not None:
                                mask[t, layer, r, s] = 1
                    elif same_update:  # a compile-time constant: the other paths are pruned
                        found = find(st, key, g, s)
                        h += found  # without a branch: hits are hard to predict
                        if mask is not None:
                            mask[t, layer, r, s] = found
                        g = hit(st, key, g, i, s)
                    else:
                        found = find(st, key, g, s)
                        if found:
                            h += 1
                            if mask is not None:
                                mask[t, layer, r, s] = 1
                            g = hit(st, key, g, i, s)
                        else:
                            full = u >= c
                            g, ins = admit(st, key, g, i, s, u, full)
                            if ins and not full:
                                u += 1
                    if cold is not None:  # without a branch: misses come at random
                        cm += first_touch(seen, key) * (1 - found)
                    i += 1
                if prefetches:  # ... and after them
                    pre = prefetch(st, block, near, t, layer, r, True)
                    g, u, n_pf = prefetch_row(st, pre, g, u, c, base, stride, lim, i)
                    if n_pf < 0:
                        return t
                    pf += n_pf
                used[p] = u
                end_row(st, row, sel, g, u)
            hits[layer] += h
            misses[layer] += i - i_layer - h
            if prefetches:
                tally.prefetches[layer] += pf
            if spans:
                tally.line_hits[layer] += lh
                tally.line_misses[layer] += lm
            if cold is not None:
                cold[layer] += cm
    return -1


class Replay(NamedTuple):
    """A policy's two compiled kernels: without and with RowRules.protect_row (a compile-time
    constant, so the default kernel carries none of the marking and skipping code)."""

    plain: Callable
    protect: Callable
    hooks: Hooks


def _prefetch_row(
    st: Any, pre: np.ndarray, g: Any, u: int, c: int, base: int, stride: int, lim: int, i: int
) -> tuple:
    """Bring the tokens of `pre` into the row's region (the hooks' find and admit): each one not
    resident is admitted; return (g, u, tokens inserted), or (g, u, -1) for a token out of
    range."""
    n = 0
    for s in range(pre.shape[0]):
        tok = pre[s]
        if tok < 0:
            continue
        if tok >= lim:
            return g, u, -1
        x = base + tok * stride
        if not find(st, x, g, -1):
            full = u >= c
            g, ins = admit(st, x, g, i, -1, u, full)
            if ins:
                n += 1
                if not full:
                    u += 1
    return g, u, n


def make_replay(name: str, hooks: Hooks, cache: bool = True) -> Replay:
    """The replay kernels specialised to `hooks` (call once per policy, at import; each
    compiles on its first call).

    `name` (a Python identifier, unique among the kernels) names the kernel in numba's cache.
    cache=False for hooks defined outside this package (tests): the cache is keyed by the
    package's source only, so a kernel of hooks from elsewhere could outlive an edit of them."""
    if not name.isidentifier() or _KERNELS.get(name, hooks) != hooks:
        raise ValueError(f"replay kernel name {name!r} is not a fresh identifier")
    _KERNELS[name] = hooks
    kernels = []
    for protect in (False, True):
        scope = dict(globals(), **hooks._asdict())
        scope.update(spans=hooks.span is not None, prefetches=hooks.prefetch is not None)
        scope.update(protect_row=protect, mark_row=protect and hooks.marks)
        scope["prefetch_row"] = njit(inline="always")(
            types.FunctionType(_prefetch_row.__code__, scope, f"prefetch_{name}")
        )
        fn_name = f"replay_{name}_protect" if protect else f"replay_{name}"
        fn = types.FunctionType(_replay_block.__code__, scope, fn_name, _replay_block.__defaults__)
        fn.__qualname__ = fn.__name__
        fn.__doc__ = _replay_block.__doc__
        kernels.append(njit(cache=cache, boundscheck=False, _nrt=False)(fn))
    return Replay(*kernels, hooks)


def region_sums(region_of: np.ndarray, per_pair: np.ndarray, regions: int) -> np.ndarray:
    """Sum of per_pair [requests, layers] over the (request, layer) pairs of each region
    (int64 [regions]): e.g. the keys a region can ever hold."""
    out = np.zeros(regions, np.int64)
    inside = region_of >= 0
    np.add.at(out, region_of[inside], np.asarray(per_pair, np.int64)[inside])
    return out


class DrivenPolicy(TokenPolicy):
    """A token policy replayed by a `make_replay` kernel: subclasses set `kernel` and `state`.

    The driver's part of the state lives here: the region map (region_of, the capacity of every
    region in the policy's units, its occupancy `used`), the row rules' marks and the cold-miss
    bits. A policy that caches something other than whole tokens overrides the unit hooks
    (`n_units`, `unit_capacity`, `pair_units`: line-lru). `state(block)` returns the NamedTuple
    the hooks see as `st` (the same arrays every block, plus per-block values).
    """

    kernel: ClassVar[Replay]
    emits_hit_mask = True
    index_field: ClassVar[str] = "indices"  # the trace field an out-of-range index is reported in

    def setup(self) -> None:
        """The driver's state, then the policy's (build_state)."""
        blocks, partition, rules = self.blocks, self.partition, self.rules
        keys = blocks.keys
        self.region_of, tokens = partition.region_map(blocks.requests)
        self.n_regions = int(tokens.shape[0])
        self.capacity = np.ascontiguousarray(self.unit_capacity(tokens), np.int64)
        self.region_units = region_sums(self.region_of, self.pair_units(), self.n_regions)
        self.used = np.zeros(self.n_regions, np.int64)
        # slots a region can fill, and where each region's slots start in a flat slot array
        self.region_slots = np.minimum(self.capacity, self.region_units)
        self.slot_off = np.zeros(self.n_regions, np.int64)
        self.slot_off[1:] = np.cumsum(self.region_slots)[:-1]
        whole = (self.capacity >= self.region_units) & bool(rules.whole_hits)
        if rules.protect_row:
            self._check_row_fits()
        marks = rules.protect_row and type(self).kernel.hooks.marks
        self.mark = np.full(self.n_units() if marks else 1, -1, np.int64)
        self.seen: np.ndarray | None = None  # a bit per key, once cold misses are asked for
        self.space = Space(
            keys.key_offset,
            keys.max_context,
            self.region_of,
            self.capacity,
            whole.astype(np.uint8),
        )
        self._one = np.zeros(1, np.int64)
        self._one8 = np.zeros(1, np.uint8)
        self._no_near = np.full((1, 1, 1, 0), -1, np.int32)
        self.build_state()

    def build_state(self) -> None:
        """The policy's own state, built once the driver's is (n_regions, capacity and
        region_units in the policy's units, the marks)."""

    # ------------------------------------------------------------ units (whole tokens by default)

    def n_units(self) -> int:
        """Distinct units (ids 0 .. n_units - 1) the policy caches: the keys."""
        return self.blocks.keys.size

    def unit_capacity(self, tokens: np.ndarray) -> np.ndarray:
        """Capacity of each region in units, from its capacity in tokens."""
        return tokens

    def pair_units(self) -> np.ndarray:
        """Units each (request, layer) can ever touch (int64 [requests, layers])."""
        keys = self.blocks.keys
        return np.repeat(keys.max_context[:, None], keys.layers, axis=1)

    def row_units(self) -> int:
        """At most this many units in one row (protect_row needs a region to hold them)."""
        return self.blocks.k

    def _check_row_fits(self) -> None:
        cap = self.capacity  # a region that holds all its units never evicts
        small = (cap > 0) & (cap < self.row_units()) & (cap < self.region_units)
        if small.any():
            raise DsacacheError(
                f"{self.name}: a region of {int(self.capacity[small].min())} units cannot hold "
                f"a row of {self.row_units()} while its own tokens may not be evicted"
            )

    # ------------------------------------------------------------ the replay

    def state(self, block: StepBlock) -> tuple:
        """The hooks' state for `block` (arrays are updated in place across blocks)."""
        raise NotImplementedError

    def run_block(self, block: StepBlock, counters: Counters) -> None:
        if self.counts_lines and (counters.line_hits is None or counters.line_misses is None):
            raise ValueError(f"{self.name} needs Counters.zeros(layers, lines=True)")
        cold = counters.cold_misses
        if cold is not None and self.seen is None:
            self.seen = np.zeros(max(self.blocks.keys.size, 1) + 7 >> 3, np.uint8)
        one = self._one
        tally = Tally(
            counters.hits,
            counters.misses,
            counters.prefetches,
            one if counters.line_hits is None else counters.line_hits,
            one if counters.line_misses is None else counters.line_misses,
        )
        kernels = type(self).kernel
        bad = (kernels.protect if self.rules.protect_row else kernels.plain)(
            block.indices,
            self._no_near if block.near_miss is None else block.near_miss,
            block.start,
            self.space,
            self.used,
            self.state(block),
            tally,
            self.mark,
            self._one8 if cold is None else self.seen,
            cold,
            counters.hit_mask,
        )
        if bad >= 0:
            raise self.index_error(block.start + bad, self.index_field)

    @classmethod
    def warmup(cls) -> None:
        warm_up(cls)


def prepare_pass(policy: TokenPolicy, blocks: StepBlocks) -> float:
    """The policy's pass over the future (MIN's backward pass), then prepare(); returns the
    engine seconds: the policy's calls only, never the reading of a block."""
    engine = 0.0
    if policy.needs_backward_pass:
        for block in blocks.reversed():
            t0 = time.perf_counter()
            policy.prepare_block(block)
            engine += time.perf_counter() - t0
    t0 = time.perf_counter()
    policy.prepare()
    return engine + time.perf_counter() - t0


def replay(
    policy: TokenPolicy,
    blocks: StepBlocks,
    counters: Counters,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Run `policy` over `blocks` (its backward pass first, when it needs one); return the
    engine seconds: the policy's calls only, never the reading of a block."""
    engine = prepare_pass(policy, blocks)
    for block in blocks:
        t0 = time.perf_counter()
        policy.run_block(block, counters)
        engine += time.perf_counter() - t0
        if progress is not None:
            progress(block.stop - block.start)
    return engine


def tiny_trace() -> Trace:
    """Two requests of different lengths, 2 layers, k = 3, with hits, misses, empty slots and
    near-miss rows of width 1."""
    a = np.array([[[0, 1, -1], [2, 0, 1]], [[1, 2, 0], [-1, 2, 3]], [[3, 0, 1], [0, 1, 2]]])
    b = np.array([[[1, 0, 2], [0, -1, 1]], [[2, 1, 0], [1, 0, 2]]])
    requests = [
        RequestTrace(x.astype(np.int32), np.full(x.shape[0], 4), _absent(x)) for x in (a, b)
    ]
    return Trace(requests, Geometry(2, 3, 256, 132, 64), source="warm-up")


def _absent(rows: np.ndarray) -> np.ndarray:
    """A near-miss row of one token per (step, layer): the smallest of 0..3 not selected."""
    out = np.zeros((*rows.shape[:2], 1), np.int32)
    for t, layer in np.ndindex(*rows.shape[:2]):
        out[t, layer, 0] = min(set(range(4)) - set(rows[t, layer].tolist()))
    return out


_WARM: set[tuple[type, RowRules, bool]] = set()


def warm_up(cls: type[TokenPolicy], rules: RowRules = NO_RULES, cold: bool = False) -> None:
    """Compile `cls`'s kernels for `rules` (and cold-miss counting, with cold) by replaying a
    tiny trace: 32- and 64-bit ids (`wide`), with and without hit masks, a small and a full
    region, a bypassed layer. Engine time then excludes the JIT. Once per class, rules and cold
    in a process."""
    if (cls, rules, cold) in _WARM:
        return
    trace = tiny_trace()
    wide = type(f"{cls.__name__}Wide", (cls,), {"wide": True})
    for variant in (cls, wide):
        for spec, cap in (("global", 3), ("pinned:1", 100)):
            for mask in (False, True):
                blocks = StepBlocks(trace, near_miss=cls.uses_near_miss)
                policy = variant(blocks, parse_partition(spec, 2, cap), trace.geometry, rules)
                counters = Counters.zeros(2, lines=cls.counts_lines, cold=cold)
                if mask and cls.emits_hit_mask:
                    counters.hit_mask = np.zeros((trace.steps, 2, 2, 3), np.uint8)
                replay(policy, blocks, counters)
    _WARM.add((cls, rules, cold))
