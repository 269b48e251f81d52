"""`dsacache export libcachesim`: the oracleGeneral records, and libcachesim reading them."""

from __future__ import annotations

from collections import OrderedDict, deque

import libcachesim as lcs
import numpy as np
import pytest

from conftest import make_trace, reference_accesses
from dsacache.cli.app import run
from dsacache.errors import DsacacheError, TraceError
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace import export_libcachesim as exp
from dsacache.trace.export_libcachesim import (
    RECORD_DTYPE,
    export_libcachesim,
    obj_id,
    read_oracle_general,
)

# ------------------------------------------------------------------ references in pure Python


def access_order(trace: Trace) -> list[tuple[int, int, int, int]]:
    """(step, request, layer, token) of every access, step -> layer -> request -> slot."""
    return [(t, r, layer, tok) for t, layer, r, tok in reference_accesses(trace)]


def reference_ids(trace: Trace) -> list[int]:
    return [obj_id(r, layer, tok) for _, r, layer, tok in access_order(trace)]


def next_uses(ids: list[int]) -> list[int]:
    """0-based index of the next access to the same id, or -1."""
    nxt, last = [-1] * len(ids), {}
    for i in range(len(ids) - 1, -1, -1):
        nxt[i] = last.get(ids[i], -1)
        last[ids[i]] = i
    return nxt


def lru_misses(ids: list[int], cap: int) -> int:
    cache: OrderedDict[int, None] = OrderedDict()
    misses = 0
    for o in ids:
        if o in cache:
            cache.move_to_end(o)
            continue
        misses += 1
        cache[o] = None
        if len(cache) > cap:
            cache.popitem(last=False)
    return misses


def fifo_misses(ids: list[int], cap: int) -> int:
    cache: set[int] = set()
    queue: deque[int] = deque()
    misses = 0
    for o in ids:
        if o in cache:
            continue
        misses += 1
        cache.add(o)
        queue.append(o)
        if len(cache) > cap:
            cache.discard(queue.popleft())
    return misses


def opt_misses(ids: list[int], cap: int) -> int:
    """Belady's MIN, demand paging: a miss always caches the object, evicting the cached
    object whose next use is furthest (libCacheSim's Belady does not bypass)."""
    nxt = [n if n >= 0 else len(ids) + 1 for n in next_uses(ids)]
    cache: dict[int, int] = {}
    misses = 0
    for i, o in enumerate(ids):
        if o not in cache:
            misses += 1
            if len(cache) >= cap:
                del cache[max(cache, key=cache.__getitem__)]
        cache[o] = nxt[i]
    return misses


def reader(path) -> lcs.TraceReader:
    return lcs.TraceReader(trace=str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)


@pytest.fixture(scope="module")
def random_trace() -> Trace:
    # Two requests of different lengths (40 and 31 steps), 3 layers, k=16: ~2.7 K accesses.
    return make_trace([40, 31], layers=3, k=16, context=[40, 24], requests=2, seed=7)


# ------------------------------------------------------------------ (1) records by hand


def test_hand_written_records(tmp_path):
    g = Geometry(2, 3, 656, 132, 64)
    r0 = np.array(
        [
            [[0, -1, 2], [1, -1, -1]],  # step 0: layer 0, layer 1
            [[2, 0, -1], [-1, -1, -1]],  # step 1
        ],
        dtype=np.int32,
    )
    r1 = np.array([[[3, -1, -1], [0, 1, -1]]], dtype=np.int32)  # one step only
    trace = Trace([RequestTrace(r0, [3, 3]), RequestTrace(r1, [4])], g)
    out = tmp_path / "hand.oracleGeneral"
    assert export_libcachesim(trace, out) == 8

    R1 = 1 << 48
    L1 = 1 << 32
    expected = [
        # clock, obj_id,        size, next (1-based record number, -1: never)
        (0, 0, 656, 8),  # s0 l0 r0 tok0 -> again at 0-based record 7 (s1 l0 r0)
        (0, 2, 656, 7),  # s0 l0 r0 tok2 -> again at 0-based record 6
        (0, R1 | 3, 656, -1),  # s0 l0 r1 tok3
        (0, L1 | 1, 656, -1),  # s0 l1 r0 tok1
        (0, R1 | L1 | 0, 656, -1),  # s0 l1 r1 tok0
        (0, R1 | L1 | 1, 656, -1),  # s0 l1 r1 tok1
        (1, 2, 656, -1),  # s1 l0 r0 tok2
        (1, 0, 656, -1),  # s1 l0 r0 tok0; r1 has no step 1, s1 l1 r0 is empty
    ]
    got = read_oracle_general(out)
    assert [tuple(int(x) for x in rec) for rec in got] == expected
    assert out.stat().st_size == 24 * 8
    # The raw bytes are packed little-endian <IQIq.
    assert out.read_bytes()[:24] == np.array(expected[:1], dtype=RECORD_DTYPE).tobytes()
    assert RECORD_DTYPE.itemsize == 24

    assert export_libcachesim(trace, out, object_size=1) == 8
    got = read_oracle_general(out)
    assert (got["obj_size"] == 1).all()
    assert list(got["next_access_vtime"]) == [e[3] for e in expected]


