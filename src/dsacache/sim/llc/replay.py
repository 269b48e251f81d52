"""Replay runs of lines through the LLC state: `run_runs`, the engine's one entry point."""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.sim.llc.kernels import (
    C_BITS,
    C_HASH,
    C_POLICY,
    C_RES,
    C_SECTORS,
    FULL,
    K_ACCESSES,
    K_BYTES,
    K_HITS,
    K_MISSES,
    LRU,
    RES_NONE,
    RES_SETASIDE,
    SRRIP,
    access,
    access_lru_plain,
    as_conf,
    set_of,
)
from dsacache.sim.llc.sweep import sweep_lru, sweep_srrip
from dsacache.units import LINE_BYTES


@njit(cache=True, _nrt=False)
def run_runs(
    first: np.ndarray,
    count: np.ndarray,
    cls: np.ndarray,
    m0: np.ndarray,
    m1: np.ndarray,
    step_start: np.ndarray,
    tags: np.ndarray,
    age: np.ndarray,
    rrpv: np.ndarray,
    sect: np.ndarray,
    pers: np.ndarray,
    quota: np.ndarray,
    cfg: np.ndarray,
    res_cls: np.ndarray,
    st: np.ndarray,
    counters: np.ndarray,
    blocking_cls: int,
    blocking: np.ndarray,
    shortcut_min: int,
    scratch: np.ndarray,
) -> None:
    """Replay runs in order. counters[class] += (accesses, hits, misses, HBM bytes);
    blocking[t] += misses of class `blocking_cls` in step t. Runs of at least shortcut_min
    (> 0) lines, and at least one line per set, take `sweep_lru` under LRU and `sweep_srrip`
    under SRRIP (DRRIP always replays: its PSEL couples the sets). scratch: int64
    [3, ways] work space (no allocation here: compiled without the refcounting runtime)."""
    S = tags.shape[0]
    smask = S - 1
    hmode, bits = cfg[C_HASH], cfg[C_BITS]
    conf = as_conf(cfg)
    lru = cfg[C_POLICY] == LRU
    srrip = cfg[C_POLICY] == SRRIP
    setaside = cfg[C_RES] == RES_SETASIDE
    plain = lru and cfg[C_RES] == RES_NONE and cfg[C_SECTORS] == 0
    for t in range(step_start.shape[0] - 1):
        for i in range(step_start[t], step_start[t + 1]):
            f = first[i]
            n = count[i]
            c = cls[i]
            reserved = res_cls[c]
            sweep = (
                shortcut_min > 0 and n >= shortcut_min and n >= S and not (setaside and reserved)
            )
            if sweep and lru:
                hits, misses, nbytes = sweep_lru(
                    f, n, np.int64(m0[i]), np.int64(m1[i]), reserved,
                    tags, age, rrpv, sect, pers, quota, cfg, st, scratch,
                )  # fmt: skip
            elif sweep and srrip:
                hits, misses, nbytes = sweep_srrip(
                    f, n, np.int64(m0[i]), np.int64(m1[i]), reserved,
                    tags, age, rrpv, sect, pers, quota, cfg, st, scratch,
                )  # fmt: skip
            elif plain:
                hits = 0
                for j in range(n):
                    y = f + j
                    if access_lru_plain(set_of(y, hmode, bits, smask), y >> bits, tags, age) == 0:
                        hits += 1
                misses = n - hits
                nbytes = misses * LINE_BYTES
            else:
                hits = 0
                misses = 0
                nbytes = 0
                for j in range(n):
                    y = f + j
                    mk = FULL
                    if j == 0:
                        mk = np.int64(m0[i])
                    elif j == n - 1:
                        mk = np.int64(m1[i])
                    b = access(
                        set_of(y, hmode, bits, smask),
                        y >> bits,
                        mk,
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
            counters[c, K_ACCESSES] += n
            counters[c, K_HITS] += hits
            counters[c, K_MISSES] += misses
            counters[c, K_BYTES] += nbytes
            if c == blocking_cls:
                blocking[t] += misses
