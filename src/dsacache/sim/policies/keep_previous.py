"""`keep-previous`: the region holds exactly the previous step's top-k (the paper's §5.3 baseline).

An access of token x by (request r, layer l) at step t hits iff x was kept for (r, l) at step
t-1; after step t's row is read, the region holds that row's selection instead (whatever it held
for (r, l) before is dropped). Nothing else is ever cached.

Capacity rule, per step: region p serves L_p layers (those the partition maps to it); at step t
it is shared by the R_t requests that still have a step t (requests that finished earlier hold
nothing and take no share; a region of one request's own is shared by none), so each
(request, layer) of it may keep q_t = floor(capacity[p] / (L_p * R_t)) tokens
(= floor(floor(capacity[p] / L_p) / R_t)). When q_t >= k the whole selection is kept; otherwise
each (request, layer) keeps only the first q_t *valid* entries of its row in slot order (slot
order = the indexer's rank order; -1 slots hold nothing and use no quota). A layer outside every
region, or a region of capacity 0, has q = 0: every access misses.

It checks a row against the previous step's kept tokens while it keeps the current row's, so it
holds up to twice its capacity (max_occupancy_factor = 2): MIN bounds it at twice the capacity.
It never evicts a token of the row being read and never bypasses one that fits its quota, so the
row rules hold whenever a region holds a row.

State: held[key] = the last step at which the key was kept (-2: never), one int32 per key.
The driver (driver.py) walks the accesses; the hooks below look up and keep.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from dsacache.sim.partition import Partition
from dsacache.sim.policies.base import register
from dsacache.sim.policies.driver import DrivenPolicy, Hooks, Row, make_replay, no_row
from dsacache.trace.blocks import StepBlock

NEVER = -2


class KeepState(NamedTuple):
    held: np.ndarray  # int32 [keys]: the last step the key was kept at
    share: np.ndarray  # int64 [regions]: floor(capacity / layers of the region)
    active: np.ndarray  # int64 [block steps]: requests that have the step
    shared: bool  # the regions are shared by every request (not one copy per request)


# g = (quota left in this row, step)


@njit(inline="always")
def _begin(st: KeepState, row: Row, sel: np.ndarray, u: int) -> tuple:
    q = st.share[row.p]
    if st.shared:
        q //= max(st.active[row.t], 1)
    return q, row.step


@njit(inline="always")
def _find(st: KeepState, key: int, g: tuple, s: int) -> bool:
    return st.held[key] == g[1] - 1


@njit(inline="always")
def _keep(st: KeepState, key: int, g: tuple, i: int, s: int) -> tuple:
    if g[0] > 0:  # tokens of one row are distinct: no lookup of this row sees this write
        st.held[key] = g[1]
        return g[0] - 1, g[1]
    return g


@njit(inline="always")
def _keep_miss(st: KeepState, key: int, g: tuple, i: int, s: int, u: int, full: bool) -> tuple:
    return _keep(st, key, g, i, s), True


keep_previous_replay = make_replay(
    "keep_previous", Hooks(_begin, _find, _keep, _keep_miss, no_row, same_update=True)
)


def layers_per_region(partition: Partition) -> np.ndarray:
    """L_p: the layers mapped to each region of one copy (int64 [partition.regions])."""
    of = partition.of_layer
    return np.bincount(of[of >= 0], minlength=partition.regions).astype(np.int64)


def active_requests(request_steps: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Requests that have step t, for t in [start, stop) (int64 [stop - start])."""
    t = np.arange(start, stop, dtype=np.int64)
    return (np.asarray(request_steps, np.int64)[None, :] > t[:, None]).sum(axis=1).astype(np.int64)


@register
class KeepPrevious(DrivenPolicy):
    name = "keep-previous"
    summary = "holds exactly the previous step's top-k of each (request, layer) (paper §5.3)"
    online = True
    prefetches = False
    max_occupancy_factor = 2
    kernel = keep_previous_replay

    def build_state(self) -> None:
        per = np.maximum(layers_per_region(self.partition), 1)
        copies = self.n_regions // max(self.partition.regions, 1)
        self.share = self.capacity // np.tile(per, copies)
        self.request_steps = np.array([r.steps for r in self.blocks.trace.requests], np.int64)
        self.held = np.full(self.blocks.keys.size, NEVER, dtype=np.int32)

    def state(self, block: StepBlock) -> KeepState:
        active = active_requests(self.request_steps, block.start, block.stop)
        return KeepState(self.held, self.share, active, not self.partition.per_request)
