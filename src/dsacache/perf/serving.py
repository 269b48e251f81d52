"""The serving model: decode throughput vs concurrency with all KV in HBM (baseline) and with the
KV offloaded to host memory behind a per-request HBM hot buffer (offload, SGLang's HiSparse).

Memory (per GPU; docs/hierarchy.md). The pool for KV is `mem_fraction` x HBM minus the weights
the GPU holds. A running request holds, in every layer, its context's index keys (they stay on
the GPU: the indexer scans all of them) and either its whole latent KV (baseline) or a buffer of
N KV rows (offload), sized for its full I + O tokens (a running request must be able to finish
without being evicted; vLLM reports capacity the same way, "maximum concurrency for I + O tokens
per request"). The requests that fit run; the rest wait, so throughput above the cap is the
cap's. The step's reads use the average context, I + O/2 (staggered requests are spread evenly
over their O steps).

Parallelism over G GPUs: feed-forward weights and the output head are sharded G ways. Attention
is either tensor-parallel ("tp": its weights sharded, MLA's single latent KV head replicated on
every GPU, so every GPU holds and reads every request's KV) or data-parallel ("dp", SGLang's
--enable-dp-attention: attention weights replicated, each request's KV on one GPU, G x the
requests). The step is synchronous (the MoE exchanges every layer), so the busiest GPU sets it.

Decode step at R running requests, per GPU, b = R (tp) or ceil(R / G) (dp) requests attended:

    weights   = max(weight bytes read / HBM BW, matmul FLOPs / FP8 peak)
                (MoE: the distinct experts R tokens touch, E (1 - (1 - r/E)^R) of E)
    attention = max(b L min(k, ctx) KV bytes / HBM BW, its FLOPs / BF16 peak)
    index     = max(b L ctx index-key bytes / HBM BW, indexer FLOPs / FP8 peak)
    comm      = L x 2 collectives x (latency + bytes / peer BW)        (G > 1)
    host      = max(misses x wire time of a row,                                  (offload)
                    L x misses per request and layer x read latency / rows in flight)
                + L x swap_layer_s
    step      = weights + attention + index + comm + host

with misses = b L min(k, ctx) (1 - hit rate). The host term is the swap-in kernel's: one thread
block per request copies its misses from pinned host memory, so a few requests are bound by the
read latency and many by the link's bandwidth; it runs on the critical path of every layer
(not overlapped with the GPU's work; `overlap` is the what-if). A request whose I + O fits the
buffer never misses. Throughput = R / step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dsacache.errors import DsacacheError
from dsacache.hardware import GpuSpec, HostLink
from dsacache.perf.serving_models import KV_DTYPES, ServingModel
from dsacache.units import GIB, MIB

ATTENTION_MODES = ("dp", "tp")

# SGLang's launch commands for HiSparse (LMSYS blog 2026-04-10; SGLang hisparse_guide) use
# --mem-fraction-static 0.85: weights plus KV pools take 85 % of device memory.
DEFAULT_MEM_FRACTION = 0.85
# ASSUMED: the swap-in kernels' fixed cost per layer per step (SGLang launches a resolve and a
# copy kernel per layer: hit detection and LRU reordering run even when nothing misses).
DEFAULT_SWAP_LAYER_S = 5e-6
# SGLang hisparse_guide: swap_in_block_size, the threads of the per-request swap-in block,
# defaults to 512 = 16 warps; ASSUMED each warp has one row's reads in flight at a time.
SWAP_IN_BLOCK_THREADS = 512
ROWS_IN_FLIGHT = SWAP_IN_BLOCK_THREADS // 32
# ASSUMED: latency of one collective (NCCL all-gather / reduce-scatter / all-reduce of a few MB
# between 8 GPUs); two per layer (around the attention and the MoE).
DEFAULT_COLLECTIVE_S = 10e-6


@dataclass(frozen=True)
class BufferStats:
    """What the per-request HBM buffer delivers: the fraction of selected rows found in it, and
    optionally the miss rate of the p99 step (misses / selections of that step). From a
    simulation of a trace, or given as a what-if."""

    hit_rate: float
    p99_miss_rate: float | None = None
    source: str = "what-if, --hit-rate"

    def __post_init__(self) -> None:
        _unit_interval("hit rate", self.hit_rate)
        if self.p99_miss_rate is not None:
            _unit_interval("p99 miss rate", self.p99_miss_rate)

    @classmethod
    def from_host_bytes(
        cls,
        hit_rate: float,
        host_bytes_per_step_p99: float,
        selections_per_step: float,
        kv_bytes_per_token: int,
        source: str,
    ) -> BufferStats:
        """From a simulation's p99 host bytes per step: misses = bytes / KV row, over the rows
        that step selects (its requests x layers x k)."""
        if selections_per_step <= 0 or kv_bytes_per_token <= 0:
            raise DsacacheError("selections per step and KV bytes per token must be > 0")
        p99 = host_bytes_per_step_p99 / kv_bytes_per_token / selections_per_step
        return cls(hit_rate, p99, source)


@dataclass(frozen=True)
class ServingParams:
    """Deployment choices: attention parallelism, KV dtype (None: what SGLang picks, FP8 on
    compute capability >= 10.0 and BF16 before), the KV pool's share of memory, the swap-in's
    fixed cost, and whether host reads overlap the GPU's work (HiSparse today: no)."""

    attention: str = "dp"
    kv_dtype: str | None = None
    mem_fraction: float = DEFAULT_MEM_FRACTION
    swap_layer_s: float = DEFAULT_SWAP_LAYER_S
    collective_s: float = DEFAULT_COLLECTIVE_S
    overlap: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise DsacacheError(
                f"unknown attention parallelism {self.attention!r} "
                f"(known: {', '.join(ATTENTION_MODES)})"
            )
        if self.kv_dtype is not None and self.kv_dtype not in KV_DTYPES:
            raise DsacacheError(
                f"unknown KV dtype {self.kv_dtype!r} (known: auto, {', '.join(KV_DTYPES)})"
            )
        if not (0.0 < self.mem_fraction <= 1.0):
            raise DsacacheError(f"memory fraction must be in (0, 1], got {self.mem_fraction}")
        for name in ("swap_layer_s", "collective_s"):
            v = getattr(self, name)
            if not (v >= 0.0 and math.isfinite(v)):
                raise DsacacheError(f"{name} must be a finite number >= 0, got {v}")

    def resolved_kv_dtype(self, hw: GpuSpec) -> str:
        # SGLang hisparse_guide: for DSA models --kv-cache-dtype auto is fp8_e4m3 on SM100+
        # (Blackwell) and bfloat16 on older architectures.
        if self.kv_dtype is not None:
            return self.kv_dtype
        return "fp8" if (hw.sm_version or 0) >= 100 else "bf16"


