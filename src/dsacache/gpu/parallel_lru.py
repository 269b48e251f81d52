"""An exact token LRU whose step is computed in parallel (no serial walk over the accesses).

The same replacement as slot_lru.SlotLRU: the simulator's `token-lru` with
`partition="per-layer"`, capacity S x layers tokens; a layer's S slots are shared by the batch's
requests (keys (request, token)); a step's accesses run request -> slot, -1 slots skipped. Within
one (step, layer) every key is distinct (a request's top-k holds distinct tokens).

Why a step can be computed at once (LRU's stack property). Before the step let r(key) be a
resident key's recency rank (0 = most recently used; non-residents: infinite). For the step's
i-th valid access (0-based) with old rank r_i, the keys used more recently than it at that moment
are the i keys accessed before it in the step (all distinct from it) and the old residents above
it that the step has not touched yet, so its stack distance is

    d_i = i + r_i - #{j < i : r_j < r_i}

and it hits iff it was resident (r_i < S) and d_i < S (an LRU of S entries holds exactly the S
keys of smallest stack distance). After the step the region holds the most recently used
distinct keys: the step's keys (the last accessed on top) and then the old residents the step
did not touch, in their old order, truncated to S. Everything is prefix sums, scatters and one
dominance count per layer (the #{...} term, needed only for the first S accesses: any access at
i >= S misses), batched over layers.

State (int32 tensors, the same on CPU and GPU; parallel_lru_triton.py runs the step in three
kernels on these tensors, this module in torch ops):
- table [layers, requests, max_context]: slot of a resident token, -1 if absent (as SlotLRU);
- slot_key [layers, S]: request * max_context + token of the slot's token, -1 if empty;
- rank_slot [layers, S]: a permutation of the slots: the first size[l] entries are the residents'
  slots from most to least recently used, the rest the free slots;
- slot_rank [layers, S]: its inverse (a resident's slot -> its recency rank);
- size [layers]: residents.
Each tensor carries one extra trailing column internally, the target of masked-off scatters.

Slots. A key resident before and after the step keeps its slot; keys that enter the region take
the freed slots (the evicted keys' and the empty ones, in rank order) in access order. So slot
numbers differ from SlotLRU's walk (which reuses the LRU slot at every eviction) while hits and the
resident keys and their order are the same. The step returns, per access [layers, requests, k],
`hit` and the slot the token holds at the END of the step (-1: not resident, read it from the
pool), exactly what the copy and gather kernels expect from SlotLRU (slot_lru.StepResult): rows
with hit == 0 and slot >= 0 are copied into the buffer; a hit that stays resident keeps its slot
and so its row.

Cost of a step per layer: O(n + S) for the gathers, prefix sums and scatters (n = requests x k)
and the dominance count over the first min(n, S) accesses: in torch log2 levels of a batched
sort and prefix sum (O(m log^2 m)), in Triton O(m^2 / 2) comparisons in tiles (a few million at
S ~ 2500, spread over many programs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsacache.errors import DsacacheError
from dsacache.gpu.slot_lru import SlotLRU, StepResult

if TYPE_CHECKING:
    import torch

# rank of a key that is not resident (or an empty access): above any rank and any position
NOT_RESIDENT = 2**30


class ParallelTokenLRU:
    """Token LRU state of `layers` regions of `slots` slots each, stepped in parallel.

    `ParallelTokenLRU(layers, requests, max_context, slots, device)`; `.step(indices)` with
    indices int32 [layers, requests, k] (-1 = empty; token < max_context; key of a token =
    request * max_context + token) returns a slot_lru.StepResult (hit uint8, slot int32, per
    access). backend: "torch" (any device), "triton" (parallel_lru_triton.py; CUDA, or the CPU
    under TRITON_INTERPRET=1), "auto" = triton on CUDA, torch otherwise.
    """

    def __init__(
        self,
        layers: int,
        requests: int,
        max_context: int,
        slots: int,
        device: str = "cpu",
        backend: str = "auto",
    ) -> None:
        import torch

        if slots < 0 or layers < 1 or requests < 1 or max_context < 1:
            raise DsacacheError(
                f"parallel LRU: bad shape layers={layers} requests={requests} "
                f"max_context={max_context} slots={slots}"
            )
        if requests * max_context >= 2**31 - 1 or slots >= NOT_RESIDENT:
            raise DsacacheError(
                f"parallel LRU: requests x max_context {requests * max_context} or slots "
                f"{slots} too large for int32 state"
            )
        if backend not in ("auto", "torch", "triton"):
            raise DsacacheError(f"parallel LRU: backend {backend!r} is not auto|torch|triton")
        self.layers, self.requests, self.max_context, self.slots = (
            layers,
            requests,
            max_context,
            slots,
        )
        self.device = torch.device(device)
        if backend == "auto":
            backend = "triton" if self.device.type == "cuda" else "torch"
        self.backend = backend
        i32, S = torch.int32, slots
        self._table = torch.full((layers, requests * max_context + 1), -1, dtype=i32, device=device)
        self._slot_key = torch.full((layers, S + 1), -1, dtype=i32, device=device)
        perm = torch.arange(S + 1, dtype=i32, device=device).repeat(layers, 1)
        self._rank_slot = perm  # all slots free, in order
        self._slot_rank = perm.clone()
        self.size = torch.zeros(layers, dtype=i32, device=device)
        self._scratch: dict[str, torch.Tensor] = {}

    def scratch(self, n: int) -> dict[str, torch.Tensor]:
        """Per-step work arrays of the Triton kernels for n accesses per layer (kept)."""
        import torch

        if "rank" not in self._scratch or self._scratch["rank"].shape[1] != n:
            L, S, dev = self.layers, self.slots, self.device
            new = {name: torch.empty((L, n), dtype=torch.int32, device=dev)
                   for name in ("rank", "cur", "pos")}  # fmt: skip
            new |= {name: torch.empty((L, S), dtype=torch.int32, device=dev)
                    for name in ("touch", "free", "order")}  # fmt: skip
            new["nvalid"] = torch.empty(L, dtype=torch.int32, device=dev)
            self._scratch = new
        return self._scratch

    # the public views (without the scratch column)
    @property
    def table(self) -> torch.Tensor:
        return self._table[:, :-1].view(self.layers, self.requests, self.max_context)

    @property
    def slot_key(self) -> torch.Tensor:
        return self._slot_key[:, : self.slots]

    @property
    def rank_slot(self) -> torch.Tensor:
        return self._rank_slot[:, : self.slots]

    @property
    def slot_rank(self) -> torch.Tensor:
        return self._slot_rank[:, : self.slots]

    def recency_keys(self, layer: int) -> list[int]:
        """The layer's resident keys, most recently used first (host list; for tests)."""
        n = int(self.size[layer])
        return self.slot_key[layer, self.rank_slot[layer, :n].long()].tolist()

    def check(self, indices: torch.Tensor) -> None:
        """SlotLRU's shape and token-range checks; on a GPU the shape only (the range check
        would make the host wait for the device every step; check the trace once instead)."""
        if indices.device.type == "cpu":
            SlotLRU.check(self, indices)  # the same attribute names
        elif tuple(indices.shape[:2]) != (self.layers, self.requests):
            raise DsacacheError(
                f"parallel LRU: indices shape {tuple(indices.shape)} is not "
                f"[{self.layers}, {self.requests}, k]"
            )

    def step(self, indices: torch.Tensor) -> StepResult:
        """One decode step of every layer: indices int32 [layers, requests, k] (-1 = empty)."""
        import torch

        self.check(indices)
        idx = indices.to(device=self.device, dtype=torch.int32).contiguous()
        if self.backend == "triton":
            from dsacache.gpu.parallel_lru_triton import parallel_lru_step_triton

            hit = torch.empty(idx.shape, dtype=torch.uint8, device=self.device)
            slot = torch.empty(idx.shape, dtype=torch.int32, device=self.device)
            parallel_lru_step_triton(self, idx, hit, slot)
            return StepResult(hit, slot)
        return self._step_torch(idx)

    def _step_torch(self, idx: torch.Tensor) -> StepResult:
        import torch

        L, R, k = idx.shape
        n, S, dev = R * k, self.slots, self.device
        if S == 0 or n == 0:
            return StepResult(
                torch.zeros(idx.shape, dtype=torch.uint8, device=dev),
                torch.full(idx.shape, -1, dtype=torch.int32, device=dev),
            )
        flat = idx.reshape(L, n).long()
        valid = flat >= 0
        key = (torch.arange(n, device=dev) // k) * self.max_context + flat.clamp(min=0)
        cur = torch.where(valid, self._table.gather(1, key).long(), -1)  # old slot or -1
        res = cur >= 0
        rank = torch.where(res, self._slot_rank.gather(1, cur.clamp(min=0)).long(), NOT_RESIDENT)
        pos = valid.cumsum(1) - 1  # position among the layer's valid accesses
        nvalid = pos[:, -1:] + 1
        hit = _hits(rank, valid, pos, S)

        # new ranks: the step's keys, last accessed on top, then the untouched old residents
        q = nvalid - 1 - pos
        surv = valid & (q < S)
        rho = torch.arange(S, device=dev)[None]
        sink_s = torch.full_like(q, S)
        q_by_rank = torch.full((L, S + 1), -1, dtype=torch.long, device=dev)
        q_by_rank.scatter_(1, torch.where(res, rank, sink_s), q)
        q_by_rank = q_by_rank[:, :S]
        touched = q_by_rank >= 0
        above = touched.cumsum(1) - touched.long()  # touched residents ranked above rho
        new_q = torch.where(touched, q_by_rank, nvalid + rho - above)
        occupied = rho < self.size.long()[:, None]
        keep = occupied & (new_q < S)
        evict = occupied & ~keep
        slot_of = self._rank_slot[:, :S].long()
        sink_r = torch.full_like(slot_of, S)

        # evicted keys leave the table and their slots
        ev_key = self._slot_key.gather(1, slot_of).long()
        self._table.scatter_(1, torch.where(evict, ev_key, self._table.shape[1] - 1), -1)
        self._slot_key.scatter_(1, torch.where(evict, slot_of, sink_r), -1)

        # free slots in rank order; entering keys take them in access order
        free = ~keep
        free_list = torch.full((L, S + 1), -1, dtype=torch.long, device=dev)
        free_list.scatter_(1, torch.where(free, free.cumsum(1) - 1, sink_r), slot_of)
        enter = surv & ~res
        enter_ord = enter.cumsum(1) - 1
        enter_slot = free_list.gather(1, torch.where(enter, enter_ord, sink_s))
        slot = torch.where(surv, torch.where(enter, enter_slot, cur), -1)
        self._table.scatter_(
            1, torch.where(enter, key, self._table.shape[1] - 1), enter_slot.to(torch.int32)
        )
        self._slot_key.scatter_(1, torch.where(enter, enter_slot, sink_s), key.to(torch.int32))

        # the new recency permutation: survivors by new rank, then the leftover free slots
        n_enter = enter.sum(1, keepdim=True)
        new_size = n_enter + keep.sum(1, keepdim=True)
        order = torch.full((L, S + 1), -1, dtype=torch.long, device=dev)
        order.scatter_(1, torch.where(surv, q, sink_s), slot)
        order.scatter_(1, torch.where(keep & ~touched, new_q, sink_r), slot_of)
        left = (rho >= n_enter) & (rho < free.sum(1, keepdim=True))
        order.scatter_(1, torch.where(left, new_size + rho - n_enter, sink_r), free_list[:, :S])
        self._rank_slot[:, :S] = order[:, :S]
        self._slot_rank.scatter_(1, order[:, :S], rho.expand(L, S).to(torch.int32))
        self.size.copy_(new_size[:, 0])
        return StepResult(hit.to(torch.uint8).view(L, R, k), slot.to(torch.int32).view(L, R, k))


def _hits(rank: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor, S: int) -> torch.Tensor:
    """bool [L, n]: r_i < S and pos_i + r_i - #{j before i : r_j < r_i} < S, over the first
    min(n, S) valid accesses (packed to the front; the rest miss)."""
    import torch

    L, n = rank.shape
    M = min(n, S)
    packed = torch.full((L, n + 1), NOT_RESIDENT, dtype=torch.long, device=rank.device)
    packed.scatter_(1, torch.where(valid, pos, n), rank)
    rc = packed[:, :M]
    cnt = _smaller_before(rc)
    col = torch.arange(M, device=rank.device)
    hit_packed = (rc < S) & (col[None] + rc - cnt < S)
    return valid & (pos < M) & hit_packed.gather(1, pos.clamp(0, M - 1))


def _smaller_before(x: torch.Tensor) -> torch.Tensor:
    """[L, M]: #{j < i : x_j < x_i} per row, exact for distinct values (ties: equal earlier
    ones count too). Bottom-up merge levels: at width 2w each element of a block's right half
    gains the left-half elements that a stable sort of the block puts before it; log2(M)
    levels of one batched sort and one prefix sum each."""
    import torch

    L, M = x.shape
    P = 1 << max(0, (M - 1).bit_length())
    vals = torch.full((L, P), NOT_RESIDENT + 1, dtype=x.dtype, device=x.device)
    vals[:, :M] = x
    cnt = torch.zeros((L, P), dtype=torch.long, device=x.device)
    half = 1
    while half < P:
        blocks = vals.view(L, P // (2 * half), 2 * half)
        perm = torch.sort(blocks, dim=2, stable=True).indices
        left = perm < half  # came from the block's left half
        left_before = left.cumsum(2) - left.long()
        cnt.view(blocks.shape).scatter_add_(2, perm, torch.where(left, 0, left_before))
        half *= 2
    return cnt[:, :M]
