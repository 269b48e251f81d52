"""The one interface every token-level policy implements.

A policy replays the trace's accesses in access order (step -> layer -> request -> slot; every
valid slot an access of the key (request, layer, token)) against fully-associative regions of
whole tokens, split per `Partition` (among layers, and once per request if it says so). The
replay hands it interleaved step blocks (int32 [steps, layers, requests, k], -1 = empty) in
order; the policy runs each block in a compiled kernel over flat arrays and adds to the per-layer
counters. A (request, layer) whose region is -1, or a region of capacity 0, bypasses: all its
accesses are misses.

Every registered policy runs on driver.py's kernel (DrivenPolicy): the driver owns the walk, the
range checks, bypass, the regions' capacity and occupancy, the counters, hit masks, the row
rules below and the warm-up; the policy writes small hooks. `run_block` stays the interface.

A policy that needs the future (MIN) sets `needs_backward_pass`: the replay then first hands it
every block from last to first through `prepare_block()`, then calls `prepare()`; both count as
engine time, reading the blocks does not.

Traffic: by default one token access moves one KV row (kv_bytes_per_token bytes). A policy that
caches something else (line-lru: 128-byte lines) sets `counts_lines`; the driver then fills
per-layer line tallies (Counters.line_hits / line_misses) and the result's bytes are lines x
128 B.

Flags every registered policy sets (--list-policies shows them): `online`, it decides from the
past only (MIN reads the future); `prefetches`, it may bring in tokens no access asked for
(counted in Counters.prefetches). MIN bounds the misses of every policy that does not prefetch
and holds at most its capacity; a policy that may hold more declares `max_occupancy_factor`
(keep-previous, which holds the previous and the current selection at once: 2), and MIN at that
multiple of the capacity bounds it (line-lru only when KV rows are whole 128-byte lines; see
line_lru.py).

Row rules (`RowRules`, an option of the replay, off by default: the LLC reservation's semantics)
are those of an HBM hot buffer that the attention reads every selected token from (SGLang's
HiSparse): (a) `protect_row`, a row's own tokens are never victims while the row is replayed;
(b) `no_bypass`, every miss is inserted; (c) `whole_hits`, a region that can hold every key
mapped to it never misses (the KV already sits there). Every registered policy honours them.

Per-access decisions: a policy with `emits_hit_mask` fills `Counters.hit_mask` when the caller
sets it (uint8, the block's shape [steps, layers, requests, k], zeros on entry): 1 where the
access hit, left 0 where it missed or the slot is empty. The LLC's token region in front of the
shared LLC (sim/llc/front.py) takes the policies that set it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from dsacache.errors import TraceError
from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry


@dataclass
class Counters:
    """Per-layer tallies a replay fills (int64 [layers] each). line_hits / line_misses: 128-byte
    line accesses, only for a policy with counts_lines; cold_misses: misses of a key never
    accessed before, only when asked for (None otherwise: nothing is counted)."""

    hits: np.ndarray
    misses: np.ndarray
    prefetches: np.ndarray  # tokens brought into the region ahead of demand (HBM reads)
    line_hits: np.ndarray | None = None
    line_misses: np.ndarray | None = None
    hit_mask: np.ndarray | None = None  # uint8 [steps, layers, requests, k] of the next block
    cold_misses: np.ndarray | None = None

    @classmethod
    def zeros(cls, layers: int, lines: bool = False, cold: bool = False) -> Counters:
        def z() -> np.ndarray:
            return np.zeros(layers, np.int64)

        return cls(
            z(), z(), z(), z() if lines else None, z() if lines else None, None,
            z() if cold else None,
        )  # fmt: skip


class RowRules(NamedTuple):
    """The HBM hot buffer's rules (module doc); all off: the LLC reservation's semantics."""

    protect_row: bool = False  # (a) a row's own tokens are never victims
    no_bypass: bool = False  # (b) every miss is inserted
    whole_hits: bool = False  # (c) a region that holds all its keys never misses


NO_RULES = RowRules()
HISPARSE = RowRules(True, True, True)


@dataclass(frozen=True)
class Setting:
    """A SimConfig field a policy reads in `configure` (and requires), with its values."""

    field: str  # the SimConfig field
    values: tuple[str, ...]
    flag: str  # the CLI option
    what: str  # "its prefetch source"


class TokenPolicy(ABC):
    """Base of the token-level policies; subclasses register with @register."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help and --list-policies
    online: ClassVar[bool]  # decides from the past only (False: it reads the future, e.g. MIN)
    prefetches: ClassVar[bool]  # may fetch tokens no access asked for (Counters.prefetches)
    uses_near_miss: ClassVar[bool] = False  # ask the driver for near-miss blocks
    needs_backward_pass: ClassVar[bool] = False  # prepare_block() on every block, last first
    counts_lines: ClassVar[bool] = False  # fills Counters.line_hits / line_misses
    emits_hit_mask: ClassVar[bool] = False  # fills Counters.hit_mask when it is not None
    max_occupancy_factor: ClassVar[int] = 1  # holds at most this x its capacity
    settings: ClassVar[tuple[Setting, ...]] = ()  # SimConfig fields configure() reads
    wide: ClassVar[bool] = False  # 64-bit ids even where 32 bits fit (warm-up compiles both)

    def __init__(
        self,
        blocks: StepBlocks,
        partition: Partition,
        geometry: Geometry,
        rules: RowRules = NO_RULES,
    ) -> None:
        self.blocks = blocks
        self.partition = partition
        self.geometry = geometry
        self.rules = rules
        self.setup()

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Build the policy's state (called by __init__, once the attributes above are set)."""

    def configure(self, cfg: Any) -> None:  # noqa: B027 - optional hook
        """Read this policy's `settings` from the run's SimConfig (checked there already)."""

    def prepare_block(self, block: StepBlock) -> None:  # noqa: B027 - optional hook
        """With needs_backward_pass: called on every block, from the last to the first, before
        the replay (engine time; the driver reads the block outside the clock)."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Work before the replay (after any backward pass) that counts as engine time."""

    @abstractmethod
    def run_block(self, block: StepBlock, counters: Counters) -> None:
        """Replay every access of `block` in order, updating state and counters."""

    @classmethod
    @abstractmethod
    def warmup(cls) -> None:
        """Compile the policy's kernels on a tiny input (so engine time excludes the JIT)."""

    def index_error(self, step: int, field: str = "indices") -> TraceError:
        """The error of an index out of range at absolute step `step` (kernels report it)."""
        return TraceError(self.blocks.trace.source, field, f"index out of range at step {step}")


POLICIES: dict[str, type[TokenPolicy]] = {}


REQUIRED = ("name", "summary", "online", "prefetches")


def register(cls: type[TokenPolicy]) -> type[TokenPolicy]:
    """Class decorator: add `cls` to POLICIES under its name. It must set every attribute of
    REQUIRED itself (online / prefetches are never inherited by accident: a subclass that changes
    the decisions must say again what they depend on)."""
    missing = [a for a in REQUIRED if a not in vars(cls)]
    if missing:
        raise TypeError(f"token policy {cls.__name__} must set {', '.join(missing)}")
    if cls.name in POLICIES and POLICIES[cls.name] is not cls:
        raise ValueError(f"two token policies are named {cls.name!r}")
    POLICIES[cls.name] = cls
    return cls
