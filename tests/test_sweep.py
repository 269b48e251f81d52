"""dsacache sweep: grid parsing, one-line config errors, deterministic rows, 1 vs 2 workers,
and a real SIGKILL mid-sweep followed by --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dsacache.cli.app import run as cli_run
from dsacache.errors import DsacacheError
from dsacache.sweep import parse_config, run_sweep
from dsacache.sweep.config import trace_label
from dsacache.sweep.runner import build_trace
from dsacache.sweep.store import TIMING_COLUMNS
from dsacache.trace.generate import DEFAULT_GENERATOR

GRID = """
traces = [{synth = "deepseek-v3.2", steps = 12, context = 1024, layers = 2, top_k = 64}]
policies = ["token-lru", "min", "fifo"]
capacities = [0.02, 0.05, "100 tokens", {tokens = 300}]
partitions = ["global", "per-layer"]
hardware = ["h100", "h200"]
"""  # 48 runs


def _rows(out: Path) -> list[dict]:
    table = pq.read_table(out / "results.parquet")
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in table.to_pylist()]


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("grid") / "grid.toml"
    p.write_text(GRID)
    return p


@pytest.fixture(scope="module")
def baseline(grid_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "out"
    assert cli_run(["sweep", str(grid_file), "--out", str(out), "--workers", "1"]) == 0
    return out


def test_grid_expands_to_the_cartesian_product() -> None:
    sweep = parse_config(GRID)
    assert len(sweep.runs) == 3 * 4 * 2 * 2
    assert len({r.config_hash for r in sweep.runs}) == 48
    caps = {(r.config["capacity_mib"], r.config["capacity_tokens"]) for r in sweep.runs}
    assert caps == {(0.02, None), (0.05, None), (None, 100), (None, 300)}
    t = sweep.runs[0].trace
    assert t == {"synth": "deepseek-v3.2", "generator": "indexer", "steps": 12, "context": 1024,
                 "layers": 2, "top_k": 64, "seed": 0, "requests": 1}  # fmt: skip
    # Defaults filled in: an explicit seed = 0 hashes the same as none.
    explicit = parse_config(GRID.replace("top_k = 64}", "top_k = 64, seed = 0}"))
    assert [r.config_hash for r in explicit.runs] == [r.config_hash for r in sweep.runs]
    other = parse_config(GRID.replace("top_k = 64}", "top_k = 64, seed = 1}"))
    assert not {r.config_hash for r in other.runs} & {r.config_hash for r in sweep.runs}


REQUESTS_GRID = """
traces = [{synth = "deepseek-v3.2", steps = 6, context = 512, layers = 2, top_k = 32}]
requests = [1, 3]
policies = ["token-lru", "near-miss"]
capacities = ["0.1 MB", 0.1]
near_miss_source = "layer-below"
"""


def test_requests_axis_units_and_near_miss_source() -> None:
    sweep = parse_config(REQUESTS_GRID)
    assert len(sweep.runs) == 2 * 2 * 2
    assert {r.trace["requests"] for r in sweep.runs} == {1, 3}
    mibs = {r.config["capacity_mib"] for r in sweep.runs}
    assert mibs == {0.1, 0.1e6 / 2**20}  # "0.1 MB" is decimal: 0.0954 MiB
    sources = {(r.config["policy"], r.config["near_miss_source"]) for r in sweep.runs}
    assert sources == {("token-lru", None), ("near-miss", "layer-below")}
    two = parse_config(REQUESTS_GRID + 'weights_mib = ["model", 0]\n')
    assert {r.config["weights_mib"] for r in two.runs} == {None, 0.0}  # "model" = the default
    assert len(two.runs) == 2 * len(sweep.runs)


def test_requests_axis_simulates_the_batch_together() -> None:
    from dsacache.sim import SimConfig, simulate
    from dsacache.sweep.runner import build_trace, execute

    runs = [
        r for r in parse_config(REQUESTS_GRID).runs
        if r.config["policy"] == "token-lru" and r.config["capacity_mib"] == 0.1
    ]  # fmt: skip
    rows = {}
    for r in runs:
        row = execute(r)
        n = r.trace["requests"]
        assert row["batch"] == row["requests"] == n
        trace = build_trace(r.trace, ".")
        assert len(trace.requests) == n
        sim = simulate(trace, SimConfig("token-lru", capacity_mib=0.1))
        assert (row["hits"], row["accesses"]) == (sim.hits, sim.accesses)
        assert row["capacity_mib"] == 0.1 and row["near_miss_source"] is None
        rows[n] = row
    # three requests gather three times the tokens per step into the same region
    assert rows[3]["accesses"] == pytest.approx(3 * rows[1]["accesses"], rel=0.05)
    near = next(r for r in parse_config(REQUESTS_GRID).runs if r.config["policy"] == "near-miss")
    assert execute(near)["near_miss_source"] == "layer-below"  # recorded in the row
    assert rows[3]["tokens_per_s_per_gpu"] == pytest.approx(3 * rows[3]["tokens_per_s_per_user"])


def test_file_trace_identity_tracks_content(tmp_path: Path) -> None:
    import numpy as np

    idx = np.arange(2 * 1 * 4, dtype=np.int32).reshape(2, 1, 4)
    np.savez(tmp_path / "a.npz", indices=idx)
    grid = 'traces = ["a.npz"]\npolicies = ["token-lru"]\ncapacities = [1]\n'
    h1 = parse_config(grid, base_dir=tmp_path).runs[0].config_hash
    np.savez(tmp_path / "a.npz", indices=idx[:, :, ::-1].copy())
    h2 = parse_config(grid, base_dir=tmp_path).runs[0].config_hash
    assert h1 != h2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["nope"]\ncapacities = [1]', "unknown policy 'nope'"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["min"]\ncapacities = [-1]', "bad capacity -1"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["min"]\ncapacities = ["3 parsecs"]', "bad capacity '3 parsecs'"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["min"]', "missing key 'capacities'"),
        ('policies = ["min"]\ncapacities = [1]', "missing key 'traces'"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5}]\npolicies = ["min"]\n'
         'capacities = [1]', "missing key 'context'"),
        ('traces = [{synth = "deepseek-v3.2", generator = "dice", steps = 5, context = 64}]\n'
         'policies = ["min"]\ncapacities = [1]', "generator must be one of indexer, stats"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["min"]\ncapacities = [1]\nhardware = ["z80"]', "z80"),
        ('traces = ["missing.zarr"]\npolicies = ["min"]\ncapacities = [1]', "does not exist"),
        ("traces = [\npolicies = 3", "bad TOML"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["min"]\ncapacities = [1]\ncolour = 3', "unknown key 'colour'"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["min"]\ncapacities = [1]\nbatch = [4]', "the batch is each trace's requests"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["min"]\ncapacities = [1]\nweights_mb = [4]', "write `weights_mib`"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64, requests = 2}]\n'
         'policies = ["min"]\ncapacities = [1]\nrequests = [4]', "give one of them"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["min"]\ncapacities = [1]\nrequests = [0]', "requests must be integers >= 1"),
        ('traces = ["t.zarr"]\npolicies = ["min"]\ncapacities = [1]\nrequests = [2]',
         "applies to synth traces only"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["near-miss"]\ncapacities = [1]', "near_miss_source"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'policies = ["near-miss"]\ncapacities = [1]\nnear_miss_source = "psychic"',
         "near_miss_source must be"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'buffer_policies = ["min"]\npolicies = ["min"]\ncapacities = [1]',
         "buffer_policies needs buffer_tokens"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'host_links = ["pcie-gen5-x16"]\npolicies = ["min"]\ncapacities = [1]',
         "host_links needs buffer_tokens"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'buffer_tokens = [4096]\nhost_links = ["usb"]', "unknown host link 'usb'"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'buffer_tokens = [1024]', "below the synth trace's top_k 2048"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'buffer_tokens = [0]', "buffer_tokens must be integers >= 1"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'buffer_tokens = [4096]\nbuffer_policies = ["near-miss"]',
         "buffer_policies: 'near-miss' cannot run a level"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'buffer_tokens = [4096]\npolicies = ["line-lru"]', "policies: 'line-lru' cannot run"),
        ('traces = [{synth = "deepseek-v3.2", steps = 5, context = 64}]\n'
         'buffer_tokens = [4096]\ncapacities = [55]\nhardware = ["h100"]',
         "larger than the NVIDIA H100 SXM's LLC"),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_rc2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    rc = cli_run(["sweep", str(cfg), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("dsacache: error:")
    assert needle in err
    assert not (tmp_path / "out").exists()  # nothing written before the config is checked


def test_buffer_below_a_trace_files_top_k_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.savez(tmp_path / "t.npz", indices=np.tile(np.arange(64, dtype=np.int32), (5, 2, 1)))
    (tmp_path / "g.toml").write_text('traces = ["t.npz"]\nbuffer_tokens = [32, 128]\n')
    rc = cli_run(["sweep", str(tmp_path / "g.toml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "buffer_tokens 32 is below the top_k (64) of trace 't.npz'" in err
    assert not (tmp_path / "o").exists()


def test_synth_traces_name_their_generator(tmp_path: Path) -> None:
    """The default is `dsacache synth`'s; each generator builds its own trace; a stored identity
    from before the generator key (a store of older runs) rebuilds the statistics generator's."""
    base = '{synth = "deepseek-v3.2", steps = 4, context = 300, layers = 2, top_k = 16'
    grid = (f"traces = [{base}}}, {base}, generator = \"stats\"}}]\n"
            'policies = ["token-lru"]\ncapacities = ["100 tokens"]\n')  # fmt: skip
    runs = parse_config(grid, base_dir=tmp_path).runs
    assert [r.trace["generator"] for r in runs] == [DEFAULT_GENERATOR, "stats"]
    assert runs[0].config_hash != runs[1].config_hash
    assert "generator=stats" in trace_label(runs[1].trace)
    ix, stats = (build_trace(r.trace, str(tmp_path)) for r in runs)
    assert ix.meta["generator"] == "indexer" and stats.meta["generator"] == "stats"
    assert ix.meta["indexer"]["model_layers"] == 61  # 2 layers sample DeepSeek-V3.2's depth
    old = {k: v for k, v in runs[1].trace.items() if k != "generator"}
    assert np.array_equal(build_trace(old, str(tmp_path)).indices, stats.indices)


