"""The policy frontier: every demand policy's hit rate, and its fraction of MIN's hits, at
0.125 ... 4 x each trace's step footprint (requests x layers x k tokens).

Traces (benchmarks/frontier_traces.py, built once into --cache with the real CLI): six
recordings of the bundled `tiny` backbone (k = 32, 64, 128; 1024-token prompts from different
held-out passages; one batch of 4 requests) and synthetic DeepSeek-V3.2 (61 layers, k=2048) and
Llama-3.1-70B (20 layers, k=256) traces at the paper's statistics and at new-lookup 0.3 / 0.5 /
0.7. The "tune" traces (tiny-k64-p10, tiny-k32-p25, ds32-paper, llama70-paper) are the ones the
new policies' constants were chosen on; every other trace is "eval", and the summary is over
the eval traces only.

References: dsacache's own token-lru / fifo / keep-previous / min, and libCacheSim's policies
(dev dependency) on the same access stream through `dsacache export libcachesim` (object size =
KV bytes, cache size = capacity x KV bytes).

    .venv/bin/python benchmarks/policy_frontier.py [--cache frontier-traces] [--no-lcs]
        [--traces a,b] [--out docs/policy-frontier]

Writes OUT.json (everything), OUT.csv (one row per trace, capacity and policy), OUT.png and
OUT.md (the tables of docs/policies.md); --from-json redraws OUT.png and OUT.md from OUT.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsacache.report.figures import plot_fraction_of_min
from dsacache.sim import SimConfig, simulate
from dsacache.trace import open_trace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier_traces import SPECS, build, shown  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
TARGET_FRACTIONS = (0.25, 4.0)  # the target range: >= 90 % of MIN from 0.25x to 4x
OURS = ("token-lru", "fifo", "keep-previous", "hazard", "hazard-plus", "min")
CANDIDATES = ("hazard", "hazard-plus")
LCS = ("LRU", "ARC", "LIRS", "S3FIFO", "WTinyLFU", "LHD", "Sieve", "TwoQ", "LeCaR", "Cacheus")
# libCacheSim replays ~1-5 M requests/s here, 8 capacities x 10 policies each: traces above this
# many accesses (the DeepSeek-V3.2 ones) get no libCacheSim references, to keep the run short.
LCS_MAX_ACCESSES = 1_500_000


def lcs_hit_rates(trace_path: Path, caps: list[int], kv: int, names: tuple[str, ...]) -> dict:
    """libCacheSim's hit rate of each policy at each capacity (tokens), object size = KV bytes."""
    import libcachesim as lcs

    with tempfile.TemporaryDirectory(prefix="frontier-") as tmp:
        out = Path(tmp) / "t.oracleGeneral"
        cmd = [sys.executable, "-m", "dsacache", "export", "libcachesim", str(trace_path), str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        res = {}
        for name in names:
            rates = []
            for cap in caps:
                if cap == 0:
                    rates.append(0.0)
                    continue
                reader = lcs.TraceReader(
                    trace=str(out), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE
                )
                ratio, _ = getattr(lcs, name)(cache_size=cap * kv).process_trace(reader)
                rates.append(1.0 - ratio)
            res[f"lcs:{name}"] = rates
    return res


def frontier(path: Path, lcs_names: tuple[str, ...]) -> dict:
    trace = open_trace(path)
    g = trace.geometry
    fp = len(trace.requests) * g.layers * g.top_k
    caps = [int(f * fp) for f in FRACTIONS]
    rates, secs = {}, {}
    for name in OURS:
        t0 = time.perf_counter()
        rs = [simulate(trace, SimConfig(name, capacity_tokens=c)) for c in caps]
        secs[name] = time.perf_counter() - t0
        rates[name] = [r.hit_rate for r in rs]
        accesses = rs[0].accesses
    if lcs_names and accesses <= LCS_MAX_ACCESSES:
        rates.update(lcs_hit_rates(path, caps, g.kv_bytes_per_token, lcs_names))
    best = np.array(rates["min"])
    frac = {n: list(np.array(v) / np.maximum(best, 1e-12)) for n, v in rates.items()}
    return {
        "footprint_tokens": fp,
        "accesses": accesses,
        "layers": g.layers,
        "top_k": g.top_k,
        "requests": len(trace.requests),
        "kv_bytes_per_token": g.kv_bytes_per_token,
        "capacity_tokens": caps,
        "hit_rate": rates,
        "fraction_of_min": frac,
        "seconds_all_capacities": secs,
    }


def summarize(results: dict, split: dict) -> dict:
    """Per policy, over the eval traces and 0.25x..4x: the worst fraction of MIN, and the worst
    hit-rate gap to max(token-lru, keep-previous) over all fractions."""
    lo, hi = (FRACTIONS.index(f) for f in TARGET_FRACTIONS)
    out = {}
    names = {n for res in results.values() for n in res["hit_rate"]}
    for name in sorted(names):
        worst, gap, where = 1e9, 1e9, None
        for tr, res in results.items():
            if split[tr] != "eval" or name not in res["hit_rate"]:
                continue
            f = res["fraction_of_min"][name][lo : hi + 1]
            i = int(np.argmin(f))
            if f[i] < worst:
                worst, where = f[i], f"{tr} @ {FRACTIONS[lo + i]}x"
            base = np.maximum(res["hit_rate"]["token-lru"], res["hit_rate"]["keep-previous"])
            gap = min(gap, float((np.array(res["hit_rate"][name]) - base).min()))
        out[name] = {"worst_fraction_of_min": worst, "at": where, "worst_gap_to_baselines": gap}
    return out


def write_csv(results: dict, split: dict, path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trace", "split", "fraction", "capacity_tokens", "policy", "hit_rate",
                    "fraction_of_min"])  # fmt: skip
        for tr, res in results.items():
            for name, rates in res["hit_rate"].items():
                for i, f in enumerate(FRACTIONS):
                    frac = res["fraction_of_min"][name][i]
                    cap = res["capacity_tokens"][i]
                    w.writerow([tr, split[tr], f, cap, name, f"{rates[i]:.5f}", f"{frac:.4f}"])


