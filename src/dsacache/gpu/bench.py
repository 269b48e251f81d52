"""One measured decode run over a trace: baseline or hot buffer (+ persisting-L2 window).

Per step, on one stream: [sleep] LRU update of all layers (one kernel), then per layer in
order: copy of the missed-and-resident rows into their slots, gather (split + combine). CUDA
events between the kernels give LRU, copy and gather times; a spin kernel at the start of every
step lets the host enqueue the whole step first, so event gaps are GPU time, not Python launch
time. On CPU (smoke mode) the same code runs with wall-clock timers and no sleep.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsacache.gpu.layouts import DS_LATENT, DS_ROPE, GQA_HEAD_DIM, GQA_KV_HEADS, KVCache
from dsacache.gpu.slot_lru import SlotLRU
from dsacache.trace.blocks import StepBlocks


@dataclass
class Batch:
    """The trace's steps as int32 [steps, layers, requests, k] (host) and its sizes."""

    indices: np.ndarray
    max_context: int

    @property
    def steps(self) -> int:
        return int(self.indices.shape[0])

    @property
    def layers(self) -> int:
        return int(self.indices.shape[1])

    @property
    def requests(self) -> int:
        return int(self.indices.shape[2])

    @property
    def k(self) -> int:
        return int(self.indices.shape[3])


def batch_of(trace: Any, steps: int | None = None) -> Batch:  # noqa: ANN401
    """The first `steps` (default all) steps of every request, in access order."""
    n = min(steps or trace.steps, trace.steps)
    out = StepBlocks(trace).read(0, n).indices
    maxc = max(int(np.asarray(r.context_lens[:n]).max()) for r in trace.requests)
    maxc = max(maxc, int(out.max()) + 1)
    return Batch(np.ascontiguousarray(out), maxc)


def cpu_lru(batch: Batch, slots: int, keep: bool = False) -> dict[str, Any]:
    """The CPU walk over every step: hits and accesses per step (and, with keep, every step's
    hit / slot arrays for the GPU to use if its own LRU kernel disagrees)."""
    import torch

    lru = SlotLRU(batch.layers, batch.requests, batch.max_context, slots)
    hits = np.zeros(batch.steps, np.int64)
    acc = np.count_nonzero(batch.indices.reshape(batch.steps, -1) >= 0, axis=1)
    kept_hit, kept_slot = [], []
    for t in range(batch.steps):
        res = lru.step(torch.from_numpy(batch.indices[t]))
        hits[t] = int(res.hit.sum())
        if keep:
            kept_hit.append(res.hit.numpy())
            kept_slot.append(res.slot.numpy())
    out: dict[str, Any] = {"hits": hits, "accesses": acc}
    if keep:
        out["hit"] = np.stack(kept_hit)
        out["slot"] = np.stack(kept_slot)
    return out


def sim_prediction(trace: Any, slots: int) -> dict[str, Any]:  # noqa: ANN401
    """The simulator's token-lru, per-layer, capacity slots x layers tokens, same trace."""
    from dsacache.sim import SimConfig, simulate

    cap = slots * trace.geometry.layers
    res = simulate(trace, SimConfig("token-lru", capacity_tokens=cap, partition="per-layer"))
    return {
        "hits": res.hits,
        "accesses": res.accesses,
        "hit_rate": res.hit_rate,
        "capacity_tokens": res.capacity_tokens,
    }


@dataclass
class Timer:
    """CUDA events on a GPU, perf_counter (after a sync-free CPU run) otherwise."""

    cuda: bool
    marks: list[Any] = field(default_factory=list)

    def mark(self) -> None:
        if self.cuda:
            import torch

            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def deltas_ms(self) -> list[float]:
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]
        return [(b - a) * 1e3 for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]


@dataclass
class ModeSpec:
    name: str  # baseline | buffer | reserve
    slots: int  # hot-buffer slots per layer (0: no buffer)
    set_aside: int = 0  # bytes of persisting L2 asked for (reserve only)


