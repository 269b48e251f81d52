"""One GPU's decode step with the KV offloaded behind HBM buffers (the sweep's hierarchy runs):
the perf model's step (docs/perf-model.md), whose gathers hit at the LLC level's rate, plus the
swap-in's reads of the buffers' misses over the host link, on the critical path (HiSparse does
not overlap them; docs/hierarchy.md) with the swap-in kernels' fixed cost per layer.

The host term is the serving model's (perf/serving.py, host_read_s) on the trace's own misses:
the mean step's misses in the layers this GPU holds (layers_per_gpu of the trace's layers), its
requests the trace's.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsacache.errors import DsacacheError
from dsacache.hardware import GpuSpec, HostLink
from dsacache.perf.model import PerfResult
from dsacache.perf.serving import DEFAULT_SWAP_LAYER_S, host_read_s
from dsacache.sim.hierarchy import HierarchyResult


@dataclass(frozen=True)
class OffloadStep:
    """The step with host reads: perf (the GPU's part) + host reads + the swap-in's fixed cost."""

    perf: PerfResult
    host_s: float
    fixed_s: float

    @property
    def total_s(self) -> float:
        return self.perf.step_seconds + self.host_s + self.fixed_s

    @property
    def ideal_s(self) -> float:
        """Every gather an LLC hit and every row in its buffer: the swap-in still runs."""
        return self.perf.ideal.total_s + self.fixed_s

    @property
    def slowdown(self) -> float:
        return self.total_s / self.ideal_s

    @property
    def tokens_per_s_per_user(self) -> float:
        return 1.0 / self.total_s

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.perf.workload.batch / self.total_s


def offload_step(
    perf: PerfResult,
    hierarchy: HierarchyResult,
    hw: GpuSpec,
    link: HostLink,
    swap_layer_s: float = DEFAULT_SWAP_LAYER_S,
) -> OffloadStep:
    """The step of `perf` (a workload of the same trace) with `hierarchy`'s host reads on
    `link`."""
    if hierarchy.steps == 0:
        raise DsacacheError("the hierarchy simulation has no steps: nothing to model")
    layers = perf.workload.layers_per_gpu
    batch = perf.workload.batch
    rows = hierarchy.misses / hierarchy.steps * layers / hierarchy.layers
    per_request_layer = rows / (batch * layers)
    host_s = host_read_s(link, hierarchy.kv_bytes_per_token, rows, layers, batch,
                         per_request_layer, hw.sms)  # fmt: skip
    return OffloadStep(perf, host_s, layers * swap_layer_s)
