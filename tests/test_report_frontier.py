"""The report's fraction-of-MIN figure: drawn when a sweep holds MIN and two other policies,
and the new online policies running through sweep -> perf -> report."""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import pyarrow.parquet as pq
import pytest

from dsacache.cli.app import run as cli_run
from dsacache.report.figures import has_policy_frontier, plot_fraction_of_min
from dsacache.sweep import parse_config, run_sweep

PNG = b"\x89PNG\r\n\x1a\n"
GRID = """
traces = [{synth = "deepseek-v3.2", steps = 12, context = 512, layers = 2, top_k = 32}]
policies = ["min", "token-lru", "keep-previous", "hazard", "hazard-plus"]
capacities = [0.02, 0.05, 0.2]
"""


def row(policy: str, mib: float, rate: float, trace: str = "t") -> dict:
    return {"trace": trace, "partition": "global", "hardware": "h200", "policy": policy,
            "effective_capacity_mib": mib, "hit_rate": rate}  # fmt: skip


def test_has_policy_frontier_needs_min_and_two_others():
    two = [row("min", 1, 0.5), row("token-lru", 1, 0.2)]
    assert not has_policy_frontier(two)
    assert has_policy_frontier(two + [row("hazard", 1, 0.4)])
    assert not has_policy_frontier([row("a", 1, 0.1), row("b", 1, 0.2), row("c", 1, 0.3)])
    # the three must share a panel (trace, partition, hardware)
    assert not has_policy_frontier(two + [row("hazard", 1, 0.4, trace="other")])


def test_plot_fraction_of_min_writes_png(tmp_path: Path):
    rows = [row(p, m, r * m) for p, r in (("min", 0.5), ("hazard", 0.4), ("lru", 0.1))
            for m in (1, 2, 4)]  # fmt: skip
    rows.append(row("lru", 8, 0.3))  # no MIN at this capacity: left out, not a crash
    out = tmp_path / "f.png"
    saved = []
    savefig = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        saved.append(fig)
        return savefig(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "savefig", keep)
        plot_fraction_of_min(rows, out, log_x=True)
    assert out.read_bytes()[:8] == PNG
    # the drawn curves are hits / MIN's hits per capacity (0.4 / 0.5 and 0.1 / 0.5)
    (ax,) = [a for a in saved[0].axes if a.get_visible()]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for policy, frac in (("hazard", 0.8), ("lru", 0.2)):
        assert list(lines[policy].get_xdata()) == [1, 2, 4]
        assert lines[policy].get_ydata() == pytest.approx([frac] * 3)
    assert "min" not in lines and ax.get_xscale() == "log"


def test_sweep_with_new_policies_reports_fraction_of_min(tmp_path: Path):
    out = tmp_path / "sweep"
    run_sweep(parse_config(GRID), out, workers=1)
    rows = pq.read_table(out / "results.parquet").to_pylist()
    by = {(r["policy"], r["capacity_mib"]): r for r in rows}
    for (_, mib), r in by.items():
        assert r["slowdown"] is not None and r["slowdown"] >= 1.0  # perf ran on it
        assert by[("min", mib)]["hit_rate"] >= r["hit_rate"]
    assert cli_run(["report", str(out)]) == 0
    assert (out / "fraction_of_min.png").read_bytes()[:8] == PNG
    html = (out / "report.html").read_text()
    assert "fraction of MIN" in html and "hazard-plus" in html
