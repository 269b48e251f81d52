"""The HBM level in the report: the buffer figure plots the rows' numbers (one point per trace,
policy and N, whatever the perf axes), and a folder's hierarchy sweep and serving.json join the
report."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dsacache.report.figures import plot_buffer
from dsacache.sweep import parse_config, run_sweep

GRID = """
traces = [{synth = "deepseek-v3.2", steps = 6, context = 512, layers = 2, top_k = 32}]
buffer_tokens = [32, 64, 128]
buffer_policies = ["min", "token-lru"]
hardware = ["h100", "h200"]
"""


def _row(policy: str, n: int, hw: str, hit: float) -> dict:
    return {"trace": "t", "buffer_policy": policy, "buffer_tokens": n, "top_k": 32,
            "hardware": hw, "buffer_hit_rate": hit, "host_bytes_per_step_mean": n * 2**20,
            "host_bytes_per_step_p99": 2 * n * 2**20}  # fmt: skip


def test_plot_buffer_draws_each_point_once(drawn, tmp_path: Path) -> None:
    rows = [_row(p, n, hw, h) for p, h in (("min", 0.9), ("fifo", 0.5))
            for n in (64, 32, 128) for hw in ("h100", "h200")]  # fmt: skip
    rows.append({"buffer_tokens": None, "trace": "t"})  # an LLC run: not drawn
    plot_buffer(rows, tmp_path / "b.png")
    hit_ax, host_ax = drawn["b.png"].axes
    lines = {str(x.get_label()): x for x in hit_ax.get_lines()}
    assert set(lines) == {"min (optimal)", "fifo"}
    np.testing.assert_allclose(lines["fifo"].get_xdata(), [1, 2, 4])
    np.testing.assert_allclose(lines["fifo"].get_ydata(), [50, 50, 50])
    host = {str(x.get_label()): x for x in host_ax.get_lines()}
    np.testing.assert_allclose(host["min (optimal) mean"].get_ydata(), [32, 64, 128])
    np.testing.assert_allclose(host["min (optimal) p99"].get_ydata(), [64, 128, 256])
    rows += [{**r, "trace": "u"} for r in rows if r["buffer_tokens"] is not None]
    plot_buffer(rows, tmp_path / "c.png", host=False)  # one hit-rate panel per trace
    panels = drawn["c.png"].axes
    assert [ax.get_title() for ax in panels] == ["t", "u"]
    assert all(len(ax.get_lines()) == 2 for ax in panels)


def test_report_of_a_folder_with_a_hierarchy_sweep(drawn, tmp_path: Path) -> None:
    from dsacache.cli.app import run

    out = tmp_path / "h"
    counts = run_sweep(parse_config(GRID), out, workers=1)
    assert counts["runs"] == 12 and counts["simulations"] == 6  # hardware is a perf axis
    rows = pq.read_table(out / "results.parquet").to_pylist()
    serving = tmp_path / "serving.json"
    argv = ["serving", "--model", "deepseek-v3.2", "--hardware", "h200", "--gpus", "8",
            "--input-tokens", "8192", "--output-tokens", "512", "--buffer-tokens", "4096",
            "--concurrency", "8,64", "--hit-rate", "0.9", "--json"]  # fmt: skip
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert run(argv) == 0
    serving.write_text(buf.getvalue())
    # the hierarchy sweep as a sub-folder of an LLC sweep folder, with a serving.json beside
    parent = tmp_path / "parent"
    llc = GRID.split("buffer_tokens")[0] + 'policies = ["token-lru"]\ncapacities = [0, 0.05]\n'
    run_sweep(parse_config(llc), parent, workers=1)
    shutil.copytree(out, parent / "hierarchy")
    shutil.copy(serving, parent / "serving.json")
    assert run(["report", str(parent)]) == 0
    html = (parent / "report.html").read_text()
    assert "HBM buffers over host memory" in html and "Modelled decode throughput" in html
    assert (parent / "buffer.png").is_file() and (parent / "serving.png").is_file()
    hit_ax = drawn["buffer.png"].axes[0]
    lru = next(x for x in hit_ax.get_lines() if x.get_label() == "token-lru")
    want = sorted((r["buffer_tokens"] / 32, 100 * r["buffer_hit_rate"]) for r in rows
                  if r["buffer_policy"] == "token-lru" and r["hardware"] == "h100")  # fmt: skip
    np.testing.assert_allclose(lru.get_xdata(), [w[0] for w in want])
    np.testing.assert_allclose(lru.get_ydata(), [w[1] for w in want])
    # the LLC figures draw the LLC sweep only
    assert len(drawn["hit_rate.png"].axes[0].get_lines()[0].get_xdata()) == 2
    assert json.loads(serving.read_text())["rows"][0]["buffer_hit_rate"] == 0.9
    # a serving.json that is not `serving --json` output: a note, no figure, no traceback
    (parent / "serving.png").unlink()
    (parent / "serving.json").write_text('{"rows": []}')
    assert run(["report", str(parent)]) == 0
    assert "is not `dsacache serving --json` output" in (parent / "report.html").read_text()
    assert not (parent / "serving.png").exists()
