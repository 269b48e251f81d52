"""Probe: which positional (rotary) settings move the indexer model toward two targets it misses.

Targets (NVIDIA TensorRT-LLM blog "Temporal Correlation Meets Sparse Attention", real
DeepSeek-V3.2 decode at ~64K context; docs/indexer-model.md "Open: the positional part"):
(a) layers 20-60: the offset-shifted overlap |S(t) ∩ (S(t-1) + 1)| / |S(t)| ~0.60, above the
    plain consecutive overlap (0.35-0.50), at deep new-lookup ~0.5-0.6;
(b) layers 0-1: consecutive overlap ~1-2 %, below a random query's k / context (3 % at 64K).

An investigation, not a fit: every row starts from the calibrated model and changes only the
named parameters; `rope_scatter`, `rope_tilt` and `rope_shared` are the probe's own (default-off)
GroupParams fields (indexer_model.py). Rows marked * change a model-level parameter (rope_spread
also moves the keys, heads every group's head count). Deep rows run a 2-layer all-deep trace,
early rows a 1-layer all-early trace (a group's parameters do not move another group's
selections); k = 2048, 100 steps, seeds 0-3 averaged. --pilot adds the leads on the
calibration's 13-layer pilot (seeds 0 and 2).

    PYTHONPATH=src .venv/bin/python benchmarks/probe_positional.py --context 65536 --pilot
    PYTHONPATH=src .venv/bin/python benchmarks/probe_positional.py --context 32768 --only early
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from dsacache.analysis import analyze
from dsacache.trace.geometry import INDEXERS, Geometry
from dsacache.trace.indexer_model import IndexerModel, calibrated
from dsacache.trace.synth_indexer import synthesize_indexer

# The leads of the grid (docs/indexer-model.md "Open"): the pilot rows combine them.
DEEP_LEAD = {"rope_scatter": 8.0, "rope_gain": 1.5, "rope_tilt": 4.0, "flicker": 1.0}
SHARED_LEAD = {**DEEP_LEAD, "rope_shared": 1.0, "flicker": 2.0}
EARLY_LEAD = {"rope_scatter": 32.0, "rope_gain": 4.0, "rope_tilt": 8.0, "flicker": 0.1,
              "rope_shared": 1.0}  # fmt: skip
# (label, group probed, model-level changes, group changes)
DEEP_ROWS = (
    ("baseline (calibrated)", "deep", {}, {}),
    ("gain 3", "deep", {}, {"rope_gain": 3.0}),
    ("gain 6", "deep", {}, {"rope_gain": 6.0}),
    ("rope_spread 0.5", "deep", {"rope_spread": 0.5}, {}),
    ("rope_spread 0.5, gain 4", "deep", {"rope_spread": 0.5}, {"rope_gain": 4.0}),
    ("rope_mean 0.5, spread 0.5, gain 4", "deep", {"rope_mean": 0.5, "rope_spread": 0.5},
     {"rope_gain": 4.0}),
    ("scatter 4, gain 2", "deep", {}, {"rope_scatter": 4.0, "rope_gain": 2.0}),
    ("scatter 8, gain 2", "deep", {}, {"rope_scatter": 8.0, "rope_gain": 2.0}),
    ("scatter 8, gain 1, tilt 4", "deep", {},
     {"rope_scatter": 8.0, "rope_gain": 1.0, "rope_tilt": 4.0}),
    ("scatter 8, gain 1.5, tilt 2, flicker 1.5", "deep", {},
     {"rope_scatter": 8.0, "rope_gain": 1.5, "rope_tilt": 2.0, "flicker": 1.5}),
    ("scatter 8, gain 1.5, tilt 4, flicker 1.5", "deep", {},
     {"rope_scatter": 8.0, "rope_gain": 1.5, "rope_tilt": 4.0, "flicker": 1.5}),
    ("scatter 8, gain 1.5, tilt 4, flicker 1", "deep", {}, DEEP_LEAD),
    ("scatter 8, gain 2, tilt 4, flicker 0.7", "deep", {},
     {"rope_scatter": 8.0, "rope_gain": 2.0, "rope_tilt": 4.0, "flicker": 0.7}),
    ("scatter 16, gain 1, tilt 4, flicker 1.5", "deep", {},
     {"rope_scatter": 16.0, "rope_gain": 1.0, "rope_tilt": 4.0, "flicker": 1.5}),
    ("scatter 6, gain 2, tilt 8, flicker 1", "deep", {},
     {"rope_scatter": 6.0, "rope_gain": 2.0, "rope_tilt": 8.0, "flicker": 1.0}),
    ("scatter 8, gain 2, tilt 8, flicker 1", "deep", {},
     {"rope_scatter": 8.0, "rope_gain": 2.0, "rope_tilt": 8.0, "flicker": 1.0}),
    ("shared, scatter 8, gain 1.5, tilt 4, flick 1", "deep", {}, {**DEEP_LEAD, "rope_shared": 1.0}),
    ("shared, scatter 8, gain 1.5, tilt 4, flick 2", "deep", {}, SHARED_LEAD),
    ("shared, scatter 4, gain 1.5, tilt 8, flick 2", "deep", {},
     {"rope_scatter": 4.0, "rope_gain": 1.5, "rope_tilt": 8.0, "flicker": 2.0, "rope_shared": 1.0}),
)  # fmt: skip
EARLY_ROWS = (
    ("baseline (memoryless)", "early", {}, {}),
    ("gain 4, flicker 0.1", "early", {}, {"rope_gain": 4.0, "flicker": 0.1}),
    ("scatter 8, gain 4, flicker 0.1", "early", {},
     {"rope_scatter": 8.0, "rope_gain": 4.0, "flicker": 0.1}),
    ("scatter 8, gain 4, tilt 4, flicker 0.1", "early", {},
     {"rope_scatter": 8.0, "rope_gain": 4.0, "rope_tilt": 4.0, "flicker": 0.1}),
    ("scatter 32, gain 4, tilt 4, flicker 0.1", "early", {},
     {"rope_scatter": 32.0, "rope_gain": 4.0, "rope_tilt": 4.0, "flicker": 0.1}),
    ("scatter 32, gain 4, tilt 8, flicker 0.1", "early", {},
     {"rope_scatter": 32.0, "rope_gain": 4.0, "rope_tilt": 8.0, "flicker": 0.1}),
    ("scatter 32, gain 4, tilt 8, flicker 1", "early", {},
     {"rope_scatter": 32.0, "rope_gain": 4.0, "rope_tilt": 8.0}),
    ("... tilt 4, flicker 0.1, rope_spread 0 *", "early", {"rope_spread": 0.0},
     {"rope_scatter": 32.0, "rope_gain": 4.0, "rope_tilt": 4.0, "flicker": 0.1}),
    ("scatter 32, gain 4, tilt 8, flick 0.1, 1 head *", "early", {"heads": 1},
     {"rope_scatter": 32.0, "rope_gain": 4.0, "rope_tilt": 8.0, "flicker": 0.1}),
    ("shared, scatter 32, gain 4, tilt 4, flick 0.1", "early", {},
     {**EARLY_LEAD, "rope_tilt": 4.0}),
    ("shared, scatter 32, gain 4, tilt 8, flick 0.1", "early", {}, EARLY_LEAD),
    ("shared, scatter 32, gain 4, tilt 8, flick 1", "early", {}, {**EARLY_LEAD, "flicker": 1.0}),
)  # fmt: skip
COLUMNS = ("new_lookup_fraction", "consecutive_overlap", "shifted_overlap", "page_utilization")


def probe_model(base: IndexerModel, group: str, top: dict, grp: dict) -> tuple[IndexerModel, int]:
    """The model of one row and its trace's layer count (every layer in the probed group)."""
    model = replace(base, **top).with_group(group, **grp)
    if group == "early":
        return replace(model, early_layers=1, deep_from=1.0), 1
    return replace(model, early_layers=0, deep_from=0.0), 2


