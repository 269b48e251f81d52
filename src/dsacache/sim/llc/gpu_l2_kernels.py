"""Compiled replay of the GPU L2 model under the `gpu-l2-cache` microbenchmark's access stream.

The model (gpu_l2.py has the parameters and their sources):
- `parts` partitions of `sets` x `ways` lines of 128 B each; a line's home partition and its set
  come from a hash of the line id (`HASH_MIX`: a splitmix64 finaliser, standing in for the
  undocumented hardware hash; `HASH_MODULO`: home = line % parts, set = line // parts % sets,
  for hand-checkable tests). A replica sits in the same set index of the other partition.
- SM m is near partition m % parts. A near access looks up the home partition: a hit is a near
  hit, a miss fills the home partition from DRAM. A far access first looks for a replica in the
  near partition (near hit), then the home partition (far hit; a miss fills home from DRAM);
  then (after a far hit, or any far access when `rep_miss`), with probability `rep_q` / 2**16,
  a copy is filled into the near partition (at the
  lowest priority when `rep_low`: least recent for LRU/FIFO, RRPV 3 for SRRIP). With `rep_line`
  the copy is not drawn per access: a fixed share rep_q / 2**16 of lines, those with
  mix64(line ^ REP_SALT) % 2**16 < rep_q, always leave a copy and the others never do.
- A fill may use ways [res_ways, ways) only: the first res_ways ways of every set are the
  persisting set-aside, which streaming data never fills.
- Replacement per set: an invalid way first (lowest), else LRU (least recent use), FIFO (oldest
  fill; with `pool` > 1 both take a uniform pick among the `pool` oldest (stamp, way)), SRRIP
  (2-bit RRPV, insert 2, hit 0; first way at 3 after ageing) or RANDOM (a uniform way from a
  xorshift64 generator seeded per run, so runs reproduce).

The stream (RRZE gpu-benches `gpu-l2-cache`): block b reads chunk c = b % run; its iteration
i (0..iters-1; 32 in the benchmark) reads the 16 KiB piece run * i + c, i.e. lines
(run * i + c) * 128 + 0..127. `slots` blocks run at once and blocks start in a rolling schedule:
block b starts at tick b * iters // slots and reads iteration i at tick start + i; within a
tick the running blocks interleave line by line (block order), so every SM streams at once.
Block b runs on SM mix64(b ^ seed << 40) % sms: the hardware's block scheduler gives a block
whichever SM frees first, which we model as a uniform pseudo-random SM (a fixed b % sms would
make every chunk's readers sit in one partition whenever the chunk count is even).
Counters cover blocks warm <= b < stop only: the steady state,
after the warm-up and before the last blocks drain (fewer blocks running: shorter reuse).
"""

from __future__ import annotations

import numpy as np
from numba import njit

LRU, FIFO, SRRIP, RANDOM = 0, 1, 2, 3
HASH_MIX, HASH_MODULO = 0, 1
MISS, NEAR_HIT, FAR_HIT = 0, 1, 2
ITERS = 32  # iterations per block in the benchmark (N / 2 with N = 64): 512 KiB chunks
PIECE_LINES = 128  # 16 KiB per block iteration: two 8 KiB reads of 1024 doubles
REP_ONE = 1 << 16  # rep_q is a probability in units of 2**-16
REP_SALT = 0x5EED  # with rep_line, mix64(line ^ REP_SALT) picks the replicable lines
RRPV_MAX, RRPV_LONG = 3, 2
# counters
K_ACCESSES, K_NEAR, K_FAR, K_MISSES = 0, 1, 2, 3
_MASK64 = (1 << 64) - 1


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
    policy: int,
    pool: int,
    lo: int,
    now: int,
    tags: np.ndarray,
    meta: np.ndarray,
    rng: np.ndarray,
) -> None:
    """Fill `line` into set `row` (ways lo..ways-1): invalid way first, else the victim."""
    W = tags.shape[1]
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
        else:  # LRU, FIFO: the r-th smallest (stamp, way), r uniform below `pool`
            r = 0
            if pool > 1:
                r = np.int64(xorshift(rng) % np.uint64(min(pool, W - lo)))
            prev_s, prev_w = np.int64(-(1 << 62)), -1
            for _ in range(r + 1):
                best, v = np.int64(1 << 62), -1
                for w in range(lo, W):
                    m = meta[row, w]
                    if (m > prev_s or (m == prev_s and w > prev_w)) and (
                        m < best or (m == best and w < v)
                    ):
                        best, v = m, w
                prev_s, prev_w = best, v
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


