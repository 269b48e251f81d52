"""Compiled core of the synthetic generator: one (step, layer) top-k set at a time.

Each set S(t,l) is built from four candidate pools so that the two calibrated statistics are
hit by construction, not by luck:
  A = S(t-1,l) ∩ S(t,l-1)   kept and overlapping the layer below
  B = S(t-1,l) \\ S(t,l-1)   kept, not overlapping
  C = S(t,l-1) \\ S(t-1,l)   new to this layer, overlapping the layer below
  D = everything else        new and not overlapping: revisits of tokens this layer dropped
                             a few steps ago (lookback), or fresh draws from the position mix
|S \\ S(t-1,l)| = round(f_tl·n) (f_tl = f, or Beta-distributed around f for a realistic
spread) and |S ∩ S(t,l-1)| = round(o·n) (stochastic rounding), clamped
only where the pools or the context cannot allow them; such a shortfall (or excess) is carried
to the layer's next row (error diffusion), so the means still hit the targets.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def seed_rng(seed: int) -> None:
    np.random.seed(seed)


@njit(cache=True)
def _stoch_round(x: float) -> int:
    base = int(np.floor(x))
    return base + (1 if np.random.random() < x - base else 0)


@njit(cache=True)
def _take(
    pool: np.ndarray,
    n_pool: int,
    want: int,
    dst: np.ndarray,
    n_dst: int,
    in_cur: np.ndarray,
    rid: int,
) -> int:
    """Move `want` random tokens of pool[:n_pool] into dst (partial Fisher-Yates)."""
    for i in range(want):
        j = i + np.random.randint(n_pool - i)
        pool[i], pool[j] = pool[j], pool[i]
        dst[n_dst] = pool[i]
        in_cur[pool[i]] = rid
        n_dst += 1
    return n_dst


@njit(cache=True)
def _sinks_to_front(pool: np.ndarray, n_pool: int, sink_n: int) -> int:
    """Move tokens < sink_n to the front of pool[:n_pool]; returns how many."""
    s = 0
    for i in range(n_pool):
        if pool[i] < sink_n:
            pool[i], pool[s] = pool[s], pool[i]
            s += 1
    return s


@njit(cache=True)
def _fresh(ctx: int, sink_n: int, sink_share: float, recent_w: int, recent_share: float) -> int:
    u = np.random.random()
    if u < sink_share:
        return np.random.randint(min(sink_n, ctx))
    if u < sink_share + recent_share:
        w = min(recent_w, ctx)
        return ctx - 1 - np.random.randint(w)
    return np.random.randint(ctx)


@njit(cache=True)
def generate_chunk(
    out: np.ndarray,  # int32 [steps, layers, k] to fill (steps t0 .. t0+steps-1)
    t0: int,
    context_lens: np.ndarray,  # int64 [steps] of this chunk
    f: float,
    f_conc: float,  # > 0: per-(step, layer) fraction ~ Beta with this concentration, mean f
    o: float,
    fresh_share: float,
    geom_p: float,
    sink_n: int,
    sink_share: float,
    recent_w: int,
    recent_share: float,
    hist: np.ndarray,  # int32 [H, layers, k] ring of recent sets (state across chunks)
    last_step: np.ndarray,  # int32 [layers, max_ctx] last step each token was selected (-1 never)
    in_prev: np.ndarray,  # int64 [max_ctx] stamps
    in_below: np.ndarray,
    in_cur: np.ndarray,
    pool_a: np.ndarray,  # int32 [k] scratch
    pool_b: np.ndarray,
    pool_c: np.ndarray,
    row: np.ndarray,
    window: int,  # steps per working-set window (for the self-measured stats)
    stat_from: int,  # first step the stats count (pilots skip a burn-in)
    win_mark: np.ndarray,  # int32 [layers, max_ctx] last window id + 1 each token was counted in
    debt: np.ndarray,  # float64 [2, layers]: new-lookup and overlap owed by earlier rows
    stats: np.ndarray,  # int64 [3]: re-selections, their lookback sum, window-union size
) -> None:
    steps, layers, k = out.shape
    H = hist.shape[0]
    for s in range(steps):
        t = t0 + s
        ctx = int(context_lens[s])
        n = min(k, ctx)
        for layer in range(layers):
            rid = t * layers + layer + 1
            prev = hist[(t - 1) % H, layer]
            below = hist[t % H, layer - 1]
            n_prev = 0
            if t > 0:
                for i in range(k):
                    if prev[i] >= 0:
                        in_prev[prev[i]] = rid
                        n_prev += 1
            if layer > 0:
                for i in range(k):
                    if below[i] >= 0:
                        in_below[below[i]] = rid
            # Pools A, B, C.
            na = nb = nc = 0
            if t > 0:
                for i in range(k):
                    tok = prev[i]
                    if tok < 0:
                        continue
                    if layer > 0 and in_below[tok] == rid:
                        pool_a[na] = tok
                        na += 1
                    else:
                        pool_b[nb] = tok
                        nb += 1
            nc_seen = 0  # pool_c[:nc_seen]: tokens this layer selected < H steps ago
            if layer > 0:
                for i in range(k):
                    tok = below[i]
                    if tok >= 0 and not (t > 0 and in_prev[tok] == rid):
                        pool_c[nc] = tok
                        if last_step[layer, tok] >= 0 and t - last_step[layer, tok] < H:
                            pool_c[nc], pool_c[nc_seen] = pool_c[nc_seen], tok
                            nc_seen += 1
                        nc += 1
            # How many new, how many overlapping.
            if t == 0:
                n_new = n
            else:
                ft = f if f_conc <= 0 else np.random.beta(f * f_conc, (1.0 - f) * f_conc)
                want_new = ft * n + debt[0, layer]
                n_new = _stoch_round(max(want_new, 0.0))
                n_new = max(n_new, n - n_prev)
                n_new = min(n_new, ctx - n_prev, n)
                debt[0, layer] = min(max(want_new - n_new, -n), n)
            n_keep = n - n_new
            want_ov = o * n + debt[1, layer]
            ov = _stoch_round(max(want_ov, 0.0)) if layer > 0 else 0
            a_min = max(0, n_keep - nb)
            a_max = min(na, n_keep)
            c_max = min(nc, n_new)
            a = int(round(ov * n_keep / n)) if n > 0 else 0
            a = min(max(a, a_min), a_max)
            c = min(c_max, max(0, ov - a))
            if a + c < ov:
                a = min(a_max, ov - c)
            if a + c > ov:
                c = max(0, ov - a)
                a = max(a_min, ov - c)
            if layer > 0:  # a shortfall the pools could not cover is owed by later rows
                debt[1, layer] = min(max(want_ov - (a + c), -n), n)
            # Attention sinks, once selected, are kept first (real sinks are read every step).
            sa = _sinks_to_front(pool_a, na, sink_n)
            sb = _sinks_to_front(pool_b, nb, sink_n)
            m = 0
            m = _take(pool_a, sa, min(a, sa), row, m, in_cur, rid)
            m = _take(pool_a[sa:], na - sa, a - min(a, sa), row, m, in_cur, rid)
            keep_b = n_keep - a
            m = _take(pool_b, sb, min(keep_b, sb), row, m, in_cur, rid)
            m = _take(pool_b[sb:], nb - sb, keep_b - min(keep_b, sb), row, m, in_cur, rid)
            # Overlap picks revisit this layer's own past first, so layers share working sets.
            c_seen = min(c, nc_seen)
            m = _take(pool_c, nc_seen, c_seen, row, m, in_cur, rid)
            m = _take(pool_c[nc_seen:], nc - nc_seen, c - c_seen, row, m, in_cur, rid)
            # The rest: revisits (lookback) or fresh draws, never in prev, below or row.
            while m < n:
                tok = -1
                if np.random.random() >= fresh_share:
                    # A token whose latest selection was d steps ago, so lookback = d exactly;
                    # after 8 misses settle for any token of S(t-d) (lookback <= d).
                    for attempt in range(16):
                        d = np.random.geometric(geom_p) + 1
                        if d > t or d >= H:
                            continue
                        cand = hist[(t - d) % H, layer, np.random.randint(k)]
                        if cand < 0 or (attempt < 8 and last_step[layer, cand] != t - d):
                            continue
                        if in_prev[cand] == rid or in_below[cand] == rid or in_cur[cand] == rid:
                            continue
                        tok = cand
                        break
                if tok < 0:
                    for _ in range(32):
                        cand = _fresh(ctx, sink_n, sink_share, recent_w, recent_share)
                        if in_prev[cand] != rid and in_below[cand] != rid and in_cur[cand] != rid:
                            tok = cand
                            break
                if tok < 0:  # crowded context: scan, giving up non-overlap before newness
                    start = np.random.randint(ctx)
                    for strict in (True, False):
                        for j in range(ctx):
                            cand = (start + j) % ctx
                            if in_prev[cand] == rid or in_cur[cand] == rid:
                                continue
                            if strict and in_below[cand] == rid:
                                continue
                            tok = cand
                            break
                        if tok >= 0:
                            break
                row[m] = tok
                in_cur[tok] = rid
                m += 1
            cur = hist[t % H, layer]
            wid = (t - stat_from) // window + 1
            for i in range(k):
                cur[i] = row[i] if i < n else -1
                out[s, layer, i] = cur[i]
                if i < n:
                    tok = row[i]
                    if t < stat_from:  # burn-in, or stats off (stat_from > every step)
                        last_step[layer, tok] = t
                        continue
                    if last_step[layer, tok] >= 0:
                        stats[0] += 1
                        stats[1] += t - last_step[layer, tok]
                    last_step[layer, tok] = t
                    if win_mark[layer, tok] != wid:
                        win_mark[layer, tok] = wid
                        stats[2] += 1
