"""What an online policy could learn, trace beside trace: re-selection probability vs streak,
and per-layer consecutive vs offset-shifted overlap (from `dsacache analyze --json` objects)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from dsacache.analysis import PUBLIC_DSV32
from dsacache.errors import DsacacheError
from dsacache.report.figures import _plt

PNG = "predictability.png"


def read_analysis(path: Path) -> dict[str, Any]:
    """One `dsacache analyze --json` object (one-line error for anything else)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DsacacheError(f"{path}: not a readable analysis JSON ({type(e).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("per_layer"), dict):
        raise DsacacheError(f"{path}: not the output of `dsacache analyze --json`")
    for key in ("consecutive_overlap", "shifted_overlap"):
        if not isinstance(data["per_layer"].get(key), list):
            raise DsacacheError(
                f"{path}: per_layer has no {key} (written by an older dsacache analyze)"
            )
    return data


def plot_predictability(analyses: list[tuple[str, dict[str, Any]]], out: Path) -> None:
    """Left: P(selected at t+1 | streak) per trace and layer group (when the analysis has
    --predictability); right: per-layer consecutive (solid) and shifted (dashed) overlap."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drew_left = False
    for i, (label, data) in enumerate(analyses):
        color = palette[i % len(palette)]
        name = "\n".join(textwrap.wrap(label, 45))
        pred = data.get("predictability")
        if pred:
            styles = ["-", "--", ":", "-."]
            for g, group in enumerate(pred["groups"]):
                ys = [float("nan") if v is None else v for v in group["p_by_streak"]]
                lift = group["streak_lift"]
                tag = f"{name}, layers {group['layers']}" + (
                    f" (lift {lift:+.2f})" if lift is not None else ""
                )
                left.plot(pred["streak_buckets"], ys, marker="o", ms=3, color=color,
                          ls=styles[g % len(styles)], label=tag)  # fmt: skip
                drew_left = True
        per = data["per_layer"]
        layers = range(len(per["consecutive_overlap"]))
        cons = [float("nan") if v is None else v for v in per["consecutive_overlap"]]
        shift = [float("nan") if v is None else v for v in per["shifted_overlap"]]
        right.plot(layers, cons, color=color, lw=1.5, label=f"{name}: consecutive")
        right.plot(layers, shift, color=color, lw=1.2, ls="--", label=f"{name}: shifted by one")
    lo, hi = PUBLIC_DSV32["consecutive_overlap layers 20-60"]
    right.axhspan(lo, hi, xmin=0, xmax=1, color="grey", alpha=0.15,
                  label=f"DeepSeek-V3.2 consecutive, layers 20-60 ({lo:.2f}-{hi:.2f})")  # fmt: skip
    right.axhline(PUBLIC_DSV32["shifted_overlap"][0], color="grey", ls=":", lw=1,
                  label="DeepSeek-V3.2 shifted (~0.60)")  # fmt: skip
    right.set_xlabel("layer")
    right.set_ylabel("overlap with the previous step")
    right.set_ylim(0, 1.02)
    right.set_title("consecutive |S(t) ∩ S(t-1)| / |S(t)| vs shifted |S(t) ∩ (S(t-1)+1)| / |S(t)|",
                    fontsize=8)  # fmt: skip
    right.grid(True, alpha=0.3)
    right.legend(fontsize=6)
    if drew_left:
        left.set_ylim(0, 1.02)
        left.legend(fontsize=6)
    else:
        left.text(0.5, 0.5, "no predictability counts\n(run dsacache analyze --predictability)",
                  ha="center", va="center", transform=left.transAxes)  # fmt: skip
    left.set_xlabel("streak: consecutive steps selected up to t")
    left.set_ylabel("P(selected at t+1)")
    left.set_title("re-selection probability vs streak (all ranks)", fontsize=8)
    left.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
