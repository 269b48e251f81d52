"""`dsacache analyze`: JSON and table output, .npz input, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsacache.analysis import analyze
from dsacache.analysis.metrics import METRICS
from dsacache.cli.app import run
from dsacache.trace import Geometry, Trace

# Same sets as trace A in test_metrics.py (4 steps, 2 layers, k=3).
A = np.array(
    [
        [[0, 1, 2], [0, 1, -1]],
        [[1, 2, 3], [-1, -1, -1]],
        [[0, 3, -1], [6, 0, 3]],
        [[5, 3, 0], [3, 6, 7]],
    ],
    dtype=np.int32,
)

TOP_LEVEL = (
    *METRICS,
    "new_lookup_fraction_p95",
    "working_set_ratio_p95",
    "accesses",
    "steps",
    "layers",
    "top_k",
    "requests",
    "window",
    "page_tokens",
    "per_layer",
    "reuse_distance_steps",
    "engine_seconds",
)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "a.trace"
    Trace.from_arrays(A, np.full(4, 8), Geometry(2, 3, 656, 132, 64)).save(path, chunk_steps=3)
    return path


def test_json_output(store, capsys):
    rc = run(["analyze", str(store), "--json", "--window", "2", "-p", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out)  # exactly one JSON object on stdout
    for key in TOP_LEVEL:
        assert key in d
    # hand-computed in test_metrics.py
    assert d["new_lookup_fraction"] == pytest.approx(0.5)
    assert d["persistence_mean_steps"] == pytest.approx(19 / 12)
    assert d["working_set_ratio"] == pytest.approx(13 / 12)
    assert d["page_utilization"] == pytest.approx(19 / 28)
    assert (d["accesses"], d["steps"], d["layers"], d["top_k"]) == (19, 4, 2, 3)
    assert (d["window"], d["page_tokens"]) == (2, 2)
    assert d["per_layer"]["interlayer_overlap"][0] is None
    assert d["reuse_distance_steps"]["count"] == [7, 2]


def test_json_matches_library(store, capsys):
    assert run(["analyze", str(store), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    want = analyze(Trace.load(store)).to_dict()
    for key in ("engine_seconds", "source"):
        d.pop(key), want.pop(key)
    assert d == want


def test_json_nulls_for_undefined_metrics(tmp_path, capsys):
    path = tmp_path / "one.trace"
    one_layer = np.array([[[0, 1]], [[2, 1]]], dtype=np.int32)
    Trace.from_arrays(one_layer, None, Geometry(1, 2, 656, 132, 64)).save(path)
    assert run(["analyze", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out
    assert json.loads(out)["interlayer_overlap"] is None


def test_npz_input(tmp_path, capsys):
    path = tmp_path / "a.npz"
    np.savez(path, indices=A)
    assert run(["analyze", str(path), "--json", "--block-tokens", "16"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["accesses"], d["layers"], d["top_k"], d["requests"]) == (19, 2, 3, 1)
    assert d["new_lookup_fraction"] == pytest.approx(0.5)


def test_table_output(store, capsys):
    assert run(["analyze", str(store), "-w", "2"]) == 0
    out = capsys.readouterr().out
    assert "19 accesses" in out and "k=3" in out
    for name in ("new_lookup_fraction", "persistence_mean_steps", "page_utilization", "P95"):
        assert name in out
    assert "0.500" in out and "0.550" in out  # this trace vs paper
    assert "5.150x at W=50" in out  # the paper's window differs from ours


@pytest.mark.parametrize("flag", [["--window", "0"], ["--page-tokens", "0"], ["-w", "-1"]])
def test_bad_parameter_is_one_line_exit_2(store, capsys, flag):
    rc = run(["analyze", str(store), *flag])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err.startswith("dsacache: error:") and err.count("\n") == 1


def test_missing_trace_is_one_line_exit_2(tmp_path, capsys):
    rc = run(["analyze", str(tmp_path / "nope.trace"), "--json"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "does not exist" in err and err.count("\n") == 1


def test_help(capsys):
    assert run(["analyze", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--window" in out and "--json" in out and "new_lookup_fraction" in out
