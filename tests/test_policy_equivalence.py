"""Every policy decides exactly as it did before all of them ran on the one driver.

tests/ref_policies is a frozen copy of the policy package from before the driver carried every
policy (each with its own kernel or hooks then). Both replay the same traces, one step per
block: the per-access hit masks must be equal where the reference emits one, and the per-step,
per-layer hits, misses, prefetches and line tallies everywhere. Traces: hypothesis-generated
ones (with and without near-miss rows, kv rows of whole and of shared 128-byte lines) and a
recording of the bundled backbone.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import BLOCK_TOKENS, INDEX_BYTES, load_recording, make_trace
from dsacache.sim import SimConfig
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies import POLICIES, Counters
from dsacache.trace import Geometry, Trace
from dsacache.trace.blocks import StepBlocks
from ref_policies import POLICIES as REFERENCE
from ref_policies import Counters as RefCounters

NAMES = sorted(REFERENCE)
SPECS = ["global", "per-layer", "pinned:0"]
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sources(name: str, trace: Trace) -> list[str | None]:
    """The near-miss sources a trace allows (None for every other policy)."""
    if not POLICIES[name].uses_near_miss:
        return [None]
    rows = any(r.near_miss is not None for r in trace.requests)
    return ["trace", "layer-below"] if rows else ["layer-below"]


def replay_steps(cls: type, counters_cls: type, trace: Trace, cap: int, spec: str, source):  # noqa: ANN205
    """Per-step tallies (dict of int64 [steps, layers]) and the hit mask (or None)."""
    g = trace.geometry
    cls.warmup()
    blocks = StepBlocks(trace, 1, near_miss=cls.uses_near_miss and source == "trace")
    policy = cls(blocks, parse_partition(spec, g.layers, cap), g)
    if source is not None:
        if hasattr(policy, "configure"):
            policy.configure(SimConfig(cls.name, capacity_tokens=cap, near_miss_source=source))
        else:
            policy.set_source(source)
    counters = counters_cls.zeros(g.layers, lines=cls.counts_lines)
    if cls.needs_backward_pass:
        for block in blocks.reversed():
            policy.prepare_block(block)
    policy.prepare()
    fields = ["hits", "misses", "prefetches", "line_hits", "line_misses"]
    rows: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    masks = []
    for block in blocks:
        counters.hit_mask = np.zeros(block.indices.shape, np.uint8)
        policy.run_block(block, counters)
        masks.append(counters.hit_mask)
        for f in fields:
            v = getattr(counters, f)
            rows[f].append(np.zeros(g.layers, np.int64) if v is None else v.copy())
    tallies = {f: np.array(v) for f, v in rows.items()}
    emits = getattr(cls, "emits_hit_mask", False) or hasattr(cls, "kernel")
    return tallies, (np.concatenate(masks) if emits and masks else None)


def assert_same(name: str, trace: Trace, cap: int, spec: str) -> None:
    for source in sources(name, trace):
        new, new_mask = replay_steps(POLICIES[name], Counters, trace, cap, spec, source)
        ref, ref_mask = replay_steps(REFERENCE[name], RefCounters, trace, cap, spec, source)
        where = f"{name} capacity {cap} {spec} source {source}"
        for f in new:
            np.testing.assert_array_equal(new[f], ref[f], err_msg=f"{where}: {f}")
        if ref_mask is not None:
            assert new_mask is not None, where
            np.testing.assert_array_equal(new_mask, ref_mask, err_msg=f"{where}: hit mask")


trace_params = st.fixed_dictionaries(
    {
        "steps": st.integers(1, 7),
        "layers": st.integers(1, 3),
        "k": st.integers(1, 6),
        "context": st.integers(1, 14),
        "requests": st.integers(1, 3),
        "near_miss": st.sampled_from([0, 2]),
        "kv": st.sampled_from([200, 256, 656]),
        "seed": st.integers(0, 2**16),
    }
)


def random_trace(p: dict) -> Trace:
    steps = [max(1, p["steps"] - r) for r in range(p["requests"])]
    g = Geometry(p["layers"], p["k"], p["kv"], INDEX_BYTES, BLOCK_TOKENS)
    return make_trace(
        steps, p["layers"], p["k"], p["context"], p["requests"], p["near_miss"], p["seed"],
        geometry=g,
    )  # fmt: skip


def test_every_reference_policy_is_registered():
    assert set(NAMES) <= set(POLICIES)


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(p=trace_params, cap=st.integers(0, 40), spec=st.sampled_from(SPECS))
def test_same_decisions_on_random_traces(name, p, cap, spec):
    assert_same(name, random_trace(p), cap, spec)


@pytest.fixture(scope="module")
def recording() -> Trace:
    """The stored recording of the bundled backbone (conftest.RECORDING)."""
    return load_recording()


@pytest.mark.parametrize("name", NAMES)
def test_same_decisions_on_a_recording(recording, name):
    g = recording.geometry
    footprint = g.layers * g.top_k * len(recording.requests)
    for cap in (footprint // 4, footprint, 4 * footprint):
        for spec in ("global", "per-layer", "pinned:1,3"):
            assert_same(name, recording, cap, spec)
