"""The line-level set-associative LLC engine: state, configuration, replay of runs.

Semantics (what the kernels in kernels.py, sweep.py and replay.py implement):

- 128-byte lines; set = line & (sets - 1) (`modulo`) or the XOR of every log2(sets)-bit chunk of
  the line id (`xor`); a tag is line >> log2(sets) (int32, so line ids stay below 2**31 x sets;
  the set and the tag give back the line: `lines()`).
- An access is a line with a mask of the 32-byte sectors it needs. Without sectors, a hit is a
  resident line; a miss costs 128 B of HBM. With sectors (`sectors=True`), a miss allocates the
  line with only the sectors asked for; a hit needs every asked sector valid, and a resident line
  missing some of them is a (sector) miss that costs 32 B per missing sector, fills them and
  updates replacement state like a hit.
- A miss fills an invalid way first (lowest way), else the policy's victim:
  `lru` the least recently used (recency ranks per set); `srrip` RRIP with 2-bit RRPV (insert
  2, hit 0, evict the first way at 3 after ageing); `drrip` set dueling of SRRIP and BRRIP
  (kernels.py has the constants and the paper's parameters).
- The reservation (reservation.py) restricts which ways a miss may fill.
- A run of distinct consecutive lines long enough (>= shortcut_min lines and >= sets lines)
  takes an exact streaming shortcut under LRU (sweep.sweep_lru) and SRRIP
  (sweep.sweep_srrip); DRRIP always replays line by line (its PSEL couples the sets, so a
  follower set's insertions depend on how the leader sets' misses interleave).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsacache.errors import DsacacheError
from dsacache.sim.llc import kernels as k
from dsacache.sim.llc.hardware import CacheShape
from dsacache.sim.llc.replay import run_runs
from dsacache.sim.llc.reservation import Reservation, ResolvedReservation
from dsacache.sim.llc.stream import BLOCKING_CLASS, N_CLASSES, Runs

POLICIES = {"lru": k.LRU, "srrip": k.SRRIP, "drrip": k.DRRIP}
HASHES = {"modulo": k.HASH_MODULO, "xor": k.HASH_XOR}
COUNTER_FIELDS = ("accesses", "hits", "misses", "hbm_bytes")


def default_shortcut_min(shape: CacheShape) -> int:
    """Runs of at least this many lines (4 per set on average) take the streaming shortcut."""
    return 4 * shape.sets


@dataclass(frozen=True)
class EngineConfig:
    shape: CacheShape
    policy: str = "lru"
    set_hash: str = "modulo"
    sectors: bool = False
    shortcut: bool = True

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise DsacacheError(f"unknown policy {self.policy!r} (known: {', '.join(POLICIES)})")
        if self.set_hash not in HASHES:
            raise DsacacheError(f"unknown set hash {self.set_hash!r} (known: modulo, xor)")


class LLCEngine:
    """One LLC's state; `run` replays runs (in order) and accumulates counters."""

    def __init__(
        self,
        config: EngineConfig,
        reservation: ResolvedReservation | None = None,
        shortcut_min: int | None = None,
    ) -> None:
        shape = config.shape
        self.config = config
        self.reservation = reservation or Reservation().resolve(shape, 0)
        if self.reservation.quota.shape != (shape.sets,):
            raise DsacacheError("reservation was resolved for another cache shape")
        S, W = shape.sets, shape.ways
        self.bits = S.bit_length() - 1
        self.tags = np.full((S, W), -1, dtype=np.int32)
        self.age = np.tile(np.arange(W - 1, -1, -1, dtype=np.uint8), (S, 1))
        self.rrpv = np.full((S, W), k.RRPV_MAX, dtype=np.uint8)
        self.sect = np.zeros((S, W), dtype=np.uint8)
        self.pers = np.zeros((S, W), dtype=np.uint8)
        self.quota = self.reservation.quota.astype(np.int64)
        cfg = np.zeros(k.N_CFG, dtype=np.int64)
        cfg[k.C_POLICY] = POLICIES[config.policy]
        cfg[k.C_HASH] = HASHES[config.set_hash]
        cfg[k.C_BITS] = self.bits
        cfg[k.C_SECTORS] = int(config.sectors)
        cfg[k.C_RES] = self.reservation.mode_id
        cfg[k.C_RES_WAYS] = self.reservation.ways
        cfg[k.C_LEADER] = max(2, S // k.LEADERS_PER_POLICY)
        self.cfg = cfg
        self.res_cls = np.zeros(N_CLASSES, dtype=np.uint8)
        if self.reservation.mode_id != k.RES_NONE:
            self.res_cls[list(self.reservation.classes)] = 1
        self.st = np.zeros(k.N_ST, dtype=np.int64)  # PSEL, BRRIP counter, shortcut lines
        self.st[k.S_PSEL] = k.PSEL_INIT
        self._scratch = np.zeros((3, W), dtype=np.int64)
        self.counters = np.zeros((N_CLASSES, len(COUNTER_FIELDS)), dtype=np.int64)
        if not config.shortcut:
            self.shortcut_min = 0
        elif shortcut_min is None:
            self.shortcut_min = default_shortcut_min(shape)
        else:
            self.shortcut_min = int(shortcut_min)

    def run(self, runs: Runs) -> np.ndarray:
        """Replay `runs`; returns blocking (kv-gather) misses per step of the runs."""
        blocking = np.zeros(runs.steps, dtype=np.int64)
        if len(runs):
            top = int((runs.first + runs.count - 1).max())
            if int(runs.first.min()) < 0 or top >> self.bits > k.MAX_TAG:
                raise DsacacheError(
                    f"line ids must be in [0, {(k.MAX_TAG + 1) << self.bits}) for "
                    f"{self.config.shape.sets} sets, got up to {top}"
                )
        run_runs(
            runs.first,
            runs.count,
            runs.cls,
            runs.m0,
            runs.m1,
            runs.step_start,
            self.tags,
            self.age,
            self.rrpv,
            self.sect,
            self.pers,
            self.quota,
            self.cfg,
            self.res_cls,
            self.st,
            self.counters,
            BLOCKING_CLASS,
            blocking,
            self.shortcut_min,
            self._scratch,
        )
        return blocking

    def lines(self) -> np.ndarray:
        """int64 [sets, ways]: the line id each way holds (-1: invalid)."""
        return k.lines_of(self.tags, self.cfg[k.C_HASH], self.bits)

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the state arrays (tags as line ids), for comparisons."""
        return {
            "lines": self.lines(),
            "age": self.age.copy(),
            "rrpv": self.rrpv.copy(),
            "sect": self.sect.copy(),
            "pers": self.pers.copy(),
            "st": self.st.copy(),
        }

    def counts(self) -> dict[str, dict[str, int]]:
        from dsacache.sim.llc.stream import CLASSES

        return {
            name: dict(zip(COUNTER_FIELDS, (int(x) for x in self.counters[c]), strict=True))
            for c, name in enumerate(CLASSES)
        }
