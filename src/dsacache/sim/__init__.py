"""sim/: cache engines and policies replaying a trace's decode memory stream."""

from dsacache.sim.config import SimConfig
from dsacache.sim.policies import POLICIES
from dsacache.sim.simulate import SimResult, simulate

__all__ = ["POLICIES", "SimConfig", "SimResult", "simulate"]
