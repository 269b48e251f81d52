"""Bad outputs and odd inputs across commands: one line, exit 2, nothing clobbered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsacache.cli.app import run
from dsacache.errors import DsacacheError
from dsacache.trace import Geometry, Trace, open_trace
from dsacache.trace.synth import SynthTargets, synthesize

G = Geometry(2, 4, 656, 132, 64)


def _one_line_rc2(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return err


def test_export_refuses_to_clobber_without_force(small_store, tmp_path, capsys) -> None:
    victim = tmp_path / "keep.npz"
    victim.write_bytes(b"precious")
    rc = run(["export", "libcachesim", str(small_store), str(victim)])
    assert "--force" in _one_line_rc2(capsys, rc)
    assert victim.read_bytes() == b"precious"
    assert run(["export", "libcachesim", str(small_store), str(victim), "--force"]) == 0
    # One 24-byte oracleGeneral record per access (valid slot) of the trace, nothing more.
    accesses = sum(
        int((np.asarray(r.indices[:]) >= 0).sum()) for r in open_trace(small_store).requests
    )
    assert accesses > 0 and victim.stat().st_size == 24 * accesses
    assert victim.stat().st_mode & 0o044  # readable by others, as umask allows, not 0600


def test_export_under_a_regular_file_is_one_line(small_store, tmp_path, capsys) -> None:
    # No user, root included, can create a file below a regular file.
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"precious")
    before = sorted(p.name for p in tmp_path.iterdir())
    for force in ([], ["--force"]):
        rc = run(["export", "libcachesim", str(small_store), str(blocker / "x.bin"), *force])
        assert "blocker" in _one_line_rc2(capsys, rc)
    assert blocker.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp file left behind


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_export_refused_by_the_os_is_one_line(small_store, capsys) -> None:
    # /proc accepts no new files, root included: the write itself fails (not a pre-check).
    out = Path("/proc/self/dsacache-export.bin")
    err = _one_line_rc2(capsys, run(["export", "libcachesim", str(small_store), str(out)]))
    assert str(out) in err and "cannot write" in err
    assert not out.exists()


def test_demo_out_is_a_file(tmp_path, capsys) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_rc2(capsys, run(["demo", "--out", str(f), "--steps", "2"]))


@pytest.mark.parametrize("flag", ["--lookback", "--working-set", "--interlayer-overlap"])
def test_synth_rejects_nan_targets(tmp_path, capsys, flag: str) -> None:
    out = tmp_path / "t.zarr"
    rc = run(["synth", "--generator", "stats", "--out", str(out), "--layers", "2", "--top-k", "4",
              flag, "nan"])  # fmt: skip
    _one_line_rc2(capsys, rc)
    assert not out.exists()


def test_synth_rejects_context_beyond_int32() -> None:
    with pytest.raises(DsacacheError, match="int32"):
        synthesize(G, 10, 2**31 - 5, SynthTargets())


def test_numpy_meta_is_saved_as_plain_json(tmp_path) -> None:
    idx = np.array([[[0, 1, -1, -1], [1, 0, -1, -1]]], dtype=np.int32)
    tr = Trace.from_arrays(idx, None, G, meta={"seed": np.int64(3), "w": np.arange(2)})
    tr.save(tmp_path / "t.zarr")
    assert Trace.load(tmp_path / "t.zarr").meta["seed"] == 3
    bad = Trace.from_arrays(idx, None, G, meta={"x": float("nan")})
    with pytest.raises(DsacacheError, match="meta"):
        bad.save(tmp_path / "u.zarr")
    assert not (tmp_path / "u.zarr").exists()


def test_geometry_flags_override_a_store(small_store) -> None:
    base = open_trace(small_store)
    tr = open_trace(small_store, kv_bytes_per_token=4096, block_tokens=16)
    assert tr.geometry.kv_bytes_per_token == 4096
    assert tr.geometry.block_tokens == 16
    assert tr.geometry.index_bytes_per_token == base.geometry.index_bytes_per_token


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--capacity-tokens", "abc", "x.zarr"],
        ["synth", "--bogus"],
        ["analyze"],
        ["mrc", "-r", "abc", "x.zarr"],
        ["no-such-command"],
    ],
)
def test_usage_errors_are_one_line(capsys, argv: list[str]) -> None:
    _one_line_rc2(capsys, run(argv))


def test_bare_command_shows_help_and_succeeds(capsys) -> None:
    assert run([]) == 0
    assert "Usage" in capsys.readouterr().out
