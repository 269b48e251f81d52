"""Small compiled pieces the policy kernels share, inlined into them at numba IR level.

`inline="always"` makes numba paste the helper's body into the caller before optimisation, so
the kernels pay no call (nor reference counting of the array arguments) for it.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def count_bypassed(block: np.ndarray, t: int, layer: int, max_ctx: np.ndarray) -> int:
    """Valid slots of row (t, layer) over every request: the misses of a layer that bypasses
    the region. Returns -1 when an index is >= its request's context (out of range)."""
    nr, k = block.shape[2], block.shape[3]
    m = 0
    for r in range(nr):
        lim = max_ctx[r]
        for s in range(k):
            tok = block[t, layer, r, s]
            if tok >= 0:
                if tok >= lim:
                    return -1
                m += 1
    return m
