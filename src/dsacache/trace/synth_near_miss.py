"""Near-miss rows for synthetic traces: a MODEL of what the indexer ranked just below the top-k.

Nothing here is measured. A real indexer's near-miss tokens (ranks k+1 .. k+m) come from its
scores; a synthetic trace has no scores, so `near_miss_for` invents plausible rows. For each
(step t, layer l) of each request it picks m tokens, none in S(t, l) (the top-k row) and all
distinct and below the step's context length:

- about `hit_share` of them (round(hit_share * m), fewer when there are not enough) are drawn
  uniformly from S(t+1, l) \\ S(t, l): tokens the indexer ranked just below the top-k and that
  do get selected at the next step. This is what makes near-miss information worth having;
  hit_share sets how good a predictor the near-miss list is (the last step has no next step,
  so none of its tokens are of this kind);
- the rest are drawn uniformly from the other tokens of the context.

The row lists the "next-step" tokens first, then the others; slots with nothing left to draw
(tiny contexts) are -1. Deterministic for a given seed (request r uses seed + r).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError
from dsacache.trace.model import Trace


@njit(cache=True)
def _seed(seed: int) -> None:
    np.random.seed(seed)


@njit(cache=True)
def near_miss_rows(
    idx: np.ndarray,
    ctx: np.ndarray,
    n_hit: int,
    out: np.ndarray,
    mark: np.ndarray,
    cand: np.ndarray,
    pool: np.ndarray,
) -> None:
    """Fill out [steps, layers, m] for one request's idx [steps, layers, k] (see module doc).

    mark: int64 scratch >= the largest context, all zero on entry; cand: int32 [k];
    pool: int32 scratch >= the largest context.
    """
    steps, layers, k = idx.shape
    m = out.shape[2]
    stamp = 0
    for t in range(steps):
        c = ctx[t]
        for layer in range(layers):
            stamp += 1
            taken = 0
            for s in range(k):
                tok = idx[t, layer, s]
                if tok >= 0:
                    mark[tok] = stamp
                    taken += 1
            j = 0
            if t + 1 < steps and n_hit > 0:
                na = 0
                for s in range(k):
                    tok = idx[t + 1, layer, s]
                    if 0 <= tok < c and mark[tok] != stamp:
                        cand[na] = tok
                        na += 1
                want = min(n_hit, na, m)
                for i in range(want):  # partial Fisher-Yates
                    q = i + np.random.randint(na - i)
                    cand[i], cand[q] = cand[q], cand[i]
                    out[t, layer, j] = cand[i]
                    mark[cand[i]] = stamp
                    j += 1
                    taken += 1
            free = c - taken
            need = min(m - j, free)
            if need > 0 and 4 * free >= c:  # rejection: at least 1/4 of the draws land
                got = 0
                while got < need:
                    x = np.random.randint(c)
                    if mark[x] != stamp:
                        mark[x] = stamp
                        out[t, layer, j] = x
                        j += 1
                        got += 1
            elif need > 0:  # few tokens left: list them and draw without replacement
                nf = 0
                for x in range(c):
                    if mark[x] != stamp:
                        pool[nf] = x
                        nf += 1
                for i in range(need):
                    q = i + np.random.randint(nf - i)
                    pool[i], pool[q] = pool[q], pool[i]
                    mark[pool[i]] = stamp
                    out[t, layer, j] = pool[i]
                    j += 1
            for s in range(j, m):
                out[t, layer, s] = -1


def near_miss_for(trace: Trace, m: int, hit_share: float = 0.5, seed: int = 0) -> list[np.ndarray]:
    """Model near-miss rows (int32 [steps, layers, m] per request) for `trace` (see module doc).

    The trace is read whole (lazy arrays too). Build a trace carrying them with
    Trace([RequestTrace(r.indices, r.context_lens, near) ...], trace.geometry).
    """
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 0:
        raise DsacacheError(f"near-miss width m must be an integer >= 0, got {m!r}")
    if not 0.0 <= float(hit_share) <= 1.0:
        raise DsacacheError(f"hit_share must be in [0, 1], got {hit_share}")
    n_hit = int(np.floor(float(hit_share) * int(m) + 0.5))
    out = []
    for r, req in enumerate(trace.requests):
        idx = np.ascontiguousarray(np.asarray(req.indices[:]), dtype=np.int32)
        ctx = np.ascontiguousarray(req.context_lens, dtype=np.int64)
        steps, layers, k = idx.shape
        near = np.full((steps, layers, int(m)), -1, np.int32)
        if steps and m:
            size = max(int(ctx.max()), 1)
            _seed(int(seed) + r)
            near_miss_rows(
                idx,
                ctx,
                n_hit,
                near,
                np.zeros(size, np.int64),
                np.empty(max(k, 1), np.int32),
                np.empty(size, np.int32),
            )
        out.append(near)
    return out