def measure(model: IndexerModel, layers: int, steps: int, context: int, seed: int) -> dict:
    """analyze()'s per-layer metrics averaged over the trace's layers (all one group)."""
    geometry = Geometry(layers, 2048, 656, 132, 64)
    spec = INDEXERS["deepseek-v3.2"]
    trace = synthesize_indexer(geometry, spec, steps, context, model, seed=seed)
    per = analyze(trace).per_layer
    return {c: float(np.mean([v for v in per[c] if v is not None])) for c in COLUMNS}


def measure_seeds(model: IndexerModel, layers: int, steps: int, context: int,
                  seeds: list[int]) -> dict:  # fmt: skip
    runs = [measure(model, layers, steps, context, s) for s in seeds]
    return {c: float(np.mean([r[c] for r in runs])) for c in COLUMNS}


def pilots(steps: int, context: int, seeds: list[int]) -> None:
    """The leads on the calibration's 13-layer pilot (fit_indexer.measure_pilots: whole-trace
    values weighted to DeepSeek-V3.2's 61 layers; the calibration's seeds, 0 and 2)."""
    from fit_indexer import measure_pilots  # benchmarks/ is on sys.path when run as a script

    base = calibrated()
    models = (
        ("calibrated", base),
        ("deep lead", base.with_group("deep", **DEEP_LEAD)),
        ("shared lead", base.with_group("deep", **SHARED_LEAD)),
        ("early lead", base.with_group("early", **EARLY_LEAD)),
        ("shared+early", base.with_group("deep", **SHARED_LEAD).with_group("early", **EARLY_LEAD)),
    )
    keys = ("deep_new_lookup", "deep_shifted_overlap", "early_new_lookup", "new_lookup_fraction",
            "page_utilization", "working_set_ratio", "interlayer_overlap",
            "lookback_mean_steps")  # fmt: skip
    print("\n13-layer pilot (2 early, 3 middle, 8 deep), weighted to 61 layers")
    print(f"{'model':13s} " + " ".join(f"{k[:14]:>14s}" for k in keys))
    for name, model in models:
        m = measure_pilots(model, context, steps, seeds)
        print(f"{name:13s} " + " ".join(f"{m[k]:14.3f}" for k in keys), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--context", type=int, default=65536)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--pilot", action="store_true", help="also the 13-layer pilot of the leads")
    ap.add_argument("--only", choices=("deep", "early"), default=None)
    ap.add_argument("--json", default=None, help="write the rows here too")
    args = ap.parse_args()
    rows = [r for r in DEEP_ROWS + EARLY_ROWS if args.only in (None, r[1])]
    base = calibrated()
    print(f"k 2048, context {args.context}, {args.steps} steps, seeds {args.seeds}; "
          f"random overlap k/context = {2048 / args.context:.3f}")  # fmt: skip
    head = f"{'row':46s} {'group':5s} {'new-lk':>7s} {'consec':>7s} {'shifted':>7s} {'page':>6s}"
    print(head + "   s")
    out = []
    for label, group, top, grp in rows:
        t0 = time.time()
        model, layers = probe_model(base, group, top, grp)
        m = measure_seeds(model, layers, args.steps, args.context, args.seeds)
        dt = time.time() - t0
        print(
            f"{label:46s} {group:5s} {m['new_lookup_fraction']:7.3f} "
            f"{m['consecutive_overlap']:7.3f} {m['shifted_overlap']:7.3f} "
            f"{m['page_utilization']:6.3f} {dt:4.0f}",
            flush=True,
        )
        out.append({"row": label, "group": group, "model": top, "group_params": grp, **m})
    if args.pilot:
        pilots(args.steps, args.context, [0, 2])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
