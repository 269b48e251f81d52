"""The optional per-selection scores array: storage, validation, writer, .npz, compatibility."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_traces_equal, make_request_arrays, make_scores, make_trace
from dsacache.cli.app import run
from dsacache.errors import TraceError
from dsacache.trace import Geometry, RequestTrace, Trace, TraceWriter, open_trace

GEOMETRY = Geometry(2, 3, 656, 132, 4)


def scored_request(steps: int = 5, seed: int = 0) -> RequestTrace:
    rng = np.random.default_rng(seed)
    idx, ctx, _ = make_request_arrays(steps, 2, 3, 4, pad=0.3, rng=rng)
    return RequestTrace(idx, ctx, scores=make_scores(idx, rng))


def test_scores_carried_by_chunks_materialize_save_and_load(tmp_path: Path) -> None:
    trace = make_trace([5, 7], layers=2, k=3, context=[4, 6], requests=2, scores=True, seed=2)
    assert trace.has_scores
    req = trace.requests[0]
    chunks = list(req.iter_chunks(2))
    assert [c.scores.shape for c in chunks] == [(2, 2, 3), (2, 2, 3), (1, 2, 3)]
    np.testing.assert_array_equal(np.concatenate([c.scores for c in chunks]), req.scores)
    assert req.materialize().scores.dtype == np.float32
    trace.save(tmp_path / "s.zarr", chunk_steps=3)
    lazy = Trace.load(tmp_path / "s.zarr", lazy=True)
    assert all(r.is_lazy and not isinstance(r.scores, np.ndarray) for r in lazy.requests)
    assert_traces_equal(trace, lazy)
    assert_traces_equal(trace, Trace.load(tmp_path / "s.zarr"))


def test_scores_on_disk_schema(tmp_path: Path) -> None:
    make_trace(6, layers=2, k=3, context=4, scores=True).save(tmp_path / "s.zarr", chunk_steps=4)
    meta = json.loads((tmp_path / "s.zarr/requests/0/scores/zarr.json").read_text())
    assert meta["data_type"] == "float32"
    assert meta["fill_value"] == "NaN"
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [4, 2, 3]
    root = json.loads((tmp_path / "s.zarr/zarr.json").read_text())
    assert root["attributes"]["format_version"] == 1  # an optional array: same version


def test_store_without_scores_still_loads(tmp_path: Path) -> None:
    """A store written before scores existed has no scores array: it loads with scores None."""
    trace = make_trace(4, layers=2, k=3, context=4, scores=True)
    trace.save(tmp_path / "s.zarr")
    shutil.rmtree(tmp_path / "s.zarr/requests/0/scores")
    back = Trace.load(tmp_path / "s.zarr")
    assert back.scores is None and not back.has_scores
    np.testing.assert_array_equal(back.indices, trace.indices)


def test_a_missing_scores_chunk_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_trace(6, layers=2, k=3, context=4, pad=0.0, scores=True).save(
        tmp_path / "s.zarr", chunk_steps=2
    )
    (tmp_path / "s.zarr/requests/0/scores/c/1/0/0").unlink()
    assert run(["info", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "s.zarr: scores: score nan of a selected token at step 2, layer 0, slot 0" in err
    assert "(a missing chunk reads as NaN)" in err


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s, i: s.astype(np.float64), "dtype must be float32, got float64"),
        (lambda s, i: s[:, :1], "shape (5, 1, 3) does not match indices' (5, 2, 3)"),
        (lambda s, i: s[None], "must have rank 3"),
        (lambda s, i: _put(s, i >= 0, np.nan), "score nan of a selected token"),
        (lambda s, i: _put(s, i >= 0, np.inf), "score inf of a selected token"),
        (lambda s, i: _put(s, i < 0, 0.5), "score 0.5 at an empty slot"),
        (lambda s, i: _put(s, i < 0, -np.inf), "score -inf at an empty slot"),
    ],
)
def test_validation_rejects_bad_scores(edit, needle: str) -> None:  # noqa: ANN001
    req = scored_request()
    bad = edit(req.scores.copy(), req.indices)
    with pytest.raises(TraceError) as err:
        Trace([RequestTrace(req.indices, req.context_lens, scores=bad)], GEOMETRY)
    assert err.value.field == "scores"
    assert needle in str(err.value)


def _put(scores: np.ndarray, mask: np.ndarray, value: float) -> np.ndarray:
    """Set the first slot selected by `mask` to value (the one the error names)."""
    s, layer, slot = np.argwhere(mask)[0]
    scores[s, layer, slot] = value
    return scores


def test_validation_names_the_place() -> None:
    req = scored_request()
    s, layer, slot = np.argwhere(req.indices >= 0)[-1]
    bad = req.scores.copy()
    bad[s, layer, slot] = np.nan
    with pytest.raises(TraceError, match=f"at step {s}, layer {layer}, slot {slot}"):
        Trace([RequestTrace(req.indices, req.context_lens, scores=bad)], GEOMETRY)


def test_writer_scores(tmp_path: Path) -> None:
    req = scored_request(4)
    with TraceWriter(tmp_path / "w.zarr", GEOMETRY, chunk_steps=3) as w:
        rw = w.add_request(4, scores=True)
        rw.write(0, req.indices[:3], req.context_lens[:3], scores=req.scores[:3].astype(np.float64))
        rw.write(3, req.indices[3:], req.context_lens[3:], None, req.scores[3:])
    back = Trace.load(tmp_path / "w.zarr")
    assert back.scores.dtype == np.float32
    np.testing.assert_array_equal(back.scores, req.scores)


@pytest.mark.parametrize(
    ("flag", "scores", "needle"),
    [
        (True, None, "rows are required for this request"),
        (False, "good", "given for a request added without scores=True"),
        (True, "int", "dtype must be floating, got int64"),
        (True, "short", "chunk shape (1, 2, 3) does not match indices' (2, 2, 3)"),
        (True, "bad", "score 1.0 at an empty slot"),
    ],
)
def test_writer_rejects_bad_scores(tmp_path: Path, flag: bool, scores: str | None, needle: str):  # noqa: ANN201
    req = scored_request(2)
    rows = {
        None: None,
        "good": req.scores,
        "int": np.zeros((2, 2, 3), dtype=np.int64),
        "short": req.scores[:1],
        "bad": np.where(req.indices >= 0, req.scores, 1.0),
    }[scores]
    dest = tmp_path / "w.zarr"
    with pytest.raises(TraceError) as err:
        with TraceWriter(dest, GEOMETRY) as w:
            w.add_request(2, scores=flag).write(0, req.indices, req.context_lens, None, rows)
    assert err.value.field == "requests/0/scores"
    assert needle in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_npz_scores(tmp_path: Path) -> None:
    req = scored_request(3)
    np.savez(tmp_path / "d.npz", indices=req.indices, scores=req.scores.astype(np.float64))
    t = open_trace(tmp_path / "d.npz")
    assert t.scores.dtype == np.float32
    np.testing.assert_array_equal(t.scores, req.scores)
    batch = np.stack([req.scores, req.scores])
    np.savez(tmp_path / "b.npz", indices=np.stack([req.indices] * 2), scores=batch)
    assert open_trace(tmp_path / "b.npz").has_scores


@pytest.mark.parametrize(
    ("scores", "needle"),
    [
        (np.zeros((3, 2, 3), dtype=np.int32), "scores: dtype must be floating, got int32"),
        (np.zeros((3, 2, 2), dtype=np.float32), "(3, 2, 2) does not match indices' (3, 2, 3)"),
        (np.zeros((3, 2, 3), dtype=np.float32), "at an empty slot"),  # 0.0 where slots are -1
    ],
)
def test_npz_rejects_bad_scores(tmp_path: Path, scores: np.ndarray, needle: str) -> None:
    req = scored_request(3)
    np.savez(tmp_path / "d.npz", indices=req.indices, scores=scores)
    with pytest.raises(TraceError) as err:
        open_trace(tmp_path / "d.npz")
    assert needle in str(err.value)
