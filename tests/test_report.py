"""`dsacache report`: figures (real PNGs), report.html (inlined images, results table,
metrics beside the paper's), the new-lookup heatmap data, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dsacache.analysis import PAPER, analyze
from dsacache.cli.app import run as cli_run
from dsacache.report import build_report, new_lookup_matrix
from dsacache.sim.mrc import mrc
from dsacache.sweep import parse_config, run_sweep
from dsacache.sweep.runner import build_trace
from dsacache.trace.geometry import preset
from dsacache.trace.model import Trace
from dsacache.trace.synth import synthesize

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = (
    "hit_rate.png",
    "slowdown.png",
    "new_lookup_heatmap.png",
    "mrc.png",
    "predictability.png",
)
GRID = """
traces = [{synth = "deepseek-v3.2", steps = 10, context = 512, layers = 2, top_k = 32}]
policies = ["min", "token-lru"]
capacities = [0, 0.02, 0.05]
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "sweep"
    run_sweep(parse_config(GRID), out, workers=1)
    return out


def test_report_writes_pngs_and_self_contained_html(
    swept: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_run(["report", str(swept)]) == 0
    for name in FIGURES:
        data = (swept / name).read_bytes()
        assert data[:8] == PNG, name
        assert len(data) > 1000, name
    html = (swept / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert 'src="fig' not in html and '.png"' not in html  # nothing links to a file
    assert '<table class="results">' in html
    rows = pq.read_table(swept / "results.parquet").to_pylist()
    assert html.count("<tr>") >= len(rows) + 1
    assert "token-lru" in html and "min" in html
    assert '<table class="metrics">' in html and "new_lookup_fraction" in html
    assert "SYNTHETIC" in html
    assert "report.html" in capsys.readouterr().out
    # The tables' numbers: every results row is a parquet row, the metrics are analyze()'s.
    tables = _html_tables(html)
    head, *body = tables["results"]
    assert len(body) == len(rows)
    for cells, row in zip(body, rows, strict=True):
        shown = dict(zip(head, cells, strict=True))
        assert shown["policy"] == row["policy"]
        for col in ("hit_rate", "slowdown", "effective_capacity_mib"):
            assert shown[col] == f"{row[col]:.4g}", col
    trace = build_trace(json.loads(rows[0]["trace_identity"]), str(swept))
    result = analyze(trace).to_dict()
    shown = {name: value for name, value, _paper in tables["metrics"][1:]}
    assert set(shown) == set(PAPER)
    for name, value in shown.items():
        assert value == (f"{result[name]:.4g}" if result[name] is not None else "-"), name


def _html_tables(text: str) -> dict[str, list[list[str]]]:
    """{table class: rows of cell texts} of an HTML page (stdlib parser)."""
    from html.parser import HTMLParser

    tables: dict[str, list[list[str]]] = {}

    class Cells(HTMLParser):
        current: str | None = None

        def handle_starttag(self, tag, attrs):  # noqa: ANN001, ANN202
            if tag == "table":
                self.current = dict(attrs).get("class")
                tables[self.current] = []
            elif tag == "tr" and self.current:
                tables[self.current].append([])
            elif tag in ("td", "th") and self.current:
                tables[self.current][-1].append("")

        def handle_endtag(self, tag):  # noqa: ANN001, ANN202
            if tag == "table":
                self.current = None

        def handle_data(self, data):  # noqa: ANN001, ANN202
            if self.current and tables[self.current] and tables[self.current][-1]:
                tables[self.current][-1][-1] += data

    Cells().feed(text)
    return tables


def _policy_lines(fig) -> dict[tuple[str, str], tuple[list[float], list[float]]]:  # noqa: ANN001
    """{(panel title, policy): (x, y)} of the per-policy lines (the paper's points excluded)."""
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = str(line.get_label())
            if label.startswith("_") or label.startswith("paper"):
                continue
            policy = label.removesuffix(" (optimal)")
            out[(ax.get_title(), policy)] = (list(line.get_xdata()), list(line.get_ydata()))
    return out


def test_figures_plot_the_parquet_numbers(swept: Path, drawn: dict[str, object]) -> None:
    """The hit-rate and slowdown panels draw exactly results.parquet's rows; the heatmap is the
    trace's per-step new-lookup fractions; token-lru's hit rates equal the MRC's."""
    build_report(swept)
    rows = pq.read_table(swept / "results.parquet").to_pylist()
    for png, column, scale in (
        ("hit_rate.png", "hit_rate", 100.0),
        ("slowdown.png", "slowdown", 1.0),
    ):
        lines = _policy_lines(drawn[png])
        want = {}
        for r in rows:
            title = f"{r['trace']}\npartition {r['partition']}, {r['hardware']}"
            if png == "slowdown.png":  # one slowdown panel per weights setting
                title += f", weights {r['weights_bytes_per_layer'] / 2**20:,.0f} MiB/layer"
            want.setdefault((title, r["policy"]), []).append(
                (r["effective_capacity_mib"], scale * r[column])
            )
        assert set(lines) == set(want), png
        for key, pts in want.items():
            x, y = lines[key]
            np.testing.assert_allclose(x, [p[0] for p in sorted(pts)], rtol=1e-12)
            np.testing.assert_allclose(y, [p[1] for p in sorted(pts)], rtol=1e-12)
    # The heatmap image is the trace's [steps, layers] new-lookup matrix, transposed.
    trace = build_trace(json.loads(rows[0]["trace_identity"]), str(swept))
    image = drawn["new_lookup_heatmap.png"].axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.ma.filled(image, np.nan), new_lookup_matrix(trace).T)
    # An independent number for the same rows: one Mattson pass gives token-LRU at every size.
    curve = mrc(trace, "global")
    lru = [r for r in rows if r["policy"] == "token-lru"]
    assert lru and all(r["accesses"] == curve.accesses for r in lru)
    for r in lru:
        assert r["hits"] == curve.hits_at(r["capacity_tokens"])
    assert max(r["hit_rate"] for r in lru) > 0  # the grid reaches sizes that hit


def test_report_with_trace_option(swept: Path, tmp_path: Path) -> None:
    g = preset("deepseek-v3.2").with_overrides(layers=2, top_k=32)
    store = tmp_path / "t.zarr"
    synthesize(g, 6, 256, seed=3, out=store)
    (swept / "report.html").unlink(missing_ok=True)
    assert cli_run(["report", str(swept), "--trace", str(store)]) == 0
    html = (swept / "report.html").read_text()
    assert str(store) in html and "SYNTHETIC" not in html


def test_no_results_is_one_line_rc2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.parquet" in err and str(tmp_path) in err
    assert cli_run(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err
    assert not (tmp_path / "report.html").exists()


def test_new_lookup_matrix_by_hand_and_against_analysis() -> None:
    idx = np.array(
        [[[0, 1, 2, -1]], [[1, 2, 3, 4]], [[5, -1, -1, -1]], [[5, 6, -1, -1]]], dtype=np.int32
    )
    geometry = preset("deepseek-v3.2").with_overrides(layers=1, top_k=4)
    trace = Trace.from_arrays(idx, np.array([8, 9, 10, 11]), geometry)
    m = new_lookup_matrix(trace)
    assert m.shape == (4, 1) and np.isnan(m[0, 0])
    np.testing.assert_allclose(m[1:, 0], [2 / 4, 1.0, 1 / 2])
    g = preset("deepseek-v3.2").with_overrides(layers=3, top_k=64)
    t = synthesize(g, 30, 1024, seed=1)
    m = new_lookup_matrix(t)
    a = analyze(t)
    assert np.nanmean(m) == pytest.approx(a.new_lookup_fraction, rel=1e-12)
    np.testing.assert_allclose(np.nanmean(m, axis=0), a.per_layer["new_lookup_fraction"])
