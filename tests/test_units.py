from dsacache import units


def test_units_agree():
    assert units.MIB == 1024 * units.KIB and units.GIB == 1024 * units.MIB
    assert units.LINE_BYTES == units.SECTORS_PER_LINE * units.SECTOR_BYTES == 128
    assert units.lines_of(255) == 1 and units.lines_of(256) == 2
    assert units.from_mib(1.5) == 1572864 and units.from_mib(1e-7) == 0
    assert units.to_mib(3 * units.MIB) == 3.0
