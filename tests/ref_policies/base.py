"""The one interface every token-level policy implements.

A policy replays the trace's accesses in access order (step -> layer -> request -> slot; every
valid slot an access of the key (request, layer, token)) against a fully-associative reserved
region of whole tokens, split per `Partition`. The driver hands it interleaved step blocks
(int32 [steps, layers, requests, k], -1 = empty) in order; the policy runs each block in a
compiled kernel over flat arrays and adds to the per-layer counters. A layer with
partition.of_layer[l] == -1 bypasses the region: all its accesses are misses.

A policy that needs the future (MIN) sets `needs_backward_pass`: the driver then first hands
it every block from last to first through `prepare_block()`, then calls `prepare()`; both
count as engine time, reading the blocks does not.

Traffic: by default one token access moves one KV row (kv_bytes_per_token bytes). A policy
that caches something else (line-lru: 128-byte lines) sets `counts_lines`; the driver then
gives it Counters with per-layer line tallies, and the result's bytes are lines x 128 B.

Flags every registered policy sets (--list-policies shows them): `online`, it decides from the
past only (MIN reads the future); `prefetches`, it may bring in tokens no access asked for
(counted in Counters.prefetches). MIN bounds the misses of every policy that does not prefetch
(line-lru only when KV rows are whole 128-byte lines; see line_lru.py; keep-previous, which
holds the previous and the current selection at once, only at twice its capacity).

Most policies do not implement run_block themselves: driver.py's DrivenPolicy walks the block
and calls the policy's small hooks (find, hit, miss, ...). run_block stays the interface, so a
policy with its own kernel (line-lru, near-miss) plugs in the same way.

Per-access decisions: a policy with `emits_hit_mask` fills `Counters.hit_mask` when the caller
sets it (uint8, the block's shape [steps, layers, requests, k], zeros on entry): 1 where the
access hit, left 0 where it missed or the slot is empty. The LLC driver's token region in front
of the shared LLC (sim/llc/front.py) needs it; without a mask (None, the default) the kernels
are the same as before (numba prunes the branch for a None argument).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dsacache.errors import TraceError
from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry

LINE_BYTES = 128


@dataclass
class Counters:
    """Per-layer tallies a policy fills (int64 [layers] each). line_hits / line_misses: 128-byte
    line accesses, only for a policy with counts_lines (None otherwise)."""

    hits: np.ndarray
    misses: np.ndarray
    prefetches: np.ndarray  # tokens brought into the region ahead of demand (HBM reads)
    line_hits: np.ndarray | None = None
    line_misses: np.ndarray | None = None
    hit_mask: np.ndarray | None = None  # uint8 [steps, layers, requests, k] of the next block

    @classmethod
    def zeros(cls, layers: int, lines: bool = False) -> Counters:
        z = [np.zeros(layers, np.int64) for _ in range(5 if lines else 3)]
        return cls(*z)


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

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        self.blocks = blocks
        self.partition = partition
        self.geometry = geometry

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