@njit(cache=True)
def replay_sweep_steady(
    run: int,
    iters: int,
    n_blocks: int,
    warm: int,
    stop: int,
    slots: int,
    sms: int,
    parts: int,
    sets: int,
    ways: int,
    policy: int,
    pool: int,
    hmode: int,
    rep_q: int,
    rep_low: int,
    rep_miss: int,
    rep_line: int,
    res_ways: int,
    seed: int,
    outcome: np.ndarray,
    tol: float,
    min_passes: int,
    max_passes: int,
    measure: int,
) -> np.ndarray:
    """Replay blocks 0..n_blocks-1 of the sweep over `run` chunks and count the accesses of blocks
    warm..stop-1. outcome (int8, size 0 to skip): MISS / NEAR_HIT / FAR_HIT of every access in
    replay order. With tol >= 0 the replay decides the warm-up itself (n_blocks, warm and stop
    are then ignored): after each completed pass n over the data set (the blocks of pass n are
    (n-1)*run..n*run-1) with n >= min_passes, the warm-up ends when pass n's hit rate and near-hit
    rate are both within `tol` of pass ceil(n/2)'s, or at pass max_passes. The counted blocks
    are then the next `measure` blocks not yet started, the last `slots` drain uncounted.
    Returns [accesses, near hits, far hits, misses, warm-up passes] (the passes 0 with tol < 0)."""
    decided = tol < 0.0
    n_pass = max_passes + 2 if not decided else 1
    p_acc = np.zeros(n_pass, np.int64)
    p_near = np.zeros(n_pass, np.int64)
    p_hit = np.zeros(n_pass, np.int64)
    passes = 0
    if not decided:  # nothing counted until the warm-up ends; blocks run until then
        warm = stop = 1 << 50
        n_blocks = 1 << 50
    tags = np.full((parts * sets, ways), -1, np.int64)
    meta = np.zeros((parts * sets, ways), np.int64)
    rng = np.full(1, np.uint64(seed) * np.uint64(2) + np.uint64(1), np.uint64)
    sched = np.int64(seed) << 40  # the block -> SM placement differs per seed
    counts = np.zeros(5, np.int64)
    record = outcome.size > 0
    n_out = 0
    now = 0
    first = 0  # first block still running
    end = 0  # one past the last block started
    tick = 0
    while tick < (n_blocks - 1) * iters // slots + iters:
        while first < n_blocks and first * iters // slots + iters <= tick:
            first += 1
        if not decided:
            n = first // run  # passes completed
            if n > passes:
                passes = n
                m = (n + 1) // 2
                a, b0 = p_acc[n], p_acc[m]
                if n >= max_passes or (
                    n >= min_passes
                    and abs(p_hit[n] / a - p_hit[m] / b0) <= tol
                    and abs(p_near[n] / a - p_near[m] / b0) <= tol
                ):
                    decided = True
                    warm = end  # no block from here on has run yet
                    stop = warm + measure
                    n_blocks = stop + slots
                    counts[4] = n
        end = first
        while end < n_blocks and end * iters // slots <= tick:
            end += 1
        for o in range(PIECE_LINES):
            for b in range(first, end):
                i = tick - b * iters // slots
                line = ((run * i + b % run) * PIECE_LINES) + o
                near = np.int64(mix64(b ^ sched) % np.uint64(sms)) % parts
                if hmode == HASH_MODULO:
                    home = line % parts
                    s = (line // parts) % sets
                else:
                    h = mix64(line)
                    home = np.int64(h % np.uint64(parts))
                    s = np.int64((h >> np.uint64(20)) % np.uint64(sets))
                now += 1
                res = MISS
                hrow = home * sets + s
                if home != near:
                    nrow = near * sets + s
                    w = _find(nrow, line, tags)
                    if w >= 0:
                        _touch(nrow, w, policy, now, meta)
                        res = NEAR_HIT
                    else:
                        w = _find(hrow, line, tags)
                        if w >= 0:
                            _touch(hrow, w, policy, now, meta)
                            res = FAR_HIT
                        else:
                            _fill(hrow, line, False, policy, pool, res_ways, now, tags, meta, rng)
                        copy = res == FAR_HIT or rep_miss != 0
                        if copy and rep_line != 0:  # the line's address decides, not a draw
                            copy = np.int64(mix64(line ^ REP_SALT) % np.uint64(REP_ONE)) < rep_q
                        elif copy:
                            copy = rep_q >= REP_ONE or (
                                rep_q > 0 and np.int64(xorshift(rng) % np.uint64(REP_ONE)) < rep_q
                            )
                        if copy:
                            _fill(
                                nrow,
                                line,
                                rep_low != 0,
                                policy,
                                pool,
                                res_ways,
                                now,
                                tags,
                                meta,
                                rng,
                            )
                else:
                    w = _find(hrow, line, tags)
                    if w >= 0:
                        _touch(hrow, w, policy, now, meta)
                        res = NEAR_HIT
                    else:
                        _fill(hrow, line, False, policy, pool, res_ways, now, tags, meta, rng)
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
