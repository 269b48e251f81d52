"""Every Triton kernel of dsacache.gpu compiles for a real GPU (sm_90: H100 / H200).

The CPU tests run the kernels under Triton's interpreter, which accepts code the compiler
rejects: the first device run died on a plain module global (`NEG = -1e30`) the interpreter had
read happily. Here, on a CPU-only machine, the launchers of the GPU run (benchmarks/gpu/
run_gpu.py's defaults, through bench.run_mode, the validate phase's ieee gather and the LRU
step) are called with every kernel replaced by a recorder; each recorded launch is then bound
and specialised exactly as `JITFunction.run` would on the device and compiled all the way to a
cubin (ptxas included) for GPUTarget("cuda", 90, 32), and its shared memory is checked against
the sm_90 per-block limit.

`python tests/test_gpu_compile.py [--ptxas]` prints the JSON report itself (--ptxas: with
ptxas -v's registers and spills per variant).

The compile runs in a subprocess without TRITON_INTERPRET (other test modules set it at import,
and with it set `@triton.jit` builds interpreter objects that cannot be compiled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# sm_90 (H100 / H200): at most 227 KiB of shared memory per block (CUDA programming guide,
# compute capability 9.0); Triton only finds out at load time, on the device.
SM90_MAX_SHARED = 232_448
_PLAIN_GLOBAL = -1.0e30  # not a tl.constexpr: the negative control below must fail to compile


# ---------------------------------------------------------------- the subprocess


def _gpu_jit_functions() -> dict[str, object]:
    """name -> JITFunction of every @triton.jit in the dsacache.gpu modules."""
    import importlib
    import pkgutil

    from triton.runtime.jit import JITFunction

    import dsacache.gpu as pkg

    out = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name, val in vars(mod).items():
            if isinstance(val, JITFunction) and val.fn.__module__ == mod.__name__:
                out[f"{mod.__name__}.{name}"] = (mod, name, val)
    return out


class _Recorder:
    """Stands in for a kernel: `kernel[grid](*args, **kwargs)` records the launch."""

    def __init__(self, fn: object, sink: list) -> None:
        self.fn, self.sink = fn, sink

    def __getitem__(self, grid: object):
        def launch(*args: object, **kwargs: object) -> None:
            self.sink.append((self.fn, args, kwargs))

        return launch


def _run_gpu_defaults():  # noqa: ANN202
    """benchmarks/gpu/run_gpu.py's arguments when run with none (the device run's settings)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_gpu", ROOT / "benchmarks/gpu/run_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.parse_args([])


def _capture_launches(jits: dict) -> list:
    """The launches the GPU run makes, with small CPU tensors of the same shapes per layer."""
    import math

    import numpy as np
    import torch

    from dsacache.gpu import bench, decode_stream, l2_sweep, slot_lru_triton
    from dsacache.gpu.kernels import GatherWork, gather_ds
    from dsacache.gpu.layouts import DS_LATENT, DS_ROPE, build_cache
    from dsacache.gpu.parallel_lru import ParallelTokenLRU
    from dsacache.gpu.slot_lru import SlotLRU

    a = _run_gpu_defaults()
    k, reqs = a.top_k, a.requests
    ctx = 2 * k  # constexprs do not depend on the context; a small pool builds fast
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(ctx, generator=g)[:k] for _ in range(reqs)]).int()
    batch = bench.Batch(idx.numpy()[None, None].copy(), ctx)  # [1 step, 1 layer, reqs, k]
    launches: list = []
    saved = [(mod, name, fn) for mod, name, fn in jits.values()]
    for mod, name, fn in saved:
        setattr(mod, name, _Recorder(fn, launches))
    try:
        for layout in ("ds", "gqa"):  # the modes: baseline (no buffer) and a hot buffer
            for slots in (0, k):
                cache = build_cache(layout, 1, reqs, ctx, slots)
                bench.run_mode(
                    cache, batch, bench.ModeSpec("compile", slots), layout=layout,
                    heads=a.heads, nsplit=a.nsplit, warmup=0, precision=a.precision,
                    deadline=math.inf,
                )  # fmt: skip
        # validate phase: the ds gather over the buffer at ieee too
        cache = build_cache("ds", 1, reqs, ctx, k)
        q = torch.randn(reqs, a.heads, DS_LATENT + DS_ROPE, generator=g)
        work = GatherWork(reqs, a.heads, DS_LATENT, a.nsplit, "cpu")
        slot = torch.arange(k, dtype=torch.int32).repeat(reqs, 1)
        gather_ds(cache, 0, q, idx, slot, work, 0.05, precision="ieee")
        # the GPU LRU step (bench.run_mode runs the CPU walk when there is no GPU)
        lru = SlotLRU(1, reqs, ctx, k)
        hit = torch.zeros(1, reqs, k, dtype=torch.uint8)
        out = torch.full((1, reqs, k), -1, dtype=torch.int32)
        slot_lru_triton.lru_step_triton(lru, torch.from_numpy(np.ascontiguousarray(idx[None])),
                                        hit, out)  # fmt: skip
        # the parallel LRU's three kernels, slots = k (the variant the device run compiles)
        ParallelTokenLRU(1, reqs, ctx, k, backend="triton").step(idx[None].contiguous())
        # the calibration run's own kernels (benchmarks/gpu/calibrate_gpu.py's defaults)
        chunk = 512 * l2_sweep.KIB // 4
        l2_sweep.sweep_read(torch.zeros(2 * chunk), torch.zeros(4), 2, chunk)  # n_chunks > 1
        keys = torch.zeros(reqs, ctx, 132, dtype=torch.uint8)
        decode_stream.index_scan(keys, torch.zeros(reqs, 128), torch.zeros(reqs, ctx), ctx)
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
    return launches


