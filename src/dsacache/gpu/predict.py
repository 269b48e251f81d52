"""The models' prediction of one GPU decode configuration, made before it is measured.

A configuration (`DecodeConfig`): a model's geometry cut to the layers on one GPU, a batch, a
context, a synthetic trace (dsacache.trace.generate, the indexer generator by default, fixed
seed: the device run gathers exactly these indices), the weights read per layer, and a
hot-buffer reservation of `reserve_bytes` (0: none). The LLC model (dsacache.sim.llc, the
hardware preset's L2; the reservation as the `token` region, token-lru split per layer, which is
the GPU's slot LRU) replays the full decode stream and gives the KV gathers' hit rate over the
timed steps (after `warmup`); the perf model (dsacache.perf) turns that hit rate into a step
time.

`predict` (and `l2_model`, the GPU L2 model's footprint sweep) take only small, picklable
arguments and build their inputs themselves, so the device script can run them in parallel
worker processes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DecodeConfig:
    name: str
    model: str  # a geometry preset: deepseek-v3.2 (ds rows) or llama-3.1-70b (gqa rows)
    layers: int
    batch: int
    context: int
    steps: int
    warmup: int
    top_k: int
    weights_bytes: int  # per layer
    reserve_bytes: int  # the hot buffer's persisting set-aside (0: no buffer, no window)
    hardware: str = "h200"
    seed: int = 0
    generator: str = (
        "indexer"  # dsacache.trace.generate.DEFAULT_GENERATOR (a test holds them equal)
    )

    def geometry(self) -> Any:  # noqa: ANN401 - dsacache.trace.geometry.Geometry
        from dsacache.trace.geometry import preset

        return preset(self.model).with_overrides(layers=self.layers, top_k=self.top_k)

    def trace(self) -> Any:  # noqa: ANN401 - dsacache.trace.model.Trace
        from dsacache.trace.generate import generate_preset

        return generate_preset(
            self.generator, self.model, self.steps, self.context, layers=self.layers,
            top_k=self.top_k, seed=self.seed, requests=self.batch,
        )  # fmt: skip

    def slots(self) -> int:
        """Hot-buffer slots per layer: the set-aside over layers x row bytes."""
        return self.reserve_bytes // (self.layers * self.geometry().kv_bytes_per_token)


def _kv_counts(trace: Any, cfg: DecodeConfig, steps: int) -> tuple[np.ndarray, Any]:  # noqa: ANN401
    from dsacache.sim.llc import LLCConfig, simulate_llc
    from dsacache.sim.llc.stream import KV_GATHER

    res = "token" if cfg.reserve_bytes else "none"
    llc = LLCConfig(
        hardware=cfg.hardware, reservation=res, reserve_mib=cfg.reserve_bytes / (1 << 20),
        sectors=True, weights_bytes=cfg.weights_bytes, front_partition="per-layer",
    )  # fmt: skip
    r = simulate_llc(trace, llc, steps=steps)
    return r.counters[KV_GATHER].astype(np.int64), r


def predict(cfg: DecodeConfig) -> dict[str, Any]:
    """{predicted_kv_hit_rate (timed steps), predicted_step_ms and its terms, the region's
    token hit rate and capacity}; every number a plain float / int."""
    from dsacache.gpu.session import stub_zarr

    stub_zarr()
    from dsacache.perf import Workload, model, perf_params

    t0 = time.perf_counter()
    trace = cfg.trace()
    g = trace.geometry
    full, res = _kv_counts(trace, cfg, cfg.steps)
    timed = full
    if 0 < cfg.warmup < cfg.steps:
        timed = full - _kv_counts(trace, cfg, cfg.warmup)[0]
    h = float(timed[1] / timed[0]) if timed[0] else 0.0
    idx = np.stack([np.asarray(r.indices) for r in trace.requests])
    ctx = np.stack([np.asarray(r.context_lens) for r in trace.requests])[:, cfg.warmup :]
    gathers = float((idx[:, cfg.warmup :] >= 0).sum()) / (
        idx.shape[0] * (cfg.steps - cfg.warmup) * g.layers
    )
    w = Workload(
        g.layers, cfg.batch, cfg.weights_bytes, float(ctx.mean()), g.index_bytes_per_token,
        g.kv_bytes_per_token, gathers, h,
    )  # fmt: skip
    p = perf_params(cfg.hardware)
    st = model(p, w).step
    out: dict[str, Any] = {
        "config": asdict(cfg),
        "predicted_kv_hit_rate": h,
        "predicted_kv_hit_rate_all_steps": float(full[1] / full[0]) if full[0] else 0.0,
        "predicted_step_ms": st.total_s * 1e3,
        "predicted_terms_ms": {
            "weights": st.weights_s * 1e3,
            "index": st.index_s * 1e3,
            "gather": st.gather_s * 1e3,
            "gather_latency": st.gather_latency_s * 1e3,
            "gather_bandwidth": st.gather_bandwidth_s * 1e3,
        },
        "perf_params": {k: v for k, v in p.to_dict().items() if k != "sources"},
        "workload": asdict(w),
    }
    if res.token_region is not None:
        fr = res.token_region
        out["region_capacity_tokens"] = int(fr.capacity_tokens)
        out["region_token_hit_rate"] = float(fr.hits / max(fr.hits + fr.misses, 1))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def l2_model(hardware: str, sizes_kib: list[int], chunk_kib: int, sms: int | None) -> list[float]:
    """The GPU L2 model's hit rates of the footprint sweep (dsacache.sim.llc.gpu_l2), callable in
    a fresh worker process (it stubs zarr first, as the device machine may lack it)."""
    from dsacache.gpu.session import stub_zarr

    stub_zarr()
    from dsacache.sim.llc.gpu_l2 import l2_sweep_hit_rates

    rates = l2_sweep_hit_rates(hardware, sizes_kib, chunk_kib=chunk_kib, sms=sms)
    return [float(x) for x in rates]
