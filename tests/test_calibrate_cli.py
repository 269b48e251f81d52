"""`dsacache calibrate l2-sweep`: JSON shape, the table, one-line exit-2 errors."""

from __future__ import annotations

import json

import pytest

from dsacache.cli.app import run
from dsacache.sim.llc.gpu_l2 import l2_sweep_hit_rates


def test_json_shape_matches_the_public_function(capsys):
    args = ["calibrate", "l2-sweep", "--hardware", "h100", "--sms", "8", "--chunk-kib", "512"]
    assert run([*args, "--sizes-kib", "1024,2048", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert list(d) == ["sizes_kib", "hit_rate"] and d["sizes_kib"] == [1024, 2048]
    assert d["hit_rate"] == l2_sweep_hit_rates("h100", [1024, 2048], 512, sms=8)


def test_measured_column_and_table(capsys):
    args = ["calibrate", "l2-sweep", "--hardware", "H200", "--sms", "8", "--sizes-kib", "2048,2560"]
    assert run([*args, "--measured", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["measured_hit_rate"][0] > 0.99 and d["measured_hit_rate"][1] > 0.99
    eq = l2_sweep_hit_rates("h200", [2048, 2560], sms=8, bandwidth_equivalent=True)
    assert d["bandwidth_equivalent_hit_rate"] == eq
    assert run([*args, "--measured"]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H200" in out and "measured" in out and "2,560" in out
    assert "bw-equivalent" in out


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--hardware", "tpu", "--sizes-kib", "512"], "unknown hardware"),
        (["--hardware", "h200", "--sizes-kib", "abc"], "comma-separated integers"),
        (["--hardware", "h200", "--sizes-kib", "700"], "multiple of the 512 KiB chunk"),
        (["--hardware", "h200", "--sizes-kib", "0"], "positive size"),
        (["--hardware", "h200", "--sizes-kib", "512", "--sms", "0"], "--sms"),
        (["--hardware", "h200", "--sizes-kib", "512", "--chunk-kib", "20"], "multiple of 16"),
        (["--hardware", "h100", "--sizes-kib", "512", "--measured"], "no measured"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, extra, msg):
    assert run(["calibrate", "l2-sweep", *extra, "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.count("\n") == 1 and msg in cap.err and "Traceback" not in cap.err


def test_help_lists_the_command(capsys):
    assert run(["calibrate", "--help"]) == 0
    assert "l2-sweep" in capsys.readouterr().out
    assert run(["calibrate"]) == 0  # a bare group shows its help
    assert "l2-sweep" in capsys.readouterr().out


def test_missing_required_option_is_one_line(capsys):
    assert run(["calibrate", "l2-sweep", "--sizes-kib", "512"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--hardware" in err
