"""predictability.png: the lines are the analysis numbers; other traces come from JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dsacache.analysis import analyze
from dsacache.cli.app import run
from dsacache.report.predictability_plot import plot_predictability, read_analysis
from dsacache.sweep import parse_config, run_sweep
from dsacache.trace.geometry import preset
from dsacache.trace.synth import synthesize

GRID = """
traces = [{synth = "deepseek-v3.2", steps = 12, context = 256, layers = 3, top_k = 16}]
policies = ["token-lru"]
capacities = [0.01]
"""


def _lines(fig) -> dict[str, list[float]]:  # noqa: ANN001
    return {  # labels wrap long names over lines; joined again here
        str(line.get_label()).replace("\n", ""): [float(y) for y in line.get_ydata()]
        for ax in fig.axes
        for line in ax.get_lines()
        if not str(line.get_label()).startswith("_")
    }


def _same(a: list[float], b: list[float | None]) -> bool:
    want = [np.nan if v is None else v for v in b]
    return np.allclose(a, want, equal_nan=True, rtol=1e-12)


def test_figure_draws_the_analysis(tmp_path: Path, drawn: dict[str, object]) -> None:
    g = preset("deepseek-v3.2").with_overrides(layers=3, top_k=16)
    a = analyze(synthesize(g, 20, 128, seed=1), predictability=True).to_dict()
    b = analyze(synthesize(g, 20, 128, seed=2)).to_dict()  # no predictability: overlaps only
    plot_predictability([("A", a), ("B", b)], tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    lines = _lines(drawn["p.png"])
    group = a["predictability"]["groups"][0]
    lift = f" (lift {group['streak_lift']:+.2f})"
    assert _same(lines[f"A, layers 0-2{lift}"], group["p_by_streak"])
    for name, data in (("A", a), ("B", b)):
        assert _same(lines[f"{name}: consecutive"], data["per_layer"]["consecutive_overlap"])
        assert _same(lines[f"{name}: shifted by one"], data["per_layer"]["shifted_overlap"])
    assert not any(label.startswith("B, layers") for label in lines)


def test_report_adds_analysis_json(
    tmp_path: Path, drawn: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "sweep"
    run_sweep(parse_config(GRID), folder, workers=1)
    g = preset("deepseek-v3.2").with_overrides(layers=3, top_k=16)
    synthesize(g, 15, 200, seed=5, out=tmp_path / "o.zarr")
    assert run(["analyze", str(tmp_path / "o.zarr"), "--predictability", "--json"]) == 0
    other = tmp_path / "other.json"
    other.write_text(capsys.readouterr().out)  # what `... --json > other.json` writes
    assert run(["report", str(folder), "--analysis", str(other)]) == 0
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "shifted by one position" in html
    lines = _lines(drawn["predictability.png"])
    data = json.loads(other.read_text())
    assert _same(lines[f"{other}: shifted by one"], data["per_layer"]["shifted_overlap"])
    assert any("SYNTHETIC" in label for label in lines)  # the sweep's own trace, first


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not a readable analysis JSON"),
        ("[1, 2]", "not the output of `dsacache analyze --json`"),
        ('{"per_layer": {"new_lookup_fraction": [0.5]}}', "per_layer has no consecutive_overlap"),
    ],
)
def test_bad_analysis_json_is_one_line(tmp_path: Path, capsys, text: str, needle: str) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert run(["report", str(tmp_path), "--analysis", str(bad)]) == 2  # no results either:
    err = capsys.readouterr().err  # the folder is checked first
    assert err.count("\n") == 1 and "results.parquet" in err
    with pytest.raises(Exception, match=needle):
        read_analysis(bad)
