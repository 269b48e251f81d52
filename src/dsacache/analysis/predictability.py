"""What an online policy could learn from a trace: P(selected at t+1 | streak, rank).

For every selection of token x at step t in layer l of a request that has a step t+1:

- streak: the consecutive steps, ending at t, in which x was selected in layer l (1 = newly
  selected at t, after a step without it);
- rank: x's place in the row S(t, l), 0 = first: by score (highest first, ties in slot order)
  when the trace stores the indexer's scores, else in slot order; bucketed by its fraction of
  the row's valid slots into quarters;
- outcome: whether x is in S(t+1, l).

Counts pool over requests and steps; per layer they sum exactly into any layer group. The
summary number `streak_lift` = P(selected at t+1 | streak >= 3) - P(selected at t+1 | streak 1):
0 when re-selection is memoryless, large when persistence has causes a policy can learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from dsacache.errors import DsacacheError

# Streak buckets: bucket i holds streaks in [STREAK_EDGES[i], STREAK_EDGES[i + 1]).
STREAK_EDGES = (1, 2, 3, 4, 8, 16)
STREAK_LABELS = ("1", "2", "3", "4-7", "8-15", "16+")
NS = len(STREAK_EDGES)
RANK_LABELS = ("top 25%", "25-50%", "50-75%", "bottom 25%")
NR = len(RANK_LABELS)
STREAK_CAP = 1 << 30  # streaks saturate here (int32 state)
RANK_SOURCES = ("auto", "score", "slot")


@numba.njit(cache=True, inline="always")
def streak_bucket(s: int) -> int:
    b = 0
    for i in range(1, NS):
        if s >= STREAK_EDGES[i]:
            b = i
    return b


@numba.njit(cache=True, inline="always")
def score_key(bits: int, slot: int) -> np.uint64:
    """A unique uint64 that sorts by score descending, then slot ascending: the float32's bits
    made order-preserving (-0.0 as +0.0), flipped, above the slot number."""
    b = np.int64(bits)
    if b == -2147483648:  # -0.0
        b = 0
    asc = (~b) & 0xFFFFFFFF if b < 0 else b | 0x80000000
    return np.uint64((0xFFFFFFFF - asc) << 32) | np.uint64(slot)


@numba.njit(cache=True, nogil=True)
def predictability_kernel(
    idx: np.ndarray,  # int32 [steps, layers, k]
    score_bits: np.ndarray,  # float32 scores viewed as int32 [steps, layers, k], or [0, 0, 0]
    by_score: bool,
    start: int,  # absolute step of row 0
    steps_total: int,  # the request's steps: selections at its last step have no outcome
    last: np.ndarray,  # int32 [layers, size]: step of the token's latest selection (-2: never)
    streak: np.ndarray,  # int32 [layers, size]: its streak at that step
    pend: np.ndarray,  # int8 [layers, size]: its (streak, rank) bucket at that step
    hits: np.ndarray,  # int64 [layers, NS * NR]: selections also selected at the next step
    totals: np.ndarray,  # int64 [layers, NS * NR]: selections with a next step
) -> None:
    """Fold one chunk into the counts; every token is < size (the caller checks:
    metrics.first_row_out_of_range).

    The rank quarter of a slot is floor(NR * rank / n); by score, the rank is the slot's place
    in (score descending, slot ascending) order, found without sorting: a slot is in quarter q
    or later iff its key is >= the key at order position ceil(q * n / NR) (np.partition)."""
    steps, layers, k = idx.shape
    quarter = np.zeros(k, dtype=np.int64)
    keys = np.empty(k, dtype=np.uint64)
    cuts = np.empty(NR - 1, dtype=np.uint64)
    kth = np.empty(NR - 1, dtype=np.int64)
    for i in range(steps):
        t = start + i
        for ly in range(layers):
            n = 0
            for j in range(k):
                if idx[i, ly, j] >= 0:
                    if by_score:
                        keys[n] = score_key(score_bits[i, ly, j], j)
                    else:
                        quarter[j] = n  # the rank in slot order, made a quarter below
                    n += 1
            if n == 0:
                continue
            if by_score:
                m = 0
                for q in range(1, NR):
                    pos = (q * n + NR - 1) // NR
                    if pos < n:
                        kth[m] = pos
                        m += 1
                if m:
                    part = np.partition(keys[:n], kth[:m])  # one selection for all cuts
                    for c in range(m):
                        cuts[c] = part[kth[c]]
                for j in range(k):
                    if idx[i, ly, j] >= 0:
                        key = score_key(score_bits[i, ly, j], j)
                        q = 0
                        for c in range(m):
                            if key >= cuts[c]:
                                q += 1
                        quarter[j] = q
            else:
                for j in range(k):
                    if idx[i, ly, j] >= 0:
                        quarter[j] = (quarter[j] * NR) // n
            for j in range(k):
                tok = idx[i, ly, j]
                if tok < 0:
                    continue
                if last[ly, tok] == t - 1:
                    hits[ly, pend[ly, tok]] += 1
                    s = min(streak[ly, tok] + 1, STREAK_CAP)
                else:
                    s = 1
                last[ly, tok] = t
                streak[ly, tok] = s
                b = streak_bucket(s) * NR + quarter[j]
                pend[ly, tok] = b
                if t + 1 < steps_total:
                    totals[ly, b] += 1


def warm_up() -> None:
    """Compile (or load from cache) both variants of the kernel before anything is timed."""
    z = np.zeros((1, 1), dtype=np.int32)
    for by_score in (False, True):
        predictability_kernel(
            np.zeros((0, 1, 1), dtype=np.int32), np.zeros((0, 1, 1), dtype=np.int32),
            by_score, 0, 0, z, z.copy(), np.zeros((1, 1), dtype=np.int8),
            np.zeros((1, NS * NR), dtype=np.int64), np.zeros((1, NS * NR), dtype=np.int64),
        )  # fmt: skip


def parse_layer_groups(spec: str | None, layers: int) -> list[tuple[int, int]]:
    """'0-1,20-60' -> [(0, 1), (20, 60)] (inclusive). None: every layer, and for a deep model
    (> 20 layers) also 0-1 and 20-last, the ranges public DeepSeek-V3.2 numbers are quoted for."""
    if spec is None:
        groups = [(0, layers - 1)]
        if layers > 20:
            groups += [(0, 1), (20, layers - 1)]
        return groups
    out = []
    for part in spec.split(","):
        text = part.strip()
        lo_s, sep, hi_s = text.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise DsacacheError(
                f"layer groups: {text!r} is not a layer or a range like 20-60"
            ) from None
        if not 0 <= lo <= hi < layers:
            raise DsacacheError(
                f"layer groups: {text!r} is outside the trace's layers 0-{layers - 1}"
            )
        out.append((lo, hi))
    return out


def group_name(group: tuple[int, int]) -> str:
    lo, hi = group
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _p(hits: np.ndarray | int, totals: np.ndarray | int) -> Any:
    """hits / totals elementwise, NaN where there is nothing to count."""
    h = np.asarray(hits, dtype=np.float64)
    t = np.asarray(totals, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(t > 0, h / np.where(t > 0, t, 1), np.nan)


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


@dataclass
class PredictabilityResult:
    """Counts per layer and (streak, rank) bucket; probabilities per layer group."""

    rank_source: str  # "score" or "slot"
    hits: np.ndarray  # int64 [layers, NS, NR]
    totals: np.ndarray  # int64 [layers, NS, NR]
    groups: list[tuple[int, int]] = field(default_factory=list)

    def counts(self, group: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = group
        return self.hits[lo : hi + 1].sum(axis=0), self.totals[lo : hi + 1].sum(axis=0)

    def lift(self, group: tuple[int, int]) -> tuple[float, float, float]:
        """(P(next | streak 1), P(next | streak >= 3), their difference); NaN if undefined."""
        h, t = self.counts(group)
        p1 = float(_p(h[0].sum(), t[0].sum()))
        p3 = float(_p(h[2:].sum(), t[2:].sum()))
        return p1, p3, p3 - p1

    def per_layer_lift(self) -> list[float | None]:
        return [_num(self.lift((ly, ly))[2]) for ly in range(self.hits.shape[0])]

    def group_dict(self, group: tuple[int, int]) -> dict[str, Any]:
        h, t = self.counts(group)
        p1, p3, lift = self.lift(group)
        return {
            "layers": group_name(group),
            "selections": int(t.sum()),
            "p_selected_next": _num(float(_p(h.sum(), t.sum()))),
            "p_streak_1": _num(p1),
            "p_streak_ge_3": _num(p3),
            "streak_lift": _num(lift),
            "p_by_streak": [_num(v) for v in _p(h.sum(axis=1), t.sum(axis=1))],
            "p_by_rank": [_num(v) for v in _p(h.sum(axis=0), t.sum(axis=0))],
            "p": [[_num(v) for v in row] for row in _p(h, t)],
            "count": t.astype(int).tolist(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank_source": self.rank_source,
            "streak_buckets": list(STREAK_LABELS),
            "rank_buckets": list(RANK_LABELS),
            "groups": [self.group_dict(g) for g in self.groups],
            "per_layer": {
                "streak_lift": self.per_layer_lift(),
                "selected_next": self.hits.reshape(len(self.hits), -1).tolist(),
                "selections": self.totals.reshape(len(self.totals), -1).tolist(),
            },
        }


class PredictabilityCounter:
    """Streams a trace's chunks (request by request) into a PredictabilityResult."""

    def __init__(self, layers: int, rank_source: str, groups: list[tuple[int, int]]) -> None:
        self.layers = layers
        self.by_score = rank_source == "score"
        self.rank_source = rank_source
        self.groups = groups
        self.hits = np.zeros((layers, NS * NR), dtype=np.int64)
        self.totals = np.zeros((layers, NS * NR), dtype=np.int64)
        self._no_scores = np.zeros((0, 0, 0), dtype=np.int32)
        warm_up()

    def start_request(self, size: int, steps: int) -> None:
        self.steps = steps
        self.last = np.full((self.layers, size), -2, dtype=np.int32)
        self.streak = np.zeros((self.layers, size), dtype=np.int32)
        self.pend = np.zeros((self.layers, size), dtype=np.int8)

    def fold(self, idx: np.ndarray, scores: np.ndarray | None, start: int) -> None:
        sc = self._no_scores
        if self.by_score:
            if scores is None:
                raise DsacacheError("predictability: ranking by score needs stored scores")
            sc = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32)
        predictability_kernel(
            idx, sc, self.by_score, start, self.steps, self.last, self.streak, self.pend,
            self.hits, self.totals,
        )  # fmt: skip

    def result(self) -> PredictabilityResult:
        shape = (self.layers, NS, NR)
        return PredictabilityResult(
            self.rank_source, self.hits.reshape(shape), self.totals.reshape(shape), self.groups
        )


def resolve_rank_source(rank_by: str, has_scores: bool) -> str:
    """'auto' ranks by score when every request stores scores, else in slot order."""
    if rank_by not in RANK_SOURCES:
        known = ", ".join(RANK_SOURCES)
        raise DsacacheError(f"predictability: rank_by must be one of {known}, got {rank_by!r}")
    if rank_by == "auto":
        return "score" if has_scores else "slot"
    if rank_by == "score" and not has_scores:
        raise DsacacheError("predictability: --rank-by score needs a trace that stores scores")
    return rank_by
