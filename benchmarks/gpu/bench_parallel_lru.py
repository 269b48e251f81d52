"""Serial vs parallel token LRU: ms per decode step, same trace, same device, hits checked equal.

    PYTHONPATH=src python benchmarks/gpu/bench_parallel_lru.py [--requests 1,4] [--slots 1278]

Trace: dsacache.trace.synth at DeepSeek-V3.2 geometry (20 layers x k=2048, 656 B rows, 32768-token
context), `--steps` steps (the first `--warmup` untimed), for each batch size in `--requests`.
Capacity: `--slots` per layer, each in turn (default 1278 and 2557 = 16 and 32 MiB / (20 x 656 B),
the prototype's set-asides; 10000, more than a batch-4 step's 8192 accesses, so batch 4 has hits
too). Per step, both LRUs update all layers:

- serial: on CUDA the one-warp-per-layer Triton walk (slot_lru_triton.lru_step_triton), on CPU
  the numba walk (SlotLRU.step);
- parallel: ParallelTokenLRU, on CUDA its three Triton kernels and its torch-op path, on CPU the
  torch-op path (add `--interpret` to also run the Triton kernels under the interpreter: slow).

Every access's hit of every variant must equal the serial walk's (the run fails otherwise). On
CUDA a step is timed with CUDA events after a GPU spin (--spin-cycles: the host enqueues the whole
step first, so the events time GPU work, not Python's launches; median over timed steps) and the
kernels one step launches are counted with torch.profiler; on CPU with perf_counter. The target
on an H200 (issue 12): the parallel LRU at <= 10 % of the gather time, about 0.06 ms per step at
batch 1.
"""

from __future__ import annotations

import os
import sys

if "--interpret" in sys.argv:  # must precede the first triton import
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dsacache.gpu.bench import batch_of  # noqa: E402
from dsacache.gpu.parallel_lru import ParallelTokenLRU  # noqa: E402
from dsacache.gpu.slot_lru import SlotLRU  # noqa: E402
from dsacache.trace import Geometry  # noqa: E402
from dsacache.trace.synth import synthesize  # noqa: E402


def serial_step(batch, slots: int, dev: torch.device) -> Callable:  # noqa: ANN001
    lru = SlotLRU(batch.layers, batch.requests, batch.max_context, slots, device=str(dev))
    if dev.type != "cuda":
        return lambda idx: lru.step(idx).hit
    from dsacache.gpu.slot_lru_triton import lru_step_triton

    shape = (batch.layers, batch.requests, batch.k)
    hit = torch.zeros(shape, dtype=torch.uint8, device=dev)
    slot = torch.zeros(shape, dtype=torch.int32, device=dev)

    def step(idx: torch.Tensor) -> torch.Tensor:
        lru_step_triton(lru, idx, hit, slot)
        return hit

    return step


def parallel_step(batch, slots: int, dev: torch.device, backend: str) -> Callable:  # noqa: ANN001
    lru = ParallelTokenLRU(
        batch.layers, batch.requests, batch.max_context, slots, device=str(dev), backend=backend
    )
    return lambda idx: lru.step(idx).hit


def time_steps(
    step: Callable, idx_all: torch.Tensor, warmup: int, spin: int = 0
) -> tuple[float, np.ndarray]:
    """Median ms per step over the steps after `warmup`, and every step's hit mask. On CUDA a
    spin of `spin` cycles first lets the host enqueue the whole step, so the events time the
    GPU, not Python's launches."""
    cuda = idx_all.device.type == "cuda"
    times, hits = [], []
    for t in range(idx_all.shape[0]):
        if cuda:
            torch.cuda._sleep(spin)
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            hit = step(idx_all[t])
            b.record()
            b.synchronize()
            ms = a.elapsed_time(b)
        else:
            t0 = time.perf_counter()
            hit = step(idx_all[t])
            ms = (time.perf_counter() - t0) * 1e3
        hits.append(hit.cpu().numpy().copy())
        if t >= warmup:
            times.append(ms)
    return float(np.median(times)), np.stack(hits)


def launches_per_step(step: Callable, idx: torch.Tensor) -> int:
    """CUDA kernels one step launches (torch.profiler's kernel events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(idx)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def compare(batch, idx_all: torch.Tensor, slots: int, a: argparse.Namespace, acc: int) -> bool:  # noqa: ANN001
    """Time every variant at one capacity; print one line each; True if all hits agree."""
    dev = idx_all.device
    names = ["serial", "parallel-torch"]
    if dev.type == "cuda" or a.interpret:
        names.append("parallel-triton")
    results = {
        name: time_steps(make(name, batch, slots, dev), idx_all, a.warmup, a.spin_cycles)
        for name in names
    }
    base_ms, base_hits = results["serial"]
    print(f"batch {batch.requests}, {slots} slots per layer: {acc:,} accesses, "
          f"hit rate {base_hits.sum() / acc:.4f}")  # fmt: skip
    ok = True
    for name, (ms, hits) in results.items():
        same = np.array_equal(hits, base_hits)
        ok &= same
        line = f"  {name:16s} {ms:9.3f} ms/step  x{base_ms / ms:7.2f} vs serial"
        line += "  hits identical" if same else "  HITS DIFFER"
        if dev.type == "cuda":  # a fresh LRU: its first step, as in the timed run
            line += f"  {launches_per_step(make(name, batch, slots, dev), idx_all[0])} kernels/step"
        print(line)
    return ok


def make(name: str, batch, slots: int, dev: torch.device) -> Callable:  # noqa: ANN001
    if name == "serial":
        return serial_step(batch, slots, dev)
    return parallel_step(batch, slots, dev, name.split("-")[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--k", type=int, default=2048)
    ap.add_argument("--requests", default="1,4", help="batch sizes, comma-separated")
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--slots", default="1278,2557,10000", help="slots per layer, comma-separated")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--spin-cycles",
        type=int,
        default=10_000_000,
        help="CUDA: GPU spin before each step (> the host's enqueue time of a step)",
    )
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--interpret", action="store_true", help="CPU: Triton kernels, interpreted")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__} ({torch.get_num_threads()} CPU threads), "
          f"{a.layers} layers x k={a.k}, "
          f"{a.steps} steps ({a.warmup} untimed)")  # fmt: skip
    ok = True
    for reqs in [int(r) for r in a.requests.split(",")]:
        g = Geometry(a.layers, a.k, 656, 132, 64)
        batch = batch_of(synthesize(g, a.steps, a.context, seed=0, requests=reqs))
        idx_all = torch.from_numpy(batch.indices).to(dev)
        acc = int((batch.indices >= 0).sum())
        for slots in [int(s) for s in a.slots.split(",")]:
            ok &= compare(batch, idx_all, slots, a, acc)
    print("PASS: every variant's hits equal the serial walk's" if ok else "FAIL: hits differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
