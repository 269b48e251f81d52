"""The hot buffer's replacement: a slot-table token LRU, one region of S slots per layer.

Exactly the simulator's `token-lru` with `partition="per-layer"` and capacity S x layers tokens:
a layer's S slots are shared by the batch's requests (keys (request, token)); accesses run
step -> layer -> request -> slot, -1 slots skipped; a hit moves the token to the MRU end, a miss
inserts it there, evicting the LRU token when the region is full (S = 0: every access misses).

State (torch int32 tensors; CPU here, the same tensors on the GPU for slot_lru_triton.py):
- table [layers, requests, max_context]: slot of a resident token, -1 if absent;
- slot_key [layers, S]: request * max_context + token of the slot's token, -1 if empty;
- link [layers, 2 * (S + 1)]: circular doubly-linked recency list over slots (link[2i] = prev,
  link[2i+1] = next), node S the sentinel: next = MRU, prev = LRU;
- size [layers]: slots filled (slots fill 0, 1, ... before the first eviction).

One step returns, per access [layers, requests, k]: `hit` (uint8) and `slot` = the slot the
token occupies at the END of the step, or -1. A token inserted and evicted again within the same
step (S < accesses) ends with slot -1: the gather reads it from the pool, and only tokens with
hit == 0 and slot >= 0 are copied into the buffer (their final slot; no slot is written twice).

The CPU walk is a numba kernel over the tensors' numpy views (they share memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError

if TYPE_CHECKING:
    import torch


@njit(cache=True, boundscheck=False)
def _walk(
    idx: np.ndarray,
    table: np.ndarray,
    slot_key: np.ndarray,
    link: np.ndarray,
    size: np.ndarray,
    nslots: int,
    hit: np.ndarray,
    slot: np.ndarray,
) -> None:
    n_layers, n_req, k = idx.shape
    max_ctx = table.shape[2]
    head = nslots
    for layer in range(n_layers):
        lk = link[layer]
        tb = table[layer]
        sk = slot_key[layer]
        sz = size[layer]
        for r in range(n_req):
            for s in range(k):
                tok = idx[layer, r, s]
                hit[layer, r, s] = 0
                if tok < 0 or nslots == 0:
                    continue
                cur = tb[r, tok]
                if cur >= 0:
                    hit[layer, r, s] = 1
                    if lk[2 * head + 1] != cur:  # not already MRU: unlink, relink at the front
                        pv = lk[2 * cur]
                        nx = lk[2 * cur + 1]
                        lk[2 * pv + 1] = nx
                        lk[2 * nx] = pv
                        first = lk[2 * head + 1]
                        lk[2 * cur] = head
                        lk[2 * cur + 1] = first
                        lk[2 * first] = cur
                        lk[2 * head + 1] = cur
                    continue
                if sz < nslots:
                    v = sz
                    sz += 1
                else:  # evict the LRU slot's token
                    v = lk[2 * head]
                    vp = lk[2 * v]
                    lk[2 * vp + 1] = head
                    lk[2 * head] = vp
                    old = sk[v]
                    tb[old // max_ctx, old % max_ctx] = -1
                sk[v] = r * max_ctx + tok
                tb[r, tok] = v
                first = lk[2 * head + 1]
                lk[2 * v] = head
                lk[2 * v + 1] = first
                lk[2 * first] = v
                lk[2 * head + 1] = v
        size[layer] = sz
        for r in range(n_req):
            for s in range(k):
                tok = idx[layer, r, s]
                slot[layer, r, s] = tb[r, tok] if tok >= 0 and nslots > 0 else -1


@dataclass
class StepResult:
    """Per access [layers, requests, k]: hit (uint8 0/1; 0 on empty slots) and slot (int32,
    the token's slot at the end of the step, -1 if not resident or an empty slot)."""

    hit: torch.Tensor
    slot: torch.Tensor

    @property
    def fill(self) -> torch.Tensor:
        """bool: the accesses whose row the copy kernel writes into the buffer."""
        return (self.hit == 0) & (self.slot >= 0)


class SlotLRU:
    """Slot-table LRU state of `layers` regions of `slots` slots each (torch int32 tensors)."""

    def __init__(
        self, layers: int, requests: int, max_context: int, slots: int, device: str = "cpu"
    ) -> None:
        import torch

        if slots < 0 or layers < 1 or requests < 1 or max_context < 1:
            raise DsacacheError(
                f"slot LRU: bad shape layers={layers} requests={requests} "
                f"max_context={max_context} slots={slots}"
            )
        if requests * max_context >= 2**31:
            raise DsacacheError(
                f"slot LRU: requests x max_context {requests * max_context} >= 2**31"
            )
        self.layers, self.requests, self.max_context, self.slots = (
            layers,
            requests,
            max_context,
            slots,
        )
        i32 = torch.int32
        self.table = torch.full((layers, requests, max_context), -1, dtype=i32, device=device)
        self.slot_key = torch.full((layers, max(slots, 1)), -1, dtype=i32, device=device)
        link = torch.full((layers, 2 * (slots + 1)), -1, dtype=i32, device=device)
        link[:, 2 * slots] = slots  # empty circular list: the sentinel points at itself
        link[:, 2 * slots + 1] = slots
        self.link = link
        self.size = torch.zeros(layers, dtype=i32, device=device)

    def check(self, indices: torch.Tensor) -> None:
        if tuple(indices.shape[:2]) != (self.layers, self.requests):
            raise DsacacheError(
                f"slot LRU: indices shape {tuple(indices.shape)} is not "
                f"[{self.layers}, {self.requests}, k]"
            )
        if indices.numel() and int(indices.max()) >= self.max_context:
            raise DsacacheError(
                f"slot LRU: index {int(indices.max())} >= max_context {self.max_context}"
            )

    def step(self, indices: torch.Tensor) -> StepResult:
        """One decode step on CPU: indices int32 [layers, requests, k] (-1 = empty)."""
        import torch

        self.check(indices)
        idx = indices.to(torch.int32).contiguous()
        hit = torch.zeros(idx.shape, dtype=torch.uint8)
        slot = torch.full(idx.shape, -1, dtype=torch.int32)
        _walk(
            idx.numpy(),
            self.table.numpy(),
            self.slot_key.numpy(),
            self.link.numpy(),
            self.size.numpy(),
            self.slots,
            hit.numpy(),
            slot.numpy(),
        )
        return StepResult(hit, slot)
