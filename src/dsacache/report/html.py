"""One self-contained report.html: figures inlined as base64 PNG, the results table, and the
trace metrics beside the paper's."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from dsacache.analysis import PAPER

COLUMNS = (
    "trace", "policy", "capacity_mib", "effective_capacity_mib", "partition", "hardware",
    "hit_rate", "buffer_tokens", "buffer_policy", "host_link", "buffer_hit_rate",
    "host_bytes_per_step_p99", "host_time_s", "slowdown", "step_time_s", "tokens_per_s_per_user",
)  # fmt: skip
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#eee}td.s{text-align:left}img{max-width:100%}"
    ".note{background:#fff3cd;padding:.5em;border:1px solid #e0c060}"
)


def _cell(v: Any) -> str:
    if v is None:
        return "<td>-</td>"
    if isinstance(v, float):
        return f"<td>{v:.4g}</td>"
    if isinstance(v, int):
        return f"<td>{v:,}</td>"
    return f'<td class="s">{html.escape(str(v))}</td>'


def results_table(rows: list[dict[str, Any]]) -> str:
    # a column every row leaves empty (the buffer's in a sweep without one) is not shown
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(r[c]) for c in cols) + "</tr>" for r in rows)
    return f'<table class="results"><tr>{head}</tr>{body}</table>'


def metrics_table(metrics: dict[str, Any]) -> str:
    body = "".join(
        f'<tr><td class="s">{html.escape(name)}</td>{_cell(metrics.get(name))}{_cell(ref)}</tr>'
        for name, ref in PAPER.items()
    )
    return (
        '<table class="metrics"><tr><th>metric</th><th>this trace</th><th>paper</th></tr>'
        f"{body}</table>"
    )


def image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def render(
    title: str,
    figures: list[tuple[Path, str]],
    rows: list[dict[str, Any]],
    metrics: dict[str, Any] | None,
    notes: list[str],
) -> str:
    parts = [
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    parts.append("<h2>Figures</h2>")
    parts += [image(p, c) for p, c in figures]
    if metrics is not None:
        parts.append(f"<h2>Trace metrics vs the paper</h2><p>{html.escape(metrics['source'])}: "
                     f"{metrics['steps']} steps, {metrics['layers']} layers, k={metrics['top_k']}"
                     f", working-set window {metrics['window']} steps</p>")  # fmt: skip
        parts.append(metrics_table(metrics))
    parts.append(f"<h2>Results ({len(rows)} runs)</h2>")
    parts.append(results_table(rows))
    parts.append("</body></html>\n")
    return "\n".join(parts)
