"""The one hardware table: every number sourced, and the LLC, GPU-L2, perf views agree with it."""

from __future__ import annotations

import dataclasses

import pytest

from dsacache.errors import DsacacheError
from dsacache.hardware import GPUS, HOST_LINKS, SET_ASIDE_FRACTION, gpu
from dsacache.perf.presets import params_from_hardware, perf_params
from dsacache.sim.llc.gpu_l2 import GPU_L2_PRESETS
from dsacache.sim.llc.hardware import PRESETS, hardware
from dsacache.units import GIB, MIB

NOT_NUMBERS = {"name", "label", "sources"}


@pytest.mark.parametrize("name", list(GPUS))
def test_every_number_has_a_source(name):
    g = GPUS[name]
    for f in dataclasses.fields(g):
        if f.name in NOT_NUMBERS or getattr(g, f.name) is None:
            continue
        note = g.sources.get(f.name, "")
        assert note.strip(), f"{name}.{f.name} has no source note"
    d = g.to_dict()
    assert d["host_link_bytes_per_s"] == g.link.raw_bytes_per_s
    assert any(k.startswith("host_link.") for k in d["sources"])


@pytest.mark.parametrize("name", list(HOST_LINKS))
def test_every_link_number_has_a_source(name):
    link = HOST_LINKS[name]
    for f in ("raw_bytes_per_s", "payload_bytes", "overhead_bytes", "read_latency_s"):
        assert link.sources[f].strip()
    assert "ASSUMED" in link.sources["read_latency_s"]


def test_pcie_gen5_row_cost_by_hand():
    link = HOST_LINKS["pcie-gen5-x16"]
    raw = 32e9 * 16 / 8 * 128 / 130  # 63.015 GB/s
    assert link.raw_bytes_per_s == pytest.approx(63.015e9, rel=1e-4)
    assert link.read_bytes_per_s == pytest.approx(raw * 128 / 152)
    # a BF16 MLA row (1152 B) is 9 whole lines; an FP8 one (656 B) needs 6 (5.125 rounded up)
    assert link.row_read_s(1152) == pytest.approx(9 * 152 / raw)
    assert link.row_read_s(656) == pytest.approx(6 * 152 / raw)
    assert link.row_read_s(128) == pytest.approx(152 / raw)
    assert HOST_LINKS["nvlink-c2c"].raw_bytes_per_s == 450e9


def test_documented_facts():
    h200, h100, b200 = gpu("h200"), gpu("h100"), gpu("b200")
    assert h200.hbm_bytes == 143_771 * MIB and h200.l2_bytes == 62_914_560
    assert h200.set_aside_max_bytes == 37.5 * MIB and h200.sms == 132
    assert h100.hbm_bytes == 80 * GIB and h100.hbm_bytes_per_s == 3.35e12
    assert h100.fp8_flops == 2 * h100.bf16_flops == 1979e12
    assert b200.fp8_flops == 4.5e15 and b200.sm_version == 100
    assert gpu("gh200").host_link == "nvlink-c2c"
    rtx = gpu("rtx-pro-6000")
    assert rtx.hbm_bytes == 97_887 * MIB and rtx.hbm_bytes_per_s == 1.792e12
    assert rtx.host_link == "pcie-gen5-x16" and rtx.sm_version == 120
    assert gpu("a100-80gb").fp8_flops is None
    # where no device measured it, the set-aside is the CUDA guide's 75 % of L2
    for g in GPUS.values():
        if g.name != "h200":
            assert g.set_aside_max_bytes == int(SET_ASIDE_FRACTION * g.l2_bytes)
    assert gpu("H200") is h200
    with pytest.raises(DsacacheError, match="unknown hardware 'tpu'"):
        gpu("tpu")


def test_llc_view_reads_the_table():
    with_latencies = {n for n, g in GPUS.items() if g.has_llc_latencies}
    assert set(PRESETS) == with_latencies
    assert {"h100", "h200", "b200", "gh200", "mi300x"} <= with_latencies
    for name, hw in PRESETS.items():
        g = GPUS[name]
        assert hw.llc_bytes == g.l2_bytes and hw.clock_ghz == g.clock_ghz
        assert (hw.llc_hit_cycles, hw.dram_cycles) == (g.llc_hit_cycles, g.dram_cycles)
        assert hw.hbm_bytes_per_s == g.hbm_bytes_per_s
        assert hw.set_aside_max_bytes == g.set_aside_max_bytes
        assert hw.sources["llc_bytes"] == g.sources["l2_bytes"]
    with pytest.raises(DsacacheError, match="unknown hardware"):
        hardware("rtx-pro-6000")  # no public L2 latencies: not an LLC preset


def test_gpu_l2_presets_are_views_of_the_table():
    for name, p in GPU_L2_PRESETS.items():
        g = gpu(name)
        assert (p.l2_bytes, p.partitions, p.sms) == (g.l2_bytes, g.l2_partitions, g.sms)
        assert p.sources["l2_bytes"] == g.sources["l2_bytes"]
        assert p.sources["partitions"] == g.sources["l2_partitions"]
        assert p.threads_per_sm == 2048  # compute capability 8.0 / 9.0 / 10.0


def test_perf_presets_read_the_table():
    for name in PRESETS:
        p = perf_params(name)
        g = gpu(name)
        assert p.hbm_bytes_per_s == g.hbm_bytes_per_s
        assert p.hbm_ns == pytest.approx(g.dram_cycles / g.clock_ghz)
        assert p.llc_hit_ns == pytest.approx(g.llc_hit_cycles / g.clock_ghz)
    with pytest.raises(DsacacheError, match="no public L2 / DRAM latencies"):
        params_from_hardware(gpu("rtx-pro-6000"))
    with pytest.raises(DsacacheError, match="no public L2 / DRAM latencies"):
        perf_params("a100-80gb")
