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
within a row, so the lowest candidate is found again only after an eviction (one comparison per
class); a miss that bypasses costs one comparison against it.

Hardware cost: per cached token (slot): the key, the list links (or a timestamp for an
approximate oldest-of-class search) and its class (3 bits; 5 for hazard-plus). Per token of
the context and layer, beside its index key (which the indexer scans every step anyway): the
step of its last selection (8 bits, wrapping: only ages up to AGES matter) and its streak and
class (8 bits). One table of classes x AGES selection and exposure counters (128; 512 for
hazard-plus), the population tables (the same size per request and layer) and the priority
table, refreshed after each (step, layer, request) row: O(classes x AGES) work per row, against
k accesses. Work per access: one metadata read-modify-write (twice: the row is read once to
update the metadata and move resident tokens, once to gather), a priority lookup; per miss
with the region full, one comparison against the lowest candidate, and after an eviction one
per class to find the next (8; 32 for hazard-plus). The controller must be
told the (step, layer) of each gather and the indexer's whole selection of the row before the
gathers start.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError
from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry
from ref_policies.base import Counters, TokenPolicy, register
from ref_policies.common import count_bypassed

STREAKS = 8  # streak buckets: 1, 2, ..., 7, >= 8
AGES = 16  # age buckets: 1, 2, ..., 15, >= 16
HORIZON = 1  # opportunities ahead the priority looks (1 measured best on the tune traces)
MARGIN = 0.15  # hysteresis (relative): a swap between near-equals only churns


@njit(cache=True, boundscheck=False)
def priorities(sel: np.ndarray, exp: np.ndarray, prio: np.ndarray, tab: int, horizon: int) -> None:
    """prio[tab, s, a] = P(selected within the next `horizon` opportunities | s, a), from the
    hazard h = (sel + 1) / (exp + 2) made non-increasing in age (a running minimum: an old
    bucket with few samples must not outrank a younger, well-measured one)."""
    ns, na = sel.shape[1], sel.shape[2]
    haz = np.empty(na)
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


# Per-node fields of the state array (4 integers per node, one 16-byte record for int32): the
# list links, and for a key node its last selection and streak | class << 8. One record per key
# keeps an access to one cache line (4 separate arrays made the replay ~3x slower).
PREV, NEXT, LAST, META = 0, 1, 2, 3


def new_nodes(keys: int, lists: int, dtype: type) -> np.ndarray:
    """The flat node records of `keys` keys (unlinked, never selected) followed by `lists`
    empty circular lists' sentinels."""
    node = np.full((keys + lists, 4), -1, dtype)
    node[:, META] = 0
    sentinels = np.arange(keys, keys + lists)
    node[sentinels, PREV] = sentinels
    node[sentinels, NEXT] = sentinels
    return node.reshape(-1)