def run_mode(
    cache: KVCache,
    batch: Batch,
    spec: ModeSpec,
    *,
    layout: str,
    heads: int,
    nsplit: int,
    warmup: int,
    precision: str,
    deadline: float,
    sleep_cycles: int = 0,
    decisions: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Run every step of `batch` in mode `spec`; return per-step times (ms) of the timed
    steps (those after `warmup`), LRU hits per step, and whether the deadline cut it short."""
    import torch

    from dsacache.gpu.kernels import GatherWork, copy_rows, gather_ds, gather_gqa

    dev = cache.kv.device
    cuda = dev.type == "cuda"
    cache = dataclasses.replace(cache, slots=spec.slots)
    L, R, k = batch.layers, batch.requests, batch.k
    gen = torch.Generator(device="cpu").manual_seed(1)
    if layout == "ds":
        d, dv, gather = DS_LATENT + DS_ROPE, DS_LATENT, gather_ds
    else:
        d, dv, gather = GQA_HEAD_DIM, GQA_HEAD_DIM, gather_gqa
        heads = GQA_KV_HEADS * max(1, heads // GQA_KV_HEADS)
    q = torch.randn(L, R, heads, d, generator=gen).to(dev)
    sm_scale = 1.0 / math.sqrt(d)
    work = GatherWork(R, heads, dv, nsplit, str(dev))
    lru = SlotLRU(L, R, batch.max_context, spec.slots, device=str(dev)) if spec.slots else None
    hit = torch.zeros(L, R, k, dtype=torch.uint8, device=dev)
    slot = torch.full((L, R, k), -1, dtype=torch.int32, device=dev)
    idx_all = torch.from_numpy(batch.indices).to(dev)
    gpu_hits = torch.zeros(batch.steps, dtype=torch.int64, device=dev)
    rows: list[dict[str, float]] = []
    truncated = False
    for t in range(batch.steps):
        if time.monotonic() > deadline:
            truncated = True
            break
        idx = idx_all[t]
        if cuda and sleep_cycles:
            torch.cuda._sleep(sleep_cycles)
        tm = Timer(cuda)
        tm.mark()
        if lru is not None:
            if decisions is not None:
                hit.copy_(torch.from_numpy(decisions["hit"][t]))
                slot.copy_(torch.from_numpy(decisions["slot"][t]))
            elif cuda:
                from dsacache.gpu.slot_lru_triton import lru_step_triton

                lru_step_triton(lru, idx, hit, slot)
            else:
                res = lru.step(idx)
                hit.copy_(res.hit)
                slot.copy_(res.slot)
        tm.mark()
        for layer in range(L):
            if lru is not None:
                copy_rows(cache, layer, idx[layer], hit[layer], slot[layer])
            tm.mark()
            gather(
                cache, layer, q[layer], idx[layer], slot[layer] if lru is not None else None,
                work, sm_scale, precision=precision,
            )  # fmt: skip
            tm.mark()
        if lru is not None:
            gpu_hits[t] = hit.sum()
        dts = tm.deltas_ms()
        copy_ms = sum(dts[1::2])
        gather_ms = sum(dts[2::2])
        rows.append(
            {"step": t, "total_ms": sum(dts), "lru_ms": dts[0], "copy_ms": copy_ms,
             "gather_ms": gather_ms}
        )  # fmt: skip
    timed = [r for r in rows if r["step"] >= warmup]
    hits = gpu_hits.cpu().numpy()[: len(rows)]
    return {"steps_run": len(rows), "truncated": truncated, "rows": timed, "hits": hits}


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median and mean of each per-step time over the timed steps."""
    out: dict[str, float] = {"timed_steps": len(rows)}
    for key in ("total_ms", "lru_ms", "copy_ms", "gather_ms"):
        vals = np.array([r[key] for r in rows], dtype=np.float64)
        out[f"{key}_median"] = float(np.median(vals)) if vals.size else float("nan")
        out[f"{key}_mean"] = float(vals.mean()) if vals.size else float("nan")
    return out
