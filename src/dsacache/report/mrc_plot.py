"""The miss-ratio-curve figure (used by `dsacache mrc --out` and the report)."""

from __future__ import annotations

from pathlib import Path

from dsacache.sim.mrc import MissRatioCurve

PLOT_POINTS = 2000


def plot_curve(curve: MissRatioCurve, out: Path, top: int) -> None:
    """Hit rate (%) vs reserved MiB as a step plot, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caps = curve.points(PLOT_POINTS, max(top, 1))
    rate = 100.0 * curve.hits_at_many(caps) / max(curve.accesses, 1)
    mib = curve.capacity_mib(caps)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    # Log x only when the rising part spans more than two decades; it starts a little below
    # the first capacity that hits (below it the curve is 0).
    first = int(curve.capacities_tokens[0]) if curve.capacities_tokens.size else 0
    if first > 0 and top / first > 100:
        ax.set_xscale("log")
        keep = caps >= max(first // 2, 1)
        mib, rate = mib[keep], rate[keep]
    else:
        ax.set_xlim(0, max(float(mib[-1]), 1e-9))
    ax.step(mib, rate, where="post", lw=1.6, label="token-LRU")
    plateau = 100.0 * curve.max_hits / max(curve.accesses, 1)
    ax.axhline(plateau, ls="--", lw=0.8, color="grey", label=f"no eviction ({plateau:.1f} %)")
    ax.set_xlabel("reserved capacity (MiB)")
    ax.set_ylabel("hit rate (% of KV gathers)")
    ax.set_ylim(0, max(5.0, min(100.0, plateau * 1.1 + 1)))
    ax.grid(True, which="both", alpha=0.3)
    mode = "exact" if curve.exact else f"SHARDS R={curve.sample_rate:g}"
    ax.set_title(
        f"{Path(curve.source).name}: {curve.layers} layers, k={curve.top_k}, "
        f"{curve.kv_bytes_per_token} B/token/layer\n"
        f"token-LRU miss-ratio curve, partition {curve.partition}, {mode}, "
        f"{curve.accesses:,} accesses",
        fontsize=10,
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