@dataclass(frozen=True)
class ServingWorkload:
    """The serving workload: GPUs, tokens in and out per request, buffer rows per request per
    layer."""

    gpus: int
    input_tokens: int
    output_tokens: int
    buffer_tokens: int

    def __post_init__(self) -> None:
        for name in ("gpus", "input_tokens", "output_tokens", "buffer_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                flag = "--" + name.replace("_", "-")
                raise DsacacheError(f"{flag} must be an integer >= 1, got {v!r}")

    @property
    def mean_context(self) -> float:
        """Tokens an average running request holds: staggered requests are uniformly spread
        over their O decode steps."""
        return self.input_tokens + self.output_tokens / 2

    @property
    def peak_context(self) -> int:
        return self.input_tokens + self.output_tokens

    def decode_split(self) -> tuple[int, int]:
        """(steps whose context fits the buffer, steps that outgrow it) of one request's decode:
        step j has a context of I + j tokens, and while that is at most N all its KV is in the
        buffer (HiSparse's short-sequence path): those steps hit."""
        fit = max(0, min(self.output_tokens, self.buffer_tokens - self.input_tokens + 1))
        return fit, self.output_tokens - fit


@dataclass(frozen=True)
class StepTime:
    """One decode step on the busiest GPU, every term in seconds."""

    running: int
    per_gpu_batch: int
    weights_s: float
    attention_s: float
    index_s: float
    comm_s: float
    host_s: float = 0.0  # misses over the host link
    swap_fixed_s: float = 0.0  # the swap-in kernels' fixed cost
    overlap: bool = False

    @property
    def gpu_s(self) -> float:
        return self.weights_s + self.attention_s + self.index_s + self.comm_s

    @property
    def total_s(self) -> float:
        if self.overlap:
            return max(self.gpu_s, self.host_s) + self.swap_fixed_s
        return self.gpu_s + self.host_s + self.swap_fixed_s

    @property
    def tokens_per_s(self) -> float:
        return self.running / self.total_s

    def to_dict(self) -> dict[str, float]:
        return {
            "running": self.running,
            "per_gpu_batch": self.per_gpu_batch,
            "weights_ms": self.weights_s * 1e3,
            "attention_ms": self.attention_s * 1e3,
            "index_ms": self.index_s * 1e3,
            "comm_ms": self.comm_s * 1e3,
            "host_ms": self.host_s * 1e3,
            "swap_fixed_ms": self.swap_fixed_s * 1e3,
            "step_ms": self.total_s * 1e3,
        }


def _unit_interval(name: str, v: float) -> None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0
    if not ok:
        raise DsacacheError(f"{name} must be a number in [0, 1], got {v!r}")


# A request whose every decode step fits its buffer keeps all its KV on the GPU (HiSparse's
# short-sequence path): it never misses.
FITS_BUFFER = BufferStats(1.0, source="every request fits its buffer: no misses")


def host_read_s(
    link: HostLink,
    kv_bytes: int,
    rows: float,
    layers: int,
    requests: int,
    rows_per_request_layer: float,
    sms: int,
) -> float:
    """Seconds the swap-in kernels spend reading one step's missed rows from pinned host memory
    on one GPU: `rows` in all, over `layers` layers and `requests` requests
    (rows_per_request_layer each on average). One thread block per request copies that
    request's misses, ROWS_IN_FLIGHT rows at a time; at most one block per SM at a time (waves).
    Bound by the link's wire time of every row, or by the read latency of the rows one block
    copies in turn, whichever is longer."""
    bandwidth_s = rows * link.row_read_s(kv_bytes)
    waves = -(-requests // sms)
    latency_s = layers * waves * rows_per_request_layer * link.read_latency_s / ROWS_IN_FLIGHT
    return max(bandwidth_s, latency_s)


def expected_experts(experts: int, per_token: int, tokens: int) -> float:
    """Expected distinct experts that `tokens` tokens touch when each picks `per_token` distinct
    experts of `experts`, uniformly and independently: E (1 - (1 - r/E)^T). ASSUMED uniform
    routing (the models balance expert load; real batches are somewhat skewed)."""
    if tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - per_token / experts) ** tokens)


