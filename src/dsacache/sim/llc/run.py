"""Replay a trace's decode memory stream through one modelled LLC: `simulate_llc`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dsacache.errors import DsacacheError
from dsacache.sim.llc.engine import COUNTER_FIELDS, EngineConfig, LLCEngine
from dsacache.sim.llc.front import TOKEN, FrontResult, front_policy_class, resolve_token, run_front
from dsacache.sim.llc.hardware import CacheShape, Hardware, hardware
from dsacache.sim.llc.kernels import S_SHORTCUT
from dsacache.sim.llc.layout import DEFAULT_ALIGN, Layout
from dsacache.sim.llc.reservation import Reservation, ResolvedReservation
from dsacache.sim.llc.stream import CLASSES, DEFAULT_BLOCK_ELEMENTS, KV_GATHER, Runs, iter_runs
from dsacache.trace.geometry import PRESETS as GEOMETRY_PRESETS
from dsacache.trace.geometry import Geometry
from dsacache.trace.model import Trace
from dsacache.units import LINE_BYTES, MIB

# Weights read per layer per step (bytes), by model. Both ASSUMED: the weights are spread evenly
# over the layers (embeddings and head ignored), and the batch shares them (for a MoE model the
# routed experts differ per request; this counts one token's activated parameters).
MODEL_WEIGHTS: dict[str, tuple[int, str]] = {
    "deepseek-v3.2": (
        37_000_000_000 // 61,
        "ASSUMED: 37 B activated parameters per token (DeepSeek-V3 report) in FP8 "
        "(1 B/parameter) over 61 layers",
    ),
    "llama-3.1-70b": (
        70_600_000_000 * 2 // 80,
        "ASSUMED: 70.6 B parameters (Meta model card) in bf16 (2 B/parameter) over 80 layers",
    ),
    "glm-5": (
        40_000_000_000 // 78,
        "ASSUMED: 40 B activated parameters per token (GLM-5 model card: 744B-A40B) in FP8 "
        "(1 B/parameter) over 78 layers",
    ),
}


def infer_model(geometry: Geometry) -> str | None:
    """The geometry preset whose bytes per token and page size match (None if not one). Presets
    that share them (DeepSeek-V3.2 and GLM-5) are told apart by the layer count; a trace cut to
    other layers (a plain .npz gets DeepSeek-V3.2's geometry) goes to the first preset."""
    key = (geometry.kv_bytes_per_token, geometry.index_bytes_per_token, geometry.block_tokens)
    hits = [
        name
        for name, g in GEOMETRY_PRESETS.items()
        if (g.kv_bytes_per_token, g.index_bytes_per_token, g.block_tokens) == key
    ]
    same_layers = [n for n in hits if GEOMETRY_PRESETS[n].layers == geometry.layers]
    if len(same_layers) == 1:
        return same_layers[0]
    return hits[0] if hits else None


@dataclass(frozen=True)
class LLCConfig:
    """One LLC simulation. reserve_mib in MiB (2**20 B); weights_bytes per layer (None: the model's,
    `model` or the preset whose geometry the trace has); sets/ways override the preset's
    modelled geometry (sets must be a power of two). reservation `token` (front.py): a
    token-level region of whole ways in front of the shared LLC, under front_policy split by
    front_partition (the token-level simulator's policies and partitions)."""

    hardware: str = "h100"
    policy: str = "lru"
    reservation: str = "none"
    reserve_mib: float = 0.0
    reserved_classes: tuple[str, ...] = ("kv-gather",)
    sectors: bool = False
    sets: int | None = None
    ways: int | None = None
    set_hash: str = "modulo"
    weights_bytes: int | None = None
    model: str | None = None
    shortcut: bool = True
    front_policy: str = "token-lru"
    front_partition: str = "global"

    def resolve(self) -> tuple[Hardware, EngineConfig, ResolvedReservation]:
        """(hardware, the engine's config, the reservation). With the `token` reservation the
        engine is the shared LLC: the preset's shape less the reserved ways."""
        hw = hardware(self.hardware)
        shape = hw.with_shape(self.sets, self.ways)
        if self.reservation == TOKEN:
            front_policy_class(self.front_policy)
            r = Reservation.from_mib("none", self.reserve_mib, tuple(self.reserved_classes))
            shape, resolved = resolve_token(shape, r.reserve_bytes, r.classes)
        else:
            res = Reservation.from_mib(
                self.reservation, self.reserve_mib, tuple(self.reserved_classes)
            )
            resolved = res.resolve(shape, hw.set_aside_limit(shape))
        engine = EngineConfig(shape, self.policy, self.set_hash, bool(self.sectors), self.shortcut)
        return hw, engine, resolved

    def weights(self, geometry: Geometry) -> tuple[int, str]:
        """(weights bytes per layer, where the number comes from)."""
        if self.weights_bytes is not None:
            w = self.weights_bytes
            if isinstance(w, bool) or not isinstance(w, int) or w < 0:
                raise DsacacheError(f"weights bytes per layer must be an integer >= 0, got {w!r}")
            return w, "given"
        model = self.model or infer_model(geometry)
        if model is None:
            raise DsacacheError(
                "cannot tell the model from the trace geometry "
                f"(kv {geometry.kv_bytes_per_token} B, block {geometry.block_tokens} tokens): "
                f"give --weights-mib or --model ({', '.join(MODEL_WEIGHTS)})"
            )
        if model not in MODEL_WEIGHTS:
            raise DsacacheError(f"unknown model {model!r} (known: {', '.join(MODEL_WEIGHTS)})")
        w, note = MODEL_WEIGHTS[model]
        return w, f"{model}: {note}"


@dataclass
class LLCResult:
    source: str
    hardware: Hardware
    shape: CacheShape
    config: LLCConfig
    reservation: ResolvedReservation
    steps: int
    requests: int
    layers: int
    weights_bytes: int
    weights_note: str
    counters: np.ndarray  # int64 [classes, 4] accesses, hits, misses, hbm_bytes
    blocking_per_step: np.ndarray  # int64 [steps] kv-gather misses
    shortcut_lines: int  # line accesses the streaming shortcut decided without replaying them
    engine_seconds: float  # the engine kernel's own time (compile excluded)
    stream_seconds: float  # building the runs (addresses, interleaving)
    token_region: FrontResult | None = None  # the `token` reservation's region

    def class_counts(self) -> dict[str, dict[str, float | int | None]]:
        out: dict[str, dict[str, float | int | None]] = {}
        for c, name in enumerate(CLASSES):
            d: dict[str, float | int | None] = dict(
                zip(COUNTER_FIELDS, (int(x) for x in self.counters[c]), strict=True)
            )
            d["hit_rate"] = d["hits"] / d["accesses"] if d["accesses"] else None
            out[name] = d
        tot = self.counters.sum(axis=0)
        t: dict[str, float | int | None] = dict(
            zip(COUNTER_FIELDS, (int(x) for x in tot), strict=True)
        )
        t["hit_rate"] = t["hits"] / t["accesses"] if t["accesses"] else None
        out["total"] = t
        return out

    def to_dict(self) -> dict:
        b = self.blocking_per_step
        return {
            "source": self.source,
            "hardware": self.hardware.name,
            "hardware_label": self.hardware.label,
            "llc": {
                "sets": self.shape.sets,
                "ways": self.shape.ways,
                "line_bytes": LINE_BYTES,
                "capacity_bytes": self.shape.capacity_bytes,
                "real_capacity_bytes": self.hardware.llc_bytes,
            },
            "policy": self.config.policy,
            "set_hash": self.config.set_hash,
            "sectors": bool(self.config.sectors),
            "reservation": self.reservation.to_dict(),
            "steps": self.steps,
            "requests": self.requests,
            "layers": self.layers,
            "weights_bytes_per_layer": self.weights_bytes,
            "weights_source": self.weights_note,
            "classes": self.class_counts(),
            "blocking_misses_per_step": {
                "mean": float(b.mean()) if b.size else None,
                "min": int(b.min()) if b.size else None,
                "max": int(b.max()) if b.size else None,
            },
            "gather_misses_per_step": [int(x) for x in b],
            "blocking_unit": "lines",
            "shortcut_lines": self.shortcut_lines,
            "engine_seconds": self.engine_seconds,
            "stream_seconds": self.stream_seconds,
            "token_region": None if self.token_region is None else self.token_region.to_dict(),
        }


def _warm(engine_config: EngineConfig) -> None:
    """Compile (or load) the kernels on a tiny input so timings exclude it."""
    tiny = LLCEngine(EngineConfig(CacheShape(1, 1), engine_config.policy, engine_config.set_hash))
    tiny.run(Runs.from_lines(np.zeros(1, np.int64)))


def simulate_llc(
    trace: Trace,
    config: LLCConfig,
    steps: int | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    align: int = DEFAULT_ALIGN,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> LLCResult:
    """Replay the first `steps` decode steps (all by default) of `trace` through the LLC.

    progress: called with the number of steps just replayed, once per step block.
    """
    hw, engine_config, res = config.resolve()
    shape = hw.with_shape(config.sets, config.ways)  # the whole LLC (token: engine has less)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise DsacacheError(f"steps must be a positive integer, got {steps!r}")
    g = trace.geometry
    weights, note = config.weights(g)
    n_steps = trace.steps if steps is None else min(steps, trace.steps)
    ctx = [np.asarray(r.context_lens[:n_steps], dtype=np.int64) for r in trace.requests]
    layout = Layout.build(g, ctx, weights, align)
    engine = LLCEngine(engine_config, res)
    _warm(engine_config)
    front = None
    if res.mode == TOKEN:
        front = run_front(
            trace,
            layout,
            engine,
            res,
            config.front_policy,
            config.front_partition,
            n_steps,
            block_elements,
            progress,
        )
        counters = engine.counters.copy()
        counters[KV_GATHER] = front.gather
        blocking, engine_s, stream_s = front.blocking, front.engine_seconds, front.stream_seconds
    else:
        counters, blocking, engine_s, stream_s = _replay(
            trace, layout, engine, n_steps, block_elements, progress
        )
    return LLCResult(
        source=trace.source,
        hardware=hw,
        shape=shape,
        config=config,
        reservation=res,
        steps=n_steps,
        requests=len(trace.requests),
        layers=g.layers,
        weights_bytes=weights,
        weights_note=note,
        counters=counters,
        blocking_per_step=blocking,
        shortcut_lines=int(engine.st[S_SHORTCUT]),
        engine_seconds=engine_s,
        stream_seconds=stream_s,
        token_region=front,
    )


def _replay(
    trace: Trace,
    layout: Layout,
    engine: LLCEngine,
    n_steps: int,
    block_elements: int,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The plain stream through the engine: (counters, blocking per step, engine s, stream s)."""
    blocking = np.zeros(n_steps, dtype=np.int64)
    engine_s = stream_s = 0.0
    runs_iter = iter_runs(trace, layout, n_steps, block_elements)
    while True:
        t0 = time.perf_counter()
        runs = next(runs_iter, None)
        t1 = time.perf_counter()
        if runs is None:
            break
        stream_s += t1 - t0
        b = engine.run(runs)
        engine_s += time.perf_counter() - t1
        blocking[runs.start : runs.start + runs.steps] = b
        if progress is not None:
            progress(runs.steps)
    return engine.counters.copy(), blocking, engine_s, stream_s


def weights_bytes_from_mib(mib: float) -> int:
    """MiB per layer to bytes (rounded down)."""
    m = mib
    if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m) or m < 0:
        raise DsacacheError(f"weights MiB per layer must be a finite number >= 0, got {m!r}")
    return int(m * MIB)
