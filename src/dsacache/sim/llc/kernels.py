"""Compiled kernels of the line-level set-associative LLC (see engine.py for the semantics).

State, per set s and way w (flat numpy arrays, [sets, ways]):
  tags[s, w]  int32  line >> log2(sets), the line's tag (the set fixes the rest); -1 = invalid
  age[s, w]   uint8  LRU recency rank: the ages of a set are a permutation of 0..ways-1,
                     0 = most recent; they start at ways - 1 - w (way 0 oldest)
  rrpv[s, w]  uint8  SRRIP/DRRIP re-reference prediction value
  sect[s, w]  uint8  valid 32-byte sectors, bit i = sector i (sector mode only)
  pers[s, w]  uint8  1 = persisting line (set-aside mode only)
quota[s]: persisting lines set s may hold. cfg: the C_* parameters; st: the S_* scalars.

This module: one access (`access`, and `access_lru_plain` for plain LRU). sweep.py: the exact
streaming shortcuts; replay.py: the replay of runs. Kernels are compiled without numba's
reference-counting runtime (_nrt=False): refcount traffic on the state arrays of every inlined
call cost 2-3x; nothing here allocates.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.units import LINE_BYTES, SECTOR_BYTES

LRU, SRRIP, DRRIP = 0, 1, 2
HASH_MODULO, HASH_XOR = 0, 1
RES_NONE, RES_WAY, RES_SETASIDE = 0, 1, 2
# cfg slots
C_POLICY, C_HASH, C_BITS, C_SECTORS, C_RES, C_RES_WAYS, C_LEADER = 0, 1, 2, 3, 4, 5, 6
N_CFG = 7
# st slots; S_SHORTCUT: line accesses the streaming shortcut decided without replaying them
S_PSEL, S_BRRIP, S_SHORTCUT = 0, 1, 2
N_ST = 3
# counters columns
K_ACCESSES, K_HITS, K_MISSES, K_BYTES = 0, 1, 2, 3

FULL = 0xF
MAX_TAG = (1 << 31) - 2  # tags are int32
# RRIP (Jaleel et al., ISCA 2010): 2-bit RRPV, insert at 2 ("long"), hit -> 0 (hit priority),
# victim = first way at 3 after ageing; BRRIP inserts at 3 ("distant") except every 32nd
# insertion at 2 (epsilon = 1/32, a counter instead of a random draw, so runs reproduce);
# DRRIP duels 32 SRRIP and 32 BRRIP leader sets with a 10-bit saturating PSEL (SRRIP leader
# misses count up); followers use BRRIP when its MSB is set (PSEL >= 512). With sets <= 64 every
# set is a leader (half SRRIP, half BRRIP) and there are no followers.
RRPV_MAX = 3
RRPV_LONG = 2
BRRIP_PERIOD = 32
PSEL_MAX = 1023
PSEL_INIT = 512
LEADERS_PER_POLICY = 32


@njit(cache=True, inline="always", _nrt=False)
def set_of(line: int, hmode: int, bits: int, smask: int) -> int:
    """Set index: low bits (modulo), or the XOR of every `bits`-wide chunk of the line id."""
    x = line & smask
    if hmode == HASH_MODULO or bits == 0:
        return x
    h = line >> bits
    while h != 0:
        x ^= h & smask
        h >>= bits
    return x


@njit(cache=True, inline="always", _nrt=False)
def pop4(m: int) -> int:
    return (m & 1) + ((m >> 1) & 1) + ((m >> 2) & 1) + ((m >> 3) & 1)


@njit(cache=True, inline="always", _nrt=False)
def _count_pers(s: int, pers: np.ndarray) -> int:
    n = 0
    for w in range(pers.shape[1]):
        n += pers[s, w]
    return n


@njit(cache=True, inline="always", _nrt=False)
def _leader(s: int, spacing: int) -> int:
    """1: SRRIP leader set, 2: BRRIP leader set, 0: follower."""
    r = s % spacing
    if r == 0:
        return 1
    if r == 1:
        return 2
    return 0


@njit(cache=True, inline="always", _nrt=False)
def _touch(s: int, v: int, age: np.ndarray) -> None:
    """Make way v the most recent of set s."""
    a = age[s, v]
    for w in range(age.shape[1]):
        age[s, w] += age[s, w] < a
    age[s, v] = 0


@njit(cache=True, inline="always", _nrt=False)
def _cand(s: int, w: int, lo: int, hi: int, want: int, pers: np.ndarray) -> int:
    """1 if way w of set s may be filled: w in [lo, hi) and, when want >= 0, pers == want."""
    ok = np.int64((w >= lo) & (w < hi))
    if want >= 0:
        ok &= np.int64(pers[s, w] == want)
    return ok


@njit(cache=True, inline="always", _nrt=False)
def _victim(
    s: int,
    lo: int,
    hi: int,
    want: int,
    policy: int,
    tags: np.ndarray,
    age: np.ndarray,
    rrpv: np.ndarray,
    pers: np.ndarray,
) -> int:
    """Victim way among the candidates (`_cand`); -1 if none. Written with selects, not
    branches, per way.
    LRU: the oldest candidate; invalid ways are never touched, so they are older than every
    valid way, and way 0 starts oldest: an invalid candidate is taken first, lowest way first.
    RRIP: an invalid candidate first (lowest way), else the first way at RRPV_MAX after ageing
    the candidates."""
    W = tags.shape[1]
    best = -1
    if policy == LRU:
        oldest = -1
        for w in range(W):
            a = (np.int64(age[s, w]) + 1) * _cand(s, w, lo, hi, want, pers) - 1
            best = w if a > oldest else best
            oldest = max(oldest, a)
        return best
    top = -1
    for w in range(W):
        ok = _cand(s, w, lo, hi, want, pers)
        best = w if (ok & (tags[s, w] < 0) & (best < 0)) else best
        top = max(top, (np.int64(rrpv[s, w]) + 1) * ok - 1)
    if best >= 0 or top < 0:
        return best
    bump = RRPV_MAX - top
    for w in range(W):
        ok = _cand(s, w, lo, hi, want, pers)
        r = np.int64(rrpv[s, w]) + bump * ok
        rrpv[s, w] = r
        best = w if (ok & (r == RRPV_MAX) & (best < 0)) else best
    return best


@njit(cache=True, inline="always", _nrt=False)
def as_conf(cfg: np.ndarray) -> tuple[int, ...]:
    return (cfg[0], cfg[1], cfg[2], cfg[3], cfg[4], cfg[5], cfg[6])


@njit(cache=True, inline="always", _nrt=False)
def access(
    s: int,
    tag: int,
    mask: int,
    reserved: int,
    tags: np.ndarray,
    age: np.ndarray,
    rrpv: np.ndarray,
    sect: np.ndarray,
    pers: np.ndarray,
    quota: np.ndarray,
    conf: tuple[int, ...],
    st: np.ndarray,
) -> int:
    """One access to the line with `tag` in set s; returns the HBM bytes it costs (0 = hit).
    conf: the cfg values as a tuple (`as_conf`), so they stay in registers."""
    W = tags.shape[1]
    policy = conf[C_POLICY]
    sectors = conf[C_SECTORS]
    res = conf[C_RES]
    hit = -1
    for w in range(W):
        if tags[s, w] == tag:
            hit = w
    if hit >= 0:
        nbytes = 0
        if sectors:
            have = np.int64(sect[s, hit])
            nbytes = pop4(mask & (FULL ^ have)) * SECTOR_BYTES
            sect[s, hit] = have | mask
        if policy == LRU:
            _touch(s, hit, age)
        else:
            rrpv[s, hit] = 0
        if res == RES_SETASIDE and reserved and pers[s, hit] == 0:
            if _count_pers(s, pers) < quota[s]:
                pers[s, hit] = 1
        return nbytes
    nbytes = pop4(mask) * SECTOR_BYTES if sectors else LINE_BYTES
    lead = 0
    if policy == DRRIP:
        lead = _leader(s, conf[C_LEADER])
        if lead == 1:
            st[S_PSEL] = min(st[S_PSEL] + 1, PSEL_MAX)
        elif lead == 2:
            st[S_PSEL] = max(st[S_PSEL] - 1, 0)
    lo, hi, want = 0, W, -1
    if res == RES_WAY:
        if reserved:
            hi = conf[C_RES_WAYS]
        else:
            lo = conf[C_RES_WAYS]
    newpers = 0
    if res == RES_SETASIDE:
        # every miss fills a non-persisting way; a reserved one under quota makes it persisting
        want = 0
        newpers = 1 if (reserved and _count_pers(s, pers) < quota[s]) else 0
    v = _victim(s, lo, hi, want, policy, tags, age, rrpv, pers)
    if v < 0 and res == RES_SETASIDE and reserved:
        # every way persisting: a reserved miss replaces the victim among them (stays persisting)
        v = _victim(s, lo, hi, 1, policy, tags, age, rrpv, pers)
        newpers = 1
    if v < 0:  # no way this access may allocate in: bypass
        return nbytes
    tags[s, v] = tag
    if sectors:
        sect[s, v] = mask
    if res == RES_SETASIDE:
        pers[s, v] = newpers
    if policy == LRU:
        _touch(s, v, age)
    else:
        ins = RRPV_LONG
        brrip = policy == DRRIP and (lead == 2 or (lead == 0 and st[S_PSEL] >= PSEL_INIT))
        if brrip:
            st[S_BRRIP] += 1
            if st[S_BRRIP] % BRRIP_PERIOD != 0:
                ins = RRPV_MAX
        rrpv[s, v] = ins
    return nbytes


@njit(cache=True, inline="always", _nrt=False)
def access_lru_plain(s: int, tag: int, tags: np.ndarray, age: np.ndarray) -> int:
    """`access` for LRU, no sectors, no reservation (the common case, kept lean): the victim
    is the way of age ways - 1 (invalid ways are never touched, so they are the oldest)."""
    W = tags.shape[1]
    hit = -1
    for w in range(W):
        if tags[s, w] == tag:
            hit = w
    if hit >= 0:
        _touch(s, hit, age)
        return 0
    v = 0
    for w in range(W):
        if age[s, w] == W - 1:
            v = w
    for w in range(W):
        age[s, w] += 1
    age[s, v] = 0
    tags[s, v] = tag
    return LINE_BYTES


@njit(cache=True, inline="always", _nrt=False)
def line_of(tag: int, s: int, hmode: int, bits: int, smask: int) -> int:
    if hmode == HASH_MODULO or bits == 0:
        return (tag << bits) | s
    return (tag << bits) | (s ^ set_of(tag, hmode, bits, smask))


@njit(cache=True)
def lines_of(tags: np.ndarray, hmode: int, bits: int) -> np.ndarray:
    """Line ids of the tags (int64 [sets, ways], -1 where invalid)."""
    S, W = tags.shape
    out = np.full((S, W), -1, np.int64)
    for s in range(S):
        for w in range(W):
            if tags[s, w] >= 0:
                out[s, w] = line_of(np.int64(tags[s, w]), s, hmode, bits, S - 1)
    return out
