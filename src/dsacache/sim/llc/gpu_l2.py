"""The GPU L2 model: partitioned, hashed, with far-hit replication, replayed under the RRZE
gpu-benches `gpu-l2-cache` sweep (the kernel and the stream: gpu_l2_kernels.py).

Per GPU only documented numbers enter (`GpuL2Preset`: capacity, partitions, SMs, threads per
SM; GPU_L2_PRESETS is a view of the one hardware table, dsacache.hardware, each number with its
source); the structure (`L2Structure`: set hash, associativity, replacement, replication, and
the spread of thread-block run times that sets how far apart two reads of a line fall) is one
for all GPUs, fitted on the public H200 and A100-80GB curves and checked leave-one-out
(docs/gpu-l2-model.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dsacache.errors import DsacacheError, lookup
from dsacache.hardware import GpuSpec, gpu
from dsacache.sim.llc import gpu_l2_kernels as gk
from dsacache.sim.llc.l2_measured import bandwidth_equivalent_hit_rate, measured_sweep
from dsacache.units import KIB, LINE_BYTES

PIECE_KIB = gk.PIECE_LINES * LINE_BYTES // KIB  # 16 KiB per block iteration
CHUNK_KIB = gk.ITERS * PIECE_KIB  # 512 KiB per block in the benchmark
BLOCK_THREADS = 1024  # the benchmark's block size: an SM holds threads_per_sm // 1024 blocks
POLICIES = {"lru": gk.LRU, "fifo": gk.FIFO, "srrip": gk.SRRIP, "random": gk.RANDOM}
HASHES = {"mix": gk.HASH_MIX, "modulo": gk.HASH_MODULO, "rotate": gk.HASH_ROTATE}


@dataclass(frozen=True)
class L2Structure:
    """The structural (not per-GPU) parameters of the model; the defaults are a plain
    partitioned LRU cache, the fitted values are FITTED below (docs/gpu-l2-model.md)."""

    ways: int = 16
    policy: str = "lru"
    replicate: float = 0.0  # share of far accesses (or of lines) that leave a near copy
    replica_low: bool = False  # replicas enter at the lowest replacement priority
    replicate_misses: bool = True  # a far miss (filled from DRAM) also leaves a near copy
    set_hash: str = "rotate"
    replicate_by_line: bool = False  # the `replicate` share is of lines (by address)
    far_cost: float = 1.0  # time of a far hit / a near hit, for the bandwidth-equivalent rate
    time_spread: float = 0.0  # block run times spread over [1, 1 + time_spread] x the shortest

    def __post_init__(self) -> None:
        if not 1 <= self.ways <= 1024:
            raise DsacacheError(f"ways must be in 1..1024, got {self.ways}")
        if self.policy not in POLICIES:
            raise DsacacheError(f"unknown policy {self.policy!r} (known: {', '.join(POLICIES)})")
        if self.set_hash not in HASHES:
            known = ", ".join(HASHES)
            raise DsacacheError(f"unknown set hash {self.set_hash!r} (known: {known})")
        if not 0.0 <= self.replicate <= 1.0:
            raise DsacacheError(f"replicate must be in [0, 1], got {self.replicate}")
        if not self.far_cost >= 1.0:
            raise DsacacheError(f"far_cost must be >= 1, got {self.far_cost}")
        if not 0.0 <= self.time_spread <= 16.0:
            raise DsacacheError(f"time_spread must be in [0, 16], got {self.time_spread}")

    def cache(self, geo: L2Geometry) -> gk.Cache:
        """The replay's record of this structure on `geo`."""
        return gk.Cache(
            parts=geo.partitions,
            sets=geo.sets,
            ways=geo.ways,
            reserved_ways=geo.reserved_ways,
            policy=POLICIES[self.policy],
            set_hash=HASHES[self.set_hash],
            rep_q=int(round(self.replicate * gk.REP_ONE)),
            rep_low=int(self.replica_low),
            rep_miss=int(self.replicate_misses),
            rep_line=int(self.replicate_by_line),
        )

    def spread(self, iters: int, slots: int) -> int:
        """`time_spread` of a block's run time (iters ticks) in the replay's 1/slots ticks."""
        return int(round(self.time_spread * iters * slots))


# Fitted jointly on the H200 and A100-80GB curves (docs/gpu-l2-model.md, "The fit"): two fitted
# numbers, the share of lines that replicate and the spread of block run times; the rest
# (LRU, a balanced set hash, 16 ways) are modelling choices the fit does not depend on.
FITTED = L2Structure(replicate=0.625, replicate_by_line=True, time_spread=0.6)


