"""`dsacache hierarchy`: JSON equals the library, the table, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_trace
from dsacache.cli.app import run
from dsacache.sim.hierarchy import HierarchyConfig, simulate_hierarchy
from dsacache.trace import open_trace


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "t.zarr"
    make_trace([8, 12], layers=3, k=4, context=[9, 30], requests=2, seed=7).save(path)
    return path


def _json(capsys, argv: list[str]) -> dict:
    assert run(argv) == 0
    return json.loads(capsys.readouterr().out)


def _without_time(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "engine_seconds"}


def test_json_is_the_library_result(capsys, store: Path) -> None:
    argv = ["hierarchy", str(store), "--buffer-tokens", "6", "--buffer-policy", "fifo"]
    out = _json(capsys, [*argv, "--llc-reserve-mib", "0.005", "--llc-policy", "min", "--json"])
    cfg = HierarchyConfig(6, "fifo", 0.005, "min")
    want = simulate_hierarchy(open_trace(store, lazy=True), cfg).to_dict()
    assert _without_time(out) == _without_time(json.loads(json.dumps(want)))
    assert out["hbm"]["policy"] == "fifo" and out["llc"]["policy"] == "min"
    assert out["llc"]["capacity_tokens"] == int(0.005 * 2**20) // 656
    plain = _json(capsys, [*argv, "--json"])
    assert plain["llc"] is None and plain["hbm"] == out["hbm"]  # the LLC never changes the buffer


def test_defaults_and_table(capsys, store: Path) -> None:
    d = _json(capsys, ["hierarchy", str(store), "-n", "4", "--json"])
    assert d["hbm"]["policy"] == "token-lru" and d["hbm"]["buffer_tokens"] == 4
    assert d["hbm"]["whole_requests"] == 0
    assert run(["hierarchy", str(store), "-n", "16", "--llc-reserve-mib", "0.01"]) == 0
    out = capsys.readouterr().out
    for needle in ("HBM buffer rows", "16 per request and layer = 4 x k", "1 of 2 (never miss)",
                   "cold misses", "host MiB per step", "LLC hits (served from L2)",
                   "(h200)"):  # fmt: skip
        assert needle in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-n", "3"], "below the trace's top-k 4"),
        (["-n", "0"], "--buffer-tokens must be an integer >= 1"),
        (["-n", "-5"], "--buffer-tokens must be an integer >= 1"),
        (["-n", "8", "--buffer-policy", "lfu"], "buffer policy 'lfu' cannot run this level"),
        (["-n", "8", "--buffer-policy", "line-lru"], "caches lines"),
        (["-n", "8", "--hardware", "tpu"], "unknown hardware 'tpu'"),
        (["-n", "8", "--llc-reserve-mib", "61"], "larger than the NVIDIA H200's LLC (60 MiB)"),
        (["-n", "8", "--llc-reserve-mib", "51", "--hardware", "h100"], "H100 SXM's LLC (50"),
        (["-n", "8", "--llc-reserve-mib", "-1"], "--llc-reserve-mib must be a finite number"),
        (["-n", "8", "--llc-policy", "fifo"], "--llc-policy needs --llc-reserve-mib"),
        (["-n", "8", "--llc-reserve-mib", "1", "--llc-policy", "x"], "LLC policy 'x'"),
        (["-n", "eight"], "Invalid value for '--buffer-tokens'"),
    ],
)
def test_bad_input_is_one_line_rc2(args, needle, capsys, store: Path) -> None:
    rc = run(["hierarchy", str(store), *args, "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and "Traceback" not in captured.err and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and needle in captured.err


def test_missing_trace_is_one_line(capsys, tmp_path: Path) -> None:
    rc = run(["hierarchy", str(tmp_path / "nope.zarr"), "-n", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