def test_records_match_reference(tmp_path, random_trace):
    out = tmp_path / "t.oracleGeneral"
    n = export_libcachesim(random_trace, out)
    ref = access_order(random_trace)
    assert n == len(ref) > 2000
    got = read_oracle_general(out)
    ids = reference_ids(random_trace)
    assert got["obj_id"].tolist() == ids
    assert got["clock_time"].tolist() == [t for t, *_ in ref]
    assert (got["obj_size"] == 656).all()
    assert got["next_access_vtime"].tolist() == [j + 1 if j >= 0 else -1 for j in next_uses(ids)]


# ------------------------------------------------------------------ (2) libcachesim replays it


@pytest.mark.parametrize("object_size", [1, None])
def test_libcachesim_lru_fifo(tmp_path, random_trace, object_size):
    out = tmp_path / "t.oracleGeneral"
    n = export_libcachesim(random_trace, out, object_size=object_size)
    size = object_size or random_trace.geometry.kv_bytes_per_token
    ids = reference_ids(random_trace)
    # What the reader sees is our records.
    seen = [(req.obj_id, req.obj_size, req.clock_time) for req in reader(out)]
    assert [s[0] for s in seen] == ids
    assert {s[1] for s in seen} == {size}
    differs = False
    for cap in (32, 100, 200):
        lru = lcs.LRU(cache_size=cap * size, hashpower=12).process_trace(reader(out))
        fifo = lcs.FIFO(cache_size=cap * size, hashpower=12).process_trace(reader(out))
        assert lru[0] == pytest.approx(lru_misses(ids, cap) / n, abs=1e-12)
        assert fifo[0] == pytest.approx(fifo_misses(ids, cap) / n, abs=1e-12)
        assert lru[1] == pytest.approx(lru[0], abs=1e-12)  # equal sizes: bytes = objects
        differs |= lru_misses(ids, cap) != fifo_misses(ids, cap)
    assert differs  # the comparison can tell LRU from FIFO


# ------------------------------------------------------------------ (3) next_access_vtime


def test_belady_gives_textbook_opt_only_with_absolute_positions(tmp_path, random_trace):
    out = tmp_path / "t.oracleGeneral"
    n = export_libcachesim(random_trace, out, object_size=1)
    ids = reference_ids(random_trace)
    # Same records with the other convention: distance to the next access.
    rec = read_oracle_general(out)
    nxt = rec["next_access_vtime"]
    pos = np.arange(1, n + 1)
    rec["next_access_vtime"] = np.where(nxt >= 0, nxt - pos, -1)
    dist = tmp_path / "dist.oracleGeneral"
    rec.tofile(dist)

    differs = False
    for cap in (8, 32, 100):
        opt = opt_misses(ids, cap) / n
        assert lcs.Belady(cache_size=cap, hashpower=12).process_trace(reader(out))[0] == (
            pytest.approx(opt, abs=1e-12)
        )
        assert opt <= lru_misses(ids, cap) / n
        wrong = lcs.Belady(cache_size=cap, hashpower=12).process_trace(reader(dist))[0]
        differs |= wrong != pytest.approx(opt, abs=1e-12)
    assert differs


