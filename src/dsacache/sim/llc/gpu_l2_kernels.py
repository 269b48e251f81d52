"""Compiled replay of the GPU L2 model under the `gpu-l2-cache` microbenchmark's access stream.

The model (gpu_l2.py has the parameters and their sources; `Cache` below is its record):
- `parts` partitions of `sets` x `ways` lines of 128 B each; a line's home partition and its set
  come from the line id. `HASH_ROTATE`: the lines are cut into rounds of n = parts x sets; in
  round q, line offset r goes to slot (r + mix64(q ^ ROTATE_SALT)) % n, home = slot % parts,
  set = slot // parts: consecutive lines alternate partitions, a contiguous buffer loads every
  set evenly (within one line), and the per-round rotation keeps strided reads off a fixed
  subset of sets. `HASH_MODULO`: the same without rotation (hand-checkable; a strided stream can
  resonate with it). `HASH_MIX`: a splitmix64 finaliser, every set load a random draw. A replica
  sits in the same set index of the other partition.
- SM m is near partition m % parts. A near access looks up the home partition: a hit is a near
  hit, a miss fills the home partition from DRAM. A far access first looks for a replica in the
  near partition (near hit), then the home partition (far hit; a miss fills home from DRAM);
  then (after a far hit, or any far access when `rep_miss`), with probability `rep_q` / 2**16,
  a copy is filled into the near partition (at the lowest priority when `rep_low`: least recent
  for LRU/FIFO, RRPV 3 for SRRIP). With `rep_line` the copy is not drawn per access: a fixed
  share rep_q / 2**16 of lines, those with mix64(line ^ REP_SALT) % 2**16 < rep_q, always leave a
  copy and the others never do.
- A fill may use ways [reserved_ways, ways) only: the first reserved_ways ways of every set are
  the persisting set-aside, which streaming data never fills.
- Replacement per set: an invalid way first (lowest), else LRU (least recent use), FIFO (oldest
  fill), SRRIP (2-bit RRPV, insert 2, hit 0; first way at 3 after ageing) or RANDOM (a uniform
  way from a xorshift64 generator seeded per run, so runs reproduce).

The stream (RRZE gpu-benches `gpu-l2-cache`; `Stream` below is its record): block b reads chunk
c = b % run; its iteration i (0..iters-1; 32 in the benchmark) reads the 16 KiB piece
run * i + c, i.e. lines (run * i + c) * 128 + 0..127. `slots` blocks run at once, dispatched as
the hardware's block scheduler does: blocks 0..slots-1 start rolling (block b at b * iters / slots
ticks, the steady state of a long grid), every later block in block order on the slot that frees
first. A block runs dur_b = iters * slots + d_b in units of 1/slots tick and reads iteration i
at tick (start + i * dur_b // iters) // slots; within a tick the running blocks interleave line
by line (block order), so every SM streams at once. d_b = 0 when `spread` is 0 (every block
alike: each line is re-read after exactly one data set of other traffic), else
mix64(b ^ seed ^ SPREAD_SALT) % (spread + 1): blocks run at different speeds on the hardware,
so the two readers of a line are a varying distance apart.
Block b runs on SM mix64(b ^ seed << 40) % sms: the hardware's block scheduler gives a block
whichever SM frees first, which we model as a uniform pseudo-random SM (a fixed b % sms would
make every chunk's readers sit in one partition whenever the chunk count is even).

Two entry points: `replay_window` counts the blocks of a given window (for tests and a fixed
warm-up), `replay_steady` decides its own warm-up by the steady-state rule (`SteadyRule`).
Both return the counters K_* (K_WARM_PASSES: the warm-up passes the rule took, 0 for a window).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

LRU, FIFO, SRRIP, RANDOM = 0, 1, 2, 3
HASH_MIX, HASH_MODULO, HASH_ROTATE = 0, 1, 2
MISS, NEAR_HIT, FAR_HIT = 0, 1, 2
ITERS = 32  # iterations per block in the benchmark (N / 2 with N = 64): 512 KiB chunks
PIECE_LINES = 128  # 16 KiB per block iteration: two 8 KiB reads of 1024 doubles
REP_ONE = 1 << 16  # rep_q is a probability in units of 2**-16
REP_SALT = 0x5EED  # with rep_line, mix64(line ^ REP_SALT) picks the replicable lines
SPREAD_SALT = 0x7171 << 20  # the run times are a hash independent of the SM placement
ROTATE_SALT = 0xA5A5  # HASH_ROTATE: mix64(round ^ ROTATE_SALT) rotates each round
RRPV_MAX, RRPV_LONG = 3, 2
# counters
K_ACCESSES, K_NEAR, K_FAR, K_MISSES, K_WARM_PASSES = 0, 1, 2, 3, 4
N_COUNTERS = 5


class Cache(NamedTuple):
    """The modelled L2 as the replay reads it (gpu_l2.L2Structure and L2Geometry, as ints)."""

    parts: int
    sets: int
    ways: int
    reserved_ways: int  # of every set, held back as the persisting set-aside
    policy: int  # LRU / FIFO / SRRIP / RANDOM
    set_hash: int  # HASH_MIX / HASH_MODULO
    rep_q: int  # replication share in units of 2**-16
    rep_low: int  # 1: replicas enter at the lowest priority
    rep_miss: int  # 1: a far miss also leaves a near copy
    rep_line: int  # 1: the share is of lines (by address), not of accesses


class Stream(NamedTuple):
    """The benchmark's access stream over one data set."""

    run: int  # chunks in the data set
    iters: int  # 16 KiB iterations per block (its chunk = iters x 16 KiB)
    slots: int  # blocks running at once (SMs x blocks per SM)
    sms: int
    spread: int  # a block runs iters ticks plus 0..spread 1/slots-ticks (0: all alike)
    seed: int  # SM placement, run times and random draws