def test_out_with_results_needs_resume(baseline: Path, grid_file: Path) -> None:
    with pytest.raises(DsacacheError, match="--resume"):
        run_sweep(parse_config(GRID), baseline)
    before = _rows(baseline)
    counts = run_sweep(parse_config(GRID), baseline, resume=True)
    assert counts == {"runs": 48, "skipped": 48, "done": 0, "simulations": 0, "rows": 48}
    assert _rows(baseline) == before


def test_rows_are_deterministic_and_workers_agree(baseline: Path, tmp_path: Path) -> None:
    base = pq.read_table(baseline / "results.parquet")
    assert base.num_rows == 48
    assert all(("seconds" in c) == (c in TIMING_COLUMNS) for c in base.column_names)
    assert {"config_hash", "hits", "misses", "hit_rate", "step_time_s", "slowdown"} <= set(
        base.column_names
    )
    rows = _rows(baseline)
    assert all(r["hits"] + r["misses"] == r["accesses"] > 0 for r in rows)
    assert len({r["hit_rate"] for r in rows}) > 5  # the grid really varies the outcome
    again = tmp_path / "again"
    counts = run_sweep(parse_config(GRID), again, workers=2)
    assert counts["done"] == 48
    assert counts["simulations"] == 24  # hardware only changes the perf model
    assert _rows(again) == rows  # same config -> same row, bit for bit (floats compared ==)
    assert (again / "sweep.toml").read_text() == GRID


