"""`dsacache demo`: the whole pipeline on a tiny synthetic trace writes every output."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dsacache.analysis import analyze
from dsacache.cli.app import run as cli_run
from dsacache.cli.demo_cmd import (
    DEMO_BUFFER_TOKENS,
    DEMO_CAPACITIES_MIB,
    DEMO_POLICIES,
    DEMO_SERVING_BUFFER,
    DEMO_WEIGHTS_MIB,
)
from dsacache.report.slowdown_note import BEST_ONLINE
from dsacache.sim.hierarchy import HierarchyConfig, simulate_hierarchy
from dsacache.sim.mrc import mrc
from dsacache.sweep import parse_config
from dsacache.sweep.runner import build_trace
from dsacache.trace import Trace

# Printed table row -> analysis JSON key (print_metrics_table's rows, in order).
TABLE_ROWS = (
    ("new_lookup_fraction", "new_lookup_fraction"),
    ("P95", "new_lookup_fraction_p95"),
    ("persistence_mean_steps", "persistence_mean_steps"),
    ("lookback_mean_steps", "lookback_mean_steps"),
    ("interlayer_overlap", "interlayer_overlap"),
    ("working_set_ratio", "working_set_ratio"),
    ("P95", "working_set_ratio_p95"),
    ("page_utilization", "page_utilization"),
)
VOLATILE = ("engine_seconds", "source")  # timing, and the path the trace was read from


def _printed_tables(text: str) -> list[list[str]]:
    """The 'this trace' column of every metrics table the demo printed, in order."""
    tables, cur = [], []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 3 and cells[0] and cells[0] != "metric":
            cur.append((cells[0], cells[1]))
            if len(cur) == len(TABLE_ROWS):
                tables.append(cur)
                cur = []
    return tables


def _same_analysis(saved: dict, recomputed: dict) -> None:
    for key in VOLATILE:
        saved.pop(key, None), recomputed.pop(key, None)
    assert saved == recomputed


def _check_printed(table: list[tuple[str, str]], result: dict) -> None:
    for (label, value), (row, key) in zip(table, TABLE_ROWS, strict=True):
        assert label.startswith(row)
        want = "n/a" if result[key] is None else f"{result[key]:.3f}"
        assert value.removesuffix("x") == want, (label, value, want)


OUTPUTS = ("analysis.json", "sweep.toml", "results.parquet", "report.html", "hit_rate.png",
           "slowdown.png", "new_lookup_heatmap.png", "mrc.png", "fraction_of_min.png",
           "buffer.png", "serving.png")  # fmt: skip


def test_demo_writes_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--steps", "4", "--workers", "1", "--record-tokens", "3"]
    assert cli_run(args) == 0
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in OUTPUTS[4:]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    cfg = tomllib.loads((out / "sweep.toml").read_text())
    assert cfg["traces"][0]["synth"] == "deepseek-v3.2" and cfg["traces"][0]["steps"] == 4
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == len(DEMO_POLICIES) * len(DEMO_CAPACITIES_MIB) * len(DEMO_WEIGHTS_MIB)
    assert {r["policy"] for r in rows} == set(DEMO_POLICIES)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "SYNTHETIC" in html
    # the slowdown note quotes the best online policy's slowdowns from the 0-weights panel
    assert BEST_ONLINE in DEMO_POLICIES
    mine = {r["capacity_mib"]: r["slowdown"] for r in rows
            if r["policy"] == BEST_ONLINE and r["weights_bytes_per_layer"] == 0}  # fmt: skip
    caps = [c for c in DEMO_CAPACITIES_MIB if c > 0]
    quoted = " / ".join(f"{mine[c]:.3f}" for c in caps)
    assert f"the slowdown is {quoted} at {' / '.join(map(str, caps))} MiB" in html
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and str(out / "report.html") in text
    # the bundled backbone's real recording: 2 prompts x 3 decode steps, top-k 32, analysed
    rec = Trace.load(out / "recorded")
    assert len(rec.requests) == 2 and rec.steps == 3 and rec.geometry.top_k == 32
    assert rec.meta["model"] == "tiny" and "REAL DSA recording" in text
    recorded = json.loads((out / "recorded-analysis.json").read_text())
    assert recorded["accesses"] > 0
    # The numbers, not just the files: the JSONs are what analyze computes on the same traces,
    # the printed tables show those JSONs, and the sweep's rows agree with an independent pass.
    synthetic = json.loads((out / "analysis.json").read_text())
    sweep = parse_config((out / "sweep.toml").read_text(), base_dir=out, source="sweep.toml")
    trace = build_trace(sweep.runs[0].trace, str(out))
    tables = _printed_tables(text)
    assert len(tables) == 2  # the recording's, then the synthetic trace's
    _check_printed(tables[0], recorded)
    _check_printed(tables[1], synthetic)
    _same_analysis(recorded, analyze(rec).to_dict())
    _same_analysis(synthetic, analyze(trace).to_dict())
    curve = mrc(trace, "global")
    by_size: dict[int, dict[str, int]] = {}
    for r in rows:
        assert r["accesses"] == curve.accesses == synthetic["accesses"]
        by_size.setdefault(r["capacity_tokens"], {})[r["policy"]] = r["hits"]
        if r["policy"] == "token-lru":
            assert r["hits"] == curve.hits_at(r["capacity_tokens"])
    for hits in by_size.values():  # Belady's MIN bounds every demand-fetch policy
        assert all(hits["min"] >= h for h in hits.values())
    # the HBM level: buffers k..4k x the policies, on the same trace, and serving at its rate
    hier = pq.read_table(out / "hierarchy" / "results.parquet").to_pylist()
    assert len(hier) == len(DEMO_BUFFER_TOKENS) * len(DEMO_POLICIES)
    by_n: dict[int, dict[str, int]] = {}
    for r in hier:
        assert r["accesses"] == synthetic["accesses"] and r["hardware"] == "h200"
        by_n.setdefault(r["buffer_tokens"], {})[r["buffer_policy"]] = r["buffer_misses"]
        got = simulate_hierarchy(trace, HierarchyConfig(r["buffer_tokens"], r["buffer_policy"]))
        assert (r["buffer_hits"], r["buffer_misses"]) == (got.hits, got.misses)
    for misses in by_n.values():  # MIN bounds every demand policy at this level too
        assert all(misses["min"] <= m for m in misses.values())
    serving = json.loads((out / "serving.json").read_text())
    lru = next(r for r in hier if r["buffer_policy"] == "token-lru"
               and r["buffer_tokens"] == DEMO_SERVING_BUFFER)  # fmt: skip
    assert serving["buffer_stats"]["hit_rate"] == lru["buffer_hit_rate"]
    assert serving["buffer_tokens"] == DEMO_SERVING_BUFFER and len(serving["rows"]) == 6
    assert "HBM buffers over host memory" in html and "[4/5] HBM buffers" in text


def test_demo_bad_steps_is_one_line_rc2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run(["demo", "--out", str(tmp_path / "d"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps" in err
    assert cli_run(["demo", "--out", str(tmp_path / "e"), "--record-tokens", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--record-tokens" in err


def test_demo_again_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An earlier demo's sweep results would stop the sweeps half-way: refused before anything
    is written, replaced with --force (what `make demo` passes)."""
    out = tmp_path / "d"
    (out / "hierarchy").mkdir(parents=True)
    (out / "hierarchy" / "results.parquet").write_bytes(b"old")
    args = ["demo", "--out", str(out), "--steps", "2", "--workers", "1", "--record-tokens", "0"]
    assert cli_run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and not (out / "analysis.json").exists()
    assert cli_run([*args, "--force"]) == 0
    rows = pq.read_table(out / "hierarchy" / "results.parquet").to_pylist()
    assert len(rows) == len(DEMO_BUFFER_TOKENS) * len(DEMO_POLICIES)
