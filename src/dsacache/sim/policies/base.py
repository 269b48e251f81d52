"""The one interface every token-level policy implements.

A policy replays the trace's accesses in access order (step -> layer -> request -> slot; every
valid slot an access of the key (request, layer, token)) against a fully-associative reserved
region of whole tokens, split per `Partition`. The driver hands it interleaved step blocks
(int32 [steps, layers, requests, k], -1 = empty) in order; the policy runs each block in a
compiled kernel over flat arrays and adds to the per-layer counters. A layer with
partition.of_layer[l] == -1 bypasses the region: all its accesses are misses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry


@dataclass
class Counters:
    """Per-layer tallies a policy fills (int64 [layers] each)."""

    hits: np.ndarray
    misses: np.ndarray
    prefetches: np.ndarray  # tokens brought into the region ahead of demand (HBM reads)

    @classmethod
    def zeros(cls, layers: int) -> Counters:
        return cls(*(np.zeros(layers, np.int64) for _ in range(3)))


class TokenPolicy(ABC):
    """Base of the token-level policies; subclasses register with @register."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help
    uses_near_miss: ClassVar[bool] = False  # ask the driver for near-miss blocks

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        self.blocks = blocks
        self.partition = partition
        self.geometry = geometry

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Work before the replay that counts as engine time (e.g. MIN's next-use pass)."""

    @abstractmethod
    def run_block(self, block: StepBlock, counters: Counters) -> None:
        """Replay every access of `block` in order, updating state and counters."""

    @classmethod
    @abstractmethod
    def warmup(cls) -> None:
        """Compile the policy's kernels on a tiny input (so engine time excludes the JIT)."""


POLICIES: dict[str, type[TokenPolicy]] = {}


def register(cls: type[TokenPolicy]) -> type[TokenPolicy]:
    POLICIES[cls.name] = cls
    return cls
