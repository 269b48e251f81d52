"""The synthetic generator: calibration checked by the analysis stage, format, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from dsacache.analysis import analyze
from dsacache.cli.app import run
from dsacache.errors import DsacacheError
from dsacache.trace import Geometry, Trace
from dsacache.trace.synth import PAPER_TARGETS, SynthTargets, beta_concentration, synthesize

SMALL = Geometry(layers=6, top_k=128, kv_bytes_per_token=656, index_bytes_per_token=132,
                 block_tokens=64)  # fmt: skip


def _metrics(trace: Trace) -> dict:
    return analyze(trace).to_dict()


@pytest.mark.parametrize("f", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("o", [0.1, 0.4, 0.7])
def test_calibration_recovered_by_analysis(f: float, o: float) -> None:
    targets = SynthTargets(new_lookup_fraction=f, interlayer_overlap=o)
    m = _metrics(synthesize(SMALL, 240, 8192, targets, seed=3))
    assert abs(m["new_lookup_fraction"] - f) <= 0.03
    assert abs(m["interlayer_overlap"] - o) <= 0.03
    assert abs(m["persistence_mean_steps"] - 1 / f) <= 0.10 / f


@pytest.mark.parametrize(("f", "o"), [(0.2, 0.7), (0.8, 0.1), (0.55, 0.36)])
def test_calibration_holds_with_paper_like_spread(f: float, o: float) -> None:
    p95 = min(0.95, f + 0.35)
    targets = SynthTargets(new_lookup_fraction=f, interlayer_overlap=o, new_lookup_p95=p95)
    m = _metrics(synthesize(SMALL, 300, 8192, targets, seed=1))
    assert abs(m["new_lookup_fraction"] - f) <= 0.03
    assert abs(m["new_lookup_fraction_p95"] - p95) <= 0.05
    assert abs(m["interlayer_overlap"] - o) <= 0.03


def test_paper_defaults_land_near_every_paper_statistic() -> None:
    m = _metrics(synthesize(SMALL, 300, 32768, seed=0))
    t = PAPER_TARGETS
    assert abs(m["new_lookup_fraction"] - t.new_lookup_fraction) <= 0.03
    assert abs(m["new_lookup_fraction_p95"] - t.new_lookup_p95) <= 0.05
    assert abs(m["interlayer_overlap"] - t.interlayer_overlap) <= 0.03
    # Steered, not exact: within 15 %.
    assert m["working_set_ratio"] == pytest.approx(t.working_set_ratio, rel=0.15)
    assert m["lookback_mean_steps"] == pytest.approx(t.lookback_mean_steps, rel=0.15)


def test_working_set_target_steers_the_trace() -> None:
    small = _metrics(synthesize(SMALL, 200, 32768, SynthTargets(working_set_ratio=4.0)))
    large = _metrics(synthesize(SMALL, 200, 32768, SynthTargets(working_set_ratio=8.0)))
    assert small["working_set_ratio"] < large["working_set_ratio"]
    assert large["working_set_ratio"] == pytest.approx(8.0, rel=0.15)


def test_context_grows_one_per_step_and_indices_stay_below_it() -> None:
    tr = synthesize(SMALL, 50, 100, seed=2)
    np.testing.assert_array_equal(tr.context_lens, np.arange(100, 150))
    assert (tr.indices < tr.context_lens[:, None, None]).all()
    tr.validate()  # distinct tokens per row, ranges, dtypes


def test_context_shorter_than_k_stays_valid() -> None:
    tr = synthesize(SMALL, 40, 20, seed=0)  # 20..59 tokens < k = 128: rows partly empty
    tr.validate()
    valid = (tr.indices >= 0).sum(axis=2)
    np.testing.assert_array_equal(valid, np.broadcast_to(np.minimum(tr.context_lens, 128)[:, None],
                                                         valid.shape))  # fmt: skip


def test_deterministic_and_streamed_store_equals_memory(tmp_path) -> None:
    a = synthesize(SMALL, 70, 4096, seed=5, requests=2)
    b = synthesize(SMALL, 70, 4096, seed=5, requests=2, out=tmp_path / "t.zarr", chunk_steps=16)
    c = synthesize(SMALL, 70, 4096, seed=6)
    assert b.requests[0].is_lazy
    for ra, rb in zip(a.requests, b.requests, strict=True):
        np.testing.assert_array_equal(ra.indices, np.asarray(rb.indices[:]))
        np.testing.assert_array_equal(ra.context_lens, rb.context_lens)
    assert not np.array_equal(a.requests[0].indices, c.indices)
    assert not np.array_equal(a.requests[0].indices, a.requests[1].indices)
    Trace.load(tmp_path / "t.zarr")  # full validation of the stored trace
    assert b.meta["synth_targets"]["new_lookup_fraction"] == 0.55


def test_positions_favour_sinks_and_the_recent_window() -> None:
    targets = SynthTargets(sink_share=0.2, recent_share=0.5, recent_window=256)
    tr = synthesize(SMALL, 100, 16384, targets, seed=0)
    idx, ctx = tr.indices, tr.context_lens
    valid = idx >= 0
    recent = (idx >= (ctx[:, None, None] - 256)) & valid
    assert recent.sum() / valid.sum() > 5 * 256 / 16384  # far above a uniform draw
    sinks = np.isin(idx[-1], np.arange(4)).sum(axis=1)
    assert (sinks >= 3).all()  # the sinks are held, as real attention does


def test_beta_concentration_hits_requested_p95() -> None:
    c = beta_concentration(0.55, 0.90)
    draws = np.random.default_rng(1).beta(0.55 * c, 0.45 * c, 200_000)
    assert np.percentile(draws, 95) == pytest.approx(0.90, abs=0.01)
    assert draws.mean() == pytest.approx(0.55, abs=0.01)
    assert beta_concentration(0.55, None) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"new_lookup_fraction": 0.0},
        {"new_lookup_fraction": 1.2},
        {"interlayer_overlap": -0.1},
        {"working_set_ratio": 0.5},
        {"new_lookup_fraction": 0.5, "new_lookup_p95": 0.4},
        {"sink_share": 0.7, "recent_share": 0.7},
    ],
)
def test_bad_targets_rejected(kwargs: dict) -> None:
    with pytest.raises(DsacacheError):
        synthesize(SMALL, 10, 100, SynthTargets(**kwargs))


def test_cli_synth_check(tmp_path, capsys) -> None:
    out = tmp_path / "s.zarr"
    rc = run(["synth", "--generator", "stats", "--out", str(out), "--steps", "60", "--layers",
              "3", "--top-k", "64", "--context", "2048", "--new-lookup", "0.4",
              "--check"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "target" in text
    tr = Trace.load(out)
    assert tr.geometry == Geometry(3, 64, 656, 132, 64)
    assert tr.meta["synth_targets"]["new_lookup_p95"] is None  # custom mean: no default spread


@pytest.mark.parametrize(
    "args",
    [
        ["--new-lookup", "0.5", "--persistence", "2"],
        ["--new-lookup", "0"],
        ["--persistence", "0.5"],
        ["--preset", "nope"],
        ["--steps", "0"],
        ["--top-k", "0"],
    ],
)
def test_cli_synth_bad_input_is_one_line_exit_2(tmp_path, capsys, args: list[str]) -> None:
    out = tmp_path / "bad.zarr"
    rc = run(["synth", "--generator", "stats", "--out", str(out), "--layers", "2", "--top-k", "8",
              *args])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no partial store either
