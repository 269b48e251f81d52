"""The independent reference of the HBM level (`dsacache hierarchy`): plain Python, written from
the rules, sharing no code with the simulator.

One buffer of N slots per (request, layer), empty at the start. At each step, with the row's
selection S (its valid slots, in slot order):

- a request whose largest context_len <= N keeps all its KV on the GPU: every access hits;
- otherwise the hits are the tokens of S already resident; for each miss (slot order) a full
  buffer evicts a resident that is NOT in S, chosen by the policy, and the miss is inserted (no
  bypass); then S's tokens are touched in slot order (the last slot is the most recent);
- a cold miss is a miss of a token the (request, layer) never selected before.

Policies: token-lru (evict the least recently used), fifo (the earliest inserted; hits do not
reorder), keep-previous (the buffer holds exactly the previous step's selection: a hit is a token
of that selection), min (the furthest next use, never-used-again first; no bypass).

`batch=True` finds all of a row's hits before any eviction (HiSparse's kernel); `batch=False`
walks the row slot by slot (a miss evicts a non-S resident at once, a hit is touched at once).
The rules make the two identical; the tests check it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

POLICIES = ("token-lru", "fifo", "keep-previous", "min")
INF = float("inf")


@dataclass
class RefResult:
    hits: int
    misses: int
    cold_misses: int
    misses_per_step: list[int]  # summed over the step's requests and layers
    hit_flags: list[bool]  # per access, in access order


def rows_of(trace) -> list[tuple[int, int, int, list[int]]]:  # noqa: ANN001
    """(step, layer, request, S) in access order, S the row's valid tokens in slot order."""
    idx = [np.asarray(r.indices[:]) for r in trace.requests]
    out = []
    for t in range(trace.steps):
        for layer in range(trace.geometry.layers):
            for r, a in enumerate(idx):
                if t < a.shape[0]:
                    out.append((t, layer, r, [int(v) for v in a[t, layer] if v >= 0]))
    return out


def next_uses(rows: list[tuple[int, int, int, list[int]]]) -> list[list[float]]:
    """For each row and slot of S: the position (row number, slot) of the next selection of the
    same token by the same (request, layer), as one comparable number; INF if none."""
    width = max((len(s) for *_, s in rows), default=0) + 1
    nxt: list[list[float]] = [[] for _ in rows]
    later: dict[tuple[int, int, int], float] = {}
    for n in range(len(rows) - 1, -1, -1):
        _, layer, r, sel = rows[n]
        here = []
        for s, tok in enumerate(sel):
            key = (r, layer, tok)
            here.append(later.get(key, INF))
            later[key] = n * width + s
        nxt[n] = here
    return nxt


def reference_hbm(trace, n: int, policy: str, batch: bool = True) -> RefResult:  # noqa: ANN001
    if policy not in POLICIES:
        raise ValueError(policy)
    rows = rows_of(trace)
    nxt = next_uses(rows) if policy == "min" else None
    fits = [r.max_context <= n for r in trace.requests]
    buffers: dict[tuple[int, int], OrderedDict[int, None]] = {}
    seen: dict[tuple[int, int], set[int]] = {}
    nextuse: dict[tuple[int, int, int], float] = {}  # MIN: a resident's next use
    previous: dict[tuple[int, int], tuple[int, set[int]]] = {}  # keep-previous: (step, S)
    per_step = [0] * trace.steps
    flags: list[bool] = []
    hits = misses = cold = 0
    for n_row, (t, layer, r, sel) in enumerate(rows):
        if fits[r]:
            hits += len(sel)
            flags += [True] * len(sel)
            continue
        rl = (r, layer)
        buf = buffers.setdefault(rl, OrderedDict())
        old = seen.setdefault(rl, set())
        if policy == "keep-previous":
            step, prev = previous.get(rl, (-2, set()))
            kept = prev if step == t - 1 else set()
            h = sum(tok in kept for tok in sel)
            previous[rl] = (t, set(sel))
            missed = [tok for tok in sel if tok not in kept]
        else:
            missed = _row(buf, sel, n, policy, batch, nextuse, r, layer)
            h = len(sel) - len(missed)
            if policy == "min":
                for s, tok in enumerate(sel):
                    nextuse[(r, layer, tok)] = nxt[n_row][s]
        hits += h
        misses += len(missed)
        flags += [tok not in missed for tok in sel]
        cold += sum(tok not in old for tok in missed)
        per_step[t] += len(missed)
        old.update(sel)
    return RefResult(hits, misses, cold, per_step, flags)


def reference_llc_lru(trace, capacity: int) -> list[bool]:  # noqa: ANN001
    """Per-access hits of one token-LRU region of `capacity` tokens shared by every request and
    layer (the LLC token region of `simulate`), keys (request, layer, token), in access order."""
    lru: OrderedDict[tuple[int, int, int], None] = OrderedDict()
    flags = []
    for _, layer, r, sel in rows_of(trace):
        for tok in sel:
            key = (r, layer, tok)
            if key in lru:
                lru.move_to_end(key)
                flags.append(True)
                continue
            flags.append(False)
            if capacity == 0:
                continue
            if len(lru) >= capacity:
                lru.popitem(last=False)
            lru[key] = None
    return flags


def _row(
    buf: OrderedDict[int, None],
    sel: list[int],
    n: int,
    policy: str,
    batch: bool,
    nextuse: dict[tuple[int, int, int], float],
    r: int,
    layer: int,
) -> list[int]:
    """Replay one row into `buf` (ordered LRU- or insertion-first); return its misses."""
    row = set(sel)

    def victim() -> int:
        others = [x for x in buf if x not in row]  # oldest first
        if policy == "min":  # furthest next use; ties only among never-used-again tokens
            return max(others, key=lambda x: nextuse[(r, layer, x)])
        return others[0]

    def insert(tok: int) -> None:
        if len(buf) >= n:
            del buf[victim()]
        buf[tok] = None

    if batch:
        missed = [tok for tok in sel if tok not in buf]
        for tok in missed:
            insert(tok)
        for tok in sel:  # touched in slot order
            if policy == "token-lru":
                buf.move_to_end(tok)
        return missed
    missed = []
    for tok in sel:
        if tok in buf:
            if policy == "token-lru":
                buf.move_to_end(tok)
        else:
            missed.append(tok)
            insert(tok)
    return missed