def _ptxas_info(ptx: str) -> list[str]:
    """ptxas -v's register and spill lines for one kernel's PTX (Triton's bundled ptxas)."""
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        cmd = [get_ptxas(90).path, "-v", "--gpu-name=sm_90a", str(src), "-o", str(src) + ".o"]
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    return [
        ln.split(":", 1)[-1].strip() for ln in log.splitlines() if "regist" in ln or "spill" in ln
    ]


def _compile_sm90(fn: object, args: tuple, kwargs: dict, ptxas: bool = False) -> dict:
    """Bind, specialise and compile one launch as JITFunction.run does on an sm_90 device
    (Triton 3.6's binder and _pack_args; a Triton that moves them fails here, loudly)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    kw = dict(kwargs)
    kw["debug"] = kw.get("debug", fn.debug) or knobs.runtime.debug
    kw["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, opts = binder(*args, **kw)
    options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, spec, opts)
    names = [p.name for p in fn.params]
    const = {names[path[0]]: val for path, val in constexprs.items()}
    t = time.perf_counter()
    kernel = triton.compile(
        ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__
    )
    rec = {
        "kernel": fn.fn.__name__,
        "constexprs": {k: v if isinstance(v, int | str) else repr(v) for k, v in const.items()},
        "signature": {k: v for k, v in signature.items() if v != "constexpr"},
        "num_warps": options.num_warps,
        "shared_bytes": int(kernel.metadata.shared),
        "seconds": round(time.perf_counter() - t, 2),
    }
    if ptxas:
        rec["ptxas"] = _ptxas_info(kernel.asm["ptx"])
    return rec


def _negative_control() -> str:
    """A kernel reading a plain module global must NOT compile (the bug this file guards)."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _reads_plain_global(out_ptr):
        tl.store(out_ptr, _PLAIN_GLOBAL)

    try:
        _compile_sm90(_reads_plain_global, (torch.zeros(1),), {})
    except Exception as e:  # noqa: BLE001 - any compile error will do; the message is checked
        return f"{type(e).__name__}: {e}"
    return ""


def _main() -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print(json.dumps({"error": "TRITON_INTERPRET is set"}))
        return 1
    jits = _gpu_jit_functions()
    launches = _capture_launches(jits)
    seen, compiled = set(), []
    for fn, args, kwargs in launches:
        rec = _compile_sm90(fn, args, kwargs, ptxas="--ptxas" in sys.argv)
        key = json.dumps([rec["kernel"], rec["constexprs"], rec["signature"], rec["num_warps"]])
        if key not in seen:
            seen.add(key)
            compiled.append(rec)
    launched = {fn.fn.__name__ for fn, _, _ in launches}
    sources = "\n".join(fn.src for fn, _, _ in launches)
    helpers = sorted(
        f.fn.__name__ for _, _, f in jits.values()
        if f.fn.__name__ not in launched and f"{f.fn.__name__}(" in sources
    )  # fmt: skip
    never = sorted(
        f.fn.__name__ for _, _, f in jits.values()
        if f.fn.__name__ not in launched and f.fn.__name__ not in helpers
    )  # fmt: skip
    report = {
        "compiled": compiled,
        "helpers": helpers,
        "never_launched": never,
        "negative_control": _negative_control(),
    }
    print(json.dumps(report))
    return 0


# ---------------------------------------------------------------- the test


@pytest.mark.slow
def test_every_gpu_kernel_compiles_for_sm90():
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, env=env, timeout=900
    )
    took = time.perf_counter() - t
    assert p.returncode == 0, p.stderr[-4000:]
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    # every kernel is launched by some launcher here, or called from one that is
    assert rep["never_launched"] == [], rep["never_launched"]
    kinds = {(r["kernel"], r["constexprs"].get("HAS_BUF")) for r in rep["compiled"]}
    for name in ("_ds_gather_kernel", "_gqa_gather_kernel"):
        assert {(name, True), (name, False)} <= kinds, kinds
    names = {r["kernel"] for r in rep["compiled"]}
    assert {"_copy_kernel", "_combine_kernel", "_lru_kernel"} <= names, names
    assert {"_plru_lookup_kernel", "_plru_hit_kernel", "_plru_update_kernel"} <= names, names
    assert {"_sweep_read_kernel", "_index_scan_kernel"} <= names, names
    assert "_row_offsets" in rep["helpers"]
    for r in rep["compiled"]:
        assert r["shared_bytes"] <= SM90_MAX_SHARED, r
    # the harness does catch the interpreter-only mistake it exists for
    assert "global variable" in rep["negative_control"], rep["negative_control"]
    print(f"{len(rep['compiled'])} kernel variants compiled for sm_90 in {took:.1f} s")


if __name__ == "__main__":
    sys.exit(_main())
