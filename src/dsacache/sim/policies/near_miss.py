"""`near-miss`: token LRU that also prefetches the tokens the indexer ranked just below the top-k.

Beyond the paper. The region is an exact token LRU (as `token-lru`); per (step, layer,
request) group, in access order:

- source `trace` (the trace carries near-miss indices; the driver passes block.near_miss,
  int32 [steps, layers, requests, m]): first the group's top-k demand accesses (LRU hits and
  misses exactly as token-lru), then the group's near-miss tokens are prefetched: each one not
  resident is inserted at the MRU end (evicting the LRU token when the region is full) and
  counted in Counters.prefetches (an HBM read no access asked for); a resident one is left
  where it is (not touched). They are meant for the following steps. A request without
  near-miss rows in such a trace gets no prefetches.
- source `layer-below`: a causal predictor (needs no near-miss rows).
  Right before layer l's demand accesses of a (step, request), the tokens layer l-1 selected
  at the same step and request are prefetched for layer l the same way (they are known by
  then: layer l-1's indexer has already run). Layer 0 has no layer below: nothing prefetched.

`source` (instance attribute) says which one is used. simulate() sets it from the run's
explicit choice (SimConfig.near_miss_source, through `configure`); built directly, the policy
defaults to `trace` when the trace carries near-miss rows, else `layer-below`. A trace with
near-miss arrays of width 0 (m = 0) under source `trace` has nothing to prefetch: exactly
token-lru. Prefetches count tokens actually inserted: none into a region of capacity 0 or for
a layer that bypasses the reservation (of_layer == -1, every access a miss). Demand counters
(hits, misses) never include prefetches.

On the driver: token-lru's hooks (lru.py) plus a `prefetch` hook that hands the driver the row
to bring in before the gathers (the layer below's) or after them (the near-miss row).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError
from dsacache.sim.policies.base import Setting, register
from dsacache.sim.policies.driver import make_replay
from dsacache.sim.policies.lru import LIST_HOOKS, SLOTTED, ListPolicy, ListState
from dsacache.trace.blocks import StepBlock
from dsacache.trace.model import Trace

SOURCES = ("trace", "layer-below")
SOURCE_TRACE = 0
SOURCE_LAYER_BELOW = 1


@njit(inline="always")
def _prefetch(
    st: ListState, block: np.ndarray, near: np.ndarray, t: int, layer: int, r: int, after: bool
) -> np.ndarray:
    source, empty = st.extra
    if after:
        if source == SOURCE_TRACE and near.shape[3] > 0:
            return near[t, layer, r]
    elif source == SOURCE_LAYER_BELOW and layer > 0:
        return block[t, layer - 1, r]
    return empty


near_miss_replay = make_replay(
    "near_miss", LIST_HOOKS._replace(prefetch=_prefetch, variant=SLOTTED)
)


def has_rows(trace: Trace) -> bool:
    """Whether any request of `trace` carries near-miss rows (source `trace` needs them)."""
    return any(r.near_miss is not None for r in trace.requests)


@register
class NearMiss(ListPolicy):
    name = "near-miss"
    summary = (
        "token LRU that prefetches the indexer's near-miss tokens (trace), else what the "
        "layer below selected at the same step"
    )
    online = True  # the trace's near-miss rows are the indexer's output at that step
    prefetches = True
    uses_near_miss = True
    emits_hit_mask = False  # the LLC's token region in front does not model its prefetches
    settings = (Setting("near_miss_source", SOURCES, "--near-miss-source", "its prefetch source"),)
    index_field = "indices/near_miss"
    kernel = near_miss_replay

    def build_state(self) -> None:
        super().build_state()
        self.source = "trace" if has_rows(self.blocks.trace) else "layer-below"
        self._empty = np.zeros(0, np.int32)

    def configure(self, cfg: Any) -> None:
        self.set_source(str(cfg.near_miss_source))

    def set_source(self, source: str) -> None:
        """Use `source` (trace | layer-below); `trace` needs near-miss rows in the trace."""
        if source not in SOURCES:
            raise DsacacheError(f"unknown near-miss source {source!r} (trace, layer-below)")
        trace = self.blocks.trace
        if source == "trace" and not has_rows(trace):
            raise DsacacheError(
                f"{trace.source}: near-miss source 'trace' needs near-miss rows "
                "(dsacache record --near-miss M); this trace has none (use layer-below)"
            )
        self.source = source

    def extra(self, block: StepBlock) -> tuple:
        return SOURCE_TRACE if self.source == "trace" else SOURCE_LAYER_BELOW, self._empty
