"""The trace format: store round trips, .npz import, on-disk schema, atomic writes, `info`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (
    BLOCK_TOKENS,
    INDEX_BYTES,
    KV_BYTES,
    assert_traces_equal,
    make_request_arrays,
    make_scores,
    make_trace,
)
from dsacache import __version__
from dsacache.cli.app import run
from dsacache.errors import DsacacheError, TraceError
from dsacache.trace import Geometry, RequestTrace, Trace, TraceWriter, open_trace
from dsacache.trace.store import FORMAT_NAME, FORMAT_VERSION

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_scalars = st.one_of(
    st.integers(-(2**31), 2**31), st.text(max_size=8), st.booleans(), st.none()
)
meta_dicts = st.dictionaries(
    st.text(min_size=1, max_size=8), st.one_of(json_scalars, st.lists(json_scalars, max_size=3))
)


@st.composite
def random_traces(draw: st.DrawFn) -> Trace:
    """1-3 requests with their own step counts, contexts, near-miss widths and scores."""
    layers = draw(st.integers(1, 3))
    k = draw(st.integers(1, 5))
    n_req = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    requests = []
    for _ in range(n_req):
        steps = draw(st.integers(0, 9))
        context = draw(st.integers(1, 12))
        near = draw(st.integers(0, 3))
        pad = draw(st.sampled_from([0.0, 0.3, 1.0]))
        idx, ctx, near_rows = make_request_arrays(steps, layers, k, context, near, pad, rng)
        scores = make_scores(idx, rng) if draw(st.booleans()) else None
        requests.append(RequestTrace(idx, ctx, near_rows, scores))
    geometry = Geometry(
        layers,
        k,
        draw(st.integers(1, 4096)),
        draw(st.integers(1, 256)),
        draw(st.integers(1, 128)),
    )
    return Trace(requests, geometry, draw(meta_dicts))


# --- store round trip ----------------------------------------------------------------------


@SETTINGS
@given(trace=random_traces(), chunk_steps=st.integers(1, 8))
def test_store_round_trip(trace: Trace, chunk_steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.zarr"
        trace.save(path, chunk_steps=chunk_steps)
        eager = Trace.load(path)
        lazy = Trace.load(path, lazy=True)
        assert not any(r.is_lazy for r in eager.requests)
        assert all(r.is_lazy for r in lazy.requests)
        assert_traces_equal(trace, eager)
        assert_traces_equal(trace, lazy)
        assert eager.source == lazy.source == str(path)
        assert eager.count_accesses() == lazy.count_accesses() == trace.count_accesses()
        for mem, disk in zip(trace.requests, lazy.requests, strict=True):
            if mem.steps:
                assert disk.default_chunk_steps() == min(chunk_steps, mem.steps)
            chunks = list(disk.iter_chunks())
            assert [c.start for c in chunks] == list(range(0, mem.steps, chunk_steps))
            for c in chunks:
                stop = c.start + c.indices.shape[0]
                assert isinstance(c.indices, np.ndarray) and c.indices.dtype == np.int32
                np.testing.assert_array_equal(c.indices, mem.indices[c.start : stop])
                np.testing.assert_array_equal(c.context_lens, mem.context_lens[c.start : stop])
                if mem.near_miss is not None:
                    np.testing.assert_array_equal(c.near_miss, mem.near_miss[c.start : stop])
                assert (c.scores is None) == (mem.scores is None)
                if mem.scores is not None:
                    assert isinstance(c.scores, np.ndarray) and c.scores.dtype == np.float32
                    np.testing.assert_array_equal(c.scores, mem.scores[c.start : stop])


def test_load_materialize_and_resave(tmp_path: Path, small_trace: Trace) -> None:
    small_trace.save(tmp_path / "a.zarr", chunk_steps=3)
    lazy = Trace.load(tmp_path / "a.zarr", lazy=True)
    mem = lazy.materialize()
    assert not any(r.is_lazy for r in mem.requests)
    assert_traces_equal(small_trace, mem)
    lazy.save(tmp_path / "b.zarr", chunk_steps=5)  # a lazy trace streams into a new store
    assert_traces_equal(small_trace, Trace.load(tmp_path / "b.zarr"))


def test_single_request_conveniences(small_trace: Trace) -> None:
    one = make_trace(5, layers=2, k=3, context=4)
    assert one.indices.shape == (5, 2, 3)
    assert one.context_lens.tolist() == [4, 5, 6, 7, 8]
    assert one.near_miss is None
    assert one.steps == 5
    with pytest.raises(DsacacheError, match="holds 2 requests"):
        _ = small_trace.indices
    assert small_trace.steps == 9
    assert small_trace.meta["tool_version"] == __version__


def test_on_disk_schema(tmp_path: Path, small_trace: Trace) -> None:
    """What docs/trace-format.md promises about the store layout."""
    path = tmp_path / "s.zarr"
    small_trace.save(path, chunk_steps=4)
    root = json.loads((path / "zarr.json").read_text())
    assert root["zarr_format"] == 3 and root["node_type"] == "group"
    attrs = root["attributes"]
    assert attrs["format"] == FORMAT_NAME == "dsacache-trace"
    assert attrs["format_version"] == FORMAT_VERSION == 1
    assert attrs["geometry"] == small_trace.geometry.to_dict()
    assert attrs["meta"] == small_trace.meta
    assert attrs["n_requests"] == 2

    def array_meta(name: str) -> dict:
        return json.loads((path / "requests" / "0" / name / "zarr.json").read_text())

    for name, dtype, fill, chunk in [
        ("indices", "int32", -2, [4, 3, 4]),
        ("near_miss", "int32", -2, [4, 3, 2]),
        ("context_lens", "int64", -1, [6]),
    ]:
        meta = array_meta(name)
        assert meta["node_type"] == "array"
        assert meta["data_type"] == dtype
        assert meta["fill_value"] == fill
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == chunk
        zstd = [c for c in meta["codecs"] if c["name"] == "zstd"]
        assert zstd and zstd[0]["configuration"] == {"level": 1, "checksum": True}
    assert (path / "requests" / "0" / "indices" / "c" / "1" / "0" / "0").is_file()


# --- .npz import ---------------------------------------------------------------------------


def test_npz_3d_int64_defaults(tmp_path: Path) -> None:
    idx = np.array(
        [
            [[0, 3, -1], [2, -1, -1]],  # max 3 -> context 4
            [[-1, -1, -1], [-1, -1, -1]],  # nothing selected -> context 0
            [[7, 1, 0], [5, 6, -1]],  # max 7 -> context 8
        ],
        dtype=np.int64,
    )
    np.savez(tmp_path / "d.npz", indices=idx)
    t = open_trace(tmp_path / "d.npz")
    assert t.indices.dtype == np.int32
    np.testing.assert_array_equal(t.indices, idx)
    assert t.context_lens.dtype == np.int64
    assert t.context_lens.tolist() == [4, 0, 8]
    assert t.near_miss is None
    assert t.geometry == Geometry(2, 3, 656, 132, 64)  # defaults: DeepSeek-V3.2
    assert t.meta["source_model"] == "imported"
    assert t.meta["imported_from"] == str(tmp_path / "d.npz")
    assert t.count_accesses() == 8


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.int32, np.uint32])
def test_npz_any_integer_dtype_is_cast(tmp_path: Path, dtype: type) -> None:
    idx, ctx, _ = make_request_arrays(4, 2, 3, 6, pad=0.0)
    if np.dtype(dtype).kind == "u":
        idx = np.abs(idx)  # pad=0: no -1 to lose
    np.savez(tmp_path / "d.npz", indices=idx.astype(dtype), context_lens=ctx.astype(np.int32))
    t = open_trace(tmp_path / "d.npz")
    assert t.indices.dtype == np.int32
    np.testing.assert_array_equal(t.indices, idx)
    assert t.context_lens.dtype == np.int64
    np.testing.assert_array_equal(t.context_lens, ctx)


def test_npz_4d_batch_with_context_and_near_miss(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    parts = [make_request_arrays(5, 2, 4, 9, near_miss=2, rng=rng) for _ in range(3)]
    idx = np.stack([p[0] for p in parts])
    ctx = np.stack([p[1] for p in parts])
    near = np.stack([p[2] for p in parts])
    np.savez(tmp_path / "b.npz", indices=idx, context_lens=ctx, near_miss=near)
    t = open_trace(tmp_path / "b.npz", kv_bytes_per_token=4096, block_tokens=16)
    assert len(t.requests) == 3
    assert t.geometry == Geometry(2, 4, 4096, 132, 16)
    for r, req in enumerate(t.requests):
        np.testing.assert_array_equal(req.indices, idx[r])
        np.testing.assert_array_equal(req.context_lens, ctx[r])
        np.testing.assert_array_equal(req.near_miss, near[r])


def test_npz_4d_default_context_per_request(tmp_path: Path) -> None:
    idx = np.full((2, 2, 1, 2), -1, dtype=np.int32)
    idx[0, 0, 0] = [4, 1]
    idx[1, 1, 0] = [9, -1]
    np.savez(tmp_path / "b.npz", indices=idx)
    t = open_trace(tmp_path / "b.npz")
    assert [r.context_lens.tolist() for r in t.requests] == [[5, 0], [0, 10]]


def test_npz_then_store_round_trip(tmp_path: Path) -> None:
    idx, ctx, near = make_request_arrays(7, 3, 4, 10, near_miss=3)
    np.savez_compressed(tmp_path / "d.npz", indices=idx, context_lens=ctx, near_miss=near)
    t = open_trace(tmp_path / "d.npz", index_bytes_per_token=64)
    t.save(tmp_path / "d.zarr", chunk_steps=2)
    back = open_trace(tmp_path / "d.zarr")
    assert back.geometry.index_bytes_per_token == 64
    assert_traces_equal(t, back)


def test_npz_zero_geometry_override_is_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", indices=np.zeros((1, 1, 1), dtype=np.int32))
    with pytest.raises(DsacacheError, match="kv_bytes_per_token must be a positive integer"):
        open_trace(tmp_path / "d.npz", kv_bytes_per_token=0)


# --- atomic writes, no partial output ------------------------------------------------------


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_writer_exception_leaves_nothing(tmp_path: Path, small_trace: Trace) -> None:
    dest = tmp_path / "out.zarr"
    req = small_trace.requests[0]
    with pytest.raises(RuntimeError, match="boom"):
        with TraceWriter(dest, small_trace.geometry, chunk_steps=2) as w:
            rw = w.add_request(req.steps, near_miss=2)
            rw.write(0, req.indices[:2], req.context_lens[:2], req.near_miss[:2])
            assert any(n.startswith(".out.zarr.partial-") for n in _siblings(dest))
            raise RuntimeError("boom")
    assert _siblings(dest) == []


def test_writer_rejects_invalid_chunk_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    g = Geometry(2, 3, 656, 132, 4)
    good = np.array([[[0, 1, -1], [2, -1, -1]]], dtype=np.int32)
    bad = np.array([[[0, 0, -1], [2, -1, -1]]], dtype=np.int32)  # token 0 twice
    with pytest.raises(TraceError) as err:
        with TraceWriter(dest, g) as w:
            rw = w.add_request(2)
            rw.write(0, good, np.array([3]))
            rw.write(1, bad, np.array([4]))
    assert err.value.source == str(dest)
    assert err.value.field == "requests/0/indices"
    assert "token 0 twice" in str(err.value) and "step 1" in str(err.value)
    assert _siblings(dest) == []


@pytest.mark.parametrize(
    ("rows", "ctx", "field", "needle"),
    [
        (np.array([[[0, 5, -1], [1, -1, -1]]]), [5], "requests/0/indices", "5 >= context length 5"),
        (np.array([[[0, -3, -1], [1, -1, -1]]]), [5], "requests/0/indices", "-3 < -1"),
        (np.array([[[0.0, 1, 2], [1, 2, 3]]]), [5], "requests/0/indices", "float64"),
        (np.array([[0, 1, 2]]), [5], "requests/0/indices", "chunk shape (1, 3)"),
        (np.array([[[0, 1, 2]]]), [5], "requests/0/indices", "chunk shape (1, 1, 3)"),
        (np.array([[[0, 1, -1], [1, -1, -1]]]), [5, 6], "requests/0/context_lens", "shape (2,)"),
        (np.array([[[0, 1, -1], [1, -1, -1]]]), [-4], "requests/0/context_lens", "-4"),
    ],
)
def test_writer_rejects_each_rule(tmp_path: Path, rows, ctx, field: str, needle: str) -> None:
    dest = tmp_path / "out.zarr"
    with pytest.raises(TraceError) as err:
        with TraceWriter(dest, Geometry(2, 3, 656, 132, 4)) as w:
            w.add_request(1).write(0, rows, np.array(ctx))
    assert err.value.field == field
    assert needle in str(err.value)
    assert _siblings(dest) == []


def test_writer_rows_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="rows 2..3 outside 0..2"):
        with TraceWriter(tmp_path / "o.zarr", Geometry(1, 1, 1, 1, 1)) as w:
            w.add_request(3).write(2, np.zeros((2, 1, 1), np.int32), np.array([1, 1]))
    assert _siblings(tmp_path / "o.zarr") == []


def test_writer_unwritten_steps_fail_and_leave_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    with pytest.raises(TraceError, match="2 of 3 steps never written"):
        with TraceWriter(dest, Geometry(1, 2, 656, 132, 4)) as w:
            w.add_request(3).write(0, np.array([[[0, 1]]]), np.array([2]))
    assert _siblings(dest) == []


def test_writer_without_requests_fails(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="at least one request"):
        with TraceWriter(tmp_path / "o.zarr", Geometry(1, 2, 656, 132, 4)):
            pass
    assert list(tmp_path.iterdir()) == []


def test_writer_near_miss_rows_required(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as err:
        with TraceWriter(tmp_path / "o.zarr", Geometry(1, 2, 656, 132, 4)) as w:
            w.add_request(1, near_miss=1).write(0, np.array([[[0, 1]]]), np.array([3]))
    assert err.value.field == "requests/0/near_miss"
    assert list(tmp_path.iterdir()) == []


def test_writer_validate_false_skips_value_checks_only(tmp_path: Path) -> None:
    g = Geometry(1, 2, 656, 132, 4)
    with TraceWriter(tmp_path / "o.zarr", g, validate=False) as w:
        w.add_request(1).write(0, np.array([[[1, 1]]]), np.array([2]))  # token 1 twice
    with pytest.raises(TraceError, match="token 1 twice"):
        Trace.load(tmp_path / "o.zarr")  # the reader still checks
    with pytest.raises(TraceError, match="chunk shape"):
        with TraceWriter(tmp_path / "p.zarr", g, validate=False) as w:
            w.add_request(1).write(0, np.array([[[1, 1, 1]]]), np.array([2]))
    assert not (tmp_path / "p.zarr").exists()


def test_iter_chunks_bad_size(small_trace: Trace) -> None:
    with pytest.raises(DsacacheError, match="chunk_steps"):
        list(small_trace.requests[0].iter_chunks(-1))


def test_writer_bad_chunk_steps() -> None:
    with pytest.raises(DsacacheError, match="chunk_steps"):
        TraceWriter("x.zarr", Geometry(1, 1, 1, 1, 1), chunk_steps=0)


def test_failed_overwrite_keeps_old_store(tmp_path: Path, small_trace: Trace) -> None:
    dest = tmp_path / "t.zarr"
    small_trace.save(dest)
    with pytest.raises(RuntimeError):
        with TraceWriter(dest, small_trace.geometry) as w:
            w.add_request(1)
            raise RuntimeError("interrupted")
    assert _siblings(dest) == ["t.zarr"]
    assert_traces_equal(small_trace, Trace.load(dest))


def test_overwrite_existing_trace_store(tmp_path: Path, small_trace: Trace) -> None:
    dest = tmp_path / "t.zarr"
    small_trace.save(dest)
    other = make_trace(4, layers=1, k=2, context=3, seed=9)
    other.save(dest)
    assert _siblings(dest) == ["t.zarr"]
    assert_traces_equal(other, Trace.load(dest))


def test_save_refuses_non_trace_directory(tmp_path: Path, small_trace: Trace) -> None:
    dest = tmp_path / "results"
    dest.mkdir()
    (dest / "keep.txt").write_text("precious")
    with pytest.raises(DsacacheError, match="not a dsacache trace store; refusing to overwrite"):
        small_trace.save(dest)
    assert (dest / "keep.txt").read_text() == "precious"
    assert _siblings(dest) == ["results"]


def test_save_refuses_file_and_foreign_zarr(tmp_path: Path, small_trace: Trace) -> None:
    f = tmp_path / "t.zarr"
    f.write_text("not a store")
    with pytest.raises(DsacacheError, match="refusing to overwrite"):
        small_trace.save(f)
    assert f.read_text() == "not a store"
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    (foreign / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    )
    with pytest.raises(DsacacheError, match="refusing to overwrite"):
        small_trace.save(foreign)
    assert (foreign / "zarr.json").is_file()


def test_save_into_new_parent_directories(tmp_path: Path, small_trace: Trace) -> None:
    dest = tmp_path / "a" / "b" / "t.zarr"
    small_trace.save(dest)
    assert_traces_equal(small_trace, Trace.load(dest))


# --- `dsacache info` -----------------------------------------------------------------------


def test_info_text(small_store: Path, small_trace: Trace, capsys) -> None:
    assert run(["info", str(small_store)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert str(small_store) in out
    assert f"dsacache-trace v{FORMAT_VERSION}" in out
    assert f"layers=3 top_k=4 kv_bytes_per_token={KV_BYTES}" in out
    assert f"index_bytes_per_token={INDEX_BYTES} block_tokens={BLOCK_TOKENS}" in out
    assert 'source_model = "test"' in out
    r0, r1 = small_trace.requests
    assert f"{r0.context_lens[0]}..{r0.context_lens[-1]}" in out
    assert f"{r1.context_lens[0]}..{r1.context_lens[-1]}" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    accesses = [int((r.indices >= 0).sum()) for r in small_trace.requests]
    assert rows["0"][:5] == ["0", "6", f"{r0.context_lens[0]}..{r0.context_lens[-1]}", "2"] + [
        str(accesses[0])
    ]
    assert rows["1"][:5] == ["1", "9", f"{r1.context_lens[0]}..{r1.context_lens[-1]}", "2"] + [
        str(accesses[1])
    ]
    assert rows["total"][:3] == ["total", "15", str(sum(accesses))]


def test_info_json(small_store: Path, small_trace: Trace, capsys) -> None:
    assert run(["info", str(small_store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source"] == str(small_store)
    assert info["format"] == "dsacache-trace"
    assert info["format_version"] == 1
    assert info["geometry"] == small_trace.geometry.to_dict()
    assert info["meta"] == small_trace.meta
    assert info["n_requests"] == 2
    total = 0
    for got, req in zip(info["requests"], small_trace.requests, strict=True):
        accesses = int(np.count_nonzero(req.indices >= 0))
        total += accesses
        assert got["steps"] == req.steps
        assert got["context_first"] == req.context_lens[0]
        assert got["context_last"] == req.context_lens[-1]
        assert got["near_miss"] == 2
        assert got["accesses"] == accesses
        assert got["kv_bytes_gathered"] == accesses * KV_BYTES
    assert info["total"] == {"steps": 15, "accesses": total, "kv_bytes_gathered": total * KV_BYTES}


def test_info_npz_with_geometry_flags(tmp_path: Path, capsys) -> None:
    idx = np.array([[[0, 1]], [[2, -1]]], dtype=np.int32)
    np.savez(tmp_path / "d.npz", indices=idx)
    args = ["--kv-bytes", "100", "--index-bytes", "8", "--block-tokens", "2", "--json"]
    assert run(["info", str(tmp_path / "d.npz"), *args]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "npz" and info["format_version"] is None
    assert info["geometry"] == {
        "layers": 1,
        "top_k": 2,
        "kv_bytes_per_token": 100,
        "index_bytes_per_token": 8,
        "block_tokens": 2,
    }
    assert info["requests"] == [
        {
            "request": 0,
            "steps": 2,
            "context_first": 2,
            "context_last": 3,
            "near_miss": 0,
            "accesses": 3,
            "kv_bytes_gathered": 300,
        }
    ]


def test_info_zero_step_request(tmp_path: Path, capsys) -> None:
    t = make_trace([0, 2], layers=1, k=2, context=[1, 3], requests=2)
    t.save(tmp_path / "z.zarr")
    assert run(["info", str(tmp_path / "z.zarr")]) == 0
    assert "  0  " in capsys.readouterr().out
    assert run(["info", str(tmp_path / "z.zarr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["requests"][0]["steps"] == 0
    assert info["requests"][0]["context_first"] is None


def test_info_help(capsys) -> None:
    assert run(["info", "--help"]) == 0
    out = capsys.readouterr().out
    assert "validator" in out and "--json" in out and "--kv-bytes" in out


# --- docs/trace-format.md stays true -------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "trace-format.md"


def test_doc_python_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    text = DOC.read_text()
    blocks = text.split("```python\n")[1:]
    assert blocks, "docs/trace-format.md has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block.split("\n```", 1)[0], str(DOC), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out == ["0 0 (2, 2, 4) [10, 11]", "0 2 (1, 2, 4) [12]"]


def test_doc_names_the_constants() -> None:
    text = DOC.read_text()
    assert f'"format": "{FORMAT_NAME}"' in text
    assert f'"format_version": {FORMAT_VERSION}' in text
    assert "zstd, level 1, with the content checksum on" in text
