"""benchmarks/gpu/run_gpu.py --cpu-smoke runs every phase end to end on CPU (interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_trace

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_cpu_smoke_end_to_end(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    tr = make_trace(3, layers=2, k=32, context=40, requests=2, seed=0, pad=0.1)
    npz = tmp_path / "t.npz"
    np.savez(
        npz,
        indices=np.stack([r.indices for r in tr.requests]),
        context_lens=np.stack([r.context_lens for r in tr.requests]),
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TRITON_INTERPRET": "1"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu/run_gpu.py"), "--cpu-smoke",
         "--trace", str(npz), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    failed = {n: ph.get("error") for n, ph in data["phases"].items() if not ph.get("ok")}
    assert not failed, failed
    modes = data["modes"]
    assert {"baseline", "reserve-0.005", "reserve-0.02", "reserve-0.1", "buffer-0.02"} <= set(modes)
    for name, m in modes.items():
        assert m["timed_steps"] == 2 and m["gather_ms_median"] > 0, name
        if name.startswith("reserve") or name.startswith("buffer"):
            assert m["sim_matches_lru"] is True, name
            assert m["lru_hit_rate_all"] == pytest.approx(m["sim_hit_rate"])
    assert modes["reserve-0.1"]["lru_hit_rate_all"] > 0  # 79 slots/layer > 2 x 32 accesses
    assert data["phases"]["validate"]["gather_max_rel_err_ieee"] < 1e-3
    assert (out / "results.csv").read_text().startswith("mode,layout,slots")