def test_next_access_vtime_matches_libcachesims_own_converter(tmp_path):
    trace = make_trace([6, 4], layers=2, k=5, context=[8, 6], requests=2, seed=3)
    out = tmp_path / "ours.oracleGeneral"
    n = export_libcachesim(trace, out)
    rec = read_oracle_general(out)
    csv = tmp_path / "t.csv"
    lines = ["time,id,size"] + [
        f"{int(c)},{int(o)},{int(s)}"
        for c, o, s in zip(rec["clock_time"], rec["obj_id"], rec["obj_size"], strict=True)
    ]
    csv.write_text("\n".join(lines) + "\n")
    params = lcs.ReaderInitParam(has_header=True, delimiter=",")
    params.time_field, params.obj_id_field, params.obj_size_field = 1, 2, 3
    csv_reader = lcs.TraceReader(str(csv), lcs.TraceType.CSV_TRACE, params)
    theirs = tmp_path / "theirs.oracleGeneral"
    lcs.Util.convert_to_oracleGeneral(csv_reader._reader, str(theirs))
    assert n > 0 and (rec["next_access_vtime"] >= 0).any()
    assert theirs.read_bytes() == out.read_bytes()


# ------------------------------------------------------------------ (4) lazy, chunked input


@pytest.mark.parametrize("block_elements", [None, 1, 3 * 2 * 16 * 3])
def test_lazy_chunked_trace_is_byte_identical(tmp_path, random_trace, monkeypatch, block_elements):
    if block_elements is not None:  # 1 step per block; 3 steps per block across 2-step chunks
        monkeypatch.setattr(exp, "_BLOCK_ELEMENTS", block_elements)
    store = tmp_path / "t.dsa"
    random_trace.save(store, chunk_steps=2)
    lazy = Trace.load(store, lazy=True)
    assert lazy.requests[0].is_lazy
    a, b = tmp_path / "mem.og", tmp_path / "lazy.og"
    done = []
    n = export_libcachesim(lazy, b, progress=done.append)
    assert sum(done) == 2 * random_trace.steps
    assert export_libcachesim(random_trace, a) == n
    assert a.read_bytes() == b.read_bytes()


# ------------------------------------------------------------------ errors


def test_refuses_directory_and_leaves_nothing_on_error(tmp_path):
    trace = make_trace(3, layers=2, k=4, context=6)
    with pytest.raises(DsacacheError, match="directory"):
        export_libcachesim(trace, tmp_path)
    bad = trace.requests[0].indices.copy()
    bad[2, 1, 0] = 99  # beyond every context length
    broken = Trace([RequestTrace(bad, trace.context_lens)], trace.geometry, validate=False)
    out = tmp_path / "x.og"
    with pytest.raises(TraceError, match="step 2, layer 1, slot 0"):
        export_libcachesim(broken, out)
    out.write_bytes(b"old")
    with pytest.raises(DsacacheError, match="object size"):
        export_libcachesim(trace, out, object_size=0)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.og"]


def test_failure_in_pass_two_removes_temp_file(tmp_path, monkeypatch):
    trace = make_trace(3, layers=2, k=4, context=6)

    def boom(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(exp, "_fill_block", boom)
    with pytest.raises(RuntimeError):
        export_libcachesim(trace, tmp_path / "x.og")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ (5) CLI


def test_cli_export(tmp_path, random_trace, capsys):
    store = tmp_path / "t.dsa"
    random_trace.save(store, chunk_steps=4)
    out = tmp_path / "t.oracleGeneral"
    assert run(["export", "libcachesim", str(store), str(out)]) == 0
    n = len(access_order(random_trace))
    assert out.stat().st_size == 24 * n
    assert f"{n:,} records" in capsys.readouterr().out
    argv = ["export", "libcachesim", str(store), str(out), "--object-size", "1", "--force"]
    assert run(argv) == 0
    assert (read_oracle_general(out)["obj_size"] == 1).all()


def test_cli_bad_input(tmp_path, capsys):
    out = tmp_path / "t.oracleGeneral"
    assert run(["export", "libcachesim", str(tmp_path / "missing.dsa"), str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("dsacache: error:") and err.count("\n") == 1
    store = tmp_path / "t.dsa"
    make_trace(2, layers=1, k=2, context=4).save(store)
    assert run(["export", "libcachesim", str(store), str(tmp_path)]) == 2
    assert run(["export", "libcachesim", str(store), str(out), "--object-size", "0"]) == 2
    assert not out.exists()


def test_cli_help_documents_the_format():
    from typer.testing import CliRunner

    from dsacache.cli.app import _register_commands, app

    _register_commands()
    res = CliRunner().invoke(app, ["export", "libcachesim", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for phrase in ("(request << 48) | (layer << 32) | token", "step -> layer -> request -> slot"):
        assert phrase in text
    assert "1-based" in text and "process_trace" in text