@njit(cache=True, boundscheck=False)
def hazard_block(
    block: np.ndarray,
    step0: int,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    of_layer: np.ndarray,
    tab_of: np.ndarray,
    cap: np.ndarray,
    size: np.ndarray,
    node: np.ndarray,
    sent0: int,
    n_streak: int,
    rank_of: np.ndarray,
    use_below: bool,
    pop: np.ndarray,
    sel: np.ndarray,
    exp: np.ndarray,
    prio: np.ndarray,
    horizon: int,
    margin: float,
    hits: np.ndarray,
    misses: np.ndarray,
    mask: np.ndarray | None = None,
) -> int:
    """Replay block [steps, layers, requests, k] whose row 0 is step `step0`; return -1, or the
    block row of an index out of range.

    node[4 * i + PREV / NEXT]: circular lists, one per (region, class) as in lru.py (node
    sent0 + p * classes + c is a sentinel; sentinel.prev is the oldest; PREV == -1: the key is
    not resident). With use_below the keys are token-major inside the policy (key_off[r] +
    token * layers + layer), so the layer below's record shares the cache line.
    node[4 * key + LAST]: the row time (step * layers + layer) * requests + request of the key's
    last selection (-1: never); node[4 * key + META]: its streak then | its class << 8.
    pop [requests, layers, classes, AGES]; sel / exp / prio [tables, classes, AGES]."""
    nb, nl, nr, k = block.shape
    ns, na = sel.shape[1], sel.shape[2]
    nq = ns // n_streak  # sub-classes per streak: (below flag x) rank buckets
    period = nl * nr  # rows per step: a key's own row comes once per period
    inv_period = 1.0 / period
    xrow = np.zeros((ns, na), np.int64)
    nsel = np.zeros(ns, np.int64)
    # Each class's eviction candidate (its oldest member) and priority, kept while the row's
    # gathers run: ages are fixed within a row, so only an eviction from the class, or a first
    # member, changes it (results identical; the scan reads two small arrays, no list walk).
    cand = np.empty(ns, np.int64)
    miss_key = np.empty(k, np.int64)  # the row's misses, for pass 2
    cand_p = np.empty(ns, np.float64)
    stale = np.ones(ns, np.bool_)
    dirty = True  # some candidate changed since the lowest was found
    low = np.inf
    low_c = -1
    one_table = True
    for x in range(nl):
        one_table = one_table and tab_of[x] == 0
    for t in range(nb):
        step = step0 + t
        for layer in range(nl):
            p = of_layer[layer]
            if p < 0 or cap[p] == 0:  # bypass: nothing cached, nothing learned
                m = count_bypassed(block, t, layer, max_ctx)
                if m < 0:
                    return t
                misses[layer] += m
                continue
            c = cap[p]
            tb = tab_of[layer]
            s0 = sent0 + p * ns
            h = 0
            m = 0
            below_on = use_below and layer > 0
            for r in range(nr):
                now = (step * nl + layer) * nr + r  # this row's time; rows of a step: period
                lim = max_ctx[r]
                # hazard-plus: token-major keys (a token's layers are neighbours: the layer
                # below's record shares the cache line); hazard: layer-major (a row's keys are
                # closer together; measured faster above one footprint)
                base = key_off[r] + (layer if use_below else layer * lim)
                kstride = nl if use_below else 1
                xrow[:, :] = 0
                nsel[:] = 0
                valid = 0
                n_miss = 0
                for s in range(k):  # pass 1: metadata; hits (resident at the row's start)
                    tok = block[t, layer, r, s]
                    if tok < 0:
                        continue
                    if tok >= lim:
                        return t
                    valid += 1
                    key = base + tok * kstride
                    i = 4 * key
                    tl = node[i + LAST]
                    meta = node[i + META]  # 0 for a token never selected
                    seen = tl >= 0
                    # its own rows are whole steps apart, so d / period is exact in floating
                    # point (no division; branch-free: new and old tokens interleave at random)
                    a = max(int((now - tl) * inv_period + 0.5), 1)
                    xrow[meta >> 8, min(a, na) - 1] += 1 if seen else 0
                    sn = min((meta & 255) + 1, 255) if seen and a == 1 else 1
                    b = (min(sn, n_streak) - 1) * nq + rank_of[s]
                    if below_on:  # the layer below selected it too, at this step
                        b += (nq // 2) * (node[i - 4 + LAST] == now - nr)
                    node[i + LAST] = now
                    node[i + META] = sn | (b << 8)
                    nsel[b] += 1
                    pv = node[i + PREV]
                    if pv < 0:
                        miss_key[n_miss] = key
                        n_miss += 1
                    else:  # resident: a hit (never evicted in this row), to the front of its class
                        h += 1
                        if mask is not None:
                            mask[t, layer, r, s] = 1
                        nx = node[i + NEXT]
                        node[4 * pv + NEXT] = nx
                        node[4 * nx + PREV] = pv
                        head = s0 + b
                        first = node[4 * head + NEXT]
                        node[i + PREV] = head
                        node[i + NEXT] = first
                        node[4 * first + PREV] = key
                        node[4 * head + NEXT] = key
                # pass 2: the misses, in slot order. Victims are never tokens of this row
                # (LAST == now), so a token resident at the start of the row was a hit.
                stale[:] = True
                dirty = True
                m += n_miss
                for q in range(n_miss):
                    key = miss_key[q]
                    i = 4 * key
                    b = node[i + META] >> 8
                    if size[p] >= c:
                        if dirty:  # refresh the changed candidates, then the lowest of all
                            dirty = False
                            low = np.inf
                            low_c = -1
                            for vb in range(ns):
                                if stale[vb]:
                                    stale[vb] = False
                                    cand[vb] = -1
                                    cand_p[vb] = np.inf
                                    vh = s0 + vb
                                    v = node[4 * vh + PREV]
                                    if v != vh:
                                        tv = node[4 * v + LAST]
                                        if tv != now:  # in this row: its gather is in flight
                                            av = min((now - tv) // period + 1, na)
                                            tv_tab = tb if one_table else tab_of[(tv // nr) % nl]
                                            cand[vb] = v
                                            cand_p[vb] = prio[tv_tab, vb, av - 1]
                                if cand_p[vb] < low:  # the first class of the lowest rank
                                    low = cand_p[vb]
                                    low_c = vb
                        # the victim must rank below (1 - margin) x the incoming token
                        if not low < prio[tb, b, 0] * (1.0 - margin):
                            continue  # bypass
                        victim = cand[low_c]
                        stale[low_c] = True
                        dirty = True
                        j = 4 * victim
                        vp = node[j + PREV]
                        vn = node[j + NEXT]
                        node[4 * vp + NEXT] = vn
                        node[4 * vn + PREV] = vp
                        node[j + PREV] = -1
                    else:
                        size[p] += 1
                    head = s0 + b  # link at the front of class b
                    first = node[4 * head + NEXT]
                    if first == head:
                        stale[b] = True  # its first member: a new candidate
                        dirty = True
                    node[i + PREV] = head
                    node[i + NEXT] = first
                    node[4 * first + PREV] = key
                    node[4 * head + NEXT] = key
                # exposures (not for an empty row: a finished request's tokens would dilute
                # the table), then the population ages one step, as the row time does
                for sb in range(ns):
                    if valid > 0:
                        for a in range(na):
                            exp[tb, sb, a] += pop[r, layer, sb, a]
                            sel[tb, sb, a] += xrow[sb, a]
                    tail = pop[r, layer, sb, na - 1] - xrow[sb, na - 1]
                    for a in range(na - 1, 0, -1):
                        pop[r, layer, sb, a] = pop[r, layer, sb, a - 1] - xrow[sb, a - 1]
                    pop[r, layer, sb, na - 1] += tail
                    pop[r, layer, sb, 0] = nsel[sb]
                priorities(sel, exp, prio, tb, horizon)
            hits[layer] += h
            misses[layer] += m
    return -1


class Hazard(TokenPolicy):
    """Shared body of `hazard` and `hazard-plus` (they differ in the token classes)."""

    emits_hit_mask = True
    horizon: int = HORIZON
    streaks: int = STREAKS
    ages: int = AGES
    rank_edges: tuple[float, ...] = ()  # slot-order (indexer rank) buckets, fractions of k
    margin: float = MARGIN  # evict only a resident ranked below (1 - margin) x the incoming
    use_below: bool = False  # class feature: the layer below selected it at the same step
    per_layer_tables: bool = False  # one table per layer (measured: no better than one)

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        n, regions, nl, k = blocks.keys.size, partition.regions, blocks.layers, blocks.k
        if (blocks.steps + 1) * nl * blocks.requests >= 2**31:
            raise DsacacheError(f"{self.name}: steps x layers x requests must stay below 2**31")
        edges = np.array([round(f * k) for f in self.rank_edges], np.int64)
        self.rank_of = np.searchsorted(edges, np.arange(k), side="right").astype(np.int64)
        # classes: streak x (below flag) x rank bucket
        nc, na = self.streaks * (len(edges) + 1) * (2 if self.use_below else 1), self.ages
        nodes = n + regions * nc
        self.sent0 = n
        self.node = new_nodes(n, regions * nc, np.int32 if nodes < 2**31 else np.int64)
        self.size = np.zeros(regions, np.int64)
        self.cap = np.ascontiguousarray(partition.capacity, dtype=np.int64)
        self.of_layer = np.ascontiguousarray(partition.of_layer, dtype=np.int32)
        tables = nl if self.per_layer_tables else 1
        self.tab_of = np.arange(nl, dtype=np.int64) % tables
        self.pop = np.zeros((blocks.requests, nl, nc, na), np.int64)
        self.sel = np.zeros((tables, nc, na), np.float64)
        self.exp = np.zeros((tables, nc, na), np.float64)
        self.prio = np.zeros((tables, nc, na), np.float64)
        for tb in range(tables):
            priorities(self.sel, self.exp, self.prio, tb, self.horizon)

    def run_block(self, block: StepBlock, counters: Counters) -> None:
        keys = self.blocks.keys
        bad = hazard_block(
            block.indices,
            block.start,
            keys.key_offset,
            keys.max_context,
            self.of_layer,
            self.tab_of,
            self.cap,
            self.size,
            self.node,
            self.sent0,
            self.streaks,
            self.rank_of,
            self.use_below,
            self.pop,
            self.sel,
            self.exp,
            self.prio,
            self.horizon,
            self.margin,
            counters.hits,
            counters.misses,
            counters.hit_mask,
        )
        if bad >= 0:
            raise self.index_error(block.start + bad)

    @classmethod
    def warmup(cls) -> None:
        block = np.array([[[[0, 1, -1, 2]]], [[[1, 3, 0, -1]]], [[[2, 0, 3, 1]]]], np.int32)
        priorities(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), 0, 1)
        for dtype in (np.int32, np.int64):
            for mask in (None, np.zeros(block.shape, np.uint8)):
                node = new_nodes(4, STREAKS, dtype)
                sel = np.zeros((1, STREAKS, AGES))
                hazard_block(
                    block,
                    0,
                    np.zeros(1, np.int64),
                    np.full(1, 4, np.int64),
                    np.zeros(1, np.int32),
                    np.zeros(1, np.int64),
                    np.full(1, 2, np.int64),
                    np.zeros(1, np.int64),
                    node,
                    4,
                    STREAKS,
                    np.zeros(4, np.int64),
                    True,
                    np.zeros((1, 1, STREAKS, AGES), np.int64),
                    sel,
                    sel.copy(),
                    sel.copy(),
                    2,
                    0.0,
                    np.zeros(1, np.int64),
                    np.zeros(1, np.int64),
                    mask,
                )


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
