"""The registered policies by name: their flags, registration, --list-policies, a hand case of
keep-previous against MIN, the numba cache of the driven kernels, and that the generic tests
(test_policy_driver.py) name no policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dsacache.cli.app import run
from dsacache.sim import SimConfig, simulate
from dsacache.sim.policies import POLICIES, register
from dsacache.sim.policies.lru import TokenLRU
from dsacache.trace import Geometry, RequestTrace, Trace

ALL = sorted(POLICIES)


def test_the_generic_tests_name_no_policy():
    text = (Path(__file__).parent / "test_policy_driver.py").read_text()
    named = [n for n in ALL if re.search(rf"[\"']{re.escape(n)}[\"']", text)]
    assert named == []


def test_keep_previous_can_beat_min_at_equal_capacity():
    # By hand, one layer, capacity 1: accesses 0 2 | 3 0 | 3 1. keep-previous keeps 0, then 3:
    # hits 0 (step 1) and 3 (step 2), 4 misses. MIN with bypass in one slot: keeps 0 for step 1,
    # bypasses 3 twice, 5 misses. With two slots MIN keeps 0 and 3: 4 misses.
    rows = np.array([[[0, 2]], [[3, 0]], [[3, 1]]], np.int32)
    trace = Trace([RequestTrace(rows, np.full(3, 4))], Geometry(1, 2, 256, 132, 4))
    kp = simulate(trace, SimConfig("keep-previous", 1))
    assert (kp.hits, kp.misses) == (2, 4)
    assert simulate(trace, SimConfig("min", 1)).misses == 5
    assert simulate(trace, SimConfig("min", 2)).misses == 4


def test_flags_are_as_documented():
    assert not POLICIES["min"].online and POLICIES["near-miss"].prefetches
    assert all(POLICIES[n].online for n in ("token-lru", "fifo", "keep-previous", "line-lru"))
    assert not any(POLICIES[n].prefetches for n in ("token-lru", "fifo", "keep-previous", "min"))


# ------------------------------------------------------------------ registration


def test_register_requires_every_flag_and_a_fresh_name():
    class NoFlags(TokenLRU):
        name = "no-flags"
        summary = "x"

    with pytest.raises(TypeError, match="online, prefetches"):
        register(NoFlags)

    class Twin(TokenLRU):
        name = "token-lru"
        summary = "x"
        online = True
        prefetches = False

    with pytest.raises(ValueError, match="token-lru"):
        register(Twin)
    assert POLICIES["token-lru"] is TokenLRU and "no-flags" not in POLICIES


def test_every_module_of_the_package_is_imported():
    import pkgutil
    import sys

    import dsacache.sim.policies as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__)]
    modules = {"lru", "fifo", "keep_previous", "belady", "line_lru", "near_miss", "hazard"}
    assert modules <= set(names)
    assert all(f"dsacache.sim.policies.{n}" in sys.modules for n in names)
    assert {c.__module__.rsplit(".", 1)[1] for c in POLICIES.values()} <= set(names)


# ------------------------------------------------------------------ --list-policies


def test_list_policies_json(capsys):
    assert run(["simulate", "--list-policies", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ALL
    for r in rows:
        assert set(r) == {"name", "description", "online", "prefetches"}
        cls = POLICIES[r["name"]]
        assert (r["description"], r["online"], r["prefetches"]) == (
            cls.summary,
            cls.online,
            cls.prefetches,
        )
    by_name = {r["name"]: r for r in rows}
    assert by_name["min"]["online"] is False and by_name["near-miss"]["prefetches"] is True


def test_list_policies_text(capsys):
    assert run(["simulate", "--list-policies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["policy", "online", "prefetches", "description"]
    assert len(lines) == 1 + len(ALL)
    for line, name in zip(lines[1:], ALL, strict=True):
        cls = POLICIES[name]
        words = line.split()
        yes = {True: "yes", False: "no"}
        assert words[:3] == [name, yes[cls.online], yes[cls.prefetches]]
        assert line.endswith(cls.summary)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate"], "missing argument TRACE"),
        (["simulate", "t.npz"], "missing option --policy"),
    ],
)
def test_simulate_without_trace_or_policy_is_one_line(capsys, args, message):
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_driven_kernels_load_from_numba_cache(tmp_path):
    """A kernel made by make_replay is found in numba's on-disk cache by the next process (a
    closure over the hooks would not be: its cache key differs in every process)."""
    import os
    import subprocess
    import sys

    code = (
        "from dsacache.sim.policies import POLICIES, lru, keep_previous as kp\n"
        "POLICIES['token-lru'].warmup(); POLICIES['keep-previous'].warmup()\n"
        "s = [lru.list_replay.plain.stats, kp.keep_previous_replay.plain.stats]\n"
        "print(sum(sum(x.cache_misses.values()) for x in s), "
        "sum(sum(x.cache_hits.values()) for x in s))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    (miss1, hit1), (miss2, hit2) = (map(int, r.stdout.split()) for r in runs)
    assert miss1 > 0 and hit1 == 0  # compiled the first time
    assert miss2 == 0 and hit2 == miss1  # loaded the second time


def test_the_documented_policy_runs_as_written(monkeypatch):
    """docs/policy-interface.md's whole-policy example, executed as written, registers and
    replays exactly as a plain-Python MRU."""
    import functools

    from conftest import make_trace
    from dsacache.sim.partition import parse_partition
    from dsacache.sim.policies import driver
    from test_policy_driver import py_mru

    doc = (Path(__file__).parents[1] / "docs" / "policy-interface.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    # the kernel of hooks from outside the package must not enter numba's on-disk cache
    monkeypatch.setattr(driver, "make_replay", functools.partial(driver.make_replay, cache=False))
    monkeypatch.setattr(driver, "_KERNELS", {})
    try:
        exec(compile(code, "policy-interface.md", "exec"), {"__name__": "doc_example"})
        cls = POLICIES["mru"]
        trace = make_trace([6, 4], layers=2, k=3, context=[9, 7], requests=2, seed=2)
        for spec in ("global", "per-layer"):
            res = simulate(trace, SimConfig("mru", 4, partition=spec))
            hits, misses, _ = py_mru(trace, parse_partition(spec, 2, 4))
            assert res.per_layer_hits.tolist() == hits and res.misses == sum(misses)
        assert cls.name == "mru" and sum(hits) > 0
    finally:
        POLICIES.pop("mru", None)
