"""`hazard`: keep the tokens most likely to be re-selected soon, learned online from the trace.

Idea. A token's chance of being picked again by its (request, layer) at the next step depends
mostly on two things a controller can track beside the token's index key: its *streak* s (how
many consecutive steps it has been selected, up to its last selection) and its *age* a (steps
since that last selection: a = 1 right after it was picked). The policy estimates the hazard
h(s, a) = P(selected at the next opportunity | s, a) from the trace's own past (counts of
selections over exposures, a Laplace prior; one table shared by all layers: per-layer tables
measured no better), made non-increasing in age, and ranks every resident token by
P(re-selected within the next `horizon` opportunities) = 1 - prod_j (1 - h(s, a + j)). On a
miss with the region full, the lowest-ranked resident is evicted if it ranks below (1 - margin)
times the incoming token's rank (the incoming token: age 1, its new streak); otherwise the
incoming token BYPASSES the region (as MIN does). The margin is hysteresis: swapping two tokens
of nearly equal rank only churns (measured: +2 to +8 % of MIN's hits at small capacities).
margin = 0.15 for `hazard`, 0.10 for `hazard-plus` (tuned on the tune traces).
Below one step's footprint this keeps the persistent part of each selection (long streaks), as
keep-previous does but chosen by evidence; above it, it keeps recently selected tokens as LRU
does, ranked by how often their kind comes back.

`hazard-plus` splits each streak class by two more facts known when the token is selected: the
indexer's rank (slot order: in the first k/4 slots or not) and whether the layer below selected
the same token at the same step (adjacent layers share ~35-45 % of their picks, and a shared
pick persists more: on the bundled backbone 0.83 vs 0.60 re-selected at the next step):
STREAKS x 2 x 2 = 32 token classes. The layer-below flag needs no extra state: it is that
layer's last-selection stamp. (A bypassed layer below gives the flag 0.)

Online: every decision uses counts of steps already replayed and the current (step, layer)
selection only. Tokens of the (step, layer) being replayed are never victims (their gathers
are in flight: in hardware the whole top-k is known before they start).

Statistics, exact and cheap: for each (request, layer) a population table pop[s, a] counts the
tokens in state (s, a) (all tokens ever selected, resident or not; streak and age are capped at
STREAKS and AGES, the last bucket open-ended). When the row (step, layer, request) is replayed,
each selected token adds one "selection" to its previous state's bucket; every bucket's
population adds its size to the exposures; then the population ages by one step and the row's
tokens enter (new streak, age 1). h = (selections + 1) / (exposures + 2).

Eviction order: residents sit in one list per (region, class), ordered by their last selection;
the oldest of each list is its candidate (the priority never rises with age). Ages are fixed
within a row, so a class's candidate changes only when it is evicted, and a tournament tree over
the classes finds the lowest again in log2(classes) comparisons; a miss that bypasses costs one
comparison against it.

On the driver (driver.py): begin_row is the first pass over the row (statistics, metadata, the
row's residents to the front of their new class, each slot's residency noted for `find`), the
driver's gathers then admit the misses in slot order, and end_row ages the population and
refreshes the priorities.
The rows' own tokens are never victims by the policy's definition (RowRules.protect_row holds
always); with RowRules.no_bypass a full region evicts its lowest candidate whatever the incoming
token's rank.

Hardware cost: per cached token (slot): the key, the list links (or a timestamp for an
approximate oldest-of-class search) and its class (3 bits; 5 for hazard-plus). Per token of
the context and layer, beside its index key (which the indexer scans every step anyway): the
step of its last selection (8 bits, wrapping: only ages up to AGES matter) and its streak and
class (8 bits). One table of classes x AGES selection and exposure counters (128; 512 for
hazard-plus), the population tables (the same size per request and layer) and the priority
table, refreshed after each (step, layer, request) row: O(classes x AGES) work per row, against
k accesses. Work per access: one metadata read-modify-write (twice: the row is read once to
update the metadata and move resident tokens, once to gather), a priority lookup; per miss
with the region full, one comparison against the lowest candidate, and after an eviction
log2(classes) to find the next (3; 5 for hazard-plus). The controller must be
told the (step, layer) of each gather and the indexer's whole selection of the row before the
gathers start.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError
from dsacache.sim.policies import list_moves as moves
from dsacache.sim.policies.base import register
from dsacache.sim.policies.driver import DrivenPolicy, Hooks, Row, make_replay
from dsacache.trace.blocks import StepBlock

STREAKS = 8  # streak buckets: 1, 2, ..., 7, >= 8
AGES = 16  # age buckets: 1, 2, ..., 15, >= 16
HORIZON = 1  # opportunities ahead the priority looks (1 measured best on the tune traces)
MARGIN = 0.15  # hysteresis (relative): a swap between near-equals only churns


@njit(inline="always")
def priorities(
    sel: np.ndarray, exp: np.ndarray, prio: np.ndarray, tab: int, horizon: int, haz: np.ndarray
) -> None:
    """prio[tab, s, a] = P(selected within the next `horizon` opportunities | s, a), from the
    hazard h = (sel + 1) / (exp + 2) made non-increasing in age (a running minimum: an old
    bucket with few samples must not outrank a younger, well-measured one). haz: scratch of
    one float per age."""
    ns, na = sel.shape[1], sel.shape[2]
    for s in range(ns):
        for a in range(na):
            haz[a] = (sel[tab, s, a] + 1.0) / (exp[tab, s, a] + 2.0)
            if a > 0 and haz[a] > haz[a - 1]:
                haz[a] = haz[a - 1]
        for a in range(na):
            miss = 1.0
            for j in range(horizon):
                miss *= 1.0 - haz[min(a + j, na - 1)]
            prio[tab, s, a] = 1.0 - miss


# Node records (4 integers per node, one 16-byte record for int32): the list links (list_moves
# with width 4), and for a key node its last selection and streak | class << 8. One record per
# key keeps an access to one cache line (4 separate arrays made the replay ~3x slower).
PREV, NEXT, LAST, META = 0, 1, 2, 3
W = 4


def new_nodes(keys: int, lists: int, small: bool) -> np.ndarray:
    """The flat node records of `keys` keys (unlinked, never selected) followed by `lists`
    empty circular lists' sentinels."""
    node = moves.new_lists(keys, lists, small, W)
    node[META::W] = 0
    return node