class SteadyRule(NamedTuple):
    """When `replay_steady` ends its warm-up (gpu_l2.sweep has the rule in words)."""

    tol: float
    min_passes: int
    max_passes: int
    measure: int  # blocks counted after the warm-up


@njit(cache=True, inline="always")
def drained(stop: int, slots: int, spread: int, iters: int) -> int:
    """Blocks to dispatch so the last counted ones (before `stop`) run beside a full complement
    of others and their delays: the window replay's and the steady rule's one tail."""
    return stop + slots + -(-spread // iters)


@njit(cache=True, inline="always")
def mix64(x: int) -> int:
    """splitmix64's finaliser: a well-mixed 64-bit hash of x (uint64 arithmetic)."""
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def xorshift(state: np.ndarray) -> int:
    """Next value of a xorshift64 generator kept in state[0] (never 0)."""
    x = state[0]
    x ^= x << np.uint64(13)
    x ^= x >> np.uint64(7)
    x ^= x << np.uint64(17)
    state[0] = x
    return x


@njit(cache=True, inline="always")
def run_time(b: int, st: Stream) -> int:
    """Block b's run time in 1/slots ticks (module docstring)."""
    d = 0
    if st.spread > 0:
        key = np.int64(b) ^ np.int64(st.seed) ^ np.int64(SPREAD_SALT)
        d = np.int64(mix64(key) % np.uint64(st.spread + 1))
    return st.iters * st.slots + d


@njit(cache=True, inline="always")
def iteration_at(tick: int, start: int, dur: int, st: Stream) -> int:
    """The iteration block (start, dur) reads at `tick`, or -1: iteration i is read at tick
    (start + i * dur // iters) // slots, at most one per tick as dur >= iters * slots."""
    lo = tick * st.slots - start  # first 1/slots-tick of this tick, from the block's start
    i = 0 if lo <= 0 else (lo * st.iters + dur - 1) // dur
    if i < st.iters and (start + i * dur // st.iters) // st.slots == tick:
        return i
    return -1


@njit(cache=True, inline="always")
def _find(row: int, line: int, tags: np.ndarray) -> int:
    for w in range(tags.shape[1]):
        if tags[row, w] == line:
            return w
    return -1


@njit(cache=True, inline="always")
def _touch(row: int, w: int, policy: int, now: int, meta: np.ndarray) -> None:
    if policy == LRU:
        meta[row, w] = now
    elif policy == SRRIP:
        meta[row, w] = 0


@njit(cache=True, inline="always")
def _fill(
    row: int,
    line: int,
    low: bool,
    c: Cache,
    now: int,
    tags: np.ndarray,
    meta: np.ndarray,
    rng: np.ndarray,
) -> None:
    """Fill `line` into set `row` (ways reserved..ways-1): invalid way first, else the victim."""
    W, lo, policy = tags.shape[1], c.reserved_ways, c.policy
    v = -1
    for w in range(lo, W):
        if tags[row, w] < 0:
            v = w
            break
    if v < 0:
        if policy == RANDOM:
            v = lo + np.int64(xorshift(rng) % np.uint64(W - lo))
        elif policy == SRRIP:
            top = 0
            for w in range(lo, W):
                top = max(top, meta[row, w])
            bump = RRPV_MAX - top
            for w in range(lo, W):
                meta[row, w] += bump
                if v < 0 and meta[row, w] == RRPV_MAX:
                    v = w
        else:  # LRU, FIFO: the smallest stamp (lowest way on ties)
            best = np.int64(1 << 62)
            for w in range(lo, W):
                if meta[row, w] < best:
                    best, v = meta[row, w], w
    tags[row, v] = line
    if policy == SRRIP:
        meta[row, v] = RRPV_MAX if low else RRPV_LONG
    elif policy == LRU or policy == FIFO:
        if low:  # below every stamp of the set: the next victim
            least = now
            for w in range(lo, W):
                if w != v and tags[row, w] >= 0:
                    least = min(least, meta[row, w])
            meta[row, v] = least - 1
        else:
            meta[row, v] = now


@njit(cache=True, inline="always")
def _access(
    line: int,
    near: int,
    c: Cache,
    now: int,
    tags: np.ndarray,
    meta: np.ndarray,
    rng: np.ndarray,
) -> int:
    """One read of `line` by an SM near partition `near`: MISS, NEAR_HIT or FAR_HIT."""
    if c.set_hash == HASH_MODULO:
        home = line % c.parts
        s = (line // c.parts) % c.sets
    elif c.set_hash == HASH_ROTATE:
        n = c.parts * c.sets
        r = (line % n + np.int64(mix64((line // n) ^ ROTATE_SALT) % np.uint64(n))) % n
        home = r % c.parts
        s = r // c.parts
    else:
        h = mix64(line)
        home = np.int64(h % np.uint64(c.parts))
        s = np.int64((h >> np.uint64(20)) % np.uint64(c.sets))
    hrow = home * c.sets + s
    if home == near:
        w = _find(hrow, line, tags)
        if w >= 0:
            _touch(hrow, w, c.policy, now, meta)
            return NEAR_HIT
        _fill(hrow, line, False, c, now, tags, meta, rng)
        return MISS
    nrow = near * c.sets + s
    w = _find(nrow, line, tags)
    if w >= 0:
        _touch(nrow, w, c.policy, now, meta)
        return NEAR_HIT
    res = MISS
    w = _find(hrow, line, tags)
    if w >= 0:
        _touch(hrow, w, c.policy, now, meta)
        res = FAR_HIT
    else:
        _fill(hrow, line, False, c, now, tags, meta, rng)
    copy = res == FAR_HIT or c.rep_miss != 0
    if copy and c.rep_line != 0:  # the line's address decides, not a draw
        copy = np.int64(mix64(line ^ REP_SALT) % np.uint64(REP_ONE)) < c.rep_q
    elif copy:
        copy = c.rep_q >= REP_ONE or (
            c.rep_q > 0 and np.int64(xorshift(rng) % np.uint64(REP_ONE)) < c.rep_q
        )
    if copy:
        _fill(nrow, line, c.rep_low != 0, c, now, tags, meta, rng)
    return res


@njit(cache=True)
def _replay(
    c: Cache,
    st: Stream,
    n_blocks: int,
    warm: int,
    stop: int,
    rule: SteadyRule,
    steady: bool,
    outcome: np.ndarray,
) -> np.ndarray:
    """The one replay loop behind both entry points: with `steady` the warm-up is decided by
    `rule` (n_blocks, warm and stop are then set when it ends), else blocks warm..stop-1 of
    0..n_blocks-1 are counted."""
    run, iters, slots = st.run, st.iters, st.slots
    n_pass = rule.max_passes + 2 if steady else 1
    p_acc = np.zeros(n_pass, np.int64)
    p_near = np.zeros(n_pass, np.int64)
    p_hit = np.zeros(n_pass, np.int64)
    decided = not steady
    if steady:  # nothing counted until the warm-up ends; blocks run until then
        warm = stop = n_blocks = 1 << 50
    passes = 0
    tags = np.full((c.parts * c.sets, c.ways), -1, np.int64)
    meta = np.zeros((c.parts * c.sets, c.ways), np.int64)
    rng = np.full(1, np.uint64(st.seed) * np.uint64(2) + np.uint64(1), np.uint64)
    sched = np.int64(st.seed) << 40  # the block -> SM placement differs per seed
    counts = np.zeros(N_COUNTERS, np.int64)
    record = outcome.size > 0
    cap = 2 * slots + 8
    run_block = np.zeros(cap, np.int64)  # this tick's running blocks, their first line, SM side
    run_base = np.zeros(cap, np.int64)
    run_near = np.zeros(cap, np.int64)
    # the block dispatcher (times in 1/slots ticks): blocks 0..slots-1 start rolling, b * iters;
    # each later block takes the slot that frees first, in block order
    free = np.zeros(slots, np.int64)
    b_start = np.zeros(4096, np.int64)
    b_dur = np.zeros(4096, np.int64)
    n_out = 0
    now = 0
    lo = 0  # every block below lo has finished
    hi = 0  # blocks below hi have been dispatched, none from hi on has started
    tick = 0
    while lo < n_blocks:
        while lo < hi and (b_start[lo] + (iters - 1) * b_dur[lo] // iters) // slots < tick:
            lo += 1  # block lo read its last iteration before this tick
        if not decided:
            n = lo // run  # passes completed
            if n > passes:
                passes = n
                m = (n + 1) // 2
                a, b0 = p_acc[n], p_acc[m]
                if n >= rule.max_passes or (
                    n >= rule.min_passes
                    and abs(p_hit[n] / a - p_hit[m] / b0) <= rule.tol
                    and abs(p_near[n] / a - p_near[m] / b0) <= rule.tol
                ):
                    decided = True
                    warm = hi  # no block from here on has started
                    stop = warm + rule.measure
                    n_blocks = drained(stop, slots, st.spread, iters)
                    counts[K_WARM_PASSES] = n
        while hi < n_blocks:  # dispatch every block that starts by this tick
            k = hi if hi < slots else np.argmin(free)
            t0 = hi * iters if hi < slots else free[k]
            if t0 // slots > tick:
                break
            if hi == b_start.size:
                b_start = np.concatenate((b_start, b_start))
                b_dur = np.concatenate((b_dur, b_dur))
            b_start[hi] = t0
            b_dur[hi] = run_time(hi, st)
            free[k] = t0 + b_dur[hi]
            hi += 1
        n_run = 0
        for b in range(lo, hi):
            i = iteration_at(tick, b_start[b], b_dur[b], st)
            if i >= 0:
                if n_run == run_block.size:  # run times let more blocks overlap than foreseen
                    run_block = np.concatenate((run_block, run_block))
                    run_base = np.concatenate((run_base, run_base))
                    run_near = np.concatenate((run_near, run_near))
                run_block[n_run] = b
                run_base[n_run] = (run * i + b % run) * PIECE_LINES
                run_near[n_run] = np.int64(mix64(b ^ sched) % np.uint64(st.sms)) % c.parts
                n_run += 1
        for o in range(PIECE_LINES):
            for k in range(n_run):
                b = run_block[k]
                now += 1
                res = _access(run_base[k] + o, run_near[k], c, now, tags, meta, rng)
                if record:
                    outcome[n_out] = res
                    n_out += 1
                if not decided:
                    q = b // run + 1  # the pass block b belongs to (1-based)
                    if q < n_pass:
                        p_acc[q] += 1
                        if res != MISS:
                            p_hit[q] += 1
                        if res == NEAR_HIT:
                            p_near[q] += 1
                if warm <= b < stop:
                    counts[K_ACCESSES] += 1
                    if res == NEAR_HIT:
                        counts[K_NEAR] += 1
                    elif res == FAR_HIT:
                        counts[K_FAR] += 1
                    else:
                        counts[K_MISSES] += 1
        tick += 1
    return counts


@njit(cache=True)
def replay_window(
    c: Cache, st: Stream, n_blocks: int, warm: int, stop: int, outcome: np.ndarray
) -> np.ndarray:
    """Replay blocks 0..n_blocks-1 and count the accesses of blocks warm..stop-1. outcome (int8,
    size 0 to skip): MISS / NEAR_HIT / FAR_HIT of every access in replay order."""
    rule = SteadyRule(-1.0, 0, 0, 0)
    return _replay(c, st, n_blocks, warm, stop, rule, False, outcome)


@njit(cache=True)
def replay_steady(c: Cache, st: Stream, rule: SteadyRule) -> np.ndarray:
    """Replay until the steady state, then count `rule.measure` blocks: after each completed pass
    n over the data set (the blocks of pass n are (n-1)*run..n*run-1) with n >= min_passes, the
    warm-up ends when pass n's hit rate and near-hit rate are both within `tol` of pass
    ceil(n/2)'s, or at pass max_passes. The counted blocks are the next `measure` blocks not yet
    started; the blocks after them run (so the counted ones see full traffic) uncounted."""
    return _replay(c, st, 0, 0, 0, rule, True, np.zeros(0, np.int8))
