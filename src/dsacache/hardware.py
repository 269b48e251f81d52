"""THE hardware table: one row per accelerator, every number with its public source.

The LLC model (sim/llc/hardware.py: its modelled geometry and latencies), the perf model
(perf/presets.py) and the serving model (perf/serving.py) all read their facts from here, so a
number is written once. A number no public source gives is marked ASSUMED in its note, with the
reasoning. Sizes that datasheets give in "GB" for HBM and L2 are read as GiB / MiB: the H200 that
the GPU prototype ran on reports 143,771 MiB of memory for its "141 GB" and 62,914,560 B of L2 for
its "60 MB" (benchmarks/gpu/results/).

Host links (HOST_LINKS) carry what the serving model needs to price reads of host memory: the
raw bandwidth per direction and the wire bytes of one read, from the link's specification, and
the round-trip latency of one read (ASSUMED; tuned on the public HiSparse setting,
docs/hierarchy.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from dsacache.errors import lookup
from dsacache.units import GIB, MIB

# CUDA programming guide: the persisting-L2 set-aside is at most 75 % of L2.
SET_ASIDE_FRACTION = 0.75


@dataclass(frozen=True)
class HostLink:
    """The GPU's path to host memory. A GPU kernel that reads pinned host memory issues reads of
    at most `payload_bytes` (a 128-byte line); each one costs `payload_bytes + overhead_bytes` on
    the wire (packet header and link framing), so small reads get less than the raw rate."""

    name: str
    label: str
    raw_bytes_per_s: float  # one direction, after line encoding
    payload_bytes: int
    overhead_bytes: int
    read_latency_s: float  # one read's round trip, GPU -> host memory -> GPU
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def read_bytes_per_s(self) -> float:
        """Payload bandwidth of back-to-back line-sized reads."""
        p = self.payload_bytes
        return self.raw_bytes_per_s * p / (p + self.overhead_bytes)

    def row_read_s(self, row_bytes: int) -> float:
        """Wire time of one row of `row_bytes` read as whole line-sized requests (the per-row
        cost: a row that is not a multiple of the payload pays for the rest of its last line)."""
        requests = -(-row_bytes // self.payload_bytes)
        return requests * (self.payload_bytes + self.overhead_bytes) / self.raw_bytes_per_s


# ASSUMED, tuned on the public HiSparse setting (docs/hierarchy.md): a GPU load from pinned host
# memory waits for the PCIe round trip and the host's DRAM (about a microsecond).
PCIE_READ_LATENCY_S = 1.0e-6
_LATENCY_NOTE = "ASSUMED (tuned on the public HiSparse setting, docs/hierarchy.md)"

_PCIE_TLP = (
    "PCIe 5.0/4.0 base specification: a read completion carries its payload plus ~24 B "
    "(4 B framing token, 2 B sequence number, 12-16 B TLP header, 4 B LCRC); GPU loads from "
    "pinned host memory are at most one 128-byte line each (CUDA programming guide, "
    "device memory accesses)"
)

HOST_LINKS: dict[str, HostLink] = {
    link.name: link
    for link in (
        HostLink(
            "pcie-gen5-x16",
            "PCIe Gen5 x16",
            32e9 * 16 / 8 * 128 / 130,
            128,
            24,
            PCIE_READ_LATENCY_S,
            {
                "raw_bytes_per_s": "PCIe 5.0 base specification: 32 GT/s per lane, 128b/130b "
                "encoding; x16 = 63.0 GB/s per direction (MLCommons inference v4.1 HGX H200 "
                "system description: 504 GB/s GPU-PCIe for 8 GPUs)",
                "payload_bytes": _PCIE_TLP,
                "overhead_bytes": _PCIE_TLP,
                "read_latency_s": _LATENCY_NOTE,
            },
        ),
        HostLink(
            "pcie-gen4-x16",
            "PCIe Gen4 x16",
            16e9 * 16 / 8 * 128 / 130,
            128,
            24,
            PCIE_READ_LATENCY_S,
            {
                "raw_bytes_per_s": "PCIe 4.0 base specification: 16 GT/s per lane, 128b/130b "
                "encoding; x16 = 31.5 GB/s per direction",
                "payload_bytes": _PCIE_TLP,
                "overhead_bytes": _PCIE_TLP,
                "read_latency_s": _LATENCY_NOTE + "; as Gen5",
            },
        ),
        HostLink(
            "nvlink-c2c",
            "NVLink-C2C",
            450e9,
            128,
            24,
            PCIE_READ_LATENCY_S,
            {
                "raw_bytes_per_s": "NVIDIA GH200 Grace Hopper Superchip datasheet: NVLink-C2C "
                "900 GB/s bidirectional = 450 GB/s per direction",
                "payload_bytes": "ASSUMED: 128-byte reads like PCIe (coherent cache-line "
                "transfers; the flit format is not public)",
                "overhead_bytes": "ASSUMED: the same 24 B per read as PCIe (not public)",
                "read_latency_s": "ASSUMED: as PCIe (no public figure; not tuned)",
            },
        ),
    )
}


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator as documented. Optional numbers (None) are the ones no model that uses
    this row needs and no public source gives (e.g. L2 latencies of the RTX PRO 6000)."""

    name: str
    label: str
    sm_version: int | None  # CUDA compute capability x 10 (None: not NVIDIA)
    sms: int  # streaming multiprocessors (compute units on AMD)
    clock_ghz: float  # boost clock
    l2_bytes: int  # last-level cache (L2; AMD: Infinity Cache)
    l2_partitions: int
    set_aside_max_bytes: int  # largest persisting / reserved L2 region
    hbm_bytes: int  # device memory capacity
    hbm_bytes_per_s: float
    fp8_flops: float | None  # dense tensor-core peak, no sparsity
    bf16_flops: float
    host_link: str  # a HOST_LINKS key
    peer_bytes_per_s: float  # GPU-to-GPU link, one direction (collectives between the GPUs)
    llc_hit_cycles: int | None = None  # load latency, L2 hit
    dram_cycles: int | None = None  # load latency, L2 miss to device memory
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def link(self) -> HostLink:
        return HOST_LINKS[self.host_link]

    @property
    def has_llc_latencies(self) -> bool:
        return self.llc_hit_cycles is not None and self.dram_cycles is not None

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "sources"}
        out["host_link_bytes_per_s"] = self.link.raw_bytes_per_s
        link_notes = {f"host_link.{k}": v for k, v in self.link.sources.items()}
        out["sources"] = {**dict(self.sources), **link_notes}
        return out