class HazardState(NamedTuple):
    """node: records as above; lists, one per (region, class) (sentinel sent0 + p * classes +
    c; sentinel.prev the oldest; PREV == -1: not resident). LAST: the row number `now` of the
    key's last selection (-1: never); META: its streak then | its class << 8. pop [requests,
    layers, classes, AGES]; chosen / exposed / prio [tables, classes, AGES]."""

    node: np.ndarray
    sent0: int
    n_streak: int
    nq: int  # sub-classes per streak: (below flag x) rank buckets
    rank_of: np.ndarray  # int64 [k]: the rank bucket of each slot
    below: bool  # class feature: the layer below selected it at the same step
    tab_of: np.ndarray  # int64 [layers]: the table each layer learns in
    one_table: bool
    pop: np.ndarray
    chosen: np.ndarray  # selections
    exposed: np.ndarray  # exposures
    prio: np.ndarray
    horizon: int
    margin: float
    bypass: bool  # not RowRules.no_bypass
    period: int  # rows per step (layers x requests): a key's own row comes once per period
    inv_period: float
    layers: int
    requests: int
    xrow: np.ndarray  # scratch int64 [classes, AGES]: the row's selections per state
    nsel: np.ndarray  # scratch int64 [classes]: the row's tokens per new class
    cand: np.ndarray  # int64 [classes]: each class's eviction candidate (its oldest member)
    tree_p: np.ndarray  # float64 [2 leaves]: a tournament tree of the candidates' priorities
    tree_c: np.ndarray  # int64 [2 leaves]: ... and their classes (root: node 1)
    resident: np.ndarray  # scratch uint8 [k]: the slot's token was resident at the row's start
    haz: np.ndarray  # scratch float64 [AGES]


# g = (now, table, first sentinel of the region, candidates found in this row, valid slots of
# the row). Ages are fixed within a row and only the row's tokens join a class during it, so a
# class's candidate changes only when it is evicted: the tournament tree then gives the lowest
# of all after log2(classes) comparisons (a scan of every class per eviction cost hazard-plus's
# 32 classes more than the rest of a miss).


