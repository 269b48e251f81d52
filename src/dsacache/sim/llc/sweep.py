"""Exact streaming shortcuts: a long run of distinct consecutive lines, decided set by set.

Weights and index scans are runs of up to millions of lines per layer; replaying them line by
line costs as much as everything else together. Under LRU and SRRIP each set evolves on its
own, and in a set that holds none of the run's lines every access misses in a fixed pattern, so
only what can hit (a run line already resident: that set is replayed) or survive (the last
lines each candidate way receives) is computed. Proofs in the docstrings; tests compare with the
line-by-line replay (tests/test_llc_shortcut.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.sim.llc.kernels import (
    C_BITS,
    C_HASH,
    C_RES,
    C_RES_WAYS,
    C_SECTORS,
    FULL,
    HASH_MODULO,
    RES_SETASIDE,
    RES_WAY,
    RRPV_LONG,
    RRPV_MAX,
    S_SHORTCUT,
    access,
    as_conf,
    line_of,
    pop4,
    set_of,
)
from dsacache.units import LINE_BYTES, SECTOR_BYTES


@njit(cache=True, inline="always", _nrt=False)
def _set_lines(s: int, first: int, last: int, hmode: int, bits: int, smask: int) -> tuple[int, int]:
    """(m, tag0): the run [first, last] puts m lines in set s, with tags tag0 .. tag0 + m - 1
    in run order (line = tag << bits | low, low = s, or s ^ fold(tag) for the XOR hash)."""
    S = smask + 1
    if hmode == HASH_MODULO or bits == 0:
        y0 = first + ((s - first) & smask)
        if y0 > last:
            return 0, y0 >> bits
        return (last - y0) // S + 1, y0 >> bits
    c0 = first >> bits
    c1 = last >> bits
    y = (c0 << bits) | (s ^ set_of(c0, hmode, bits, smask))
    if c0 == c1:
        return (1 if first <= y <= last else 0), c0
    cs = c0 + (1 if y < first else 0)
    y1 = (c1 << bits) | (s ^ set_of(c1, hmode, bits, smask))
    return c1 - cs + 1 - (1 if y1 > last else 0), cs


@njit(cache=True, inline="always", _nrt=False)
def _mask_of(y: int, first: int, last: int, m0: int, m1: int) -> int:
    if y == first:
        return m0
    if y == last:
        return m1
    return FULL


@njit(cache=True, _nrt=False)
def sweep_lru(
    first: int,
    n: int,
    m0: int,
    m1: int,
    reserved: int,
    tags: np.ndarray,
    age: np.ndarray,
    rrpv: np.ndarray,
    sect: np.ndarray,
    pers: np.ndarray,
    quota: np.ndarray,
    cfg: np.ndarray,
    st: np.ndarray,
    scratch: np.ndarray,
) -> tuple[int, int, int]:
    """LRU on the run [first, first + n) of distinct lines, set by set; (hits, misses, bytes).

    Exact. Sets are independent under LRU, so each set may take its m lines on its own, in run
    order. A set that holds none of the run's lines misses on all m of them (distinct, not
    resident); if m >= k, its k candidate ways (those the run's class may fill) are all
    replaced and end up holding the set's last k run lines, as its k most recent lines in run
    order, while the other ways keep their order behind them. Only that end state is written:
    the candidates in way order get the lines oldest first. The line-by-line loop may place
    those lines in another order among the same ways, which LRU never observes (lookups match
    tags, victims are chosen by recency, and no candidate is left invalid), so every later hit,
    miss and eviction is the same. A set holding a run line (a possible hit), or with m < k, is
    replayed line by line. Not for set-aside persisting classes (their candidate ways change as
    they allocate).
    """
    S, W = tags.shape
    smask = S - 1
    hmode, bits = cfg[C_HASH], cfg[C_BITS]
    conf = as_conf(cfg)
    sectors = cfg[C_SECTORS]
    last = first + n - 1
    lo, hi, want = 0, W, -1
    if cfg[C_RES] == RES_WAY:
        if reserved:
            hi = cfg[C_RES_WAYS]
        else:
            lo = cfg[C_RES_WAYS]
    elif cfg[C_RES] == RES_SETASIDE:
        want = 0
    s_first = set_of(first, hmode, bits, smask)
    s_last = set_of(last, hmode, bits, smask)
    cand = scratch[0]
    is_cand = scratch[1]
    inv = scratch[2]
    decided = 0
    hits = 0
    misses = 0
    nbytes = 0
    for s in range(S):
        m, t0 = _set_lines(s, first, last, hmode, bits, smask)
        if m == 0:
            continue
        t1 = t0 + m - 1
        resident = 0
        for w in range(W):
            tg = tags[s, w]
            resident += (tg >= t0) & (tg <= t1)
        k = 0
        for w in range(W):
            c = lo <= w < hi and (want < 0 or pers[s, w] == want)
            is_cand[w] = np.int64(c)
            if c:
                cand[k] = w
                k += 1
        if resident > 0 or m < k or m <= 2:
            # replay this set's lines: one may hit, or only some candidates are replaced
            for j in range(m):
                tg = t0 + j
                y = line_of(tg, s, hmode, bits, smask)
                b = access(
                    s,
                    tg,
                    _mask_of(y, first, last, m0, m1),
                    reserved,
                    tags,
                    age,
                    rrpv,
                    sect,
                    pers,
                    quota,
                    conf,
                    st,
                )
                if b == 0:
                    hits += 1
                else:
                    misses += 1
                    nbytes += b
            continue
        misses += m
        decided += m
        if sectors:
            q = 4 * m
            if s_first == s:
                q += pop4(m0) - 4
            if s_last == s and last != first:
                q += pop4(m1) - 4
            nbytes += q * SECTOR_BYTES
        else:
            nbytes += m * LINE_BYTES
        if k < W:  # the other ways keep their order, behind the k new lines
            for w in range(W):
                inv[age[s, w]] = w
            a = k
            for r in range(W):
                w = inv[r]
                if is_cand[w] == 0:
                    age[s, w] = a
                    a += 1
        for i in range(k):
            w = cand[i]
            tg = t0 + m - k + i
            tags[s, w] = tg
            age[s, w] = k - 1 - i
            if sectors:
                sect[s, w] = _mask_of(line_of(tg, s, hmode, bits, smask), first, last, m0, m1)
    st[S_SHORTCUT] += decided
    return hits, misses, nbytes


@njit(cache=True, inline="always", _nrt=False)
def _srrip_pointer(s: int, cand: np.ndarray, k: int, tags: np.ndarray, rrpv: np.ndarray) -> int:
    """j if the k candidates are all valid with RRPVs 2 (the first j) then 3 (the rest), else
    -1. From that state SRRIP's misses evict the candidates round robin from the j-th."""
    j = 0
    while j < k and rrpv[s, cand[j]] == RRPV_LONG:
        j += 1
    for i in range(j, k):
        if rrpv[s, cand[i]] != RRPV_MAX:
            return -1
    for i in range(k):
        if tags[s, cand[i]] < 0:
            return -1
    return j


@njit(cache=True, _nrt=False)
def sweep_srrip(
    first: int,
    n: int,
    m0: int,
    m1: int,
    reserved: int,
    tags: np.ndarray,
    age: np.ndarray,
    rrpv: np.ndarray,
    sect: np.ndarray,
    pers: np.ndarray,
    quota: np.ndarray,
    cfg: np.ndarray,
    st: np.ndarray,
    scratch: np.ndarray,
) -> tuple[int, int, int]:
    """SRRIP on the run [first, first + n) of distinct lines, set by set; (hits, misses, bytes).

    Exact, state included way for way. SRRIP sets are independent (no global state), so each
    set may take its m lines on its own, in run order. In a set holding none of the run's lines
    every access misses. Invalid candidates are filled first (replayed one by one). Then each
    miss takes the first candidate at RRPV 3 and inserts at 2, and when none is left all
    candidates age by 3 - their maximum: so a *round* (age, then refill every candidate at 3 in
    way order) is decided in one pass over the ways. Once the k candidates hold RRPVs 2, ..., 2,
    3, ..., 3 (j twos, candidates in way order), the victims run round robin c_j, ..., c_{k-1},
    c_0, ..., and the shape recurs; the remaining q misses are then decided at once: candidate
    c_i ends with the last line whose turn it was, the RRPVs with the shape of pointer j + q.
    A set holding a run line is replayed line by line. Not for set-aside persisting classes.
    """
    S, W = tags.shape
    smask = S - 1
    hmode, bits = cfg[C_HASH], cfg[C_BITS]
    conf = as_conf(cfg)
    sectors = cfg[C_SECTORS]
    last = first + n - 1
    lo, hi, want = 0, W, -1
    if cfg[C_RES] == RES_WAY:
        if reserved:
            hi = cfg[C_RES_WAYS]
        else:
            lo = cfg[C_RES_WAYS]
    elif cfg[C_RES] == RES_SETASIDE:
        want = 0
    s_first = set_of(first, hmode, bits, smask)
    s_last = set_of(last, hmode, bits, smask)
    cand = scratch[0]
    decided = 0
    hits = 0
    misses = 0
    nbytes = 0
    for s in range(S):
        m, t0 = _set_lines(s, first, last, hmode, bits, smask)
        if m == 0:
            continue
        t1 = t0 + m - 1
        resident = 0
        for w in range(W):
            tg = tags[s, w]
            resident += (tg >= t0) & (tg <= t1)
        k = 0
        for w in range(lo, hi):
            if want < 0 or pers[s, w] == want:
                cand[k] = w
                k += 1
        e0 = 0  # run lines of this set decided so far, one by one or a round at a time
        if resident > 0 or k == 0:
            e_exact = m  # replay the whole set
        else:
            e_exact = 0  # replay while an invalid candidate is left (filled first, in order)
            for i in range(k):
                e_exact += tags[s, cand[i]] < 0
        while e0 < min(e_exact, m):
            tg = t0 + e0
            y = line_of(tg, s, hmode, bits, smask)
            b = access(
                s, tg, _mask_of(y, first, last, m0, m1), reserved,
                tags, age, rrpv, sect, pers, quota, conf, st,
            )  # fmt: skip
            if b == 0:
                hits += 1
            else:
                misses += 1
                nbytes += b
            e0 += 1
        if e0 == m:
            continue
        # Rounds: the candidates at RRPV 3, in way order, are the next victims (each refilled
        # at 2); when none is left, all candidates age by 3 - their maximum.
        j = _srrip_pointer(s, cand, k, tags, rrpv)
        while e0 < m and j < 0:
            top = 0
            for i in range(k):
                top = max(top, np.int64(rrpv[s, cand[i]]))
            if top < RRPV_MAX:
                for i in range(k):
                    rrpv[s, cand[i]] += RRPV_MAX - top
            for i in range(k):
                w = cand[i]
                if e0 < m and rrpv[s, w] == RRPV_MAX:
                    tg = t0 + e0
                    y = line_of(tg, s, hmode, bits, smask)
                    mk = _mask_of(y, first, last, m0, m1)
                    tags[s, w] = tg
                    rrpv[s, w] = RRPV_LONG
                    if sectors:
                        sect[s, w] = mk
                        nbytes += pop4(mk) * SECTOR_BYTES
                    else:
                        nbytes += LINE_BYTES
                    misses += 1
                    decided += 1
                    e0 += 1
            j = _srrip_pointer(s, cand, k, tags, rrpv)
        q = m - e0
        if q == 0:
            continue
        misses += q
        decided += q
        if sectors:  # only the run's first and last line can be partial
            nb = 4 * q
            if s == s_first and e0 == 0:
                nb += pop4(m0) - 4
            if s == s_last and last != first:
                nb += pop4(m1) - 4
            nbytes += nb * SECTOR_BYTES
        else:
            nbytes += q * LINE_BYTES
        for i in range(k):
            r = (i - j) % k
            if r <= q - 1:
                e = r + k * ((q - 1 - r) // k)
                tg = t0 + e0 + e
                w = cand[i]
                tags[s, w] = tg
                if sectors:
                    y = line_of(tg, s, hmode, bits, smask)
                    sect[s, w] = _mask_of(y, first, last, m0, m1)
        p = j + q
        if p > k:
            p = (p - 1) % k + 1
        for i in range(k):
            rrpv[s, cand[i]] = RRPV_LONG if i < p else RRPV_MAX
    st[S_SHORTCUT] += decided
    return hits, misses, nbytes
