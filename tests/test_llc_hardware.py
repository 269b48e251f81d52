"""Hardware presets: the documented facts, the modelled power-of-two geometry, source notes."""

from __future__ import annotations

import pytest

from dsacache.errors import DsacacheError
from dsacache.sim.llc.hardware import (
    LINE_BYTES,
    MIB,
    PRESETS,
    CacheShape,
    hardware,
    is_power_of_two,
    model_geometry,
)


def test_design_facts():
    h100, h200, b200, mi = (hardware(n) for n in ("h100", "h200", "b200", "mi300x"))
    assert h100.llc_bytes == 50 * MIB and (h100.llc_hit_cycles, h100.dram_cycles) == (291, 700)
    assert h100.hbm_bytes_per_s == 3.35e12 and h100.set_aside_max_bytes == 37.5 * MIB
    assert h200.llc_bytes == 60 * MIB and h200.hbm_bytes_per_s == 4.8e12
    assert h200.set_aside_max_bytes == 37.5 * MIB
    assert b200.llc_bytes == 126.5 * MIB and (b200.llc_hit_cycles, b200.dram_cycles) == (295, 860)
    assert b200.hbm_bytes_per_s == 8e12 and b200.set_aside_max_bytes == 0.75 * 126.5 * MIB
    assert mi.llc_bytes == 256 * MIB
    assert LINE_BYTES == 128
    assert hardware("H100") is h100


@pytest.mark.parametrize("name", list(PRESETS))
def test_modelled_geometry(name):
    hw = PRESETS[name]
    assert is_power_of_two(hw.sets) and hw.ways >= 16
    assert hw.shape.capacity_bytes == hw.modelled_bytes == hw.sets * hw.ways * 128
    assert abs(hw.modelled_bytes - hw.llc_bytes) / hw.llc_bytes < 0.02
    # every number has a source note, and assumptions say so
    for field in (
        "llc_bytes",
        "sets",
        "ways",
        "llc_hit_cycles",
        "dram_cycles",
        "clock_ghz",
        "hbm_bytes_per_s",
        "set_aside_max_bytes",
    ):
        assert hw.sources[field]
    assert "ASSUMED" in hw.sources["ways"]
    d = hw.to_dict()
    assert d["sources"] and d["modelled_bytes"] == hw.modelled_bytes


@pytest.mark.parametrize(
    "name,full_mib", [("h100", 37.5), ("h200", 37.5), ("b200", 94.875), ("mi300x", 192.0)]
)
def test_set_aside_limit(name, full_mib):
    # the preset's maximum on its own shape; 75 % of a smaller overridden cache
    hw = hardware(name)
    assert hw.set_aside_limit(hw.shape) == full_mib * MIB
    assert hw.set_aside_limit(CacheShape(16, 4)) == 6144  # 0.75 x 64 lines x 128 B
    assert hw.set_aside_limit(CacheShape(1, 1)) == 96


def test_exact_where_possible():
    assert (hardware("h100").sets, hardware("h100").ways) == (16384, 25)
    assert (hardware("h200").sets, hardware("h200").ways) == (16384, 30)
    assert (hardware("mi300x").sets, hardware("mi300x").ways) == (131072, 16)
    assert hardware("b200").modelled_bytes == 128 * MIB  # 126.5 MiB is not sets x ways x 128
    assert "ASSUMED" in hardware("mi300x").sources["llc_hit_cycles"]
    assert model_geometry(64 * 128) == (4, 16)


def test_overrides_and_bad_shapes():
    h = hardware("h100")
    assert h.with_shape(ways=8) == CacheShape(16384, 8)
    assert h.with_shape(sets=1024, ways=4).capacity_bytes == 1024 * 4 * 128
    for sets, ways, msg in [
        (1000, 4, "power of two"),
        (0, 4, "positive"),
        (16, 0, "positive"),
        (-4, 4, "positive"),
        (16, 256, "at most 255"),
    ]:
        with pytest.raises(DsacacheError, match=msg):
            CacheShape(sets, ways)
    with pytest.raises(DsacacheError, match="unknown hardware 'tpu'"):
        hardware("tpu")