def test_sigkill_then_resume_gives_the_uninterrupted_rows(
    baseline: Path, grid_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from dsacache.cli.app import main; main()", "sweep",
           str(grid_file), "--out", str(out), "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    rows_dir = out / "rows"
    n = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            n = len(list(rows_dir.glob("*.parquet"))) if rows_dir.is_dir() else 0
            if n >= 3:
                break
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-run
        proc.wait()
    committed = len(list(rows_dir.glob("*.parquet")))
    assert 0 < committed < 48, f"kill landed outside the sweep ({committed} rows)"
    assert cli_run(["sweep", str(grid_file), "--out", str(out), "--resume"]) == 0
    assert len(list(rows_dir.glob("*.parquet"))) == 48
    assert not list(rows_dir.glob(".*"))
    assert _rows(out) == _rows(baseline)


def test_one_simulation_per_distinct_simulation(baseline: Path, monkeypatch) -> None:
    from dsacache.sweep import runner

    runs = parse_config(GRID).runs
    groups = runner.group_runs(runs)
    assert len(groups) == 3 * 4 * 2  # policies x capacities x partitions; hardware is perf only
    assert all({r.config["hardware"] for r in g} == {"h100", "h200"} for g in groups)
    calls = []
    real = runner.simulate

    def counting(trace, cfg):  # noqa: ANN001, ANN202
        calls.append(cfg)
        return real(trace, cfg)

    monkeypatch.setattr(runner, "simulate", counting)
    rows = [row for g in groups[:3] for row in runner.execute_group(g)]
    assert len(calls) == 3 and len(rows) == 6  # one simulation models both hardware rows
    # each row is what a run of its own would give
    monkeypatch.setattr(runner, "simulate", real)
    for row, run in zip(rows, [r for g in groups[:3] for r in g], strict=True):
        alone = runner.execute(run)
        assert {k: v for k, v in row.items() if k not in TIMING_COLUMNS} == {
            k: v for k, v in alone.items() if k not in TIMING_COLUMNS
        }
    # in the committed table, rows of one simulation share its engine time
    table = pq.read_table(baseline / "results.parquet").to_pylist()
    by_sim: dict[str, list[dict]] = {}
    for r in table:
        by_sim.setdefault(r["simulation_hash"], []).append(r)
    assert len(by_sim) == 24
    for same in by_sim.values():
        assert len({r["engine_seconds"] for r in same}) == 1
        assert sorted(r["hardware"] for r in same) == ["h100", "h200"]
        assert all(r["buffer_tokens"] is None and r["host_time_s"] is None for r in same)


def test_documented_duckdb_query_runs(baseline: Path) -> None:
    """README's example query works on a real results.parquet."""
    import duckdb

    rows = duckdb.sql(
        "SELECT policy, capacity_mib, partition, hit_rate, slowdown "
        f"FROM '{baseline / 'results.parquet'}' ORDER BY policy, capacity_mib"
    ).fetchall()
    assert len(rows) == len(_rows(baseline))
    assert all(0.0 <= r[3] <= 1.0 and r[4] >= 1.0 for r in rows)


HIERARCHY_GRID = """
traces = [{synth = "deepseek-v3.2", steps = 8, context = 600, layers = 2, top_k = 32, requests = 6}]
buffer_tokens = [32, 64]
buffer_policies = ["token-lru", "min"]
capacities = [0, 0.02]
hardware = ["h200"]
host_links = ["hardware", "nvlink-c2c"]
"""  # 16 runs, 8 simulations; 6 requests: PCIe's host reads are bandwidth-bound, C2C's not


def test_hierarchy_runs_are_the_simulation_with_the_host_link(tmp_path: Path) -> None:
    from dsacache.hardware import HOST_LINKS, gpu
    from dsacache.perf import model, perf_params
    from dsacache.perf.model import gather_workload
    from dsacache.sim.hierarchy import HierarchyConfig, simulate_hierarchy
    from dsacache.sweep.runner import build_trace

    sweep = parse_config(HIERARCHY_GRID)
    counts = run_sweep(sweep, tmp_path / "h", workers=1)
    assert (counts["runs"], counts["simulations"]) == (16, 8)
    rows = pq.read_table(tmp_path / "h" / "results.parquet").to_pylist()
    trace = build_trace(sweep.runs[0].trace, ".")
    by_sim: dict[str, list[dict]] = {}
    for r in rows:
        by_sim.setdefault(r["simulation_hash"], []).append(r)
        mib = r["capacity_mib"]
        want = simulate_hierarchy(
            trace, HierarchyConfig(r["buffer_tokens"], r["buffer_policy"], mib, r["policy"])
        )
        assert (r["buffer_hits"], r["buffer_misses"], r["buffer_cold_misses"]) == (
            want.hits, want.misses, want.cold_misses)  # fmt: skip
        assert r["host_bytes"] == want.host_bytes
        assert r["host_bytes_per_step_p99"] == want.host_bytes_per_step["p99"]
        assert r["hits"] == want.llc.hits and r["accesses"] == want.accesses
        # the GPU's part of the step is the perf model's at the L2-served rate
        work = gather_workload(trace, want.llc.hits / want.accesses, want.accesses,
                               weights_bytes_per_layer=r["weights_bytes_per_layer"])  # fmt: skip
        gpu_s = model(perf_params("h200"), work).step_seconds
        assert r["step_time_s"] == pytest.approx(gpu_s + r["host_time_s"])
        link = gpu("h200").link.name if r["host_link"] != "nvlink-c2c" else "nvlink-c2c"
        assert r["host_link"] in HOST_LINKS and r["host_link"] == link
    for same in by_sim.values():  # the link is a perf axis: one simulation, two host times
        assert sorted(r["host_link"] for r in same) == ["nvlink-c2c", "pcie-gen5-x16"]
        pcie, c2c = sorted(same, key=lambda r: r["host_link"] == "nvlink-c2c")
        assert c2c["host_time_s"] < pcie["host_time_s"] and c2c["step_time_s"] < pcie[
            "step_time_s"]  # fmt: skip
        assert pcie["buffer_misses"] == c2c["buffer_misses"]
        # by hand: the mean step's misses (every layer on this GPU) at the link's wire time per
        # 656 B row (6 reads of 128 + 24 B), plus 5 us of swap-in per layer
        rows_per_step = pcie["buffer_misses"] / pcie["steps"]
        wire = 6 * 152 / HOST_LINKS["pcie-gen5-x16"].raw_bytes_per_s
        assert pcie["host_time_s"] == pytest.approx(rows_per_step * wire + 2 * 5e-6)
