"""docs/hierarchy.md stays true: its public-setting tables are what the model computes today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsacache.hardware import GPUS, gpu
from dsacache.perf.serving import BufferStats, ServingWorkload, serving_rows
from dsacache.perf.serving_models import serving_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "hierarchy.md"
PUBLIC = (serving_model("glm-5.1"), gpu("h200"), ServingWorkload(8, 32768, 8192, 4096))


def _rows(text: str, header_start: str) -> list[list[str]]:
    """Cells of the markdown table whose header line starts with `header_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    out = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        out.append([c.strip() for c in line.strip("|").split("|")])
    return out


def _num(cell: str) -> float:
    return float(re.match(r"[\d.,]+", cell).group().replace(",", ""))


@pytest.fixture(scope="module")
def public_hit_rate() -> float:
    """The doc's hit rate: `dsacache hierarchy l1.zarr --buffer-tokens 4096` on `dsacache synth
    --preset deepseek-v3.2 --layers 1 --steps 2000 --context 32768` (generated here)."""
    from dsacache.sim.hierarchy import HierarchyConfig, simulate_hierarchy
    from dsacache.trace.geometry import preset
    from dsacache.trace.synth import synthesize

    trace = synthesize(preset("deepseek-v3.2").with_overrides(layers=1), 2000, 32768)
    r = simulate_hierarchy(trace, HierarchyConfig(4096))
    assert f'"hits": {r.hits}, "misses": {r.misses}, "cold_misses": {r.cold_misses}' in (
        DOC.read_text().replace("\n", " ")
    )
    return r.hit_rate


def test_public_setting_table_is_the_model(public_hit_rate: float) -> None:
    rows = _rows(DOC.read_text(), "| concurrent requests |")
    conc = [int(r[0]) for r in rows]
    assert conc == [1, 8, 16, 32, 64, 128, 256]
    assert f'hit_rate": {public_hit_rate}' in DOC.read_text()
    res = serving_rows(*PUBLIC, conc, BufferStats(public_hit_rate))
    for cells, row in zip(rows, res.rows, strict=True):
        running = [int(x) for x in cells[1].split("/")]
        assert running == [row.baseline.running, row.offload.running]
        assert _num(cells[2]) == round(row.baseline_tokens_per_s)
        assert _num(cells[3]) == round(row.offload_tokens_per_s)
        assert _num(cells[4]) == pytest.approx(row.ratio, abs=0.005)
    assert res.baseline_max_concurrency == 40 and res.offload_max_concurrency == 232


def test_hit_rate_sensitivity_table_is_the_model() -> None:
    rows = _rows(DOC.read_text(), "| buffer hit rate |")
    assert len(rows) == 6
    for cells in rows:
        h = _num(cells[0])
        at8, at256 = serving_rows(*PUBLIC, [8, 256], BufferStats(h)).rows
        assert _num(cells[1]) == pytest.approx(at8.ratio, abs=0.005)
        assert _num(cells[2]) == pytest.approx(at256.ratio, abs=0.005)


def test_hardware_table_lists_every_row() -> None:
    rows = _rows(DOC.read_text(), "| GPU | memory |")
    assert [r[0].split()[0] for r in rows] == list(GPUS)
    for cells in rows:
        g = GPUS[cells[0].split()[0]]
        assert _num(cells[1]) == pytest.approx(g.hbm_bytes / 2**30, abs=0.05)
        assert _num(cells[2]) == pytest.approx(g.hbm_bytes_per_s / 1e12)
        assert cells[5] == g.link.label
