"""One GPU's decode step as a memory stream: per layer, in order,

    weights  a GEMV of the batch's activations over the layer's W bytes of bf16 weights
    index    the indexer's scan of every cached index key of every request (Triton, below)
    copy     (hot buffer only) the missed-and-resident rows into their slots (kernels.copy_rows)
    gather   the top-k sparse attention over the selected KV rows (kernels.gather_ds / _gqa)
    append   the step's own token's KV row and index key written into the pool

the stream the LLC and perf models describe (docs/perf-model.md). The top-k itself comes from
the trace (the scan's scores are computed and written, not ranked: what is measured is the
memory traffic). Index keys are DeepSeek-V3.2's: D fp8 e4m3 dims then one fp32 scale per token
(132 B for D = 128), in one uint8 tensor [layers, requests, max_context, row].

Timing brackets of the gather (`bracket_ms`): the same launch with every row in L2 (all
requests read request 0's rows, the same launch repeated) and with every row from DRAM (each
launch reads rows no earlier launch read: disjoint index sets of a random permutation of every
(layer, request)'s context, pool far larger than L2) give t_hit and t_miss per launch; a gather
time t in the real stream then gives the fraction h of its rows L2 served,
h = (t_miss - t) / (t_miss - t_hit) (`bracket_hit_rate`).
"""

# Triton kernel arguments stay unannotated: Triton reads annotations as type specialisations.
# ruff: noqa: ANN001

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import triton
import triton.language as tl

from dsacache.errors import DsacacheError
from dsacache.gpu.kernels import GatherWork, copy_rows, gather_ds, gather_gqa
from dsacache.gpu.layouts import DS_LATENT, DS_ROPE, GQA_HEAD_DIM, KVCache, random_rows

if TYPE_CHECKING:
    import torch

INDEX_BLOCK_T = 64  # tokens per index-scan program
HIDDEN = 8192  # the GEMV's input width (Llama-3.1-70B's hidden size); W sets its output width


