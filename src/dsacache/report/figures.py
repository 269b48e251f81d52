"""matplotlib (Agg) figures of a sweep's results and of its trace, written as PNG."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from dsacache.analysis import analyze
from dsacache.sim.config import mb_to_mib
from dsacache.sim.mrc import MissRatioCurve
from dsacache.trace.model import Trace
from dsacache.units import MIB

# The paper's Table 4 (Llama-3.1-70B, 20 layers/GPU, 100 tok/s/user): reserved MB -> slowdown.
# The paper writes MB; plotted against MiB axes as 10**6 B (5 MB = 4.77 MiB).
PAPER_TABLE4 = {0: 1.87, 5: 1.67, 10: 1.5, 15: 1.3, 20: 1.15}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_lookup_matrix(trace: Trace, request: int = 0) -> np.ndarray:
    """[steps, layers] new-lookup fraction of one request (row 0 is NaN: no previous step)."""
    return analyze(trace).new_lookup_by_step[request]


Facet = tuple[str, str, str, int]


def _facets(rows: list[dict[str, Any]], by_weights: bool) -> dict[Facet, list[dict[str, Any]]]:
    """Rows by (trace, partition, hardware[, weights bytes per layer]): one panel each. Hit
    rates do not depend on the weights (-1 in the key: one panel, and a hit rate that rows
    differing only in the perf-model settings share is drawn once)."""
    groups: dict[Facet, list[dict[str, Any]]] = {}
    seen: set[tuple] = set()
    for r in rows:
        wb = r["weights_bytes_per_layer"] if by_weights else -1
        key = (r["trace"], r["partition"], r["hardware"], wb)
        point = (*key, r["policy"], r["effective_capacity_mib"])
        if not by_weights and point in seen:
            continue
        seen.add(point)
        groups.setdefault(key, []).append(r)
    return groups


def _lines(ax: Any, rows: list[dict[str, Any]], y: str, scale: float) -> None:
    by_policy: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r[y] is not None:
            by_policy.setdefault(r["policy"], []).append((r["effective_capacity_mib"], r[y]))
    for policy in sorted(by_policy, key=lambda p: (p != "min", p)):
        pts = sorted(by_policy[policy])
        style = {"color": "black", "ls": "--", "lw": 2} if policy == "min" else {"lw": 1.5}
        ax.plot([p[0] for p in pts], [scale * p[1] for p in pts], marker="o", ms=3,
                label=policy + (" (optimal)" if policy == "min" else ""), **style)  # fmt: skip


def _facet_figure(rows: list[dict[str, Any]], y: str, ylabel: str, scale: float,
                  out: Path, paper: bool) -> None:  # fmt: skip
    plt = _plt()
    groups = _facets(rows, by_weights=paper)
    n = len(groups)
    cols = min(n, 2)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 4.2 * nrows), squeeze=False)
    for ax, ((trace, part, hw, wb), grp) in zip(axes.flat, groups.items(), strict=False):
        _lines(ax, grp, y, scale)
        if paper:
            mb = list(PAPER_TABLE4)
            ax.plot([mb_to_mib(m) for m in mb], [PAPER_TABLE4[m] for m in mb], "s", color="red",
                    ms=7, label="paper Table 4 (Llama-3.1-70B; MB = 1e6 B)")  # fmt: skip
            ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("reserved capacity (MiB)")
        ax.set_ylabel(ylabel)
        weights = f", weights {wb / MIB:,.0f} MiB/layer" if wb >= 0 else ""
        ax.set_title(f"{trace}\npartition {part}, {hw}{weights}", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_hit_rate(rows: list[dict[str, Any]], out: Path) -> None:
    """Hit rate (%) vs reserved MiB, one line per policy, one panel per trace/partition/HW."""
    _facet_figure(rows, "hit_rate", "hit rate (% of KV gathers)", 100.0, out, paper=False)


def plot_slowdown(rows: list[dict[str, Any]], out: Path) -> None:
    """Modelled slowdown vs reserved MiB per policy, with the paper's Table 4 points."""
    _facet_figure(rows, "slowdown", "slowdown vs all-hit ideal", 1.0, out, paper=True)


