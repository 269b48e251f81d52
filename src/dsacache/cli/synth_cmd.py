"""`dsacache synth`: write a synthetic trace (indexer-model or statistics generator)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.analysis import PAPER, analyze
from dsacache.cli.app import app
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError
from dsacache.trace import Trace
from dsacache.trace.generate import (
    DEFAULT_GENERATOR,
    Indexer,
    check_generator,
    generate,
    indexer_setup,
    progress_total,
)
from dsacache.trace.geometry import PRESETS, preset
from dsacache.trace.indexer_model import GROUPS
from dsacache.trace.synth import PAPER_TARGETS, SynthTargets

_DEFAULTS = SynthTargets()


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Trace store to write (a directory)."),
    generator: str = typer.Option(
        DEFAULT_GENERATOR,
        "--generator",
        help="indexer: score every token with a simulated lightning indexer and keep the exact "
        "top-k (calibrated to public DeepSeek-V3.2 measurements; docs/indexer-model.md). "
        "stats: assemble each selection to hit the statistics targets below (faster).",
    ),
    preset_name: str = typer.Option(
        "deepseek-v3.2", "--preset", help=f"Model geometry: {', '.join(PRESETS)}."
    ),
    steps: int = typer.Option(
        200,
        "--steps",
        help="Decode steps (the indexer generator: about a minute for DeepSeek-V3.2's 61 layers "
        "at 200 steps from 32K tokens).",
    ),
    context: int = typer.Option(32768, "--context", help="Context length at the first step."),
    requests: int = typer.Option(1, "--requests", help="Requests in the batch."),
    seed: int = typer.Option(
        0, "--seed", help="Random seed (each request draws from its own streams of (seed, r))."
    ),
    layers: int | None = typer.Option(
        None,
        "--layers",
        help="Override the preset's layers. indexer: fewer layers make a reduced model whose "
        "layers sample the full depth evenly (each keeps its layer group's behaviour).",
    ),
    top_k: int | None = typer.Option(None, "--top-k", help="Override the preset's top-k."),
    hf_config: Path | None = typer.Option(
        None,
        "--hf-config",
        help="indexer: a Hugging Face config.json to take the indexer's heads, head dim, rope "
        "(rope_theta, rope_scaling) and, unless --layers / --top-k, layers and top-k from.",
    ),
    indexer_params: Path | None = typer.Option(
        None,
        "--indexer-params",
        help="indexer: JSON of score-model parameters to change from the calibrated ones.",
    ),
    new_lookup: float | None = typer.Option(
        None,
        "--new-lookup",
        help=f"stats: target new_lookup_fraction [default: {_DEFAULTS.new_lookup_fraction}].",
    ),
    persistence: float | None = typer.Option(
        None,
        "--persistence",
        help="stats: target persistence in steps instead of --new-lookup (1/persistence).",
    ),
    new_lookup_p95: float | None = typer.Option(
        None,
        "--new-lookup-p95",
        help="stats: target P95 of the per-(step, layer) new-lookup fraction (a Beta spread "
        "around the mean). Default: the paper's 0.90 when the mean is the paper's, else none.",
    ),
    overlap: float | None = typer.Option(
        None,
        "--interlayer-overlap",
        help=f"stats: target interlayer_overlap [default: {_DEFAULTS.interlayer_overlap}].",
    ),
    working_set: float | None = typer.Option(
        None,
        "--working-set",
        help=f"stats: target working_set_ratio over --window steps (steered) "
        f"[default: {_DEFAULTS.working_set_ratio}].",
    ),
    lookback: float | None = typer.Option(
        None,
        "--lookback",
        help=f"stats: target lookback_mean_steps (steered) "
        f"[default: {_DEFAULTS.lookback_mean_steps}].",
    ),
    window: int = typer.Option(_DEFAULTS.window, "--window", help="Working-set window, steps."),
    chunk_steps: int = typer.Option(64, "--chunk-steps", help="Steps per stored chunk."),
    scores: bool = typer.Option(
        False, "--scores", help="indexer: store each selection's index score beside it."
    ),
    check: bool = typer.Option(
        False, "--check", help="Analyze the written trace and print targets beside results."
    ),
) -> None:
    """Generate a synthetic DSA trace; the context starts at --context tokens and grows by one
    per step.

    --generator indexer (default) scores every cached token with DeepSeek-V3.2's index score
    over simulated keys and queries (topical clusters, contiguous spans, rotary offsets, queries
    that drift per layer) and keeps the exact top-k, so selections persist for reasons an online
    policy can learn; its parameters were fitted to DeepSeek-V3.2's public per-layer overlap and
    the paper's Table 3 (benchmarks/fit_indexer.py). --generator stats assembles each selection
    from the previous one, the layer below and fresh draws so new_lookup_fraction and
    interlayer_overlap hold by construction; which tokens persist is random.

    Example: dsacache synth --preset deepseek-v3.2 --steps 200 --context 65536 --out t.zarr
    """
    check_generator(generator, "--generator")
    if chunk_steps < 1:
        raise DsacacheError(f"--chunk-steps must be >= 1, got {chunk_steps}")
    stats_only = {
        "--new-lookup": new_lookup, "--persistence": persistence,
        "--new-lookup-p95": new_lookup_p95, "--interlayer-overlap": overlap,
        "--working-set": working_set, "--lookback": lookback,
    }  # fmt: skip
    indexer_only = {"--hf-config": hf_config, "--indexer-params": indexer_params}
    wrong = stats_only if generator == "indexer" else {**indexer_only, "--scores": scores or None}
    given = [name for name, v in wrong.items() if v is not None]
    if given:
        raise DsacacheError(f"{', '.join(given)}: only with --generator {_other(generator)}")
    indexer, targets = None, None
    if generator == "indexer":
        cfg = None if hf_config is None else _read_json(hf_config, "--hf-config")
        params = None if indexer_params is None else _read_json(indexer_params, "--indexer-params")
        geometry, indexer = indexer_setup(
            preset_name, layers=layers, top_k=top_k, hf_config=cfg, params=params,
            source=f"--hf-config {hf_config}",
        )  # fmt: skip
    else:
        targets = _stats_targets(
            new_lookup, persistence, new_lookup_p95, overlap, working_set, lookback, window
        )
        geometry = preset(preset_name).with_overrides(layers=layers, top_k=top_k)
    with progress_bar("synth", progress_total(generator, geometry, steps, requests)) as advance:
        trace = generate(
            generator, geometry, steps, context, indexer=indexer, targets=targets, seed=seed,
            requests=requests, out=out, chunk_steps=chunk_steps, scores=scores, progress=advance,
        )  # fmt: skip
    _wrote(out, trace, requests, steps, context, indexer)
    if check and indexer is not None:
        _print_indexer_check(trace, indexer, window)
    elif check:
        _print_stats_check(trace, targets)


def _other(generator: str) -> str:
    return "stats" if generator == "indexer" else "indexer"


def _stats_targets(
    new_lookup: float | None,
    persistence: float | None,
    new_lookup_p95: float | None,
    overlap: float | None,
    working_set: float | None,
    lookback: float | None,
    window: int,
) -> SynthTargets:
    if new_lookup is not None and persistence is not None:
        raise DsacacheError("give --new-lookup or --persistence, not both")
    if persistence is not None:
        if persistence < 1:
            raise DsacacheError(f"--persistence must be >= 1 step, got {persistence}")
        new_lookup = 1.0 / persistence
    if new_lookup_p95 is None and new_lookup is None:
        new_lookup_p95 = PAPER_TARGETS.new_lookup_p95
    d = _DEFAULTS
    return SynthTargets(
        new_lookup_fraction=d.new_lookup_fraction if new_lookup is None else new_lookup,
        new_lookup_p95=new_lookup_p95,
        interlayer_overlap=d.interlayer_overlap if overlap is None else overlap,
        working_set_ratio=d.working_set_ratio if working_set is None else working_set,
        lookback_mean_steps=d.lookback_mean_steps if lookback is None else lookback,
        window=window,
    )


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise DsacacheError(f"{what} {path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DsacacheError(f"{what} {path}: not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict):
        raise DsacacheError(f"{what} {path}: expected a JSON object")
    return data


def _wrote(
    out: Path, trace: Trace, requests: int, steps: int, context: int, indexer: Indexer | None
) -> None:
    g = trace.geometry
    sample = ""
    if indexer is not None and indexer.model_layers:
        sample = f" (a reduced model: its layers sample the model's {indexer.model_layers})"
    typer.echo(
        f"wrote {out}: {requests} request(s) x {steps} steps x {g.layers} layers x k={g.top_k}, "
        f"context {context}..{context + steps - 1}{sample}"
    )


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


# Real DeepSeek-V3.2 per layer group (TensorRT-LLM blog, ~64K context): layers 0-1 overlap
# 1-2 % from step to step, layers 20-60 35-50 % (docs/indexer-model.md).
_GROUP_REFERENCE = {"early": ">= 0.95 (DSV3.2)", "middle": "", "deep": "0.50-0.65 (DSV3.2)"}


def _print_indexer_check(trace: Trace, indexer: Indexer, window: int) -> None:
    """The paper's Table 3 beside this trace, then new-lookup per layer group beside the public
    DeepSeek-V3.2 profile."""
    with progress_bar("analyze", sum(r.steps for r in trace.requests)) as advance:
        r = analyze(trace, window=window, progress=advance)
    table = Table("metric", "reference", "this trace")
    rows = [
        ("new_lookup_fraction", PAPER["new_lookup_fraction"], r.new_lookup_fraction),
        ("  P95", PAPER.get("new_lookup_fraction_p95"), r.new_lookup_fraction_p95),
        ("persistence_mean_steps", PAPER["persistence_mean_steps"], r.persistence_mean_steps),
        ("lookback_mean_steps", PAPER["lookback_mean_steps"], r.lookback_mean_steps),
        ("interlayer_overlap", PAPER["interlayer_overlap"], r.interlayer_overlap),
        (f"working_set_ratio (W={window})", PAPER["working_set_ratio"], r.working_set_ratio),
        ("page_utilization", PAPER["page_utilization"], r.page_utilization),
    ]
    for label, want, got in rows:
        table.add_row(label, "-" if want is None else f"{want:.3f} (paper)", _cell(got))
    groups = indexer.model.layer_groups(trace.geometry.layers, indexer.model_layers)
    nl = r.per_layer["new_lookup_fraction"]
    for g in GROUPS:
        lys = [ly for ly, name in enumerate(groups) if name == g]
        vals = [nl[ly] for ly in lys if nl[ly] is not None]
        if vals:
            where = "trace layers" if indexer.model_layers else "layers"
            label = f"new_lookup, {g} ({where} {lys[0]}-{lys[-1]})"
            table.add_row(label, _GROUP_REFERENCE[g], _cell(sum(vals) / len(vals)))
    Console().print(table)


def _print_stats_check(trace: Trace, targets: SynthTargets) -> None:
    with progress_bar("analyze", sum(r.steps for r in trace.requests)) as advance:
        r = analyze(trace, window=targets.window, progress=advance)
    table = Table("metric", "target", "this trace")
    rows = [
        ("new_lookup_fraction", targets.new_lookup_fraction, r.new_lookup_fraction),
        ("  P95", targets.new_lookup_p95, r.new_lookup_fraction_p95),
        ("persistence_mean_steps", targets.persistence_mean_steps, r.persistence_mean_steps),
        ("interlayer_overlap", targets.interlayer_overlap, r.interlayer_overlap),
        (f"working_set_ratio (W={targets.window})", targets.working_set_ratio, r.working_set_ratio),
        ("lookback_mean_steps", targets.lookback_mean_steps, r.lookback_mean_steps),
    ]
    for label, want, got in rows:
        table.add_row(label, _cell(want), "n/a" if got is None else f"{got:.3f}")
    Console().print(table)
