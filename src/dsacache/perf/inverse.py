"""The step model run backwards: which hit rate, or which MLP, gives a wanted slowdown.

Both answers come from the forward model (model.py) by bisection, so they hold for either
branch of the gather phase (latency- or bandwidth-bound) and need no closed form:

- the slowdown falls monotonically as the gather hit rate h rises (1 at h = 1), so the h of a
  slowdown S is unique: `hit_rate_for_slowdown`;
- the all-miss slowdown S(0) falls as the gather loads in flight (MLP) rise, so the MLP that
  makes S(0) a given value is unique: `mlp_for_slowdown` (it calibrates how much of the step
  the gathers take; the shape of S over reserved capacity then comes from the hit rates alone).

When every term but the gathers is fixed and the gathers are latency-bound, S(h) - 1 =
(1 - h) (S(0) - 1): the hit rate of S is 1 - (S - 1) / (S(0) - 1), which the bisection
reproduces (docs/perf-model.md works the paper's Table 4 this way).
"""

from __future__ import annotations

import math
from dataclasses import replace

from dsacache.errors import DsacacheError
from dsacache.perf.model import Workload, model
from dsacache.perf.presets import PerfParams

_ITERATIONS = 200  # bisection halvings: far below float resolution on [0, 1]


def slowdown_at(p: PerfParams, w: Workload, hit_rate: float) -> float:
    """The modelled slowdown of `w` with its gather hit rate set to `hit_rate`."""
    return model(p, w.with_(hit_rate=hit_rate)).slowdown


def hit_rate_for_slowdown(p: PerfParams, w: Workload, slowdown: float) -> float | None:
    """The gather hit rate at which `w` runs `slowdown` x its ideal step; None when even
    h = 0 is faster than that (the gathers are too small a part of the step to slow it so)."""
    if not math.isfinite(slowdown) or slowdown < 1.0:
        raise DsacacheError(f"slowdown must be a finite number >= 1, got {slowdown!r}")
    s0 = slowdown_at(p, w, 0.0)
    if slowdown > s0 * (1 + 1e-12):
        return None
    if slowdown >= s0:
        return 0.0
    lo, hi = 0.0, 1.0  # S(lo) >= slowdown >= S(hi)
    for _ in range(_ITERATIONS):
        mid = 0.5 * (lo + hi)
        if slowdown_at(p, w, mid) >= slowdown:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def mlp_for_slowdown(p: PerfParams, w: Workload, slowdown: float) -> float | None:
    """The gather loads in flight (MLP) at which `w` with no gather hits runs `slowdown` x
    its ideal step; None when no MLP gets there (the streaming terms cap S(0) below it, or
    the bandwidth the misses need floors it above it)."""
    if not math.isfinite(slowdown) or slowdown <= 1.0:
        raise DsacacheError(f"slowdown must be a finite number > 1, got {slowdown!r}")

    def s0(mlp: float) -> float:
        return slowdown_at(replace(p, mlp_lines=mlp), w, 0.0)

    lo, hi = 1e-9, 1e15  # S(0) falls as MLP rises: s0(lo) is the largest reachable
    if not s0(hi) <= slowdown <= s0(lo):
        return None
    for _ in range(_ITERATIONS):
        mid = math.sqrt(lo * hi)  # bisect in log space: MLP spans many decades
        if s0(mid) >= slowdown:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-13:
            break
    return math.sqrt(lo * hi)