def figure(results: dict, split: dict, path: Path) -> None:
    """One panel per trace: fraction of MIN's hits vs capacity / footprint (lcs: best of)."""
    rows = []
    for tr, res in results.items():
        lcs_best = None
        for name, rates in res["hit_rate"].items():
            if name.startswith("lcs:"):
                lcs_best = rates if lcs_best is None else list(np.maximum(lcs_best, rates))
                continue
            if name == "fifo":
                continue
            rows += [
                {"trace": f"{tr} ({split[tr]})", "partition": "global",
                 "hardware": "token region", "policy": name, "x": f, "hit_rate": rates[i]}
                for i, f in enumerate(FRACTIONS)
            ]  # fmt: skip
        if lcs_best is not None:
            rows += [
                {"trace": f"{tr} ({split[tr]})", "partition": "global",
                 "hardware": "token region", "policy": "best libCacheSim", "x": f,
                 "hit_rate": lcs_best[i]}
                for i, f in enumerate(FRACTIONS)
            ]  # fmt: skip
    plot_fraction_of_min(rows, path, x="x", xlabel="capacity / step footprint", log_x=True)


def markdown(results: dict, split: dict, summary: dict) -> str:
    """The tables of docs/policies.md: each policy's fraction of MIN's hits per trace and
    capacity (best libCacheSim policy per cell), and the summary over the eval traces."""
    head = "| trace | policy | " + " | ".join(f"{f:g}x" for f in FRACTIONS) + " |"
    lines = [head, "| --- " * (2 + len(FRACTIONS)) + "|"]
    for tr, res in results.items():
        fr = res["fraction_of_min"]
        lcs = [n for n in fr if n.startswith("lcs:")]
        rows = [(p, fr[p]) for p in ("token-lru", "keep-previous")]
        if lcs:
            best = np.max([fr[n] for n in lcs], axis=0)
            rows.append(("best of libCacheSim", list(best)))
        rows += [(p, fr[p]) for p in CANDIDATES]
        for i, (p, v) in enumerate(rows):
            name = f"{tr} ({split[tr]})" if i == 0 else ""
            lines.append(f"| {name} | {p} | " + " | ".join(f"{x:.2f}" for x in v) + " |")
        best_rate = " | ".join(f"{x:.3f}" for x in res["hit_rate"]["min"])
        lines.append(f"| | min (hit rate) | {best_rate} |")
    lines += ["", "| policy | worst fraction of MIN, 0.25x-4x, eval traces | where | "
              "worst gap to max(token-lru, keep-previous) |",
              "| --- | --- | --- | --- |"]  # fmt: skip
    for name, v in sorted(summary.items(), key=lambda kv: -kv[1]["worst_fraction_of_min"]):
        lines.append(f"| {name} | {v['worst_fraction_of_min']:.3f} | {v['at']} | "
                     f"{v['worst_gap_to_baselines']:+.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "frontier-traces")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "policy-frontier")
    ap.add_argument("--traces", default="", help="comma list (default: all)")
    ap.add_argument("--no-lcs", action="store_true", help="skip libCacheSim's policies")
    ap.add_argument("--from-json", action="store_true", help="redraw OUT.png/.md from OUT.json")
    args = ap.parse_args()
    split = {s.name: s.split for s in SPECS}
    if args.from_json:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        figure(saved["results"], split, args.out.with_suffix(".png"))
        md = markdown(saved["results"], split, saved["summary_eval"])
        args.out.with_suffix(".md").write_text(md)
        print(md)
        return
    names = [t for t in args.traces.split(",") if t] or None
    paths = build(args.cache, names)
    results = {}
    for name, path in paths.items():
        t0 = time.perf_counter()
        results[name] = frontier(path, () if args.no_lcs else LCS)
        res = results[name]
        print(f"{name} ({split[name]}, footprint {res['footprint_tokens']} tokens, "
              f"{time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
        for pol in ("token-lru", "keep-previous", *CANDIDATES, "min"):
            cells = " ".join(f"{x:.3f}" for x in res["hit_rate"][pol])
            fr = " ".join(f"{x:.2f}" for x in res["fraction_of_min"][pol])
            print(f"  {pol:<14} {cells}   of MIN: {fr}", file=sys.stderr)
    summary = summarize(results, split)
    report = {
        "generated_by": "benchmarks/policy_frontier.py" + (" --no-lcs" if args.no_lcs else ""),
        "fractions": FRACTIONS,
        "target": "online, non-prefetching: >= 0.90 of MIN's hits at 0.25x..4x on every eval "
        "trace, never more than 0.01 below max(token-lru, keep-previous)",
        "traces": {
            s.name: {"split": s.split, "command": shown(s)} for s in SPECS if s.name in paths
        },  # fmt: skip
        "results": results,
        "summary_eval": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_csv(results, split, args.out.with_suffix(".csv"))
    figure(results, split, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(markdown(results, split, summary))
    print("\nover the eval traces, capacities 0.25x..4x:")
    for name, s in sorted(summary.items(), key=lambda kv: -kv[1]["worst_fraction_of_min"]):
        print(f"  {name:<16} worst fraction of MIN {s['worst_fraction_of_min']:.3f} "
              f"({s['at']}), worst gap to max(token-lru, keep-previous) "
              f"{s['worst_gap_to_baselines']:+.3f}")  # fmt: skip
    print(f"wrote {args.out}.json/.csv/.png/.md", file=sys.stderr)


if __name__ == "__main__":
    main()
