"""Token-level policies of the reserved region; importing this package registers them all.

POLICIES maps each policy's name to its class (see base.py for the interface).
"""

from dsacache.sim.policies import (  # noqa: F401  (imported to register)
    belady,
    fifo,
    hazard,
    keep_previous,
    line_lru,
    lru,
    near_miss,
)
from dsacache.sim.policies.base import POLICIES, Counters, TokenPolicy, register

__all__ = ["POLICIES", "Counters", "TokenPolicy", "register"]
