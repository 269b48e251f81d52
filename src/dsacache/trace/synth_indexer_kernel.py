"""Compiled core of the indexer-model generator: scores of one step -> its exact top-k.

The per-head dot products come from one BLAS matrix product per block of steps
(synth_indexer.py); this kernel folds them into the DeepSeek-V3.2 index score
I(t, s) = sum_j w(t, j) * relu(q(t, j) . k(s)) over the step's context, and picks the top-k.

Top-k rule (exact, and what the tests' brute-force reference does): the k largest scores; among
equal scores the lower token index wins; slots are in rank order (highest score first), as a
real indexer hands them to the sparse attention; a context shorter than k leaves slots -1
(score NaN).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def relu_weighted_sum(
    dots: np.ndarray, w: np.ndarray, bias: float, ctx: int, out: np.ndarray
) -> None:
    """out[:ctx] = sum_j w[j] * max(dots[j, :ctx] - bias, 0) (dots float32 [heads, >= ctx])."""
    for n in range(ctx):
        out[n] = 0.0
    for j in range(dots.shape[0]):
        wj = w[j]
        for n in range(ctx):
            v = dots[j, n] - bias
            if v > 0.0:
                out[n] += wj * v


@njit(cache=True, nogil=True)
def topk_row(
    score: np.ndarray,  # float32 [>= ctx]
    ctx: int,
    idx_out: np.ndarray,  # int32 [k]
    score_out: np.ndarray,  # float32 [k]
    scratch: np.ndarray,  # float32 [>= ctx]
    cand: np.ndarray,  # int64 [>= k]
) -> None:
    """The exact top-k of score[:ctx] into idx_out / score_out, rank order (see module doc)."""
    k = idx_out.shape[0]
    m = 0
    if ctx <= k:
        for n in range(ctx):
            cand[m] = n
            m += 1
    else:
        for n in range(ctx):
            scratch[n] = score[n]
        part = np.partition(scratch[:ctx], ctx - k)
        thr = part[ctx - k]  # the k-th largest
        for n in range(ctx):
            if score[n] > thr:
                cand[m] = n
                m += 1
        for n in range(ctx):
            if m == k:
                break
            if score[n] == thr:
                cand[m] = n
                m += 1
    neg = np.empty(m, dtype=np.float32)
    for i in range(m):
        neg[i] = -score[cand[i]]
    # Stable sort: equal scores keep ascending token order (candidates were collected so).
    order = np.argsort(neg, kind="mergesort")
    for i in range(m):
        c = cand[order[i]]
        idx_out[i] = c
        score_out[i] = score[c]
    for i in range(m, k):
        idx_out[i] = -1
        score_out[i] = np.nan


@njit(cache=True, nogil=True)
def select_block(
    dots: np.ndarray,  # float32 [steps, heads, n]: q(t, j) . k(s) for s < n
    weights: np.ndarray,  # float32 [steps, heads]
    bias: float,  # subtracted from every dot product before the ReLU
    ctx: np.ndarray,  # int64 [steps]: context of each step (<= n)
    idx_out: np.ndarray,  # int32 [steps, k]
    score_out: np.ndarray,  # float32 [steps, k]
) -> None:
    """Score and select every step of a block (one row of idx_out / score_out per step)."""
    n = dots.shape[2]
    total = np.empty(n, dtype=np.float32)
    scratch = np.empty(n, dtype=np.float32)
    cand = np.empty(idx_out.shape[1], dtype=np.int64)
    for b in range(dots.shape[0]):
        c = ctx[b]
        relu_weighted_sum(dots[b], weights[b], bias, c, total)
        topk_row(total, c, idx_out[b], score_out[b], scratch, cand)
