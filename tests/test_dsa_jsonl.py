"""dsa-jsonl: the public capture format in and out; exact round trips; every malformed input."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_request_arrays
from dsacache.cli.app import run
from dsacache.errors import DsacacheError, TraceError
from dsacache.trace import Geometry, RequestTrace, Trace, open_trace, preset
from dsacache.trace.dsa_jsonl import export_dsa_jsonl, import_dsa_jsonl, read_capture

DSV32 = preset("deepseek-v3.2")


def compact(idx: np.ndarray, scores: np.ndarray | None):  # noqa: ANN201
    """Rows with their valid slots first (in slot order), as dsa-jsonl lists them."""
    out = np.full_like(idx, -1)
    sc = None if scores is None else np.full(scores.shape, np.nan, dtype=np.float32)
    for t in range(idx.shape[0]):
        for layer in range(idx.shape[1]):
            keep = idx[t, layer] >= 0
            n = int(keep.sum())
            out[t, layer, :n] = idx[t, layer][keep]
            if sc is not None:
                sc[t, layer, :n] = scores[t, layer][keep]
    return out, sc


@st.composite
def exportable_traces(draw: st.DrawFn) -> Trace:
    layers, k = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    with_scores = draw(st.booleans())
    reqs = []
    for _ in range(draw(st.integers(1, 3))):
        steps, context = draw(st.integers(1, 7)), draw(st.integers(1, 40))
        idx, ctx, _ = make_request_arrays(steps, layers, k, context, 0, 0.3, rng)
        values = rng.standard_normal(idx.shape).astype(np.float32) * 10.0 ** rng.integers(-8, 8)
        sc = np.where(idx >= 0, values, np.nan).astype(np.float32) if with_scores else None
        idx, sc = compact(idx, sc)
        reqs.append(RequestTrace(idx, ctx, scores=sc))
    return Trace(reqs, DSV32.with_overrides(layers=layers, top_k=k))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=exportable_traces(), gz=st.booleans())
def test_round_trip_trace_to_jsonl_and_back(trace: Trace, gz: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("t.jsonl.gz" if gz else "t.jsonl")
        n = export_dsa_jsonl(trace, path)
        assert n == sum(r.steps for r in trace.requests) * trace.geometry.layers
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
        import_dsa_jsonl(path, Path(tmp) / "t.zarr", DSV32, top_k=trace.geometry.top_k)
        back = Trace.load(Path(tmp) / "t.zarr")
    assert back.geometry == trace.geometry
    assert back.meta["request_ids"] == list(range(len(trace.requests)))
    for a, b in zip(trace.requests, back.requests, strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.context_lens, b.context_lens)
        assert (a.scores is None) == (b.scores is None)
        if a.scores is not None:
            np.testing.assert_array_equal(a.scores, b.scores)  # float32 exact, NaN where empty


def write_lines(path: Path, records: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def rec(req: int, layer: int, step: int, pos: list, scores: list | None = None, **extra) -> dict:  # noqa: ANN003
    r = {"event": "dsa_topk", "request_id": req, "layer_id": layer, "step_idx": step,
         "seq_len_current": step + 1, "selected_token_pos": pos, **extra}  # fmt: skip
    if scores is not None:
        r["scores_topk"] = scores
    return r


def capture_records() -> list:
    """Two requests, two layers; request 7 decodes positions 10..12, request 3 positions 4..5;
    shuffled, with another event, extra keys and a blank line. Scores are float32 values (what
    the capture writes), so they read back as the same numbers."""
    records = [
        rec(7, 0, 10, [0, 9, 10], [3.5, 2.0, -1.25], kv_fetch={"hbm": {"bytes_read": 1}}),
        rec(7, 1, 10, [10, 4], [1.0, 0.5]),
        rec(7, 0, 11, [11, 0], [2.0, 1.0]),
        rec(7, 1, 11, [4, 10, 11], [9.0, 8.0, 7.0]),
        rec(7, 0, 12, [], []),
        rec(7, 1, 12, [12], [0.125]),
        rec(3, 0, 4, [1, 2], [0.375, 0.25]),
        rec(3, 1, 4, [4], [2.0**-20]),
        rec(3, 0, 5, [5, 1, 0], [5.0, 4.0, 3.0]),
        rec(3, 1, 5, [0], [-2.5]),
    ]
    rng = np.random.default_rng(0)
    shuffled = [records[i] for i in rng.permutation(len(records))]
    return [{"event": "step_timing", "step_idx": 3}, *shuffled[:4], "", *shuffled[4:]]


def test_import_hand_written_capture(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "trace_steps.jsonl", capture_records())
    assert run(["import", "dsa-jsonl", str(src), "--out", str(tmp_path / "c.zarr")]) == 0
    t = open_trace(tmp_path / "c.zarr")
    assert t.geometry == DSV32.with_overrides(layers=2, top_k=3)
    assert t.meta["request_ids"] == [3, 7] and t.meta["import_format"] == "dsa-jsonl"
    r3, r7 = (r.materialize() for r in t.requests)
    assert r3.context_lens.tolist() == [5, 6] and r7.context_lens.tolist() == [11, 12, 13]
    assert r7.indices[:, 0].tolist() == [[0, 9, 10], [11, 0, -1], [-1, -1, -1]]
    assert r7.indices[:, 1].tolist() == [[10, 4, -1], [4, 10, 11], [12, -1, -1]]
    assert r3.indices.tolist() == [[[1, 2, -1], [4, -1, -1]], [[5, 1, 0], [0, -1, -1]]]
    np.testing.assert_array_equal(r7.scores[0, 0], np.float32([3.5, 2.0, -1.25]))
    assert np.isnan(r7.scores[2, 0]).all() and r3.scores[0, 1, 0] == np.float32(2.0**-20)


def test_capture_to_trace_to_capture(tmp_path: Path) -> None:
    """File -> store -> file: the same records (any order in, decode order out)."""
    src = write_lines(tmp_path / "in.jsonl", capture_records(), gz=True)
    import_dsa_jsonl(src, tmp_path / "c.zarr", DSV32)
    out = tmp_path / "out.jsonl"
    assert run(["export", "dsa-jsonl", str(tmp_path / "c.zarr"), "--out", str(out)]) == 0
    keys = ("request_id", "layer_id", "step_idx", "seq_len_current", "selected_token_pos",
            "scores_topk")  # fmt: skip

    def core(records: list) -> list:
        return sorted(
            (json.dumps({k: r[k] for k in keys}) for r in records
             if isinstance(r, dict) and r.get("event") == "dsa_topk"),
        )  # fmt: skip

    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert core(written) == core(capture_records())
    steps = [(r["step_idx"] - {3: 4, 7: 10}[r["request_id"]], r["layer_id"]) for r in written]
    assert steps == sorted(steps)  # decode order: step -> layer -> request


def test_top_k_option_and_longer_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_lines(tmp_path / "a.jsonl", [rec(0, 0, 2, [0, 1, 2])])
    assert (
        run(["import", "dsa-jsonl", str(src), "-o", str(tmp_path / "a.zarr"), "--top-k", "5"]) == 0
    )
    assert np.asarray(open_trace(tmp_path / "a.zarr").indices).tolist() == [[[0, 1, 2, -1, -1]]]
    assert (
        run(["import", "dsa-jsonl", str(src), "-o", str(tmp_path / "b.zarr"), "--top-k", "2"]) == 2
    )
    assert "line 1: 3 selected positions, more than top_k 2" in capsys.readouterr().err
    assert not (tmp_path / "b.zarr").exists()


def test_geometry_from_preset_and_flags(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.jsonl", [rec(0, 0, 2, [0, 1])])
    out = tmp_path / "a.zarr"
    args = ["--preset", "llama-3.1-70b", "--kv-bytes", "1000", "--block-tokens", "32"]
    assert run(["import", "dsa-jsonl", str(src), "-o", str(out), *args]) == 0
    assert open_trace(out).geometry == Geometry(1, 2, 1000, 132, 32)


BAD: list[tuple[str, list, int, str]] = [
    ("not json", ['{"event": "dsa_topk", '], 1, "not valid JSON"),
    ("not an object", [rec(0, 0, 0, [0]), "[1, 2]"], 2, "not a JSON object (a list)"),
    ("no event", [{"request_id": 0}], 1, "no `event` key"),
    ("missing keys", [{"event": "dsa_topk", "request_id": 0}], 1, "without layer_id, step_idx"),
    ("string step", [{**rec(0, 0, 0, [0]), "step_idx": "0"}], 1, "step_idx must be an integer"),
    ("bool layer", [{**rec(0, 0, 0, [0]), "layer_id": True}], 1, "layer_id must be an integer"),
    ("negative layer", [rec(0, -1, 0, [0])], 1, "layer_id must be an integer >= 0, got -1"),
    ("float request", [{**rec(0, 0, 0, [0]), "request_id": 1.5}], 1, "request_id must be"),
    ("seq_len", [{**rec(0, 0, 5, [0]), "seq_len_current": 5}], 1, "is not step_idx + 1 = 6"),
    ("huge seq_len", [rec(0, 0, 2**31, [0])], 1, "does not fit int32 token positions"),
    ("positions not a list", [rec(0, 0, 3, "0,1")], 1, "must be a list of integers"),
    ("float position", [rec(0, 0, 3, [0, 1.0])], 1, "must be a list of integers"),
    ("position too high", [rec(0, 0, 3, [0, 4])], 1, "selected position 4 outside 0..3"),
    ("negative position", [rec(0, 0, 3, [-1, 2])], 1, "selected position -1 outside 0..3"),
    ("huge position", [rec(0, 0, 3, [2**70])], 1, "outside 0..3"),
    ("repeated position", [rec(0, 0, 3, [2, 0, 2])], 1, "selected position 2 appears twice"),
    ("scores length", [rec(0, 0, 3, [0, 1], [1.0])], 1, "1 scores_topk for 2 selected_token_pos"),
    ("scores type", [rec(0, 0, 3, [0, 1], [1.0, "x"])], 1, "scores_topk must be a list of numbers"),
    (
        "score NaN",
        [
            '{"event":"dsa_topk","request_id":0,"layer_id":0,"step_idx":3,'
            '"seq_len_current":4,"selected_token_pos":[0],"scores_topk":[NaN]}'
        ],
        1,
        "score nan is not a finite float32",
    ),  # fmt: skip
    ("score overflow", [rec(0, 0, 3, [0, 1], [1.0, 1e39])], 1, "score 1e+39 is not a finite"),
    (
        "scores then none",
        [rec(0, 0, 3, [0], [1.0]), rec(0, 0, 4, [0])],
        2,
        "has no scores_topk but the first record (line 1) has",
    ),  # fmt: skip
    (
        "none then scores",
        [rec(0, 0, 3, [0]), rec(0, 0, 4, [0], [1.0])],
        2,
        "has scores_topk but the first record (line 1) has no",
    ),  # fmt: skip
    (
        "duplicate",
        [rec(0, 0, 3, [0]), rec(0, 0, 3, [1])],
        2,
        "a second record for request 0, layer 0, step_idx 3 (the first is line 1)",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("name", "lines", "line", "needle"), BAD, ids=[b[0] for b in BAD])
def test_malformed_line(tmp_path: Path, capsys, name: str, lines: list, line: int, needle: str):  # noqa: ANN001, ANN201
    src = write_lines(tmp_path / "bad.jsonl", lines)
    reject(tmp_path, capsys, src, f"{src}: line {line}: ", needle)


def reject(tmp_path: Path, capsys, src: Path, prefix: str, needle: str) -> None:  # noqa: ANN001
    out = tmp_path / "out.zarr"
    assert run(["import", "dsa-jsonl", str(src), "--out", str(out)]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == "" and "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith(f"dsacache: error: {prefix}"), err
    assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]  # nothing written


@pytest.mark.parametrize(
    ("records", "needle"),
    [
        # request 0 has step_idx 3 and 5 but not 4
        ([rec(0, 0, 3, [0]), rec(0, 0, 5, [0])], "request 0: no record for layer 0 at step_idx 4"),
        # layer 1 exists (request 1) but request 0 lacks it
        (
            [rec(0, 0, 3, [0]), rec(1, 1, 3, [0]), rec(1, 0, 3, [1])],
            "request 0: no record for layer 1 at step_idx 3 (its records run step_idx 3..3, "
            "and the file has layers 0..1)",
        ),  # fmt: skip
    ],
)
def test_missing_record(tmp_path: Path, capsys, records: list, needle: str) -> None:  # noqa: ANN001
    src = write_lines(tmp_path / "m.jsonl", records)
    reject(tmp_path, capsys, src, f"{src}: ", needle)


def test_empty_and_foreign_files(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    src = write_lines(tmp_path / "e.jsonl", [{"event": "other"}])
    reject(tmp_path, capsys, src, f"{src}: file: ", "no dsa_topk records")
    (tmp_path / "e.jsonl").write_bytes(b'{"event": "dsa_topk"}\n\xff\xfe\n')
    reject(tmp_path, capsys, tmp_path / "e.jsonl", f"{tmp_path / 'e.jsonl'}: line ", "not UTF-8")


def test_truncated_and_corrupt_gzip(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    lines = [rec(0, 0, t, list(range(t + 1))) for t in range(400)]
    whole = write_lines(tmp_path / "w.jsonl.gz", lines, gz=True).read_bytes()
    src = tmp_path / "w.jsonl.gz"
    src.write_bytes(whole[: len(whole) // 2])
    reject(tmp_path, capsys, src, f"{src}: line ", "the gzip stream ends early")
    src.write_bytes(whole[:20] + bytes(64) + whole[84:])
    reject(tmp_path, capsys, src, f"{src}: line ", "corrupt gzip data")


def test_missing_file_and_foreign_destination(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert (
        run(["import", "dsa-jsonl", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "o")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    src = write_lines(tmp_path / "a.jsonl", [rec(0, 0, 1, [0])])
    (tmp_path / "taken").mkdir()
    assert run(["import", "dsa-jsonl", str(src), "-o", str(tmp_path / "taken")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_read_capture_api_names_the_line(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.jsonl", [rec(0, 0, 1, [0]), rec(0, 0, 2, [7])])
    with pytest.raises(TraceError) as err:
        read_capture(src)
    assert (err.value.source, err.value.field) == (str(src), "line 2")


# --- export errors ---------------------------------------------------------------------------


def test_export_refuses_what_dsa_jsonl_cannot_hold(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    g = Geometry(1, 2, 656, 132, 4)
    jump = Trace.from_arrays(np.array([[[0, 1]], [[0, 1]]], np.int32), np.array([4, 6]), g)
    with pytest.raises(DsacacheError, match="context_len goes 4 -> 6 at step 1"):
        export_dsa_jsonl(jump, tmp_path / "j.jsonl")
    zero = Trace.from_arrays(np.full((1, 1, 2), -1, np.int32), np.array([0]), g)
    with pytest.raises(DsacacheError, match="step 0 has context_len 0"):
        export_dsa_jsonl(zero, tmp_path / "z.jsonl")
    empty = Trace([RequestTrace(np.zeros((0, 1, 2), np.int32), np.zeros(0, np.int64))], g)
    with pytest.raises(DsacacheError, match="request 0 has no steps"):
        export_dsa_jsonl(empty, tmp_path / "e.jsonl")
    assert list(tmp_path.iterdir()) == []
    ok = Trace.from_arrays(np.array([[[0, 1]]], np.int32), np.array([4]), g)
    ok.save(tmp_path / "ok.zarr")
    (tmp_path / "o.jsonl").write_text("keep")
    assert (
        run(["export", "dsa-jsonl", str(tmp_path / "ok.zarr"), "-o", str(tmp_path / "o.jsonl")])
        == 2
    )
    assert "exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "o.jsonl").read_text() == "keep"
    assert run(["export", "dsa-jsonl", str(tmp_path / "ok.zarr"), "-o",
                str(tmp_path / "o.jsonl"), "--force"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "o.jsonl").read_text())["selected_token_pos"] == [0, 1]