_CHASE = "public pointer-chase microbenchmarks: "
# Measured on the H200 the GPU prototype ran on (files in benchmarks/gpu/results/).
_H200_RUN = "reported by an H200 (benchmarks/gpu/results/h200-run1.json): "
_H200_SMI = "nvidia-smi on an H200 (benchmarks/gpu/results/h200-session-train-distill.log): "
_CUDA_75 = "CUDA programming guide: persisting-L2 set-aside at most 75 % of L2"
_DENSE = " (half the datasheet's with-sparsity figure)"
_GIB = " GB read as GiB (see module docstring)"
_MIB = " MB read as MiB, like the H200's reported 60 MiB"

_HOPPER_TC = "NVIDIA H100/H200 datasheets: FP8 3,958 and BF16 1,979 TFLOPS with sparsity"

_HOPPER_CC = "CUDA programming guide: Hopper is compute capability 9.0"
_AS_H100 = "ASSUMED: as H100 (same GH100 die), "

_H100 = GpuSpec(
    "h100",
    "NVIDIA H100 SXM",
    90,
    132,
    1.98,
    50 * MIB,
    2,
    int(SET_ASIDE_FRACTION * 50 * MIB),
    80 * GIB,
    3.35e12,
    1979e12,
    989.5e12,
    "pcie-gen5-x16",
    450e9,
    291,
    700,
    {
        "sm_version": _HOPPER_CC,
        "sms": "NVIDIA H100 architecture whitepaper: 132 SMs (H100 SXM5)",
        "clock_ghz": "ASSUMED: 1.98 GHz, the max SM clock nvidia-smi reports on an H200 (same "
        "GH100 die; benchmarks/gpu/results/h200-session-train-distill.log)",
        "l2_bytes": "NVIDIA H100 architecture whitepaper: H100 SXM L2 50" + _MIB,
        "l2_partitions": "public microbenchmark studies: 2 x 25 MB partitions",
        "set_aside_max_bytes": _CUDA_75 + ": 37.5 MiB",
        "hbm_bytes": "NVIDIA H100 datasheet: 80" + _GIB,
        "hbm_bytes_per_s": "NVIDIA H100 datasheet: HBM3 3.35 TB/s (H100 SXM)",
        "fp8_flops": _HOPPER_TC + _DENSE,
        "bf16_flops": _HOPPER_TC + _DENSE,
        "peer_bytes_per_s": "NVIDIA H100 datasheet: NVLink 900 GB/s (both directions)",
        "host_link": "NVIDIA H100 datasheet: PCIe Gen5 128 GB/s (x16, both directions)",
        "llc_hit_cycles": _CHASE + "L2 load latency ~291 cycles (H100)",
        "dram_cycles": _CHASE + "DRAM load latency ~700 cycles (H100)",
    },
)

