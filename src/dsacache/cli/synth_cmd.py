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
from dsacache.trace.geometry import PRESETS, IndexerSpec, indexer_preset, preset
from dsacache.trace.indexer_model import IndexerModel, calibrated
from dsacache.trace.rope import rope_from_hf_config
from dsacache.trace.synth import PAPER_TARGETS, SynthTargets, synthesize
from dsacache.trace.synth_indexer import synthesize_indexer

_DEFAULTS = SynthTargets()
GENERATORS = ("indexer", "stats")


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Trace store to write (a directory)."),
    generator: str = typer.Option(
        "indexer",
        "--generator",
        help="indexer: score every token with a simulated lightning indexer and keep the exact "
        "top-k (calibrated to public DeepSeek-V3.2 measurements; docs/indexer-model.md). "
        "stats: assemble each selection to hit the statistics targets below (faster).",
    ),
    preset_name: str = typer.Option(
        "deepseek-v3.2", "--preset", help=f"Model geometry: {', '.join(PRESETS)}."
    ),
    steps: int = typer.Option(1000, "--steps", help="Decode steps."),
    context: int = typer.Option(32768, "--context", help="Context length at the first step."),
    requests: int = typer.Option(1, "--requests", help="Requests in the batch."),
    seed: int = typer.Option(0, "--seed", help="Random seed (request r uses seed + r)."),
    layers: int | None = typer.Option(None, "--layers", help="Override the preset's layers."),
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
    if generator not in GENERATORS:
        raise DsacacheError(
            f"--generator must be one of {', '.join(GENERATORS)}, got {generator!r}"
        )
    if chunk_steps < 1:
        raise DsacacheError(f"--chunk-steps must be >= 1, got {chunk_steps}")
    stats_only = {
        "--new-lookup": new_lookup, "--persistence": persistence,
        "--new-lookup-p95": new_lookup_p95, "--interlayer-overlap": overlap,
        "--working-set": working_set, "--lookback": lookback,
    }  # fmt: skip
    if generator == "indexer":
        given = [name for name, v in stats_only.items() if v is not None]
        if given:
            raise DsacacheError(f"{', '.join(given)}: only with --generator stats")
        _synth_indexer(
            out, preset_name, steps, context, requests, seed, layers, top_k, hf_config,
            indexer_params, chunk_steps, check, window, scores,
        )  # fmt: skip
        return
    for name, v in (("--hf-config", hf_config), ("--indexer-params", indexer_params)):
        if v is not None:
            raise DsacacheError(f"{name}: only with --generator indexer")
    if scores:
        raise DsacacheError("--scores: only with --generator indexer")
    targets = _stats_targets(
        new_lookup, persistence, new_lookup_p95, overlap, working_set, lookback, window
    )
    geometry = preset(preset_name).with_overrides(layers=layers, top_k=top_k)
    with progress_bar("synth", steps * requests) as advance:
        trace = synthesize(
            geometry, steps, context, targets, seed=seed, requests=requests, out=out,
            chunk_steps=chunk_steps, progress=advance,
        )  # fmt: skip
    _wrote(out, trace, requests, steps, context)
    if check:
        _print_stats_check(trace, targets)


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


def _indexer_setup(
    preset_name: str,
    layers: int | None,
    top_k: int | None,
    hf_config: Path | None,
    indexer_params: Path | None,
) -> tuple:
    """Geometry, indexer shape and score-model parameters of an indexer-model run."""
    geometry = preset(preset_name)
    spec = indexer_preset(preset_name)
    if hf_config is not None:
        cfg = _read_json(hf_config, "--hf-config")
        try:
            heads = int(cfg.get("index_n_heads", spec.heads))
            head_dim = int(cfg.get("index_head_dim", spec.head_dim))
            rope_dims = int(cfg.get("qk_rope_head_dim", spec.rope.dims))
            layers = layers if layers is not None else cfg.get("num_hidden_layers")
            top_k = top_k if top_k is not None else cfg.get("index_topk")
        except (TypeError, ValueError) as e:
            raise DsacacheError(f"--hf-config {hf_config}: bad indexer settings ({e})") from None
        spec = IndexerSpec(heads, head_dim, rope_from_hf_config(cfg, rope_dims))
    geometry = geometry.with_overrides(
        layers=None if layers is None else int(layers), top_k=None if top_k is None else int(top_k)
    )
    model = calibrated()
    if indexer_params is not None:
        changes = _read_json(indexer_params, "--indexer-params")
        model = IndexerModel.from_dict({**model.to_dict(), **_merge_groups(model, changes)})
    return geometry, spec, model


def _merge_groups(model: IndexerModel, changes: dict) -> dict:
    """Group entries in `changes` change only the named fields of that group."""
    out = dict(changes)
    for g in ("early", "middle", "deep"):
        if isinstance(changes.get(g), dict):
            out[g] = {**model.to_dict()[g], **changes[g]}
    return out


def _synth_indexer(
    out: Path,
    preset_name: str,
    steps: int,
    context: int,
    requests: int,
    seed: int,
    layers: int | None,
    top_k: int | None,
    hf_config: Path | None,
    indexer_params: Path | None,
    chunk_steps: int,
    check: bool,
    window: int,
    scores: bool,
) -> None:
    geometry, spec, model = _indexer_setup(preset_name, layers, top_k, hf_config, indexer_params)
    with progress_bar("synth", steps * requests * geometry.layers) as advance:
        trace = synthesize_indexer(
            geometry, spec, steps, context, model, seed=seed, requests=requests, out=out,
            chunk_steps=chunk_steps, scores=scores, progress=advance,
        )  # fmt: skip
    _wrote(out, trace, requests, steps, context)
    if check:
        _print_indexer_check(trace, model, window)


def _wrote(out: Path, trace: Trace, requests: int, steps: int, context: int) -> None:
    g = trace.geometry
    typer.echo(
        f"wrote {out}: {requests} request(s) x {steps} steps x {g.layers} layers x k={g.top_k}, "
        f"context {context}..{context + steps - 1}"
    )


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


# Real DeepSeek-V3.2 per layer group (TensorRT-LLM blog, ~64K context): layers 0-1 overlap
# 1-2 % from step to step, layers 20-60 35-50 % (docs/indexer-model.md).
_GROUP_REFERENCE = {"early": ">= 0.95 (DSV3.2)", "middle": "", "deep": "0.50-0.65 (DSV3.2)"}


def _print_indexer_check(trace: Trace, model: IndexerModel, window: int) -> None:
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
    layers = trace.geometry.layers
    nl = r.per_layer["new_lookup_fraction"]
    for g in ("early", "middle", "deep"):
        lys = [ly for ly in range(layers) if model.group_of(ly, layers) == g]
        vals = [nl[ly] for ly in lys if nl[ly] is not None]
        if vals:
            label = f"new_lookup, {g} (layers {lys[0]}-{lys[-1]})"
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