@dataclass(frozen=True)
class GpuL2Preset:
    """One GPU's L2 as documented: every number has a source note."""

    name: str
    label: str
    l2_bytes: int
    partitions: int
    sms: int
    sources: Mapping[str, str] = field(default_factory=dict)
    threads_per_sm: int = 2048  # resident threads per SM (compute capability 8.0 / 9.0 / 10.0)

    @property
    def blocks_per_sm(self) -> int:
        """The benchmark's 1024-thread blocks one SM holds at once."""
        return max(1, self.threads_per_sm // BLOCK_THREADS)


# CUDA programming guide, "Features and technical specifications": resident threads per SM by
# compute capability (x 10); 2048 on the data-centre parts the sweeps ran on.
_THREADS_PER_SM = {80: 2048, 86: 1536, 89: 1536, 90: 2048, 100: 2048, 120: 1536}
_THREADS_NOTE = (
    'CUDA programming guide, "Features and technical specifications": compute capability'
)


def preset_from_table(spec: GpuSpec) -> GpuL2Preset:
    """The L2 model's view of one row of the hardware table (dsacache.hardware)."""
    if spec.sm_version not in _THREADS_PER_SM:
        raise DsacacheError(f"{spec.label}: no documented threads per SM for the GPU-L2 model")
    src = spec.sources
    threads = _THREADS_PER_SM[spec.sm_version]
    return GpuL2Preset(
        spec.name,
        spec.label,
        spec.l2_bytes,
        spec.l2_partitions,
        spec.sms,
        {
            "l2_bytes": src.get("l2_bytes", ""),
            "partitions": src.get("l2_partitions", ""),
            "sms": src.get("sms", ""),
            "threads_per_sm": f"{_THREADS_NOTE} {spec.sm_version / 10:.1f}: {threads}",
        },
        threads,
    )


# The GPUs whose L2 the model replays: rows of the one hardware table.
GPU_L2_PRESETS: dict[str, GpuL2Preset] = {
    n: preset_from_table(gpu(n)) for n in ("h200", "h100", "a100-80gb", "b200")
}


@dataclass(frozen=True)
class SweepSetup:
    """A GPU and the chunk its footprint sweep reads per block."""

    preset: GpuL2Preset
    chunk_kib: int


def sharp_knee_example() -> SweepSetup:
    """A GPU whose documented parameters call for a sharp knee (docs/gpu-l2-model.md, "A GPU
    with a sharp knee"): the H100 PCIe (50 MB L2 in two 25 MB partitions, 114 SMs of 2048
    threads) swept with 128 KiB chunks, so a quarter of the data in flight of the benchmark's
    512 KiB chunks: 228 blocks x 128 KiB = 28.5 MiB, 0.57 x L2 (the H200's sweep has 2.2 x L2).
    Not fitted to anything; a synthetic check of the mechanism."""
    h100 = GPU_L2_PRESETS["h100"]
    pcie = GpuL2Preset(
        "h100-pcie-128k",
        "NVIDIA H100 PCIe, 128 KiB chunks",
        h100.l2_bytes,
        h100.partitions,
        114,
        dict(h100.sources) | {"sms": "documented: 114 SMs (H100 PCIe)"},
        h100.threads_per_sm,
    )
    return SweepSetup(pcie, 128)


def gpu_l2_preset(name: str) -> GpuL2Preset:
    """The preset called `name` (case-insensitive)."""
    return lookup(GPU_L2_PRESETS, name, "hardware")


@dataclass(frozen=True)
class L2Geometry:
    """The modelled cache: `partitions` x `sets` x `ways` lines, `reserved_ways` of each set
    held back as the persisting set-aside."""

    partitions: int
    sets: int
    ways: int
    reserved_ways: int = 0

    @property
    def bytes(self) -> int:
        return self.partitions * self.sets * self.ways * LINE_BYTES


def geometry(l2_bytes: int, partitions: int, ways: int, set_aside_bytes: int = 0) -> L2Geometry:
    """Sets per partition = capacity / partitions / (ways x 128 B), rounded down; the set-aside
    takes whole ways of every set (rounded up)."""
    if partitions < 1:
        raise DsacacheError(f"partitions must be >= 1, got {partitions}")
    sets = l2_bytes // (partitions * ways * LINE_BYTES)
    if sets < 1:
        raise DsacacheError(f"{l2_bytes} B cannot hold one set of {ways} ways per partition")
    reserved = -(-set_aside_bytes * ways // l2_bytes) if set_aside_bytes > 0 else 0
    if not 0 <= reserved < ways:
        raise DsacacheError(f"set-aside {set_aside_bytes} B leaves no way for streaming data")
    return L2Geometry(partitions, sets, ways, reserved)


# The steady-state rule of `sweep`: warm up until pass n over the data set and pass ceil(n/2)
# agree within STEADY_TOL in both hit rate and near-hit rate (a drift that slows geometrically,
# as replicas accumulating below the knee do, then has at most about STEADY_TOL left), from
# MIN_WARM_PASSES on and at most MAX_WARM_PASSES (docs/gpu-l2-model.md, "Steady state").
STEADY_TOL = 0.005
MIN_WARM_PASSES = 2
MAX_WARM_PASSES = 64


@dataclass(frozen=True)
class SweepResult:
    sizes_kib: list[int]
    hit_rate: list[float]
    near_fraction: list[float]  # of all requests, those served by the near partition
    warm_passes: list[int] = field(default_factory=list)  # warm-up passes the rule took

    @property
    def far_fraction(self) -> list[float]:
        """Of all requests, those served by the far partition."""
        return [h - n for h, n in zip(self.hit_rate, self.near_fraction, strict=True)]

    def bandwidth_equivalent(self, hardware: str, far_cost: float) -> list[float]:
        """The hit rate the public sweep of `hardware` would report for this result: its modelled
        bandwidth (far hits `far_cost` times slower than near ones) converted with the measured
        curve's own plateau and tail (l2_measured.bandwidth_equivalent_hit_rate)."""
        p = gpu_l2_preset(hardware)
        ref = measured_sweep(p.name, p.l2_bytes)
        near, far = np.array(self.near_fraction), np.array(self.far_fraction)
        h = bandwidth_equivalent_hit_rate(near, far, ref.b_l2, ref.b_dram, far_cost)
        return [float(x) for x in h]


def sweep(
    geo: L2Geometry,
    sms: int,
    sizes_kib: Sequence[int],
    chunk_kib: int = CHUNK_KIB,
    structure: L2Structure = FITTED,
    warm_sweeps: int | None = None,
    measured_sweeps: int = 2,
    seed: int = 1,
    tol: float = STEADY_TOL,
    blocks_per_sm: int = 2,
) -> SweepResult:
    """Steady-state hit rates of the sweep over each data set in `sizes_kib`: counted over
    `measured_sweeps` passes after the warm-up, which is `warm_sweeps` passes when given, else
    as long as the steady-state rule (STEADY_TOL above, with `tol`) asks."""
    if chunk_kib < PIECE_KIB or chunk_kib % PIECE_KIB:
        raise DsacacheError(
            f"chunk must be a positive multiple of {PIECE_KIB} KiB (one block iteration), "
            f"got {chunk_kib}"
        )
    if sms < 1 or blocks_per_sm < 1:
        raise DsacacheError(f"sms and blocks per SM must be >= 1, got {sms}, {blocks_per_sm}")
    slots = sms * blocks_per_sm
    iters = chunk_kib // PIECE_KIB
    cache = structure.cache(geo)
    hits, near, passes = [], [], []
    for size in sizes_kib:
        if size < chunk_kib or size % chunk_kib:
            raise DsacacheError(
                f"data set {size} KiB must be a positive multiple of the {chunk_kib} KiB chunk"
            )
        run = size // chunk_kib
        measure = max(measured_sweeps * run, slots)
        stream = gk.Stream(run, iters, slots, sms, structure.spread(iters, slots), seed)
        if warm_sweeps is None:
            rule = gk.SteadyRule(tol, MIN_WARM_PASSES, MAX_WARM_PASSES, measure)
            counts = gk.replay_steady(cache, stream, rule)
        else:
            warm = warm_sweeps * run + slots
            stop = warm + measure
            n_blocks = gk.drained(stop, slots, stream.spread, iters)
            counts = gk.replay_window(cache, stream, n_blocks, warm, stop, np.zeros(0, np.int8))
        total = int(counts[gk.K_ACCESSES])
        hits.append(int(counts[gk.K_NEAR] + counts[gk.K_FAR]) / total)
        near.append(int(counts[gk.K_NEAR]) / total)
        passes.append(int(counts[gk.K_WARM_PASSES]) if warm_sweeps is None else warm_sweeps)
    return SweepResult(list(sizes_kib), hits, near, passes)


def preset_sweep(
    preset: GpuL2Preset,
    sizes_kib: Sequence[int],
    chunk_kib: int = CHUNK_KIB,
    sms: int | None = None,
    structure: L2Structure | None = None,
    seed: int = 1,
) -> SweepResult:
    """The sweep on one GPU as its preset documents it (capacity, partitions, SMs, blocks per
    SM), with `structure` (default: the fitted one); `sms` overrides the preset's SM count."""
    s = FITTED if structure is None else structure
    geo = geometry(preset.l2_bytes, preset.partitions, s.ways)
    n_sms = preset.sms if sms is None else sms
    bps = preset.blocks_per_sm
    return sweep(geo, n_sms, sizes_kib, chunk_kib, s, seed=seed, blocks_per_sm=bps)


def l2_sweep_hit_rates(
    hardware: str,
    sizes_kib: Sequence[int],
    chunk_kib: int = CHUNK_KIB,
    sms: int | None = None,
    *,
    bandwidth_equivalent: bool = False,
) -> list[float]:
    """The model's steady-state L2 hit rate of the `gpu-l2-cache` sweep on `hardware` for each
    data set in `sizes_kib` (KiB, multiples of the 512 KiB chunk); `sms` overrides the preset's
    SM count. With `bandwidth_equivalent`, the hit rate the public bandwidth sweep would report
    (far hits slower; needs a bundled measured sweep of `hardware` for its plateau and tail)."""
    p = gpu_l2_preset(hardware)
    result = preset_sweep(p, sizes_kib, chunk_kib, sms)
    if bandwidth_equivalent:
        return result.bandwidth_equivalent(p.name, FITTED.far_cost)
    return result.hit_rate
