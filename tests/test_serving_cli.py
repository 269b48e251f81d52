"""`dsacache serving`: JSON equals the library, the table, the plot, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dsacache.cli.app import run
from dsacache.cli.serving_cmd import parse_concurrency
from dsacache.hardware import gpu
from dsacache.perf.serving import BufferStats, ServingWorkload, serving_rows
from dsacache.perf.serving_models import serving_model

PUBLIC = ["serving", "--model", "glm-5.1", "--hardware", "h200", "--gpus", "8", "--input-tokens",
          "32768", "--output-tokens", "8192", "--buffer-tokens", "4096"]  # fmt: skip


def _json(capsys, argv: list[str]) -> dict:
    assert run(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_json_is_the_library_result(capsys) -> None:
    out = _json(capsys, [*PUBLIC, "--concurrency", "8,64,256", "--hit-rate", "0.9", "--json"])
    want = serving_rows(
        serving_model("glm-5.1"), gpu("h200"), ServingWorkload(8, 32768, 8192, 4096), [8, 64, 256],
        BufferStats(0.9),
    ).to_dict()  # fmt: skip
    assert out == json.loads(json.dumps(want))
    assert out["baseline_max_concurrency"] == 40 and out["kv_dtype"] == "bf16"
    assert [r["concurrency"] for r in out["rows"]] == [8, 64, 256]
    for r in out["rows"]:
        assert r["ratio"] == pytest.approx(r["offload_tokens_per_s"] / r["baseline_tokens_per_s"])
        assert r["buffer_hit_rate"] == 0.9


def test_options_reach_the_model(capsys) -> None:
    base = [*PUBLIC, "--concurrency", "256", "--hit-rate", "0.8", "--json"]
    plain = _json(capsys, base)
    over = _json(capsys, [*base, "--overlap"])
    assert over["overlap"] and over["rows"][0]["offload_tokens_per_s"] > plain["rows"][0][
        "offload_tokens_per_s"]  # fmt: skip
    tp = _json(capsys, [*base, "--attention", "tp"])
    assert tp["attention"] == "tp" and tp["baseline_max_concurrency"] < 40
    fp8 = _json(capsys, [*base, "--kv-dtype", "fp8", "--mem-fraction", "0.9"])
    assert fp8["kv_bytes_per_token"] == 656 and fp8["params"]["mem_fraction"] == 0.9
    slow = _json(capsys, [*base, "--swap-layer-us", "50", "--collective-us", "0"])
    assert slow["params"]["swap_layer_s"] == pytest.approx(50e-6)
    assert slow["rows"][0]["offload_step"]["swap_fixed_ms"] == pytest.approx(78 * 0.05)
    assert slow["rows"][0]["baseline_step"]["comm_ms"] < plain["rows"][0]["baseline_step"][
        "comm_ms"]  # fmt: skip


def test_table_and_plot(capsys, tmp_path: Path) -> None:
    png = tmp_path / "t.png"
    rc = run([*PUBLIC, "--concurrency", "8,256", "--hit-rate", "0.95", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and png.stat().st_size > 0
    assert "ratio" in out and "40/232" in out and "Max running: 40 (baseline)" in out
    assert "dp attention, bf16 KV" in out and f"wrote {png}" in out


def test_plot_draws_the_rows(drawn, tmp_path: Path) -> None:
    from dsacache.report.figures import plot_serving

    res = serving_rows(
        serving_model("deepseek-v3.2"), gpu("b200"), ServingWorkload(8, 16384, 4096, 4096),
        [4, 32, 512], BufferStats(0.9),
    ).to_dict()  # fmt: skip
    plot_serving(res, tmp_path / "s.png")
    ax = drawn["s.png"].axes[0]
    lines = {str(line.get_label()): line for line in ax.get_lines()}
    for name in ("baseline", "offload"):
        np.testing.assert_allclose(lines[name].get_xdata(), [4, 32, 512])
        np.testing.assert_allclose(
            lines[name].get_ydata(), [r[f"{name}_tokens_per_s"] for r in res["rows"]]
        )
    caps = [line for label, line in lines.items() if "HBM cap" in label]
    assert sorted(line.get_xdata()[0] for line in caps) == sorted(
        [res["baseline_max_concurrency"], res["offload_max_concurrency"]]
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "glm-9"], "unknown model 'glm-9'"),
        (["--hardware", "tpu"], "unknown hardware 'tpu'"),
        (["--buffer-tokens", "0"], "--buffer-tokens must be an integer >= 1"),
        (["--buffer-tokens", "1024"], "below the model's top-k 2048"),
        (["--gpus", "0"], "--gpus must be an integer >= 1"),
        (["--gpus", "1"], "does not fit"),
        (["--concurrency", ","], "--concurrency needs at least one value"),
        (["--concurrency", "8,x"], "'x' is not an integer"),
        (["--concurrency", "0"], "must be >= 1"),
        (["--hit-rate", "1.5"], "hit rate must be a number in [0, 1]"),
        (["--attention", "pp"], "--attention must be one of dp, tp"),
        (["--kv-dtype", "int4"], "unknown KV dtype"),
        (["--gpus", "eight"], "Invalid value for '--gpus'"),
    ],
)
def test_bad_input_is_one_line_rc2(args, needle, capsys, tmp_path: Path) -> None:
    opts = {"--concurrency": "8", "--hit-rate": "0.9"}
    argv = list(PUBLIC)
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            opts[flag] = value
    for flag, value in opts.items():
        argv += [flag, value]
    png = tmp_path / "never.png"
    rc = run([*argv, "--plot", str(png)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not png.exists()  # nothing half-written


def test_unwritable_plot_is_one_line(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = run([*PUBLIC, "--concurrency", "8", "--hit-rate", "0.9", "--plot", str(blocker / "p.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write the plot" in err and len(err.strip().splitlines()) == 1


def test_parse_concurrency() -> None:
    assert parse_concurrency(" 8, 16 ,256,") == [8, 16, 256]