# The H200 and the GH200 carry the H100's GH100 die: their rows change what differs (memory,
# the H200's reported L2, the GH200's host link) and keep the H100's other numbers; each source
# note says where its number comes from for that part.
GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        _H100,
        replace(
            _H100,
            name="h200",
            label="NVIDIA H200",
            l2_bytes=62_914_560,
            set_aside_max_bytes=39_321_600,
            hbm_bytes=143_771 * MIB,
            hbm_bytes_per_s=4.8e12,
            sources={
                "sm_version": _HOPPER_CC,
                "sms": _H200_RUN + "132 SMs",
                "clock_ghz": _H200_SMI + "clocks.max.sm 1980 MHz",
                "l2_bytes": _H200_RUN + "l2_bytes 62,914,560 B = 60 MiB",
                "l2_partitions": "public microbenchmark studies: two L2 partitions (GH100)",
                "set_aside_max_bytes": _H200_RUN
                + "max_persisting_l2_bytes 39,321,600 B = 37.5 MiB",
                "hbm_bytes": _H200_SMI + "memory.total 143,771 MiB (datasheet: 141 GB)",
                "hbm_bytes_per_s": "NVIDIA H200 datasheet: HBM3e 4.8 TB/s",
                "fp8_flops": _HOPPER_TC + _DENSE,
                "bf16_flops": _HOPPER_TC + _DENSE,
                "peer_bytes_per_s": "NVIDIA H200 datasheet: NVLink 900 GB/s (both directions)",
                "host_link": "MLCommons inference v4.1, HGX H200 system: host interconnect "
                "PCIe Gen5 x16",
                "llc_hit_cycles": _AS_H100 + "291 cycles",
                "dram_cycles": _AS_H100 + "700 cycles",
            },
        ),
        GpuSpec(
            "b200",
            "NVIDIA B200",
            100,
            148,
            1.965,
            int(126.5 * MIB),
            2,
            int(SET_ASIDE_FRACTION * 126.5 * MIB),
            180 * GIB,
            8e12,
            4.5e15,
            2.25e15,
            "pcie-gen5-x16",
            900e9,
            295,
            860,
            {
                "sm_version": "CUDA programming guide: B200 is compute capability 10.0",
                "sms": "ASSUMED: 148 SMs (no public source recorded here)",
                "clock_ghz": "ASSUMED: 1.965 GHz boost clock (no latency source states its clock)",
                "l2_bytes": "public microbenchmarks: B200 L2 126.5 MiB (measured)",
                "l2_partitions": "ASSUMED: one partition per die of the two-die package",
                "set_aside_max_bytes": _CUDA_75 + ": 94.875 MiB",
                "hbm_bytes": "MLCommons inference v6.0 B200 systems: B200-SXM-180GB, 180" + _GIB,
                "hbm_bytes_per_s": "NVIDIA B200 specifications: HBM3e 8 TB/s",
                "fp8_flops": "NVIDIA HGX B200 specifications (1000 W): FP8 4.5 PFLOPS dense",
                "bf16_flops": "NVIDIA HGX B200 specifications (1000 W): BF16 2.25 PFLOPS dense",
                "peer_bytes_per_s": "NVIDIA B200 specifications: NVLink 5 1.8 TB/s "
                "(both directions)",
                "host_link": "MLCommons inference v6.0 B200 systems: host interconnect "
                "PCIe Gen5 x16",
                "llc_hit_cycles": _CHASE + "L2 load latency ~295 cycles (B200)",
                "dram_cycles": _CHASE + "DRAM load latency ~860 cycles (B200)",
            },
        ),
        replace(
            _H100,
            name="gh200",
            label="NVIDIA GH200 (144 GB HBM3e)",
            hbm_bytes=144 * GIB,
            hbm_bytes_per_s=4.9e12,
            host_link="nvlink-c2c",
            sources={
                "sm_version": _HOPPER_CC,
                "sms": "ASSUMED: as H100 SXM (the GH200's GPU is a GH100 Hopper), 132 SMs",
                "clock_ghz": "ASSUMED: as H100 SXM, 1.98 GHz",
                "l2_bytes": "ASSUMED: as H100 SXM (same GH100 die), 50 MiB",
                "l2_partitions": _AS_H100 + "2",
                "set_aside_max_bytes": _CUDA_75,
                "hbm_bytes": "NVIDIA GH200 datasheet: 144 GB HBM3e variant," + _GIB,
                "hbm_bytes_per_s": "NVIDIA GH200 datasheet: HBM3e 4.9 TB/s",
                "fp8_flops": "NVIDIA GH200 datasheet: FP8 3,958 TFLOPS with sparsity" + _DENSE,
                "bf16_flops": "NVIDIA GH200 datasheet: BF16 1,979 TFLOPS with sparsity" + _DENSE,
                "peer_bytes_per_s": "NVIDIA GH200 datasheet: NVLink 900 GB/s (both directions)",
                "host_link": "NVIDIA GH200 datasheet: NVLink-C2C to the Grace CPU's LPDDR5X",
                "llc_hit_cycles": _AS_H100 + "291 cycles",
                "dram_cycles": _AS_H100 + "700 cycles",
            },
        ),
        GpuSpec(
            "rtx-pro-6000",
            "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
            120,
            188,
            2.6,
            128 * MIB,
            1,
            int(SET_ASIDE_FRACTION * 128 * MIB),
            97_887 * MIB,
            1.792e12,
            1.0e15,
            0.5e15,
            "pcie-gen5-x16",
            HOST_LINKS["pcie-gen5-x16"].raw_bytes_per_s,
            None,
            None,
            {
                "sm_version": "CUDA programming guide: RTX Blackwell (GB202) is compute "
                "capability 12.0",
                "sms": "NVIDIA RTX PRO 6000 Blackwell announcement: 188 SMs (24,064 CUDA cores)",
                "clock_ghz": "ASSUMED: 2.6 GHz = NVIDIA's 125 TFLOPS FP32 / (24,064 cores x 2)",
                "l2_bytes": "NVIDIA RTX PRO 6000 Blackwell announcement: 128" + _MIB,
                "l2_partitions": "ASSUMED: 1 (no public partition study of GB202)",
                "set_aside_max_bytes": _CUDA_75,
                "hbm_bytes": "nvidia-smi memory.total 97,887 MiB on an RTX PRO 6000 Blackwell "
                "Workstation Edition (public benchmark snapshot; datasheet: 96 GB GDDR7 ECC)",
                "hbm_bytes_per_s": "NVIDIA RTX PRO 6000 Blackwell datasheet: GDDR7 1,792 GB/s",
                "fp8_flops": "ASSUMED: NVIDIA gives only 4,000 AI TOPS (FP4 with sparsity); "
                "dense FP4 = 2,000, FP8 = half of that",
                "bf16_flops": "ASSUMED: half the FP8 figure above",
                "peer_bytes_per_s": "ASSUMED: no NVLink; peers over PCIe Gen5 x16 at its raw rate",
                "host_link": "NVIDIA RTX PRO 6000 Blackwell datasheet: PCIe Gen5 x16",
            },
        ),
        GpuSpec(
            "a100-80gb",
            "NVIDIA A100 80GB",
            80,
            108,
            1.41,
            40 * MIB,
            2,
            int(SET_ASIDE_FRACTION * 40 * MIB),
            80 * GIB,
            2.039e12,
            None,
            312e12,
            "pcie-gen4-x16",
            300e9,
            None,
            None,
            {
                "sm_version": "CUDA programming guide: A100 is compute capability 8.0",
                "sms": "NVIDIA Ampere architecture whitepaper: 108 SMs (A100)",
                "clock_ghz": "NVIDIA Ampere architecture whitepaper: 1.41 GHz boost (A100)",
                "l2_bytes": "NVIDIA Ampere architecture whitepaper: 40" + _MIB,
                "l2_partitions": "NVIDIA Ampere architecture whitepaper: L2 in two partitions",
                "set_aside_max_bytes": _CUDA_75,
                "hbm_bytes": "NVIDIA A100 datasheet: 80" + _GIB,
                "hbm_bytes_per_s": "NVIDIA A100 datasheet: HBM2e 2,039 GB/s (SXM)",
                "fp8_flops": "NVIDIA A100 datasheet: no FP8 tensor cores",
                "bf16_flops": "NVIDIA A100 datasheet: BF16 312 TFLOPS dense",
                "peer_bytes_per_s": "NVIDIA A100 datasheet: NVLink 600 GB/s (both directions)",
                "host_link": "NVIDIA A100 datasheet: PCIe Gen4 64 GB/s (x16, both directions)",
            },
        ),
        GpuSpec(
            "mi300x",
            "AMD Instinct MI300X",
            None,
            304,
            2.1,
            256 * MIB,
            8,
            int(SET_ASIDE_FRACTION * 256 * MIB),
            192 * GIB,
            5.3e12,
            2.6149e15,
            1.3074e15,
            "pcie-gen5-x16",
            448e9,
            500,
            900,
            {
                "sm_version": "not an NVIDIA part",
                "sms": "AMD MI300X datasheet: 304 compute units",
                "clock_ghz": "ASSUMED: 2.1 GHz peak engine clock (AMD MI300X datasheet)",
                "l2_bytes": "AMD CDNA 3 architecture whitepaper: MI300X Infinity Cache 256 MiB",
                "l2_partitions": "AMD CDNA 3 architecture whitepaper: 8 XCDs (the Infinity "
                "Cache is shared; 8 is the XCD count, not a measured partitioning)",
                "set_aside_max_bytes": "ASSUMED: no persisting control documented; 75 % by "
                "analogy with CUDA's set-aside (a what-if)",
                "hbm_bytes": "AMD MI300X datasheet: 192" + _GIB,
                "hbm_bytes_per_s": "AMD MI300X datasheet: HBM3 5.3 TB/s",
                "fp8_flops": "AMD MI300X datasheet: FP8 2,614.9 TFLOPS dense",
                "bf16_flops": "AMD MI300X datasheet: BF16 1,307.4 TFLOPS dense",
                "peer_bytes_per_s": "AMD MI300X datasheet: 896 GB/s aggregate Infinity Fabric "
                "peer bandwidth (ASSUMED half per direction)",
                "host_link": "AMD MI300X datasheet: PCIe Gen5 x16",
                "line_bytes": "ASSUMED: 128 B lines of 32 B sectors like the NVIDIA parts",
                "llc_hit_cycles": "ASSUMED: 500 cycles, placeholder (no public measurement used)",
                "dram_cycles": "ASSUMED: 900 cycles, placeholder (no public measurement used)",
            },
        ),
    )
}


def gpu(name: str) -> GpuSpec:
    """The table row called `name` (case-insensitive)."""
    return lookup(GPUS, name, "hardware")
