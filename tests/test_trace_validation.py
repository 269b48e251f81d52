"""Every input the trace format rejects: exit 2, one line naming file, field and value.

Each rejection goes through the CLI (`dsacache info`, which loads and so validates the whole
trace) and must never show a traceback; the Python API raises TraceError with `.source` and
`.field` set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import make_request_arrays, make_trace
from dsacache.cli.app import run
from dsacache.errors import DsacacheError, TraceError
from dsacache.trace import Geometry, RequestTrace, Trace, open_trace


def reject(path: Path, capsys: pytest.CaptureFixture[str], field: str, *values: str) -> str:
    """Run `dsacache info PATH`; assert exit 2 and one stderr line naming path, field, values."""
    rc = run(["info", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert rc == 2, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"dsacache: error: {path}: {field}: "), line
    for value in values:
        assert value in line, (value, line)
    return line


# --- helpers to build bad inputs -----------------------------------------------------------


def valid_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """indices [6, 3, 4], context_lens [6] (5..10), near_miss [6, 3, 2]; all valid."""
    return make_request_arrays(6, 3, 4, 5, near_miss=2, rng=np.random.default_rng(seed))


def npz(tmp_path: Path, name: str = "t.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def store(tmp_path: Path, name: str = "t.zarr", requests: int = 2) -> Path:
    """A valid store: `requests` requests of 6 steps, 3 layers, k=4, near-miss 2, chunks of 2."""
    path = tmp_path / name
    make_trace(6, layers=3, k=4, context=5, requests=requests, near_miss=2, seed=4).save(
        path, chunk_steps=2
    )
    return path


def edit_json(path: Path, **changes: object) -> None:
    """Update keys of a zarr.json (a key `attributes` is merged, not replaced)."""
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "attributes":
            meta["attributes"].update(value)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def chunk(path: Path, array: str, index: int, request: int = 0) -> Path:
    """The chunk file of steps [2*index, 2*index+2) of requests/<request>/<array>."""
    rest = [] if array == "context_lens" else ["0", "0"]
    return path.joinpath("requests", str(request), array, "c", str(index), *rest)


# --- files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, capsys) -> None:
    reject(tmp_path / "nope.zarr", capsys, "file", "does not exist")


def test_missing_npz_file(tmp_path: Path, capsys) -> None:
    reject(tmp_path / "nope.npz", capsys, "file", "does not exist")


def test_truncated_npz(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    path = npz(tmp_path, indices=idx, context_lens=ctx)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reject(path, capsys, "file", "not an .npz archive", "truncated")


def test_corrupt_compressed_npz_member(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.npz"
    np.savez_compressed(path, indices=np.arange(6000, dtype=np.int32).reshape(10, 6, 100))
    data = bytearray(path.read_bytes())
    for i in range(200, 700):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))
    reject(path, capsys, "file", "corrupt .npz")


def test_not_a_zip(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.npz"
    path.write_text("indices = [1, 2, 3]\n")
    reject(path, capsys, "file", "not an .npz archive")


def test_npy_named_npz(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.npz"
    with open(path, "wb") as f:
        np.save(f, valid_arrays()[0])
    reject(path, capsys, "file", "not an .npz archive")


def test_not_a_store_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.bin"
    path.write_bytes(b"\x00\x01garbage")
    reject(path, capsys, "file", "not a dsacache trace store", "no zarr.json")


def test_not_a_store_directory(tmp_path: Path, capsys) -> None:
    (tmp_path / "d").mkdir()
    reject(tmp_path / "d", capsys, "file", "not a dsacache trace store")


def test_pickled_object_array_npz(tmp_path: Path, capsys) -> None:
    path = npz(tmp_path, indices=np.array([1, "a"], dtype=object))
    reject(path, capsys, "file", "Object arrays cannot be loaded")


# --- store damage --------------------------------------------------------------------------


def test_store_chunk_file_deleted(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    chunk(path, "indices", 1).unlink()
    reject(path, capsys, "requests/0/indices", "index -2", "step 2", "missing chunk")


def test_store_chunk_deleted_single_request(tmp_path: Path, capsys) -> None:
    path = store(tmp_path, requests=1)
    chunk(path, "indices", 2).unlink()
    reject(path, capsys, "indices", "index -2", "step 4", "missing chunk")


def test_store_near_miss_chunk_deleted(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    chunk(path, "near_miss", 0, request=1).unlink()
    reject(path, capsys, "requests/1/near_miss", "index -2", "step 0")


def test_store_context_lens_chunk_deleted(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    chunk(path, "context_lens", 0, request=1).unlink()
    reject(path, capsys, "requests/1/context_lens", "-1 at step 0", "missing chunk")


def test_store_chunk_truncated(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    f = chunk(path, "indices", 1)
    f.write_bytes(f.read_bytes()[:-7])
    reject(path, capsys, "requests/0/indices", "corrupt chunk in steps 2..3")


def test_store_chunk_bytes_flipped(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    f = chunk(path, "indices", 2, request=1)
    data = bytearray(f.read_bytes())
    for i in range(12, len(data) - 4):  # past the frame header, before the checksum
        data[i] ^= 0xFF
    f.write_bytes(bytes(data))
    reject(path, capsys, "requests/1/indices", "corrupt chunk in steps 4..5")


def test_store_context_lens_chunk_corrupt(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    chunk(path, "context_lens", 0).write_bytes(b"\x28\xb5\x2f\xfd garbage")
    reject(path, capsys, "requests/0/context_lens", "corrupt chunk")


def test_store_corrupt_chunk_lazy_read_raises_trace_error(tmp_path: Path) -> None:
    """With validation off, a bad chunk still fails as TraceError when it is read."""
    path = store(tmp_path)
    f = chunk(path, "indices", 2)
    f.write_bytes(f.read_bytes()[:10])
    t = open_trace(path, lazy=True, validate=False)
    first = next(t.requests[0].iter_chunks())
    assert first.start == 0
    with pytest.raises(TraceError) as err:
        list(t.requests[0].iter_chunks())
    assert (err.value.source, err.value.field) == (str(path), "requests/0/indices")
    assert "steps 4..5" in err.value.problem


def test_store_indices_array_deleted(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    shutil.rmtree(path / "requests" / "1" / "indices")
    reject(path, capsys, "requests/1/indices", "missing array")


def test_store_array_metadata_unreadable(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    (path / "requests" / "0" / "indices" / "zarr.json").write_text("{not json")
    reject(path, capsys, "requests/0/indices", "unreadable metadata")


def test_store_root_metadata_unreadable(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    (path / "zarr.json").write_text("[1, 2")
    reject(path, capsys, "zarr.json", "unreadable")


# --- store attributes ----------------------------------------------------------------------


def test_store_wrong_format(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    edit_json(path / "zarr.json", attributes={"format": "other-trace"})
    reject(path, capsys, "format", "'other-trace'")


def test_store_without_format(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["format"]
    (path / "zarr.json").write_text(json.dumps(meta))
    reject(path, capsys, "format", "got None")


@pytest.mark.parametrize(("version", "shown"), [(2, "2"), (0, "0"), ("1", "'1'"), (True, "True")])
def test_store_unsupported_format_version(tmp_path: Path, capsys, version, shown) -> None:
    path = store(tmp_path)
    edit_json(path / "zarr.json", attributes={"format_version": version})
    reject(path, capsys, "format_version", f"unsupported version {shown}")


def test_store_geometry_layers_mismatch(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    geometry = json.loads((path / "zarr.json").read_text())["attributes"]["geometry"]
    edit_json(path / "zarr.json", attributes={"geometry": {**geometry, "layers": 5}})
    reject(path, capsys, "requests/0/indices", "has 3 layers", "geometry.layers is 5")


def test_store_geometry_top_k_mismatch(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    geometry = json.loads((path / "zarr.json").read_text())["attributes"]["geometry"]
    edit_json(path / "zarr.json", attributes={"geometry": {**geometry, "top_k": 8}})
    reject(path, capsys, "requests/0/indices", "has 4 slots", "geometry.top_k is 8")


def test_store_geometry_field_missing(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    geometry = json.loads((path / "zarr.json").read_text())["attributes"]["geometry"]
    del geometry["block_tokens"]
    edit_json(path / "zarr.json", attributes={"geometry": geometry})
    reject(path, capsys, "geometry", "missing block_tokens")


def test_store_geometry_bad_value(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    geometry = json.loads((path / "zarr.json").read_text())["attributes"]["geometry"]
    edit_json(path / "zarr.json", attributes={"geometry": {**geometry, "kv_bytes_per_token": -1}})
    reject(path, capsys, "geometry", "kv_bytes_per_token", "-1")


def test_store_geometry_not_an_object(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    edit_json(path / "zarr.json", attributes={"geometry": [3, 4]})
    reject(path, capsys, "geometry", "[3, 4]")


def test_store_meta_not_an_object(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    edit_json(path / "zarr.json", attributes={"meta": "model"})
    reject(path, capsys, "meta", "'model'")


@pytest.mark.parametrize(
    ("n", "field", "value"),
    [
        (0, "n_requests", "got 0"),
        ("2", "n_requests", "'2'"),
        (3, "requests/2/indices", "missing array"),
        (1, "n_requests", "also holds requests/1"),
    ],
)
def test_store_n_requests_wrong(tmp_path: Path, capsys, n, field, value) -> None:
    path = store(tmp_path)
    edit_json(path / "zarr.json", attributes={"n_requests": n})
    reject(path, capsys, field, value)


def test_store_wrong_dtype(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    edit_json(path / "requests" / "0" / "indices" / "zarr.json", data_type="int64")
    reject(path, capsys, "requests/0/indices", "dtype must be int32, got int64")


def test_store_wrong_rank(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    edit_json(
        path / "requests" / "0" / "indices" / "zarr.json",
        shape=[6, 12],
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": [2, 12]}},
    )
    reject(path, capsys, "requests/0/indices", "rank 3", "(6, 12)")


def test_store_context_lens_length_mismatch(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    group = zarr.open_group(str(path / "requests" / "1"), mode="r+", zarr_format=3)
    ctx = group.create_array("context_lens", shape=(5,), dtype="int64", overwrite=True)
    ctx[:] = np.arange(5, 10)
    reject(path, capsys, "requests/1/context_lens", "shape (5,)", "6 steps")


def test_store_shape_edited_without_data(tmp_path: Path, capsys) -> None:
    path = store(tmp_path)
    edit_json(
        path / "requests" / "1" / "context_lens" / "zarr.json",
        shape=[5],
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": [5]}},
    )
    reject(path, capsys, "requests/1/context_lens", "corrupt chunk", "size 6 into shape (5,)")


# --- .npz contents: one test per rule ------------------------------------------------------


def test_npz_missing_indices(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    path = npz(tmp_path, top_k=idx, context_lens=ctx)
    reject(path, capsys, "indices", "missing array", "found: top_k, context_lens")


def test_npz_float_indices(tmp_path: Path, capsys) -> None:
    path = npz(tmp_path, indices=valid_arrays()[0].astype(np.float32))
    reject(path, capsys, "indices", "dtype must be integer", "float32")


def test_npz_bool_indices(tmp_path: Path, capsys) -> None:
    path = npz(tmp_path, indices=np.ones((2, 1, 2), dtype=bool))
    reject(path, capsys, "indices", "dtype must be integer", "bool")


def test_npz_indices_do_not_fit_int32(tmp_path: Path, capsys) -> None:
    idx = valid_arrays()[0].astype(np.int64)
    idx[0, 0, 0] = 2**31
    reject(npz(tmp_path, indices=idx), capsys, "indices", str(2**31), "does not fit int32")


@pytest.mark.parametrize("shape", [(6, 12), (2, 6, 3, 4, 1), ()])
def test_npz_wrong_rank(tmp_path: Path, capsys, shape) -> None:
    path = npz(tmp_path, indices=np.zeros(shape, dtype=np.int32))
    reject(path, capsys, "indices", "must have rank 3", str(shape))


def test_npz_no_slots(tmp_path: Path, capsys) -> None:
    path = npz(tmp_path, indices=np.zeros((4, 2, 0), dtype=np.int32))
    reject(path, capsys, "indices", "(4, 2, 0)", "no layers or no slots")


def test_npz_index_at_context_length(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    idx[1, 2, 0] = ctx[1]  # one past the last cached token
    path = npz(tmp_path, indices=idx, context_lens=ctx)
    reject(
        path,
        capsys,
        "indices",
        f"index {ctx[1]} >= context length {ctx[1]} at step 1, layer 2, slot 0",
    )


def test_npz_index_below_minus_one(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    idx[2, 0, 1] = -5
    path = npz(tmp_path, indices=idx, context_lens=ctx)
    reject(path, capsys, "indices", "index -5 < -1 at step 2, layer 0, slot 1")


def test_npz_token_twice(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    idx[3, 1] = [4, -1, 4, 0]
    path = npz(tmp_path, indices=idx, context_lens=ctx)
    reject(path, capsys, "indices", "token 4 twice in one (step, layer) at step 3, layer 1")


def test_npz_repeated_empty_slots_are_fine(tmp_path: Path, capsys) -> None:
    idx = np.array([[[-1, -1, 2, -1]]], dtype=np.int32)
    assert run(["info", str(npz(tmp_path, indices=idx))]) == 0


def test_npz_context_lens_length_mismatch(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    path = npz(tmp_path, indices=idx, context_lens=ctx[:5])
    reject(path, capsys, "context_lens", "shape (5,)", "(6,)")


def test_npz_context_lens_float(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    path = npz(tmp_path, indices=idx, context_lens=ctx.astype(float))
    reject(path, capsys, "context_lens", "dtype must be integer", "float64")


def test_npz_context_lens_negative(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    idx[4] = -1
    ctx[4] = -3
    path = npz(tmp_path, indices=idx, context_lens=ctx)
    reject(path, capsys, "context_lens", "negative value -3 at step 4")


def test_npz_near_miss_overlaps_top_k(tmp_path: Path, capsys) -> None:
    idx, ctx, near = valid_arrays()
    idx[2, 1] = [1, 2, 3, -1]
    near[2, 1] = [3, -1]
    path = npz(tmp_path, indices=idx, context_lens=ctx, near_miss=near)
    reject(path, capsys, "near_miss", "token 3 also in the top-k at step 2, layer 1")


def test_npz_near_miss_beyond_context(tmp_path: Path, capsys) -> None:
    idx, ctx, near = valid_arrays()
    near[0, 0, 1] = 99
    path = npz(tmp_path, indices=idx, context_lens=ctx, near_miss=near)
    reject(path, capsys, "near_miss", "index 99 >= context length 5 at step 0, layer 0, slot 1")


def test_npz_near_miss_shape_mismatch(tmp_path: Path, capsys) -> None:
    idx, ctx, near = valid_arrays()
    path = npz(tmp_path, indices=idx, context_lens=ctx, near_miss=near[:, :2])
    reject(path, capsys, "near_miss", "(1, 6, 2, 2)", "(1, 6, 3)")


def test_npz_near_miss_rank_mismatch(tmp_path: Path, capsys) -> None:
    idx, ctx, near = valid_arrays()
    path = npz(tmp_path, indices=idx, context_lens=ctx, near_miss=near[None])
    reject(path, capsys, "near_miss", "rank does not match", "(1, 6, 3, 2)")


def test_npz_near_miss_float(tmp_path: Path, capsys) -> None:
    idx, ctx, near = valid_arrays()
    path = npz(tmp_path, indices=idx, context_lens=ctx, near_miss=near.astype(np.float64))
    reject(path, capsys, "near_miss", "dtype must be integer", "float64")


def test_npz_batch_context_lens_mismatch(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    path = npz(tmp_path, indices=np.stack([idx, idx]), context_lens=ctx)
    reject(path, capsys, "context_lens", "shape (6,)", "(2, 6)")


def test_npz_batch_error_names_request(tmp_path: Path, capsys) -> None:
    idx, ctx, _ = valid_arrays()
    bad = idx.copy()
    bad[5, 0, 3] = 50
    path = npz(tmp_path, indices=np.stack([idx, bad]), context_lens=np.stack([ctx, ctx]))
    reject(path, capsys, "requests/1/indices", "index 50 >= context length 10 at step 5")


# --- the Python API ------------------------------------------------------------------------

GEOMETRY = Geometry(3, 4, 656, 132, 4)


def _bad_in_memory_cases() -> list[tuple[str, dict, str, str]]:
    idx, ctx, near = valid_arrays()
    too_high = idx.copy()
    too_high[0, 0, 0] = 5
    twice = idx.copy()
    twice[1, 1] = [0, 0, 1, -1]
    overlap = near.copy()
    overlap[2, 2, 0] = int(idx[2, 2][idx[2, 2] >= 0][0])
    return [
        ("int64 indices", {"indices": idx.astype(np.int64)}, "indices", "dtype must be int32"),
        ("rank 2", {"indices": idx.reshape(6, 12)}, "indices", "rank 3"),
        ("layers", {"indices": idx[:, :2]}, "indices", "geometry.layers is 3"),
        ("top_k", {"indices": idx[:, :, :3]}, "indices", "geometry.top_k is 4"),
        ("too high", {"indices": too_high}, "indices", "index 5 >= context length 5"),
        ("twice", {"indices": twice}, "indices", "token 0 twice"),
        ("ctx length", {"context_lens": ctx[:4]}, "context_lens", "(4,)"),
        ("ctx float", {"context_lens": ctx.astype(float)}, "context_lens", "float64"),
        ("near dtype", {"near_miss": near.astype(np.int16)}, "near_miss", "int32"),
        ("near shape", {"near_miss": near[:3]}, "near_miss", "(3, 3, 2)"),
        ("near overlap", {"near_miss": overlap}, "near_miss", "also in the top-k"),
    ]


@pytest.mark.parametrize(
    ("case", "change", "field", "needle"),
    _bad_in_memory_cases(),
    ids=[c[0] for c in _bad_in_memory_cases()],
)
def test_python_api_raises_trace_error(case, change, field, needle) -> None:
    idx, ctx, near = valid_arrays()
    arrays = {"indices": idx, "context_lens": ctx, "near_miss": near, **change}
    with pytest.raises(TraceError) as err:
        Trace.from_arrays(
            arrays["indices"],
            arrays["context_lens"],
            GEOMETRY,
            near_miss=arrays["near_miss"],
            source="mine",
        )
    assert isinstance(err.value, DsacacheError)
    assert err.value.source == "mine"
    assert err.value.field == field
    assert needle in err.value.problem
    assert str(err.value).startswith(f"mine: {field}: ")


def test_python_api_multi_request_field_names_request() -> None:
    idx, ctx, _ = valid_arrays()
    bad = idx.copy()
    bad[0, 0, 0] = -7
    with pytest.raises(TraceError) as err:
        Trace([RequestTrace(idx, ctx), RequestTrace(bad, ctx)], GEOMETRY)
    assert err.value.source == "<memory>"
    assert err.value.field == "requests/1/indices"


def test_python_api_load_sets_source_and_field(tmp_path: Path) -> None:
    path = store(tmp_path)
    chunk(path, "indices", 0, request=1).unlink()
    for lazy in (False, True):
        with pytest.raises(TraceError) as err:
            Trace.load(path, lazy=lazy)
        assert err.value.source == str(path)
        assert err.value.field == "requests/1/indices"


def test_python_api_validation_can_be_skipped(tmp_path: Path) -> None:
    path = store(tmp_path)
    chunk(path, "indices", 0).unlink()
    t = Trace.load(path, lazy=True, validate=False)  # the caller's choice: no read at all
    with pytest.raises(TraceError, match="index -2"):
        t.validate()


def test_empty_trace_rejected() -> None:
    with pytest.raises(DsacacheError, match="at least one request"):
        Trace([], GEOMETRY)


def test_default_context_from_indices_is_valid() -> None:
    idx, _, _ = valid_arrays()
    t = Trace.from_arrays(idx, None, GEOMETRY)
    assert (t.context_lens == idx.reshape(6, -1).max(axis=1) + 1).all()
