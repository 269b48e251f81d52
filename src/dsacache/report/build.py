"""Build a sweep folder's report: figures (PNG) and report.html, from DIR/results.parquet and
(when one can be found or rebuilt) the sweep's trace.

A folder may also hold a hierarchy sweep in DIR/hierarchy/ (its own results.parquet: runs with
`buffer_tokens`; the demo writes one) and DIR/serving.json (`dsacache serving --json`'s object):
their rows and figures join the report."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsacache.errors import DsacacheError
from dsacache.report import figures, html
from dsacache.report.predictability_plot import PNG as PREDICTABILITY_PNG
from dsacache.report.predictability_plot import plot_predictability
from dsacache.report.slowdown_note import slowdown_note
from dsacache.sweep.store import RESULTS
from dsacache.trace.generate import describe
from dsacache.trace.model import Trace

HIT_PNG = "hit_rate.png"
SLOWDOWN_PNG = "slowdown.png"
HEATMAP_PNG = "new_lookup_heatmap.png"
MRC_PNG = "mrc.png"
FRONTIER_PNG = "fraction_of_min.png"
BUFFER_PNG = "buffer.png"
SERVING_PNG = "serving.png"
HIERARCHY_DIR = "hierarchy"
SERVING_JSON = "serving.json"
REPORT = "report.html"
STAGES = 5  # progress units: load, two sweep figures, trace figures, html


def load_rows(folder: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    path = folder / RESULTS
    if not folder.is_dir():
        raise DsacacheError(f"{folder}: not a directory")
    if not path.is_file():
        raise DsacacheError(f"{folder}: no results.parquet (run `dsacache sweep` into it first)")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise DsacacheError(f"{path}: cannot read ({type(e).__name__})") from None
    if not rows:
        raise DsacacheError(f"{path}: holds no rows")
    return rows


def sweep_trace(rows: list[dict[str, Any]], folder: Path) -> tuple[Trace, str] | None:
    """The first row's trace, rebuilt (synth) or opened (a file that still exists)."""
    from dsacache.sweep.runner import build_trace

    identity = json.loads(rows[0]["trace_identity"])
    if "synth" in identity:
        return build_trace(identity, str(folder)), f"SYNTHETIC trace {rows[0]['trace']}"
    p = Path(identity["path"])
    for cand in (p, folder / p, Path.cwd() / p):
        if cand.exists():
            return build_trace({"path": str(cand)}, str(folder)), str(cand)
    return None


def _serving(folder: Path, notes: list[str]) -> dict[str, Any] | None:
    """DIR/serving.json, when the folder holds one that reads."""
    path = folder / SERVING_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path} cannot be read ({type(e).__name__}): no serving figure")
        return None
    row_keys = ("concurrency", "baseline_tokens_per_s", "offload_tokens_per_s", "ratio")
    try:
        ok = isinstance(data["buffer_stats"]["source"], str) and all(
            all(k in row for k in row_keys) for row in data["rows"]
        )
    except (KeyError, TypeError):
        ok = False
    if not ok or not data["rows"]:
        notes.append(f"{path} is not `dsacache serving --json` output: no serving figure")
        return None
    return data


def build_report(
    folder: str | Path,
    trace: Trace | None = None,
    trace_label: str | None = None,
    progress: Callable[[int], None] | None = None,
    analyses: list[tuple[str, dict[str, Any]]] | None = None,
) -> list[Path]:
    """Write the figures and report.html into `folder`; return the files written.

    analyses: (label, `dsacache analyze --json` object) of other traces, drawn beside the
    sweep trace's own in the predictability figure.
    """
    from dsacache.analysis import analyze
    from dsacache.sim.mrc import mrc

    folder = Path(folder)
    step = progress or (lambda n: None)
    rows = load_rows(folder)
    if (folder / HIERARCHY_DIR / RESULTS).is_file():
        rows += load_rows(folder / HIERARCHY_DIR)
    llc_rows = [r for r in rows if r.get("buffer_tokens") is None]
    notes: list[str] = []
    if trace is None:
        found = sweep_trace(rows, folder)
        if found is not None:
            trace, trace_label = found
        else:
            notes.append(f"trace {rows[0]['trace']} not found: no heatmap, MRC or metrics")
    label = trace_label or (trace.source if trace is not None else "")
    if trace is not None and "SYNTHETIC" in label.upper():
        notes.append(f"The trace is SYNTHETIC ({describe(trace.meta)}), not a "
                     "model recording.")  # fmt: skip
    step(1)
    figs: list[tuple[Path, str]] = []
    if llc_rows:
        figs.append((folder / HIT_PNG, "Hit rate vs reserved MiB per policy (min = optimal)"))
        figures.plot_hit_rate(llc_rows, figs[-1][0])
        if figures.has_policy_frontier(llc_rows):
            figs.append((folder / FRONTIER_PNG, "Each policy's hits as a fraction of MIN's"))
            figures.plot_fraction_of_min(llc_rows, figs[-1][0])
    step(1)
    if llc_rows:
        figs.append((folder / SLOWDOWN_PNG, "Modelled slowdown vs reserved MiB, with the "
                     "paper's Table 4 (Llama-3.1-70B, 20 layers/GPU) for comparison. "
                     + slowdown_note(llc_rows)))  # fmt: skip
        figures.plot_slowdown(llc_rows, figs[-1][0])
    if figures.buffer_rows(rows):
        figs.append((folder / BUFFER_PNG, "HBM buffers over host memory (SGLang's HiSparse): "
                     "hit rate and host reads per step vs buffer rows per request and layer "
                     "(N / top-k), per buffer policy (min = optimal)"))  # fmt: skip
        figures.plot_buffer(rows, figs[-1][0])
    serving = _serving(folder, notes)
    if serving is not None:
        figs.append((folder / SERVING_PNG, "Modelled decode throughput vs concurrency, KV in "
                     "HBM (baseline) vs offloaded behind the HBM buffers, at the buffer hit "
                     f"rate of {serving['buffer_stats']['source']}"))  # fmt: skip
        figures.plot_serving(serving, figs[-1][0])
    step(1)
    metrics = None
    if trace is not None:
        # once: the metrics table, the heatmap's per-step values, the predictability figure
        result = analyze(trace, predictability=True)
        matrix = result.new_lookup_by_step[0]
        figs.append((folder / HEATMAP_PNG, "New-lookup fraction per layer over decode steps"))
        figures.plot_heatmap(matrix, f"{label}: |S(t,l) \\ S(t-1,l)| / |S(t,l)|", figs[-1][0])
        figs.append((folder / MRC_PNG, "Token-LRU miss-ratio curve of the trace"))
        figures.plot_mrc(mrc(trace, "global"), figs[-1][0])
        metrics = result.to_dict()
        metrics["source"] = label
    compared = ([(label, metrics)] if metrics is not None else []) + list(analyses or [])
    if compared:
        figs.append((folder / PREDICTABILITY_PNG, "What an online policy could learn: "
                     "P(selected at t+1 | streak) per layer group, and per-layer overlap with "
                     "the previous step, as is and shifted by one position"))  # fmt: skip
        plot_predictability(compared, figs[-1][0])
    step(1)
    text = html.render(f"dsacache report: {folder.name}", figs, rows, metrics, notes)
    tmp = folder / f".{REPORT}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, folder / REPORT)
    step(1)
    return [p for p, _ in figs] + [folder / REPORT]