def has_policy_frontier(rows: list[dict[str, Any]]) -> bool:
    """Whether the rows hold MIN and at least two other policies on one panel: then the
    fraction-of-MIN figure says something the hit-rate figure does not."""
    return any(
        "min" in {r["policy"] for r in grp} and len({r["policy"] for r in grp}) >= 3
        for grp in _panels(rows).values()
    )


def _panels(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Rows by (trace, partition, hardware): hit rates do not depend on the perf settings."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["trace"], r["partition"], r["hardware"]), []).append(r)
    return groups


def plot_fraction_of_min(rows: list[dict[str, Any]], out: Path, x: str = "effective_capacity_mib",
                         xlabel: str = "reserved capacity (MiB)",
                         log_x: bool = False) -> None:  # fmt: skip
    """Each policy's hits as a fraction of MIN's at the same capacity (hit rates share the
    access count, so their ratio is the ratio of hits), one panel per trace/partition/HW."""
    plt = _plt()
    groups = {k: g for k, g in _panels(rows).items() if any(r["policy"] == "min" for r in g)}
    n = max(len(groups), 1)
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.8 * nrows), squeeze=False)
    names = sorted({r["policy"] for r in rows} - {"min"})
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {p: palette[i % len(palette)] for i, p in enumerate(names)}  # same in every panel
    for ax, ((trace, part, hw), grp) in zip(axes.flat, groups.items(), strict=False):
        best = {r[x]: r["hit_rate"] for r in grp if r["policy"] == "min"}
        by_policy: dict[str, dict[float, float]] = {}
        for r in grp:
            if r["policy"] != "min" and r["hit_rate"] is not None and best.get(r[x]):
                by_policy.setdefault(r["policy"], {})[r[x]] = r["hit_rate"] / best[r[x]]
        for policy in sorted(by_policy):
            pts = sorted(by_policy[policy].items())
            lw = 2.2 if policy.startswith("hazard") else 1.2
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=policy,
                    color=color[policy], lw=lw)  # fmt: skip
        ax.axhline(1.0, color="black", ls="--", lw=1, label="min (optimal)")
        ax.axhline(0.9, color="grey", ls=":", lw=1)
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of MIN's hits")
        name = "\n".join(textwrap.wrap(str(trace), 60))  # a long synthetic name overflows the panel
        ax.set_title(f"{name}\npartition {part}, {hw}", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_heatmap(matrix: np.ndarray, title: str, out: Path) -> None:
    """Per-layer new-lookup fraction over decode steps."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    im = ax.imshow(matrix.T, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                   interpolation="nearest")  # fmt: skip
    fig.colorbar(im, ax=ax, label="new-lookup fraction")
    ax.set_xlabel("decode step")
    ax.set_ylabel("layer")
    ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=8)
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_mrc(curve: MissRatioCurve, out: Path) -> None:
    """The trace's token-LRU miss-ratio curve (hit rate vs reserved MiB)."""
    from dsacache.report.mrc_plot import plot_curve

    plot_curve(curve, out, max(curve.saturation_tokens, 1))


def plot_serving(result: dict[str, Any], out: Path) -> None:
    """Decode throughput vs concurrency, baseline (all KV in HBM) and offload (HBM buffer over
    host memory), from `dsacache serving --json`'s object; dotted lines mark each HBM cap."""
    plt = _plt()
    rows = sorted(result["rows"], key=lambda r: r["concurrency"])
    x = [r["concurrency"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    base = ax.plot(x, [r["baseline_tokens_per_s"] for r in rows], marker="o", label="baseline")
    off = ax.plot(x, [r["offload_tokens_per_s"] for r in rows], marker="s", label="offload")
    for line, cap, what in ((base[0], "baseline_max_concurrency", "baseline"),
                            (off[0], "offload_max_concurrency", "offload")):  # fmt: skip
        if result.get(cap):
            ax.axvline(result[cap], color=line.get_color(), ls=":", lw=1,
                       label=f"{what} HBM cap ({result[cap]} requests)")  # fmt: skip
    for r in rows:
        if r["ratio"] is not None:
            at = (r["concurrency"], r["offload_tokens_per_s"])
            ax.annotate(f"{r['ratio']:.2f}x", at, textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=7)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("decode tokens/s (all GPUs)")
    title = (
        f"{result['model']} on {result['gpus']} x {result['hardware']}, "
        f"{result['input_tokens']} in / {result['output_tokens']} out, "
        f"buffer {result['buffer_tokens']}, hit rate {rows[0]['buffer_hit_rate']:.3g}"
    )
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def buffer_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of hierarchy runs (with an HBM buffer)."""
    return [r for r in rows if r.get("buffer_tokens") is not None]


def plot_buffer(rows: list[dict[str, Any]], out: Path, host: bool = True) -> None:
    """The HBM level per trace: buffer hit rate and, with `host`, host MiB per step (mean solid,
    p99 dotted) vs N / k, one line per buffer policy (min = optimal). The buffer's numbers do
    not depend on the perf axes or the LLC region, so each (trace, policy, N) is drawn once.
    With host, one row of two panels per trace; without, one hit-rate panel per trace in rows of
    up to five."""
    plt = _plt()
    points: dict[str, dict[str, dict[float, dict[str, Any]]]] = {}
    for r in buffer_rows(rows):
        x = r["buffer_tokens"] / r["top_k"]
        points.setdefault(r["trace"], {}).setdefault(r["buffer_policy"], {}).setdefault(x, r)
    n = max(len(points), 1)
    if host:
        fig, grid = plt.subplots(n, 2, figsize=(12, 4.2 * n), squeeze=False)
        pairs = [(a, b) for a, b in grid]
    else:
        cols = min(n, 5)
        nrows = -(-n // cols)
        fig, grid = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
        pairs = [(a, None) for a in grid.flat]
        for ax in list(grid.flat)[n:]:
            ax.set_visible(False)
    for (trace, by_policy), (hit_ax, host_ax) in zip(points.items(), pairs, strict=False):
        for policy in sorted(by_policy, key=lambda p: (p != "min", p)):
            pts = sorted(by_policy[policy].items())
            xs = [p[0] for p in pts]
            style = {"color": "black", "ls": "--", "lw": 2} if policy == "min" else {"lw": 1.5}
            label = policy + (" (optimal)" if policy == "min" else "")
            line = hit_ax.plot(xs, [100 * p[1]["buffer_hit_rate"] for p in pts], marker="o",
                               ms=3, label=label, **style)[0]  # fmt: skip
            if host_ax is None:
                continue
            color = line.get_color()
            host_ax.plot(xs, [p[1]["host_bytes_per_step_mean"] / MIB for p in pts],
                         marker="o", ms=3, color=color, lw=style["lw"],
                         label=f"{label} mean")  # fmt: skip
            host_ax.plot(xs, [p[1]["host_bytes_per_step_p99"] / MIB for p in pts],
                         ls=":", color=color, lw=1, label=f"{label} p99")  # fmt: skip
        name = "\n".join(textwrap.wrap(str(trace), 70))
        hit_ax.set_ylabel("buffer hit rate (% of selected rows)")
        axes = [hit_ax] if host_ax is None else [hit_ax, host_ax]
        if host_ax is not None:
            host_ax.set_ylabel("host reads per step (MiB)")
        for ax in axes:
            ax.set_xlabel("buffer rows per request and layer, N / top-k")
            ax.set_title(name, fontsize=8)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
