"""`fifo`: first-in first-out over whole tokens; a hit does not change the eviction order.

Runs token-lru's hooks and kernel (lru.py) with promote=False, so the list stays in insertion
order and a full region evicts its oldest insertion.
"""

from __future__ import annotations

from ref_policies.base import register
from ref_policies.lru import ListPolicy


@register
class TokenFIFO(ListPolicy):
    name = "fifo"
    summary = "first-in first-out over whole tokens (hits do not reorder)"
    online = True
    prefetches = False
    promote = False