@dataclass(frozen=True)
class Deployment:
    """A model on G GPUs of one kind: the memory budget and the step-time model."""

    model: ServingModel
    hw: GpuSpec
    work: ServingWorkload
    params: ServingParams = field(default_factory=ServingParams)

    def __post_init__(self) -> None:
        if self.work.buffer_tokens < self.model.top_k:
            raise DsacacheError(
                f"--buffer-tokens {self.work.buffer_tokens} is below the model's top-k "
                f"{self.model.top_k}: the attention reads every selected row from the buffer"
            )

    @property
    def kv_dtype(self) -> str:
        return self.params.resolved_kv_dtype(self.hw)

    @property
    def kv_bytes(self) -> int:
        return self.model.kv_bytes_per_token(self.kv_dtype)

    @property
    def dp(self) -> bool:
        return self.params.attention == "dp"

    # ---- memory ----
    @property
    def weights_bytes_per_gpu(self) -> float:
        m, g = self.model, self.work.gpus
        wb = ServingModel.WEIGHT_BYTES
        attention = m.layers * m.attention_params * wb
        ffn = m.ffn_params(m.experts) * wb
        embeddings = 2 * m.embedding_params * ServingModel.EMBEDDING_BYTES
        return (attention if self.dp else attention / g) + (ffn + embeddings) / g

    @property
    def kv_pool_bytes_per_gpu(self) -> float:
        pool = self.params.mem_fraction * self.hw.hbm_bytes - self.weights_bytes_per_gpu
        if pool <= 0:
            need = self.weights_bytes_per_gpu / self.params.mem_fraction / GIB
            raise DsacacheError(
                f"{self.model.label} does not fit on {self.work.gpus} x {self.hw.label}: "
                f"{self.weights_bytes_per_gpu / GIB:,.1f} GiB of weights per GPU needs "
                f"{need:,.1f} GiB at memory fraction {self.params.mem_fraction:g} "
                f"({self.hw.hbm_bytes / GIB:,.1f} GiB per GPU)"
            )
        return pool

    def request_bytes(self, offload: bool) -> float:
        """HBM one running request reserves on a GPU that holds it (for its I + O tokens)."""
        m = self.model
        ctx = self.work.peak_context
        index = ctx * m.layers * m.index_bytes_per_token
        # a request no longer than its buffer keeps all its KV there: it needs only its own rows
        rows = min(self.work.buffer_tokens, ctx) if offload else ctx
        return rows * m.layers * self.kv_bytes + index

    def max_running(self, offload: bool) -> int:
        """Requests that fit in HBM at once, over all GPUs."""
        per_gpu = int(self.kv_pool_bytes_per_gpu // self.request_bytes(offload))
        return per_gpu * self.work.gpus if self.dp else per_gpu

    # ---- step time ----
    def per_gpu_batch(self, running: int) -> int:
        return -(-running // self.work.gpus) if self.dp else running

    def step(self, running: int, miss_rate: float | None = None) -> StepTime:
        """The step at `running` requests; miss_rate None is the baseline (no host reads)."""
        if running < 1:
            raise DsacacheError(f"running requests must be >= 1, got {running}")
        m, hw, g = self.model, self.hw, self.work.gpus
        b = self.per_gpu_batch(running)
        share = 1.0 if self.dp else 1.0 / g  # of attention weights / heads on one GPU
        bw = hw.hbm_bytes_per_s
        fp8 = hw.fp8_flops or hw.bf16_flops  # no FP8 tensor cores: FP8 weights run at BF16 rate

        touched = expected_experts(m.experts, m.experts_per_token, running)
        wb = ServingModel.WEIGHT_BYTES
        w_bytes = (
            m.layers * m.attention_params * wb * share
            + m.ffn_params(touched) * wb / g
            + m.embedding_params * ServingModel.EMBEDDING_BYTES / g
        )  # fmt: skip
        active_ffn = m.ffn_params(m.experts_per_token)
        w_flops = 2 * (
            b * m.layers * m.attention_params * share
            + running * (active_ffn + m.embedding_params) / g
        )
        weights_s = max(w_bytes / bw, w_flops / fp8)

        ctx = self.work.mean_context
        rows = b * m.layers * min(m.top_k, ctx)
        heads = m.heads * share
        # absorbed MLA decode: scores over latent + RoPE, values over the latent
        a_flops = rows * heads * 2 * (2 * m.kv_lora_rank + m.qk_rope_dim)
        attention_s = max(rows * self.kv_bytes / bw, a_flops / hw.bf16_flops)

        keys = b * m.layers * ctx
        i_flops = keys * m.index_heads * share * m.index_head_dim * 2
        index_s = max(keys * m.index_bytes_per_token / bw, i_flops / fp8)

        comm_s = 0.0
        if g > 1:
            # bf16 hidden states of the whole batch; ring collectives move (G-1)/G of them per
            # GPU, an all-reduce (tp) twice that (reduce-scatter + all-gather)
            moved = running * m.hidden * 2 * (g - 1) / g * (1 if self.dp else 2)
            comm_s = m.layers * 2 * (self.params.collective_s + moved / hw.peer_bytes_per_s)

        if miss_rate is None:
            return StepTime(running, b, weights_s, attention_s, index_s, comm_s)
        host_s = host_read_s(
            hw.link, self.kv_bytes, rows * miss_rate, m.layers, b, min(m.top_k, ctx) * miss_rate,
            hw.sms,
        )  # fmt: skip
        fixed = m.layers * self.params.swap_layer_s
        return StepTime(
            running,
            b,
            weights_s,
            attention_s,
            index_s,
            comm_s,
            host_s,
            fixed,
            self.params.overlap,
        )


@dataclass(frozen=True)
class ServingRow:
    concurrency: int
    baseline: StepTime | None  # None: not one request fits
    offload: StepTime | None
    buffer_hit_rate: float
    offload_p99: StepTime | None = None

    @property
    def baseline_tokens_per_s(self) -> float:
        return 0.0 if self.baseline is None else self.baseline.tokens_per_s

    @property
    def offload_tokens_per_s(self) -> float:
        return 0.0 if self.offload is None else self.offload.tokens_per_s

    @property
    def ratio(self) -> float | None:
        base = self.baseline_tokens_per_s
        return None if base == 0 else self.offload_tokens_per_s / base

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "concurrency": self.concurrency,
            "baseline_tokens_per_s": self.baseline_tokens_per_s,
            "offload_tokens_per_s": self.offload_tokens_per_s,
            "ratio": self.ratio,
            "buffer_hit_rate": self.buffer_hit_rate,
            "baseline_step": None if self.baseline is None else self.baseline.to_dict(),
            "offload_step": None if self.offload is None else self.offload.to_dict(),
        }
        if self.offload_p99 is not None:
            out["offload_p99_step_ms"] = self.offload_p99.total_s * 1e3
        return out


@dataclass(frozen=True)
class ServingResult:
    deployment: Deployment
    stats: BufferStats
    baseline_max_concurrency: int
    offload_max_concurrency: int
    rows: list[ServingRow]

    def to_dict(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "model": d.model.name,
            "hardware": d.hw.name,
            "gpus": d.work.gpus,
            "input_tokens": d.work.input_tokens,
            "output_tokens": d.work.output_tokens,
            "buffer_tokens": d.work.buffer_tokens,
            "attention": d.params.attention,
            "kv_dtype": d.kv_dtype,
            "kv_bytes_per_token": d.kv_bytes,
            "index_bytes_per_token": d.model.index_bytes_per_token,
            "host_link": d.hw.host_link,
            "overlap": d.params.overlap,
            "weights_gib_per_gpu": d.weights_bytes_per_gpu / GIB,
            "kv_pool_gib_per_gpu": d.kv_pool_bytes_per_gpu / GIB,
            "baseline_request_mib": d.request_bytes(False) / MIB,
            "offload_request_mib": d.request_bytes(True) / MIB,
            "buffer_stats": asdict(self.stats),
            "params": asdict(d.params),
            "baseline_max_concurrency": self.baseline_max_concurrency,
            "offload_max_concurrency": self.offload_max_concurrency,
            "rows": [r.to_dict() for r in self.rows],
        }


def serving_rows(
    model: ServingModel,
    hw: GpuSpec,
    work: ServingWorkload,
    concurrency: Sequence[int],
    stats: BufferStats,
    params: ServingParams | None = None,
) -> ServingResult:
    """Baseline and offload decode throughput at each concurrency (requests in the system; at
    most the HBM cap of each run, the rest wait)."""
    if not concurrency:
        raise DsacacheError("--concurrency needs at least one value")
    for c in concurrency:
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise DsacacheError(f"concurrency values must be integers >= 1, got {c!r}")
    dep = Deployment(model, hw, work, params or ServingParams())
    cap_base, cap_off = dep.max_running(False), dep.max_running(True)
    if work.decode_split()[1] == 0:  # a what-if rate does not apply to requests that fit
        stats = FITS_BUFFER
    h = stats.hit_rate
    p99 = None if stats.p99_miss_rate is None or h == 1.0 else stats.p99_miss_rate
    rows = []
    for c in concurrency:
        rb, ro = min(c, cap_base), min(c, cap_off)
        rows.append(
            ServingRow(
                c,
                dep.step(rb) if rb else None,
                dep.step(ro, 1.0 - h) if ro else None,
                h,
                dep.step(ro, p99) if ro and p99 is not None else None,
            )
        )
    return ServingResult(dep, stats, cap_base, cap_off, rows)
