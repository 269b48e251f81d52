"""One entry point for synthetic traces: `dsacache synth`, sweep grids, the serving model's
generated trace and the GPU prediction all generate through `generate` / `generate_preset`, so
they agree on the default generator and on what a reduced model (fewer layers) means.

Generators:
- `indexer` (the default): scores every cached token with a simulated lightning indexer and
  keeps the exact top-k (synth_indexer.py, calibrated in indexer_calibration.json);
- `stats`: assembles each selection to meet the paper's statistics (synth.py; faster, but which
  tokens persist is random).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsacache.errors import DsacacheError
from dsacache.trace.geometry import Geometry, IndexerSpec, indexer_preset, preset
from dsacache.trace.indexer_model import GROUPS, IndexerModel, calibrated
from dsacache.trace.model import DEFAULT_CHUNK_STEPS, Trace
from dsacache.trace.rope import rope_from_hf_config
from dsacache.trace.synth import SynthTargets, synthesize
from dsacache.trace.synth_indexer import synthesize_indexer

GENERATORS = ("indexer", "stats")
DEFAULT_GENERATOR = "indexer"


@dataclass(frozen=True)
class Indexer:
    """What the indexer generator needs beyond the geometry: the indexer's shape, the score
    model's parameters, and the depth of the model a reduced trace samples (None: the trace's
    own layers are the model's)."""

    spec: IndexerSpec
    model: IndexerModel
    model_layers: int | None = None


# what each generator is calibrated to, for notes beside results
CALIBRATED_TO = {
    "indexer": "an indexer model calibrated to DeepSeek-V3.2's public measurements",
    "stats": "calibrated to the paper's statistics",
}


def describe(meta: dict[str, Any]) -> str:
    """What a synthetic trace's generator is calibrated to (its meta names the generator; a
    trace written before generators had names is the statistics generator's)."""
    return CALIBRATED_TO.get(meta.get("generator", "stats"), "an unknown generator")


def check_generator(generator: str, what: str = "generator") -> str:
    if generator not in GENERATORS:
        raise DsacacheError(f"{what} must be one of {', '.join(GENERATORS)}, got {generator!r}")
    return generator


def indexer_setup(
    preset_name: str,
    *,
    layers: int | None = None,
    top_k: int | None = None,
    hf_config: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    source: str = "hf config",
) -> tuple[Geometry, Indexer]:
    """The geometry and indexer of an indexer-model run of `preset_name`: a Hugging Face
    config.json dict replaces the indexer's heads, head dim and rope and, unless `layers` /
    `top_k` are given, the layers and top-k; `params` changes score-model parameters (a group's
    entry changes only the fields it names). Fewer layers than the model's: a reduced model."""
    geometry = preset(preset_name)
    spec = indexer_preset(preset_name)
    full_layers = geometry.layers
    if hf_config is not None:

        def count(key: str, default: int) -> int:
            v = hf_config.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DsacacheError(f"{source}: {key} must be an integer >= 1, got {v!r}")
            return v

        heads = count("index_n_heads", spec.heads)
        head_dim = count("index_head_dim", spec.head_dim)
        rope_dims = count("qk_rope_head_dim", spec.rope.dims)
        full_layers = count("num_hidden_layers", full_layers)
        if top_k is None and "index_topk" in hf_config:
            top_k = count("index_topk", 1)
        spec = IndexerSpec(heads, head_dim, rope_from_hf_config(hf_config, rope_dims))
        layers = layers if layers is not None else full_layers
    geometry = geometry.with_overrides(
        layers=None if layers is None else int(layers), top_k=None if top_k is None else int(top_k)
    )
    model = calibrated()
    if params is not None:
        model = IndexerModel.from_dict({**model.to_dict(), **_merge_groups(model, params)})
    model_layers = full_layers if geometry.layers < full_layers else None  # a reduced model
    return geometry, Indexer(spec, model, model_layers)


def _merge_groups(model: IndexerModel, changes: dict[str, Any]) -> dict[str, Any]:
    """Group entries in `changes` change only the named fields of that group."""
    out = dict(changes)
    for g in GROUPS:
        if isinstance(changes.get(g), dict):
            out[g] = {**model.to_dict()[g], **changes[g]}
    return out


def progress_total(generator: str, geometry: Geometry, steps: int, requests: int) -> int:
    """The units `generate` reports progress in: (step, layer) pairs for the indexer, steps for
    the statistics generator."""
    per_step = geometry.layers if generator == "indexer" else 1
    return steps * requests * per_step


def generate(
    generator: str,
    geometry: Geometry,
    steps: int,
    context: int,
    *,
    indexer: Indexer | None = None,
    targets: SynthTargets | None = None,
    seed: int = 0,
    requests: int = 1,
    out: str | Path | None = None,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    scores: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Trace:
    """A synthetic trace whose context starts at `context` tokens and grows one per step.
    indexer: required by the indexer generator; targets: the statistics generator's (the
    paper's by default); scores: indexer only. With `out`, it streams to a trace store."""
    check_generator(generator)
    if generator == "indexer":
        if indexer is None:
            raise DsacacheError("the indexer generator needs an indexer (indexer_setup)")
        if targets is not None:
            raise DsacacheError("statistics targets apply to the stats generator only")
        return synthesize_indexer(
            geometry, indexer.spec, steps, context, indexer.model, seed=seed, requests=requests,
            out=out, chunk_steps=chunk_steps, scores=scores, progress=progress,
            model_layers=indexer.model_layers,
        )  # fmt: skip
    if scores:
        raise DsacacheError("stored scores come from the indexer generator only")
    return synthesize(
        geometry, steps, context, targets, seed=seed, requests=requests, out=out,
        chunk_steps=chunk_steps, progress=progress,
    )  # fmt: skip


def generate_preset(
    generator: str,
    preset_name: str,
    steps: int,
    context: int,
    *,
    layers: int | None = None,
    top_k: int | None = None,
    seed: int = 0,
    requests: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Trace:
    """An in-memory trace of a geometry preset (reduced to `layers` / `top_k` if given) with
    the generator's calibrated defaults."""
    check_generator(generator)
    if generator == "indexer":
        geometry, indexer = indexer_setup(preset_name, layers=layers, top_k=top_k)
    else:
        geometry, indexer = preset(preset_name).with_overrides(layers=layers, top_k=top_k), None
    return generate(
        generator, geometry, steps, context, indexer=indexer, seed=seed, requests=requests,
        progress=progress,
    )  # fmt: skip