@triton.jit
def _index_scan_kernel(
    keys_u8, keys_f32, q_ptr, out_ptr, n_tok, max_ctx,
    ROW: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """scores[r, t] = (q[r] . fp8 key[r, t]) x scale[r, t] for tokens t < n_tok of request r."""
    r = tl.program_id(0)
    toks = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    ok = toks < n_tok
    row = (r.to(tl.int64) * max_ctx + toks) * ROW
    d = tl.arange(0, D)
    k = tl.load(keys_u8 + row[:, None] + d[None, :], mask=ok[:, None], other=0)
    k = k.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    sc = tl.load(keys_f32 + row // 4 + D // 4, mask=ok, other=0.0)
    q = tl.load(q_ptr + r * D + d)
    s = tl.sum(k * q[None, :], 1) * sc
    tl.store(out_ptr + r.to(tl.int64) * max_ctx + toks, s, mask=ok)


def index_scan(keys: torch.Tensor, q: torch.Tensor, out: torch.Tensor, n_tok: int) -> None:
    """One layer's scan: keys uint8 [requests, max_ctx, row], q fp32 [requests, row - 4],
    out fp32 [requests, max_ctx] (tokens >= n_tok untouched)."""
    import torch

    reqs, max_ctx, row = keys.shape
    d = row - 4
    if d & (d - 1) or q.shape != (reqs, d) or n_tok > max_ctx:
        raise DsacacheError(f"index scan: keys {tuple(keys.shape)}, q {tuple(q.shape)}, {n_tok}")
    grid = (reqs, triton.cdiv(n_tok, INDEX_BLOCK_T))
    _index_scan_kernel[grid](
        keys, keys.view(torch.float32), q, out, n_tok, max_ctx,
        ROW=row, D=d, BLOCK_T=INDEX_BLOCK_T, num_warps=4,
    )  # fmt: skip


def index_scan_ref(keys: torch.Tensor, q: torch.Tensor, n_tok: int) -> torch.Tensor:
    """Torch reference of index_scan: fp32 [requests, n_tok]."""
    import torch

    d = keys.shape[2] - 4
    k = keys[:, :n_tok, :d].contiguous().view(torch.float8_e4m3fn).float()
    sc = keys[:, :n_tok, d:].contiguous().view(torch.float32)[..., 0]
    return torch.einsum("rtd,rd->rt", k, q) * sc


def random_index_keys(
    layers: int, requests: int, max_ctx: int, row: int, *, device: str, seed: int = 0
) -> torch.Tensor:
    """uint8 [layers, requests, max_ctx, row] of valid keys (finite fp8, positive scale)."""
    import torch

    keys = torch.empty(layers, requests, max_ctx, row, dtype=torch.uint8, device=device)
    d = row - 4
    gen = torch.Generator(device=device).manual_seed(seed)
    for layer in range(layers):  # one layer at a time: bounded temporaries
        k = torch.randn(requests, max_ctx, d, generator=gen, device=device)
        keys[layer, :, :, :d] = k.to(torch.float8_e4m3fn).view(torch.uint8)
        sc = torch.rand(requests, max_ctx, 1, generator=gen, device=device) + 0.5
        keys[layer, :, :, d:] = sc.view(torch.uint8)
    return keys


@dataclass
class StreamShape:
    layers: int
    requests: int
    max_context: int
    k: int
    heads: int
    weights_bytes: int  # per layer
    nsplit: int
    precision: str


class DecodeStream:
    """The buffers of one configuration (cache, index keys, weights, q) and its step.

    cache: a KVCache of the gather layout ('ds' or 'gqa'); its slots (0: no hot buffer) decide
    whether the copy kernel runs and the gathers read slots. weights: the layers' bf16
    [n_out, HIDDEN] matrices of an earlier stream of the same shape (built here when None)."""

    def __init__(
        self,
        cache: KVCache,
        keys: torch.Tensor,
        s: StreamShape,
        *,
        weights: list[torch.Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        import torch

        dev = cache.kv.device
        self.cache, self.keys, self.s = cache, keys, s
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.ds = cache.layout.name == "ds"
        d, dv = (DS_LATENT + DS_ROPE, DS_LATENT) if self.ds else (GQA_HEAD_DIM, GQA_HEAD_DIM)
        self.gather = gather_ds if self.ds else gather_gqa
        self.sm_scale = 1.0 / math.sqrt(d)
        self.q = torch.randn(s.layers, s.requests, s.heads, d, generator=gen).to(dev)
        self.work = GatherWork(s.requests, s.heads, dv, s.nsplit, str(dev))
        n_out = max(1, s.weights_bytes // (2 * HIDDEN))
        if weights is not None and (len(weights) != s.layers or weights[0].shape[0] != n_out):
            raise DsacacheError("decode stream: shared weights of another shape")
        self.weights = weights or [
            (torch.randn(n_out, HIDDEN, generator=gen) * 0.01).to(torch.bfloat16).to(dev)
            if dev.type == "cpu"
            else torch.randn(n_out, HIDDEN, device=dev, dtype=torch.bfloat16) * 0.01
            for _ in range(s.layers)
        ]  # fmt: skip
        self.x = torch.randn(s.requests, HIDDEN, generator=gen).to(torch.bfloat16).to(dev)
        self.y = torch.empty(s.requests, n_out, dtype=torch.bfloat16, device=dev)
        d_idx = keys.shape[3] - 4
        self.iq = torch.randn(s.layers, s.requests, d_idx, generator=gen).to(dev)
        self.scores = torch.empty(s.requests, s.max_context, dtype=torch.float32, device=dev)
        self.new_rows = random_rows(cache.layout.name, s.requests, device=str(dev), seed=seed + 7)
        self.new_keys = keys[0, :, 0].clone()

    def append_rows(self, positions: np.ndarray) -> torch.Tensor:
        """int64 [layers, requests]: flat pool-row index (page x page_tokens + offset) of the
        token at `positions[r]` of every (layer, request)."""
        import torch

        c = self.cache
        page = c.layout.page_tokens
        pos = torch.as_tensor(np.asarray(positions, np.int64), device=c.kv.device)
        phys = c.block_table[:, torch.arange(c.requests, device=pos.device), pos // page].long()
        return phys * page + (pos % page)[None, :]

    def step(
        self,
        idx: torch.Tensor,
        hit: torch.Tensor | None,
        slot: torch.Tensor | None,
        n_tok: int,
        append_at: torch.Tensor,
        mark: Callable[[], None],
    ) -> None:
        """Enqueue one decode step; mark() after the start and after every phase of every
        layer (1 + 5 x layers marks: weights, index, copy, gather, append)."""
        import torch

        c = self.cache
        pool = c.pool.view(-1, c.layout.row_bytes)
        buf = c.slots > 0 and slot is not None
        mark()
        for layer in range(self.s.layers):
            torch.matmul(self.x, self.weights[layer].t(), out=self.y)
            mark()
            index_scan(self.keys[layer], self.iq[layer], self.scores, n_tok)
            mark()
            if buf:
                copy_rows(c, layer, idx[layer], hit[layer], slot[layer])
            mark()
            self.gather(
                c, layer, self.q[layer], idx[layer], slot[layer] if buf else None, self.work,
                self.sm_scale, precision=self.s.precision,
            )  # fmt: skip
            mark()
            pool[append_at[layer]] = self.new_rows
            self.keys[layer, torch.arange(c.requests, device=idx.device), n_tok - 1] = self.new_keys
            mark()


PHASES = ("weights", "index", "copy", "gather", "append")


def phase_ms(deltas: list[float], layers: int) -> dict[str, float]:
    """Per-phase sums over layers of one step's mark intervals (see DecodeStream.step)."""
    if len(deltas) != len(PHASES) * layers:
        raise DsacacheError(f"decode step: {len(deltas)} intervals for {layers} layers")
    d = np.asarray(deltas).reshape(layers, len(PHASES))
    out = {f"{p}_ms": float(d[:, i].sum()) for i, p in enumerate(PHASES)}
    out["step_ms"] = float(d.sum())
    return out


def bracket_hit_rate(t: float, t_hit: float, t_miss: float) -> float | None:
    """h = (t_miss - t) / (t_miss - t_hit), unclipped; None when the bracket is empty."""
    if not (math.isfinite(t) and math.isfinite(t_hit) and math.isfinite(t_miss)):
        return None
    if t_miss <= t_hit:
        return None
    return (t_miss - t) / (t_miss - t_hit)


def miss_index_sets(
    layers: int, requests: int, max_ctx: int, k: int, launches: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(layer [launches], indices int32 [launches, requests, k]): launch j reads layer j mod
    layers and the (j // layers)-th of the disjoint k-sets of a random permutation of each
    (layer, request)'s tokens, so no row is read twice in `launches` launches."""
    sets = max_ctx // k
    if sets < 1 or launches > layers * sets:
        raise DsacacheError(
            f"miss bracket: {launches} launches need {launches} disjoint sets of {k} rows; "
            f"{layers} layers x {max_ctx} tokens give {layers * max(sets, 0)}"
        )
    rng = np.random.default_rng(seed)
    perm = np.stack(
        [np.stack([rng.permutation(max_ctx) for _ in range(requests)]) for _ in range(layers)]
    )
    lay = np.arange(launches) % layers
    which = np.arange(launches) // layers
    idx = np.empty((launches, requests, k), np.int32)
    for j in range(launches):
        idx[j] = perm[lay[j], :, which[j] * k : (which[j] + 1) * k]
    return lay, idx


def bracket_ms(
    stream: DecodeStream,
    idx0: torch.Tensor,
    *,
    has_buf: bool,
    launches: int,
    timer: Callable[[Callable[[], None]], float],
    seed: int = 0,
) -> dict[str, Any]:
    """t_hit and t_miss (ms per gather launch, each the mean over `launches` launches timed
    together) of this stream's gather; idx0 [requests, k] (device int32) the hit set."""
    import torch

    c, s = stream.cache, stream.s
    dev = c.kv.device
    slot = torch.full((s.requests, s.k), -1, dtype=torch.int32, device=dev) if has_buf else None
    # all hit: every request reads request 0's rows (its block table, its indices)
    shared = dataclasses.replace(
        c, block_table=c.block_table[:, :1].expand(-1, s.requests, -1).contiguous()
    )
    same = idx0[:1].expand(s.requests, -1).contiguous()

    def g(cache: KVCache, layer: int, idx: torch.Tensor) -> None:
        stream.gather(
            cache, layer, stream.q[layer], idx, slot, stream.work, stream.sm_scale,
            precision=s.precision,
        )  # fmt: skip

    def hits() -> None:
        for _ in range(launches):
            g(shared, 0, same)

    g(shared, 0, same)  # compile and bring the rows into L2
    t_hit = timer(hits) / launches
    # every call of misses() reads the next `launches` sets (timer may call it twice: a dry
    # call for the host's enqueue time, then the timed one), the last set compiles
    n = 2 * launches + 1
    lay, sets = miss_index_sets(s.layers, s.requests, c.max_context, s.k, n, seed=seed)
    idx_miss = torch.from_numpy(sets).to(dev)
    g(c, int(lay[-1]), idx_miss[-1])
    calls = [0]

    def misses() -> None:
        j0 = (calls[0] % 2) * launches
        calls[0] += 1
        for j in range(j0, j0 + launches):
            g(c, int(lay[j]), idx_miss[j])

    t_miss = timer(misses) / launches
    return {"t_hit_ms": t_hit, "t_miss_ms": t_miss, "launches": launches, "has_buf": has_buf}
