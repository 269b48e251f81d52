"""Fit and check the GPU L2 model (sim/llc/gpu_l2.py) against the public gpu-l2-cache sweeps.

    .venv/bin/python benchmarks/calibrate_l2.py          # the fitted structure: table + figure
    .venv/bin/python benchmarks/calibrate_l2.py --fit    # joint and leave-one-out fits on a grid
    .venv/bin/python benchmarks/calibrate_l2.py --fit --base '{"set_hash": "mix"}' \\
        --grid '{"ways": [16, 32], "replicate": [0.25, 0.35]}'     # another family
    .venv/bin/python benchmarks/calibrate_l2.py --sharp  # the synthetic sharp-knee GPU
    .venv/bin/python benchmarks/calibrate_l2.py --inflight-check --seeds 1,2,3
                                                  # each curve with the other's data in flight

The model side is the bandwidth-equivalent hit rate (l2_measured.bandwidth_equivalent_hit_rate:
the modelled time per request converted like the measured bandwidths; with far_cost 1 and
overlap 0, the fraction served by L2). `--fit` replays every structure of the grid (the keyword
arguments of L2Structure: `--base` plus every combination of `--grid`) on both curves at the
measured sizes from 0.6 x L2 to min(100 MiB, 1.7 x L2) (below, model and measurement are 1
within noise; above, 0), scores each with every `--overlaps` and `--far-costs` value (conversion
parameters: no replay needed) and prints the joint fit (smallest larger-of-two max |error|) and the
leave-one-out fits: the structure that fits one curve best, scored on the other. Rows are
appended to `--out` (JSON lines) so that a fit can be re-scored without replaying
(`--rescore FILE`). The default run checks the fitted structure over 8-100 MiB, writes
docs/gpu-l2-model.png and prints the markdown table of docs/gpu-l2-model.md.
Every replay warms up by the steady-state rule of gpu_l2.sweep; ~1 min per structure and curve
on a free core.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dsacache.sim.llc.gpu_l2 import (
    FITTED,
    L2Structure,
    gpu_l2_preset,
    preset_sweep,
    sharp_knee_example,
)
from dsacache.sim.llc.l2_measured import bandwidth_equivalent_hit_rate, measured_sweep
from dsacache.units import KIB

CURVES = ("h200", "a100-80gb")
LO_KIB, HI_KIB = 8 * KIB, 100 * KIB + 512
FIGURE = Path(__file__).parents[1] / "docs" / "gpu-l2-model.png"


def measured_sizes(name: str, lo_l2: float = 0.0, hi_l2: float = 1e9) -> list[int]:
    """Measured sizes of `name` from max(8 MiB, lo_l2 x L2) to min(100 MiB, hi_l2 x L2)."""
    p = gpu_l2_preset(name)
    ref = measured_sweep(name, p.l2_bytes)
    l2_kib = p.l2_bytes / KIB
    keep = (ref.sizes_kib >= max(LO_KIB, lo_l2 * l2_kib)) & (
        ref.sizes_kib <= min(HI_KIB, hi_l2 * l2_kib)
    )
    return [int(s) for s in ref.sizes_kib[keep]]


def replay(structure: L2Structure, name: str, sizes: list[int], seeds: list[int]) -> dict:
    """Hit and near rates at `sizes`, averaged over the replays with each seed (block placement,
    run times, replica choice: the model's own sampling noise, about 0.01-0.03 per point)."""
    runs = [preset_sweep(gpu_l2_preset(name), sizes, structure=structure, seed=s) for s in seeds]
    hit = np.mean([r.hit_rate for r in runs], axis=0).tolist()
    near = np.mean([r.near_fraction for r in runs], axis=0).tolist()
    return {"sizes_kib": sizes, "hit_rate": hit, "near": near, "seeds": seeds}


def score(run: dict, name: str, far_cost: float = 1.0, overlap: float = 0.0) -> dict:
    """Model (bandwidth-equivalent) vs measured at the replayed sizes: max |error| and where."""
    p = gpu_l2_preset(name)
    ref = measured_sweep(name, p.l2_bytes)
    near, hit = np.array(run["near"]), np.array(run["hit_rate"])
    model = bandwidth_equivalent_hit_rate(near, hit - near, ref.b_l2, ref.b_dram, far_cost, overlap)
    meas = np.array([ref.at(s) for s in run["sizes_kib"]])
    d = model - meas
    i = int(np.abs(d).argmax())
    return {
        "model": model.tolist(),
        "measured": meas.tolist(),
        "max_err": float(abs(d[i])),
        "worst_l2": run["sizes_kib"][i] * KIB / p.l2_bytes,
        "worst_sign": float(np.sign(d[i])),
    }


def fit_report(rows: list[dict], overlaps: list[float], far_costs: list[float]) -> None:
    """Joint and leave-one-out fits over the rows (one replay per structure) x overlaps x
    far-hit costs (both enter the conversion only)."""
    cands = []
    for row in rows:
        for a, phi in itertools.product(overlaps, far_costs):
            errs = {n: score(row[n], n, phi, a) for n in CURVES}
            cands.append((row["structure"], (a, phi), errs))

    def show(c: tuple) -> str:
        s, (a, phi), e = c
        errs = "  ".join(
            f"{n} {e[n]['max_err']:.4f} ({'+' if e[n]['worst_sign'] > 0 else '-'} at "
            f"{e[n]['worst_l2']:.2f} x L2)"
            for n in CURVES
        )
        return f"{json.dumps(s)} overlap {a} far_cost {phi}: {errs}"

    ranked = sorted(cands, key=lambda c: max(c[2][n]["max_err"] for n in CURVES))
    print("joint fit (smallest larger-of-two max |error|), best 5:")
    for c in ranked[:5]:
        print("  " + show(c))
    for n in CURVES:
        other = next(x for x in CURVES if x != n)
        best = min(cands, key=lambda c: c[2][n]["max_err"])
        print(f"leave-one-out: fitted on {n}, predicts {other}:\n  " + show(best))


def fit(
    base: dict,
    grid: dict,
    conversion: tuple[list[float], list[float]],
    seeds: list[int],
    out: Path | None,
) -> None:
    """Replay every structure of the grid on both curves, then fit_report over `conversion`
    (overlaps, far-hit costs)."""
    rows = []
    keys = list(grid)
    for values in itertools.product(*grid.values()):
        spec = base | dict(zip(keys, values, strict=True))
        t = time.perf_counter()
        row = {"structure": spec}
        for n in CURVES:
            row[n] = replay(L2Structure(**spec), n, measured_sizes(n, 0.6, 1.7), seeds)
        rows.append(row)
        errs = {n: round(score(row[n], n)["max_err"], 4) for n in CURVES}
        print(json.dumps({"structure": spec, "max_err": errs, "s": round(time.perf_counter() - t)}))
        if out is not None:
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    fit_report(rows, *conversion)


def inflight_check(seeds: list[int]) -> None:
    """The fitted structure on each curve with its documented SM count and with the SM count
    that gives it the other GPU's data in flight per L2 (SMs x 2 blocks x 512 KiB / L2: 2.2 on
    the H200, 2.7 on the A100): if the knee's width follows the data in flight, the swap fits
    worse."""
    ratio = {}
    for n in CURVES:
        p = gpu_l2_preset(n)
        ratio[n] = p.sms * p.blocks_per_sm * 512 * KIB / p.l2_bytes
    for n in CURVES:
        p = gpu_l2_preset(n)
        other = next(x for x in CURVES if x != n)
        swapped = round(p.sms * ratio[other] / ratio[n])
        for sms in (p.sms, swapped):
            sizes = measured_sizes(n, 0.6, 1.7)
            runs = [preset_sweep(p, sizes, sms=sms, seed=s) for s in seeds]  # the fitted structure
            run = {
                "sizes_kib": sizes,
                "hit_rate": np.mean([r.hit_rate for r in runs], axis=0).tolist(),
                "near": np.mean([r.near_fraction for r in runs], axis=0).tolist(),
            }
            e = score(run, n)
            inflight = sms * p.blocks_per_sm * 512 * KIB / p.l2_bytes
            past = np.array(sizes) * KIB >= 0.9 * p.l2_bytes  # where the spread acts
            d = np.abs(np.array(e["model"]) - np.array(e["measured"]))[past]
            print(
                f"{n}: {sms} SMs (data in flight {inflight:.2f} x L2): max |error| "
                f"{e['max_err']:.4f} at {e['worst_l2']:.2f} x L2; from 0.9 x L2 on: max "
                f"{d.max():.4f}, mean {d.mean():.4f}"
            )


def sharp() -> None:
    """The synthetic sharp-knee GPU (gpu_l2.sharp_knee_example) and, for contrast, the H100
    preset swept the same way with the benchmark's 512 KiB chunks."""
    ex = sharp_knee_example()
    l2_kib = ex.preset.l2_bytes // KIB
    fractions = [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.2, 1.3]
    for label, chunk in (("sharp-knee example", ex.chunk_kib), ("same GPU, 512 KiB chunks", 512)):
        sizes = [max(1, round(f * l2_kib / chunk)) * chunk for f in fractions]
        r = preset_sweep(ex.preset, sizes, chunk)
        row = " ".join(f"{s / l2_kib:.2f}:{h:.3f}" for s, h in zip(sizes, r.hit_rate, strict=True))
        print(f"{label} (chunk {chunk} KiB): {row}")


def report(seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    print(f"structure: {FITTED}, seeds {seeds}")
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = {}
    for name, color in zip(CURVES, ("C0", "C1"), strict=True):
        p = gpu_l2_preset(name)
        e = score(replay(FITTED, name, measured_sizes(name), seeds), name, FITTED.far_cost)
        e["sizes_kib"] = measured_sizes(name)
        rows[name] = e
        x = np.array(e["sizes_kib"]) * KIB / p.l2_bytes
        ax.plot(x, e["measured"], "o", color=color, ms=4, label=f"{name} measured")
        ax.plot(x, e["model"], "-", color=color, label=f"{name} model")
        print(f"{name}: max |model - measured| = {e['max_err']:.4f} at {e['worst_l2']:.3f} x L2")
    h100 = preset_sweep(gpu_l2_preset("h100"), rows["h200"]["sizes_kib"])
    ex = sharp_knee_example()
    l2_kib = ex.preset.l2_bytes // KIB
    ex_sizes = sorted({max(1, round(f / 20 * l2_kib / ex.chunk_kib)) for f in range(10, 31)})
    ex_sizes = [n * ex.chunk_kib for n in ex_sizes]
    ex_run = preset_sweep(ex.preset, ex_sizes, ex.chunk_kib)
    ax.plot(
        np.array(h100.sizes_kib) * KIB / gpu_l2_preset("h100").l2_bytes,
        h100.hit_rate,
        "--",
        color="C2",
        label="h100 model (prediction)",
    )
    ax.plot(
        np.array(ex_sizes) / l2_kib,
        ex_run.hit_rate,
        ":",
        color="C3",
        label=f"{ex.preset.name} model (prediction)",
    )
    ax.set_xlabel("data set / L2 size")
    ax.set_ylabel("L2 hit rate")
    ax.set_xlim(0.4, 2.0)
    ax.set_title("gpu-l2-cache sweep: GPU L2 model vs public measurements")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=120)
    print(f"wrote {FIGURE}")
    print(
        "\n| data set KiB | H200 measured | H200 model | A100 measured | A100 model | H100 model |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    a = {s: j for j, s in enumerate(rows["a100-80gb"]["sizes_kib"])}
    for i, s in enumerate(rows["h200"]["sizes_kib"]):
        h = rows["h200"]
        j = a.get(s)
        am = "-" if j is None else f"{rows['a100-80gb']['measured'][j]:.3f}"
        ao = "-" if j is None else f"{rows['a100-80gb']['model'][j]:.3f}"
        print(
            f"| {s:,} | {h['measured'][i]:.3f} | {h['model'][i]:.3f} | {am} | {ao} "
            f"| {h100.hit_rate[i]:.3f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="joint and leave-one-out fits on a grid")
    ap.add_argument("--base", default="{}", help="JSON: L2Structure arguments over FITTED's")
    ap.add_argument(
        "--grid",
        default='{"replicate": [0.5, 0.55, 0.6, 0.65], "time_spread": [0.4, 0.5, 0.6, 0.7]}',
        help="JSON: L2Structure argument -> values; every combination is replayed",
    )
    ap.add_argument("--overlaps", default="0", help="comma-separated overlap values to score")
    ap.add_argument("--far-costs", default="1", help="comma-separated far-hit costs to score")
    ap.add_argument("--out", type=Path, help="append the replayed rows here (JSON lines)")
    ap.add_argument("--rescore", type=Path, help="score rows saved with --out, no replay")
    ap.add_argument("--sharp", action="store_true", help="the synthetic sharp-knee GPU")
    ap.add_argument("--seeds", default="1", help="comma-separated seeds to average over")
    ap.add_argument(
        "--inflight-check", action="store_true", help="swap the two GPUs' data in flight"
    )
    args = ap.parse_args()
    overlaps = [float(x) for x in args.overlaps.split(",")]
    far_costs = [float(x) for x in args.far_costs.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.rescore:
        fit_report([json.loads(ln) for ln in args.rescore.open()], overlaps, far_costs)
    elif args.fit:
        base = asdict(FITTED) | json.loads(args.base)
        fit(base, json.loads(args.grid), (overlaps, far_costs), seeds, args.out)
    elif args.sharp:
        sharp()
    elif args.inflight_check:
        inflight_check(seeds)
    else:
        report(seeds)


if __name__ == "__main__":
    main()
