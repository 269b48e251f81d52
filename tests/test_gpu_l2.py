"""Persisting-L2 window arithmetic and the ncu CSV parser (no GPU needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from dsacache.errors import DsacacheError
from dsacache.gpu.l2 import plan_window

MIB = 1 << 20


def test_hit_ratio_fits_the_set_aside():
    p = plan_window(4096, 32 * MIB, 16 * MIB, max_set_aside=30 * MIB, max_window=128 * MIB)
    assert (p.num_bytes, p.set_aside, p.hit_ratio) == (32 * MIB, 16 * MIB, 0.5)
    p = plan_window(0, 8 * MIB, 16 * MIB, max_set_aside=30 * MIB, max_window=128 * MIB)
    assert p.hit_ratio == 1.0


def test_clipped_to_device_limits():
    p = plan_window(0, 64 * MIB, 48 * MIB, max_set_aside=int(37.5 * MIB), max_window=40 * MIB)
    assert p.set_aside == int(37.5 * MIB) and p.num_bytes == 40 * MIB
    assert p.hit_ratio == pytest.approx(37.5 / 40)
    assert plan_window(0, 0, MIB, MIB, MIB).hit_ratio == 0.0


def test_negative_sizes_refused():
    with pytest.raises(DsacacheError, match="negative"):
        plan_window(0, -1, MIB, MIB, MIB)


def _run_gpu():
    path = Path(__file__).parents[1] / "benchmarks" / "gpu" / "run_gpu.py"
    spec = importlib.util.spec_from_file_location("run_gpu", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_gpu"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_parse_ncu_csv():
    text = "\n".join(
        [
            "==PROF== Connected to process 1",
            '"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"',
            '"0","_ds_gather_kernel","dram__bytes_read.sum","byte","1,024"',
            '"0","_ds_gather_kernel","lts__t_sector_hit_rate.pct","%","40.5"',
            '"1","_ds_gather_kernel","dram__bytes_read.sum","byte","3,072"',
            '"1","_ds_gather_kernel","lts__t_sector_hit_rate.pct","%","59.5"',
        ]
    )
    parse = _run_gpu().parse_ncu_csv
    out = parse(text)
    assert out["l2_hit_pct_mean"] == 50.0 and out["dram_bytes_read_mean"] == 2048.0
    assert out["l2_hit_pct_launches"] == 2
    assert parse("==ERROR== LibraryNotLoaded") == {}
