"""gpu/: a prototype of the reserved region on real NVIDIA hardware (optional `gpu` extra).

A hot buffer of token slots per layer, filled by a token-granularity LRU (slot_lru.py, the
simulator's `token-lru` with `partition="per-layer"`), pinned in L2 by a persisting
access-policy window (l2.py), read by Triton decode sparse-attention kernels over a paged KV
pool (kernels.py, layouts.py); bench.py measures it against the baseline and the simulator.

Nothing else in dsacache imports this package; torch / triton / cuda-bindings are imported
lazily by the modules that need them.
"""
