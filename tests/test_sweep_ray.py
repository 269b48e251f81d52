"""dsacache sweep --executor ray against a real local Ray head on loopback (started and stopped
here): the rows equal the local executor's, and a run whose worker dies is retried."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dsacache.cli.app import run as cli_run
from dsacache.sweep import parse_config
from dsacache.sweep.ray_exec import DIE_ONCE_ENV
from dsacache.sweep.store import TIMING_COLUMNS

pytest.importorskip("ray")

GRID = """
traces = [{synth = "deepseek-v3.2", steps = 8, context = 512, layers = 2, top_k = 32}]
policies = ["token-lru", "min"]
capacities = [0.02, "100 tokens"]
hardware = ["h100", "h200"]
"""  # 8 runs
RAY = Path(sys.executable).with_name("ray")
# Explicit auth mode: otherwise a ~/.ray/auth_token left by any earlier local ray.init turns
# token auth on in the driver but not in a head started by `ray start`.
RAY_ENV = {
    "RAY_DISABLE_USAGE_STATS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
ENV = {**os.environ, **RAY_ENV}


def _rows(out: Path) -> list[dict]:
    table = pq.read_table(out / "results.parquet")
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in table.to_pylist()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    cmd = [str(RAY), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
           "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    try:
        subprocess.run(cmd, env=ENV, check=True, capture_output=True, timeout=60)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=ENV, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("raygrid") / "grid.toml"
    p.write_text(GRID)
    return p


def test_ray_rows_equal_local_and_dead_worker_is_retried(
    ray_head: str, grid_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "local"
    assert cli_run(["sweep", str(grid_file), "--out", str(local), "--workers", "1"]) == 0
    victim = parse_config(GRID).runs[3].config_hash
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(DIE_ONCE_ENV, f"{victim}:{markers}")
    for k, v in RAY_ENV.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "ray"
    args = ["sweep", str(grid_file), "--out", str(out), "--executor", "ray", "--address", ray_head]
    assert cli_run(args) == 0
    assert (markers / f"died-{victim}").exists()  # its first attempt really killed its worker
    assert len(list((out / "rows").glob("*.parquet"))) == 8
    assert _rows(out) == _rows(local)


def test_unreachable_address_is_one_line_rc2(
    grid_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", str(grid_file), "--out", str(tmp_path / "o"), "--executor", "ray",
            "--address", f"127.0.0.1:{_free_port()}"]  # fmt: skip
    assert cli_run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Ray head reachable" in err


def test_address_needs_ray_executor(
    grid_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", str(grid_file), "--out", str(tmp_path / "o"), "--address", "127.0.0.1:1"]
    assert cli_run(args) == 2
    assert "needs --executor ray" in capsys.readouterr().err
