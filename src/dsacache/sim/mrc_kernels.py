"""Compiled kernels of the miss-ratio curve: Mattson's LRU stack on a bitmap + counting tree.

Each stack (one per region: one for `global`, one per layer for `per-layer`) numbers its
accesses with a private clock 0, 1, 2, ... A key's *mark* is a set bit at the clock of its
latest access, so at most `live` (distinct keys seen) bits are ever set. The stack distance of a
re-access of a key last touched at clock p is

    d = (number of marks at clocks > p) + 1

i.e. one plus the number of distinct keys touched since that key's previous access: its
1-based depth in the LRU stack. An LRU cache of C tokens hits the access iff d <= C (the key is
among the C most recently used). A first access (cold) has d = infinity.

Counting marks > p: the bitmap holds one bit per clock in uint64 words; a binary counting tree
(an implicit segment tree: leaves n_words..2*n_words-1, node i = children 2i + 2i+1, n_words a
power of two) holds the marks of every *completed* word. The word the clock is filling is left
out and joins the tree when the clock moves past it, which saves a tree update on most
accesses. One leaf-to-root walk both counts the marks right of p's word (the right siblings
along the path) and removes p's mark (decrements the path): a fixed number of steps, so the
loop branch predicts well.

Compaction: the clock runs to time_slots = 64 * n_words and then every live mark is renumbered
by its rank (0..live-1, order kept): each key of the stack gets last_time = number of marks
before its own. Memory is O(keys), never O(accesses); the cost, O(keys) per compaction, is
amortised over the >= (time_slots - keys) accesses between compactions.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
ONE = np.uint64(1)
# SHARDS spatial sampling: a key is sampled iff (hash(key) >> HASH_SHIFT) < threshold, a
# threshold out of SAMPLE_MODULUS = 2**24 (SAMPLE_MODULUS itself: every key, exact).
SAMPLE_BITS = 24
SAMPLE_MODULUS = 1 << SAMPLE_BITS
HASH_SHIFT = np.uint64(64 - SAMPLE_BITS)

# state[s, *] columns
NOW, LIVE, CUR_WORD = 0, 1, 2
# counters[*]
ACCESSES, BYPASSED, SAMPLED, COLD, COMPACTIONS = 0, 1, 2, 3, 4
N_COUNTERS = 5


@intrinsic
def _popcount(typingctx, x):  # noqa: ANN001, ANN201
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.ctpop.i64")
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True)
def key_hash(key: int) -> np.uint64:
    """splitmix64 of a dense key id (SHARDS' spatial hash)."""
    z = np.uint64(key) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _compact(
    s: int,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    stack_of_layer: np.ndarray,
    last_time: np.ndarray,
    bits: np.ndarray,
    tree: np.ndarray,
    state: np.ndarray,
) -> None:
    """Renumber stack s's marks by rank (order kept); rebuild its bitmap and tree."""
    n_words = bits.shape[1]
    before = np.empty(n_words, np.int64)  # marks in the words before word w
    total = 0
    for w in range(n_words):
        before[w] = total
        total += np.int64(_popcount(bits[s, w]))
    for layer in range(stack_of_layer.shape[0]):
        if stack_of_layer[layer] != s:
            continue
        for r in range(max_ctx.shape[0]):
            base = key_off[r] + layer * max_ctx[r]
            for tok in range(max_ctx[r]):
                p = np.int64(last_time[base + tok])
                if p >= 0:
                    below = bits[s, p >> 6] & ((ONE << np.uint64(p & 63)) - ONE)
                    last_time[base + tok] = before[p >> 6] + np.int64(_popcount(below))
    full = total >> 6
    for w in range(n_words):
        bits[s, w] = ALL_ONES if w < full else np.uint64(0)
    if total & 63:
        bits[s, full] = (ONE << np.uint64(total & 63)) - ONE
    for w in range(n_words):  # leaves: the completed words (the partial one is `cur`)
        tree[s, n_words + w] = 64 if w < full else 0
    for i in range(n_words - 1, 0, -1):
        tree[s, i] = tree[s, 2 * i] + tree[s, 2 * i + 1]
    tree[s, 0] = 0
    state[s, NOW] = total
    state[s, LIVE] = total
    state[s, CUR_WORD] = full


@njit(cache=True)
def _check_bypassed(block: np.ndarray, t: int, layer: int, max_ctx: np.ndarray) -> np.ndarray:
    """[valid slots of (t, layer) over every request, -1], or [slot, request] of the first
    invalid index (< -1 or >= the request's context); out[1] >= 0 flags the bad case."""
    nr, k = block.shape[2], block.shape[3]
    out = np.zeros(2, np.int64)  # [count, bad request (or -1)]
    out[1] = -1
    for r in range(nr):
        lim = max_ctx[r]
        for j in range(k):
            tok = block[t, layer, r, j]
            if tok < -1 or tok >= lim:
                out[0] = j
                out[1] = r
                return out
            if tok >= 0:
                out[0] += 1
    return out


@njit(cache=True)
def mrc_block(
    block: np.ndarray,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    stack_of_layer: np.ndarray,
    sample_threshold: int,
    last_time: np.ndarray,
    bits: np.ndarray,
    tree: np.ndarray,
    state: np.ndarray,
    counters: np.ndarray,
    hist: np.ndarray,
) -> np.ndarray:
    """Push every access of block [steps, layers, requests, k] through its layer's stack.

    hist[d] counts re-accesses at stack distance d; counters as ACCESSES..COMPACTIONS.
    Returns [-1, -1, -1, -1] or (step, layer, request, slot) of the first invalid index
    (state is then undefined).
    """
    nb, nl, nr, k = block.shape
    n_words = bits.shape[1]
    time_slots = n_words * 64
    sampling = sample_threshold < SAMPLE_MODULUS
    thr = np.uint64(sample_threshold)
    bad = np.full(4, -1, np.int64)
    n_skipped = 0
    n_bypass = 0
    n_sampled = 0
    n_cold = 0
    for t in range(nb):
        for layer in range(nl):
            s = stack_of_layer[layer]
            if s < 0:  # outside the reservation: every access a miss
                res = _check_bypassed(block, t, layer, max_ctx)
                if res[1] >= 0:
                    bad[0], bad[1], bad[2], bad[3] = t, layer, res[1], res[0]
                    return bad
                n_bypass += res[0]
                continue
            bits_s = bits[s]
            tree_s = tree[s]
            now = state[s, NOW]
            live = state[s, LIVE]
            cur = state[s, CUR_WORD]
            for r in range(nr):
                lim = max_ctx[r]
                base = key_off[r] + layer * lim
                row = block[t, layer, r]
                for j in range(k):
                    tok = row[j]
                    if tok < 0:
                        if tok != -1:
                            bad[0], bad[1], bad[2], bad[3] = t, layer, r, j
                            return bad
                        continue
                    if tok >= lim:
                        bad[0], bad[1], bad[2], bad[3] = t, layer, r, j
                        return bad
                    key = base + tok
                    if sampling and (key_hash(key) >> HASH_SHIFT) >= thr:
                        n_skipped += 1
                        continue
                    n_sampled += 1
                    if now == time_slots:
                        state[s, LIVE] = live
                        _compact(s, key_off, max_ctx, stack_of_layer, last_time, bits, tree, state)
                        counters[COMPACTIONS] += 1
                        now = state[s, NOW]
                        cur = state[s, CUR_WORD]
                    w_now = now >> 6
                    if w_now != cur:  # the clock left word `cur`: it joins the tree
                        v = np.int64(_popcount(bits_s[cur]))
                        i = cur + n_words
                        while i >= 1:
                            tree_s[i] += v
                            i >>= 1
                        cur = w_now
                    p = np.int64(last_time[key])
                    if p < 0:
                        n_cold += 1
                        live += 1
                    else:
                        w = p >> 6
                        b = np.uint64(p & 63)
                        word = bits_s[w]
                        # marks after p in its own word, then in the current word, then in
                        # the completed words right of w (right siblings on w's root path)
                        gt = np.int64(_popcount(word & ~(ALL_ONES >> (np.uint64(63) - b))))
                        bits_s[w] = word & ~(ONE << b)
                        if w != cur:
                            gt += np.int64(_popcount(bits_s[cur]))
                            i = w + n_words
                            while i > 1:
                                gt += tree_s[i | 1] * (1 - (i & 1))
                                tree_s[i] -= 1
                                i >>= 1
                            tree_s[1] -= 1
                        hist[gt + 1] += 1
                    bits_s[w_now] |= ONE << np.uint64(now & 63)
                    last_time[key] = now
                    now += 1
            state[s, NOW] = now
            state[s, LIVE] = live
            state[s, CUR_WORD] = cur
    counters[ACCESSES] += n_skipped + n_sampled + n_bypass
    counters[BYPASSED] += n_bypass
    counters[SAMPLED] += n_sampled
    counters[COLD] += n_cold
    return bad
