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
    assert len(rows) == 7
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


def test_policy_study_table_is_the_json() -> None:
    """The mean hit-rate table of "Policies at this level" is docs/hierarchy-policies.json's,
    recomputed here: per trace family, each policy's mean hit rate over its traces and its
    points over token-lru's mean."""
    import json

    res = json.loads((DOC.parent / "hierarchy-policies.json").read_text())
    ratios = res["ratios"]

    def family(t: dict) -> str:
        if t["command"].startswith("dsacache record"):
            return "recordings"
        return "indexer" if "--generator indexer" in t["command"] else "statistics"

    def hit(t: dict, policy: str, ratio: float) -> float:
        (row,) = [r for r in t["rows"] if r["buffer_policy"] == policy and r["ratio"] == ratio]
        assert row["buffer_hit_rate"] == row["hits"] / (row["hits"] + row["misses"])
        return row["buffer_hit_rate"]

    rows = _rows(DOC.read_text(), "| traces | policy |")
    seen = set()
    for cells in rows:
        name, count = re.match(r"(\w+) \((\d+)\)", cells[0]).groups()
        ts = [t for t in res["traces"] if family(t) == name]
        assert len(ts) == int(count)
        seen.add((name, cells[1]))
        for ratio, cell in zip(ratios, cells[2:], strict=True):
            mean = sum(hit(t, cells[1], ratio) for t in ts) / len(ts)
            lru = sum(hit(t, "token-lru", ratio) for t in ts) / len(ts)
            value, points = re.match(r"([\d.]+) \(([-+][\d.]+)\)", cell).groups()
            assert float(value) == pytest.approx(mean, abs=0.0005)
            assert float(points) == pytest.approx(100 * (mean - lru), abs=0.05)
    families = {family(t) for t in res["traces"]}
    assert families == {"recordings", "statistics", "indexer"}
    assert seen == {(f, p) for f in families for p in res["policies"]}


def test_policy_study_layer_groups_add_up() -> None:
    """An indexer trace's layer groups, each replayed alone, hold exactly its layers. Where a
    policy's state is its (request, layer) buffer's own, they add up to the whole trace's hits
    and misses exactly; hazard learns one table over all layers and hazard-plus also reads the
    layer below, so alone a group learns from less: close, not equal."""
    import json

    res = json.loads((DOC.parent / "hierarchy-policies.json").read_text())
    grouped = [t for t in res["traces"] if t.get("groups")]
    assert len(grouped) >= 2
    for t in grouped:
        layers = sorted(i for g in t["groups"] for i in g["layers"])
        assert layers == list(range(t["layers"]))
        for row in t["rows"]:
            key = (row["buffer_policy"], row["ratio"])
            parts = [
                r for g in t["groups"] for r in g["rows"] if (r["buffer_policy"], r["ratio"]) == key
            ]
            assert len(parts) == len(t["groups"])
            hits = sum(r["hits"] for r in parts)
            assert hits + sum(r["misses"] for r in parts) == row["hits"] + row["misses"]
            if row["buffer_policy"] in ("hazard", "hazard-plus"):
                assert abs(hits - row["hits"]) < 0.003 * (row["hits"] + row["misses"])
            else:
                assert hits == row["hits"]


def test_policy_study_group_table_is_the_json() -> None:
    import json

    res = json.loads((DOC.parent / "hierarchy-policies.json").read_text())
    traces = {t["name"]: t for t in res["traces"]}
    rows = _rows(DOC.read_text(), "| trace | group (layers) |")
    assert rows
    for cells in rows:
        group, n = re.match(r"(\w+) \((\d+)\)", cells[1]).groups()
        (grp,) = [g for g in traces[cells[0]]["groups"] if g["group"] == group]
        assert len(grp["layers"]) == int(n)
        for ratio, cell in zip(res["ratios"], cells[3:], strict=True):
            (row,) = [
                r for r in grp["rows"] if r["buffer_policy"] == cells[2] and r["ratio"] == ratio
            ]
            assert float(cell) == pytest.approx(row["buffer_hit_rate"], abs=0.0005)