@njit(inline="always")
def _begin(st: HazardState, row: Row, sel: np.ndarray, u: int) -> tuple:
    """Pass 1: statistics and metadata (its new class) of every selected token."""
    node, xrow, nsel = st.node, st.xrow, st.nsel
    ns, na = st.chosen.shape[1], st.chosen.shape[2]
    nq = st.nq
    now = row.now
    tb = st.tab_of[row.layer]
    s0 = st.sent0 + row.p * ns
    below_on = st.below and row.layer > 0
    for b in range(ns):
        nsel[b] = 0
        for a in range(na):
            xrow[b, a] = 0
    valid = 0
    for s in range(sel.shape[0]):
        tok = sel[s]
        if tok < 0:
            continue
        valid += 1
        key = row.base + tok * row.stride
        i = W * key
        tl = node[i + LAST]
        meta = node[i + META]  # 0 for a token never selected
        seen = tl >= 0
        # its own rows are whole steps apart, so d / period is exact in floating point (no
        # division; branch-free: new and old tokens interleave at random)
        a = max(int((now - tl) * st.inv_period + 0.5), 1)
        xrow[meta >> 8, min(a, na) - 1] += 1 if seen else 0
        sn = min((meta & 255) + 1, 255) if seen and a == 1 else 1
        b = (min(sn, st.n_streak) - 1) * nq + st.rank_of[s]
        if below_on:  # the layer below selected it too, at this step (token-major keys)
            b += (nq // 2) * (node[i - W + LAST] == now - st.requests)
        node[i + LAST] = now
        node[i + META] = sn | (b << 8)
        nsel[b] += 1
        if node[i + PREV] >= 0:  # resident: a hit (never evicted in its row), to its class's front
            st.resident[s] = 1
            moves.unlink(node, key, W)
            moves.push_front(node, key, s0 + b, W)
        else:
            st.resident[s] = 0
    return now, tb, s0, False, valid


@njit(inline="always")
def _find(st: HazardState, key: int, g: tuple, s: int) -> bool:
    return st.resident[s] != 0  # as found in pass 1 (a row's tokens are distinct)


@njit(inline="always")
def _hit(st: HazardState, key: int, g: tuple, i: int, s: int) -> tuple:
    return g  # moved in pass 1


@njit(inline="always")
def _candidate(st: HazardState, vb: int, v: int, vh: int, now: int, tb: int) -> float:
    """Class vb's (sentinel vh) candidate: v, its oldest member, unless this row selected it
    (LAST == now: the row's gathers are in flight; the row's tokens are the class's newest, so
    then every member is the row's, and it has none: -1). Returns its priority (none: inf)."""
    node = st.node
    if v == vh or node[W * v + LAST] == now:
        st.cand[vb] = -1
        return np.inf
    tv = node[W * v + LAST]
    av = min((now - tv) // st.period + 1, st.chosen.shape[2])
    tv_tab = tb if st.one_table else st.tab_of[(tv // st.requests) % st.layers]
    st.cand[vb] = v
    return st.prio[tv_tab, vb, av - 1]


@njit(inline="always")
def _play(tree_p: np.ndarray, tree_c: np.ndarray, j: int) -> None:
    """Node j of the tournament tree takes the lower of its children (the left one on a tie:
    the first class of the lowest rank wins, as a scan would pick)."""
    left, right = 2 * j, 2 * j + 1
    win = right if tree_p[right] < tree_p[left] else left
    tree_p[j] = tree_p[win]
    tree_c[j] = tree_c[win]


@njit(inline="always")
def _all_candidates(st: HazardState, now: int, tb: int, s0: int) -> None:
    """Every class's candidate, and the tree over them (once per row, at its first full miss)."""
    tree_p, tree_c = st.tree_p, st.tree_c
    n = tree_p.shape[0] // 2
    for vb in range(n):
        if vb < st.cand.shape[0]:
            vh = s0 + vb
            tree_p[n + vb] = _candidate(st, vb, st.node[W * vh + PREV], vh, now, tb)
        else:
            tree_p[n + vb] = np.inf
        tree_c[n + vb] = vb
    for j in range(n - 1, 0, -1):
        _play(tree_p, tree_c, j)


@njit(inline="always")
def _admit(st: HazardState, key: int, g: tuple, i: int, s: int, u: int, full: bool) -> tuple:
    """Pass 2, one miss: evict the lowest candidate if it ranks below (1 - margin) x the
    incoming token (always, with no_bypass), else bypass; link the token at its class's front."""
    now, tb, s0, ready, valid = g
    node = st.node
    b = node[W * key + META] >> 8
    if full:
        tree_p, tree_c = st.tree_p, st.tree_c
        if not ready:
            _all_candidates(st, now, tb, s0)
            ready = True
        low = tree_p[1]
        if low == np.inf or (st.bypass and not low < st.prio[tb, b, 0] * (1.0 - st.margin)):
            return (now, tb, s0, ready, valid), False
        low_c = tree_c[1]
        victim = st.cand[low_c]
        nxt = node[W * victim + PREV]
        moves.unlink(node, victim, W)
        node[W * victim + PREV] = -1
        j = tree_p.shape[0] // 2 + low_c  # the class's next oldest, up the tree
        tree_p[j] = _candidate(st, low_c, nxt, s0 + low_c, now, tb)
        j >>= 1
        while j > 0:
            _play(tree_p, tree_c, j)
            j >>= 1
    moves.push_front(node, key, s0 + b, W)
    return (now, tb, s0, ready, valid), True


@njit(inline="always")
def _end(st: HazardState, row: Row, sel: np.ndarray, g: tuple, u: int) -> None:
    """Exposures (not for an empty row: a finished request's tokens would dilute the table),
    then the population ages one step, as the row time does; the priorities follow."""
    tb, valid = g[1], g[4]
    pop, xrow, nsel = st.pop[row.r, row.layer], st.xrow, st.nsel
    ns, na = st.chosen.shape[1], st.chosen.shape[2]
    for sb in range(ns):
        if valid > 0:
            for a in range(na):
                st.exposed[tb, sb, a] += pop[sb, a]
                st.chosen[tb, sb, a] += xrow[sb, a]
        tail = pop[sb, na - 1] - xrow[sb, na - 1]
        for a in range(na - 1, 0, -1):
            pop[sb, a] = pop[sb, a - 1] - xrow[sb, a - 1]
        pop[sb, na - 1] += tail
        pop[sb, 0] = nsel[sb]
    if valid > 0:  # the tables changed
        priorities(st.chosen, st.exposed, st.prio, tb, st.horizon, st.haz)


# hazard-plus: token-major keys (a token's layers are neighbours: the layer below's record shares
# the cache line); hazard: layer-major (a row's keys are closer together; measured faster above
# one footprint)
_HOOKS = Hooks(_begin, _find, _hit, _admit, _end, reads_row=True)
hazard_replay = make_replay("hazard", _HOOKS)
hazard_below_replay = make_replay("hazard_below", _HOOKS._replace(token_major=True))


class Hazard(DrivenPolicy):
    """Shared body of `hazard` and `hazard-plus` (they differ in the token classes)."""

    horizon: int = HORIZON
    streaks: int = STREAKS
    ages: int = AGES
    rank_edges: tuple[float, ...] = ()  # slot-order (indexer rank) buckets, fractions of k
    margin: float = MARGIN  # evict only a resident ranked below (1 - margin) x the incoming
    use_below: bool = False  # class feature: the layer below selected it at the same step
    per_layer_tables: bool = False  # one table per layer (measured: no better than one)
    kernel = hazard_replay

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        cls.kernel = hazard_below_replay if cls.use_below else hazard_replay

    def build_state(self) -> None:
        n, nl, k = self.blocks.keys.size, self.blocks.layers, self.blocks.k
        if (self.blocks.steps + 1) * nl * self.blocks.requests >= 2**31:
            raise DsacacheError(f"{self.name}: steps x layers x requests must stay below 2**31")
        edges = np.array([round(f * k) for f in self.rank_edges], np.int64)
        self.rank_of = np.searchsorted(edges, np.arange(k), side="right").astype(np.int64)
        # classes: streak x (below flag x) rank bucket
        nq = (len(edges) + 1) * (2 if self.use_below else 1)
        nc, na = self.streaks * nq, self.ages
        nodes = n + self.n_regions * nc
        self.nq = nq
        self.sent0 = n
        self.node = new_nodes(n, self.n_regions * nc, nodes < 2**31 and not self.wide)
        tables = nl if self.per_layer_tables else 1
        self.tab_of = np.arange(nl, dtype=np.int64) % tables
        self.pop = np.zeros((self.blocks.requests, nl, nc, na), np.int64)
        self.sel = np.zeros((tables, nc, na), np.float64)
        self.exp = np.zeros((tables, nc, na), np.float64)
        self.prio = np.zeros((tables, nc, na), np.float64)
        self._haz = np.zeros(na, np.float64)
        for tb in range(tables):
            priorities(self.sel, self.exp, self.prio, tb, self.horizon, self._haz)
        leaves = 1 << (nc - 1).bit_length()  # classes, rounded up to a power of two
        self._scratch = (
            np.zeros((nc, na), np.int64),
            np.zeros(nc, np.int64),
            np.full(nc, -1, np.int64),
            np.full(2 * leaves, np.inf),
            np.zeros(2 * leaves, np.int64),
            np.zeros(max(k, 1), np.uint8),
        )

    def state(self, block: StepBlock) -> HazardState:
        nl, nr = self.blocks.layers, self.blocks.requests
        xrow, nsel, cand, tree_p, tree_c, resident = self._scratch
        return HazardState(
            self.node, self.sent0, self.streaks, self.nq, self.rank_of, self.use_below,
            self.tab_of, bool((self.tab_of == 0).all()), self.pop, self.sel, self.exp,
            self.prio, self.horizon, self.margin, not self.rules.no_bypass, nl * nr,
            1.0 / (nl * nr), nl, nr, xrow, nsel, cand, tree_p, tree_c, resident, self._haz,
        )  # fmt: skip


@register
class HazardPolicy(Hazard):
    name = "hazard"
    online = True
    prefetches = False
    summary = "online: keeps the tokens most likely re-selected (learned: streak, age); bypasses"


@register
class HazardPlus(Hazard):
    name = "hazard-plus"
    online = True
    prefetches = False
    summary = "hazard with two more features: the indexer's rank and the layer below's pick"
    rank_edges = (0.25,)
    use_below = True
    margin = 0.10
