"""`dsacache demo`: the whole pipeline on a tiny synthetic trace writes every output."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dsacache.cli.app import run as cli_run
from dsacache.cli.demo_cmd import DEMO_CAPACITIES_MB, DEMO_POLICIES, DEMO_WEIGHTS_MIB
from dsacache.trace import Trace

OUTPUTS = ("analysis.json", "sweep.toml", "results.parquet", "report.html", "hit_rate.png",
           "slowdown.png", "new_lookup_heatmap.png", "mrc.png")  # fmt: skip


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
    assert len(rows) == len(DEMO_POLICIES) * len(DEMO_CAPACITIES_MB) * len(DEMO_WEIGHTS_MIB)
    assert {r["policy"] for r in rows} == set(DEMO_POLICIES)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "SYNTHETIC" in html
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and str(out / "report.html") in text
    # the bundled backbone's real recording: 2 prompts x 3 decode steps, top-k 32, analysed
    rec = Trace.load(out / "recorded")
    assert len(rec.requests) == 2 and rec.steps == 3 and rec.geometry.top_k == 32
    assert rec.meta["model"] == "tiny" and "REAL DSA recording" in text
    assert json.loads((out / "recorded-analysis.json").read_text())["accesses"] > 0


def test_demo_bad_steps_is_one_line_rc2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run(["demo", "--out", str(tmp_path / "d"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps" in err
    assert cli_run(["demo", "--out", str(tmp_path / "e"), "--record-tokens", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--record-tokens" in err
