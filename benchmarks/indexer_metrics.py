"""Measurements the indexer-model fit and its benchmark need beyond `dsacache analyze`.

- predictability: P(re-selected at t+1 | streak >= 3) - P(re-selected at t+1 | streak 1) over
  chosen layers (streak = consecutive steps the token has been selected, up to t).
- shifted_overlap: |S(t) ∩ (S(t-1) + 1)| / |S(t)|: the share of a step's selection that sits at
  the same relative offsets (query position - key position) as the previous step's.
- group_metrics: analyze()'s per-layer values pooled over layer groups.

Written before the analysis stage had them; now `dsacache analyze` reports the offset-shifted
overlap per layer and `dsacache analyze --predictability` the streak lift, with the same
definitions (docs/indexer-model.md). The fit keeps these plain-numpy versions so its recorded
calibration (trace/data/indexer_calibration.json) reproduces exactly; they double as an
independent check of the shipped kernels.
"""

from __future__ import annotations

import numpy as np

from dsacache.analysis import AnalysisResult
from dsacache.trace import Trace


def predictability(trace: Trace, layers: list[int]) -> dict[str, float]:
    """Re-selection rate at the next step by streak (1, 2, >= 3) over `layers`, all requests."""
    hits = np.zeros(3)
    seen = np.zeros(3)
    for req in trace.requests:
        size = req.max_context + 1
        idx = np.asarray(req.indices[:])
        for ly in layers:
            streak = np.zeros(size, np.int32)
            for t in range(idx.shape[0] - 1):
                cur = idx[t, ly]
                cur = cur[cur >= 0]
                s = streak[cur] + 1
                streak[:] = 0
                streak[cur] = s
                nxt = np.zeros(size, bool)
                nn = idx[t + 1, ly]
                nxt[nn[nn >= 0]] = True
                b = np.minimum(s, 3) - 1
                np.add.at(seen, b, 1)
                np.add.at(hits, b, nxt[cur])
    rate = hits / np.maximum(seen, 1)
    return {
        "p_streak1": float(rate[0]),
        "p_streak2": float(rate[1]),
        "p_streak3plus": float(rate[2]),
        "difference": float(rate[2] - rate[0]),
        "count_streak1": int(seen[0]),
        "count_streak3plus": int(seen[2]),
    }


def shifted_overlap(trace: Trace, layers: list[int]) -> dict[str, float]:
    """Mean over (t >= 1, layer) of the plain and the offset-shifted consecutive overlap."""
    plain, shifted = [], []
    for req in trace.requests:
        idx = np.asarray(req.indices[:])
        for ly in layers:
            for t in range(1, idx.shape[0]):
                a, b = idx[t - 1, ly], idx[t, ly]
                a, b = a[a >= 0], b[b >= 0]
                if b.size == 0:
                    continue
                plain.append(np.isin(b, a).mean())
                shifted.append(np.isin(b, a + 1).mean())
    return {"plain": float(np.mean(plain)), "shifted": float(np.mean(shifted))}


def layer_groups(model_groups: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for ly, g in enumerate(model_groups):
        out.setdefault(g, []).append(ly)
    return out


def group_metrics(res: AnalysisResult, groups: dict[str, list[int]]) -> dict[str, dict]:
    """analyze()'s per-layer values averaged within each group (layers weigh alike)."""
    out = {}
    for g, lys in groups.items():
        row = {}
        for name, values in res.per_layer.items():
            vals = [values[ly] for ly in lys if values[ly] is not None]
            row[name] = float(np.mean(vals)) if vals else None
        out[g] = row
    return out
