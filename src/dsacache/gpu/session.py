"""Shared plumbing of the prepared device scripts (benchmarks/gpu/run_gpu.py, calibrate_gpu.py).

A device session is one short, unrepeatable run: every phase runs in try/except (an error is
recorded and the run goes on), the JSON is rewritten atomically after every phase, and the
environment (GPU, L2 attributes, versions) is recorded first. The CUDA-only helpers here
(sleep calibration) are plain no-ops on CPU so `--cpu-smoke` runs the same code.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def stub_zarr() -> None:
    """dsacache.trace imports zarr (the store format); a .npz or synthesized trace does not need
    it. Where zarr is missing (the device machine), a stub lets the package import."""
    if importlib.util.find_spec("zarr") is not None:
        return
    z = types.ModuleType("zarr")
    codecs = types.ModuleType("zarr.codecs")

    class ZstdCodec:
        def __init__(self, **kw: object) -> None:
            self.kw = kw

    codecs.ZstdCodec = ZstdCodec  # type: ignore[attr-defined]
    z.codecs = codecs  # type: ignore[attr-defined]
    sys.modules["zarr"] = z
    sys.modules["zarr.codecs"] = codecs


def json_default(o: object) -> object:
    """numpy scalars and arrays as plain JSON values."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def jsonable(v: object) -> bool:
    try:
        json.dumps(v, default=json_default)
        return True
    except TypeError:
        return False


class PhaseLog:
    """The results of one session: `data` (a dict) written to `out / name` after every phase.

    phase(name, fn, ...) runs fn; its dict return value (JSON-serialisable items) goes into
    data["phases"][name] with ok / error / traceback / seconds; on_save (optional) writes
    extra files after each JSON write."""

    def __init__(self, out: Path, name: str = "results.json") -> None:
        self.out = out
        self.name = name
        out.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"phases": {}}
        self.t0 = time.monotonic()
        self.on_save: Callable[[], None] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def phase(self, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:  # noqa: ANN401
        t = time.monotonic()
        print(f"[{t - self.t0:7.1f}s] {name} ...", flush=True)
        rec: dict[str, Any] = {}
        val = None
        try:
            val = fn(*args, **kw)
            rec["ok"] = True
            if isinstance(val, dict):
                rec.update({k: v for k, v in val.items() if jsonable(v)})
        except Exception as e:  # noqa: BLE001 - every phase records its error and the run goes on
            rec["ok"] = False
            rec["error"] = f"{type(e).__name__}: {e}"[:2000]
            rec["traceback"] = traceback.format_exc()[-3000:]
            print(f"    FAILED: {rec['error']}", flush=True)
        rec["seconds"] = round(time.monotonic() - t, 3)
        self.data["phases"][name] = rec
        self.save()
        return val

    def save(self) -> None:
        tmp = self.out / (self.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=json_default))
        tmp.replace(self.out / self.name)
        if self.on_save is not None:
            self.on_save()


def env_info(cuda: bool) -> dict[str, Any]:
    """Versions, and on a GPU its name, SMs and L2 attributes (cudaDeviceGetAttribute)."""
    import torch
    import triton

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": sys.version.split()[0],
        "cuda_available": cuda,
        "ncu": shutil.which("ncu"),
    }
    if cuda:
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = p.name
        info["sms"] = p.multi_processor_count
        info["l2_bytes_torch"] = getattr(p, "L2_cache_size", None)
        info["memory_bytes"] = p.total_memory
        try:
            from dsacache.gpu import l2

            info["l2_bytes"] = l2.device_attr("L2CacheSize")
            info["max_persisting_l2_bytes"] = l2.device_attr("MaxPersistingL2CacheSize")
            info["max_window_bytes"] = l2.device_attr("MaxAccessPolicyWindowSize")
        except Exception as e:  # noqa: BLE001 - recorded; the run goes on without a window
            info["l2_attr_error"] = f"{type(e).__name__}: {e}"
    return info


def release_window(stream_handle: int, rec: dict[str, Any]) -> None:
    """Release the stream's L2 access-policy window (l2.release); a failure is recorded in
    rec["release_error"], not raised: the run goes on with its results."""
    from dsacache.gpu import l2

    try:
        l2.release(stream_handle)
    except Exception as e:  # noqa: BLE001
        rec["release_error"] = f"{type(e).__name__}: {e}"


def gpu_slug(name: str | None) -> str:
    """A file-name tag for a GPU name: 'NVIDIA H200' -> 'h200'; none -> 'cpu'."""
    if not name:
        return "cpu"
    low = name.lower()
    for tag in ("h200", "h100", "b200", "a100", "mi300x", "l40s"):
        if tag in low:
            return tag
    keep = "".join(c if c.isalnum() else "-" for c in low.replace("nvidia", "")).strip("-")
    return "-".join(p for p in keep.split("-") if p) or "gpu"


def calibrate_sleep(cuda: bool) -> dict[str, float]:
    """Cycles per ms of torch.cuda._sleep, to pad each step while the host enqueues it."""
    if not cuda:
        return {"cycles_per_ms": 0}
    import torch

    torch.cuda._sleep(1000)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    torch.cuda._sleep(10_000_000)
    e.record()
    e.synchronize()
    return {"cycles_per_ms": 10_000_000 / max(s.elapsed_time(e), 1e-3)}


def measure_host_ms(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def time_ms(fn: Callable[[], object], cuda: bool, cycles_per_ms: float = 0.0) -> float:
    """GPU time of one call of fn (which only enqueues work): on a GPU the stream first spins
    ~1.5x the host's enqueue time of fn (a dry call, capped at 50 ms) so that the CUDA events
    around fn measure the GPU's work, not Python's launch time; on CPU, wall time."""
    if not cuda:
        return measure_host_ms(fn)
    import torch

    host = measure_host_ms(fn)
    if cycles_per_ms:
        torch.cuda._sleep(int(1.5 * min(host, 50.0) * cycles_per_ms))
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    return float(s.elapsed_time(e))
