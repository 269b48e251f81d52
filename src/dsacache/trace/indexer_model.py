"""Parameters of the indexer-model generator (synth_indexer.py), and their calibrated values.

The generator scores every cached token with the DeepSeek-V3.2 index score over synthetic index
keys and queries; these dataclasses say how those keys and queries are built. docs/indexer-model.md
explains each parameter and how benchmarks/fit_indexer.py fitted them.

Layers fall in three groups: `early` (the first `early_layers`), `deep` (from
round(deep_from × layers) on) and `middle` (the rest); each group has its own query dynamics
(GroupParams), the key structure is shared. A reduced model (fewer layers than the model it
stands for) samples the full depth evenly (IndexerModel.layer_groups).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from typing import Any

from dsacache.errors import DsacacheError

GROUPS = ("early", "middle", "deep")
# GroupParams fields of the positional probe (benchmarks/probe_positional.py): 0 = off, the
# calibrated model leaves them off.
PROBE_FIELDS = ("rope_scatter", "rope_tilt", "rope_shared")


@dataclass(frozen=True)
class GroupParams:
    """How one layer group's index queries move from step to step (score units: a key's content
    part has unit length, see docs/indexer-model.md).

    Each head's query has a topic part (length topic_weight) that points at the topics its focus
    picks: the focus is exp(topic_peak × Y) over the topics, Y an AR(1) per head with memory
    topic_memory; and a detail part: a persistent direction (variance `persistent`), a drifting
    one (variance `drift`, AR(1) memory drift_memory) and a fresh one every step (variance
    `flicker`). head_spread: log-normal spread of the per-step head weights w(t, j); rope_gain:
    the rotary part's score at offset 0; relu_bias: subtracted from every head's dot product
    before the ReLU (a constant key feature: what a head must beat to count at all).
    rope_scatter (a probe, default 0 = off): each head's own persistent rotary direction,
    added to the query's rotary dims before rope_gain (rope_scatter·N(0, 1) per dim): random
    phases per frequency, so the positional score peaks at scattered offsets that move with
    the query; rope_tilt: that direction's share per frequency pair ∝ (ω / ω_max)^rope_tilt,
    normalised to the same total (0 = flat; large = the fastest pairs alone, isolated peaks);
    rope_shared: the share (variance, 0-1) of that direction common to all heads, so their
    peaks line up (benchmarks/probe_positional.py, docs/indexer-model.md "Open").
    """

    topic_weight: float = 10.0
    topic_peak: float = 10.0
    topic_memory: float = 0.998
    persistent: float = 0.2
    drift: float = 0.0
    drift_memory: float = 0.9
    flicker: float = 2.0
    head_spread: float = 0.5
    rope_gain: float = 1.0
    relu_bias: float = 7.0
    rope_scatter: float = 0.0
    rope_tilt: float = 0.0
    rope_shared: float = 0.0

    def validate(self, name: str) -> None:
        check_types(self, f"{name}.")
        for f in fields(self):  # check_types: every field is a finite number
            v = getattr(self, f.name)
            if v < 0:
                raise DsacacheError(f"indexer model: {name}.{f.name} must be >= 0, got {v}")
        if self.rope_shared > 1.0:
            raise DsacacheError(f"indexer model: {name}.rope_shared must be <= 1")
        for m in ("topic_memory", "drift_memory"):
            if getattr(self, m) >= 1.0:
                raise DsacacheError(f"indexer model: {name}.{m} must be < 1")
        if self.persistent + self.drift + self.flicker + self.topic_weight <= 0:
            raise DsacacheError(f"indexer model: {name}: the query has no content part")


def check_types(params: Any, prefix: str = "") -> None:  # noqa: ANN401 - either dataclass
    """Every int field an int and every float field a finite number (bools are neither): the
    parameters come from user JSON."""
    for f in fields(params):
        v = getattr(params, f.name)
        if f.type not in ("int", "float"):
            continue
        ok = isinstance(v, int) if f.type == "int" else isinstance(v, int | float)
        if isinstance(v, bool) or not ok or v != v or abs(v) == float("inf"):
            kind = "an integer" if f.type == "int" else "a finite number"
            raise DsacacheError(f"indexer model: {prefix}{f.name} must be {kind}, got {v!r}")


# A memoryless query: a fresh random direction every step (what the first layers look like).
MEMORYLESS = GroupParams(
    topic_weight=0.0, topic_peak=0.0, topic_memory=0.0, persistent=0.0, drift=0.0,
    drift_memory=0.0, flicker=1.0, head_spread=0.0, rope_gain=0.0, relu_bias=0.0,
)  # fmt: skip


@dataclass(frozen=True)
class IndexerModel:
    """Key structure (shared by all layers) and the three groups' query dynamics.

    heads: simulated index heads; section_k: mean length (geometric) of a run of tokens on one
    topic, as a fraction of top-k; topic_sections: sections per topic (so a topic holds about
    section_k × topic_sections × k tokens wherever they sit, at any context length, and what the
    heads focus on is a fixed multiple of k);
    span_tokens: mean length of a run sharing one detail vector (a span never crosses a
    section); topic_share: the topic subspace's share of a key's (unit) content length;
    span_share: the span vector's share of the detail part (the rest is the token's own);
    rope_mean / rope_spread: the rotary dims' mean and spread (keys and queries, 1 + A·N(0,1)
    style); layer_coupling: the fresh share of every random input from one layer to the next
    (0 = all layers alike, 1 = independent); jump_rate: changes of subject per step (every
    layer's topic focus and drift restart, every 1 / jump_rate steps from a random phase).
    """

    heads: int = 16
    section_k: float = 1 / 16
    topic_sections: int = 2
    span_tokens: float = 48.0
    topic_share: float = 0.5
    span_share: float = 0.98
    rope_mean: float = 1.0
    rope_spread: float = 0.1
    layer_coupling: float = 0.3
    jump_rate: float = 0.02
    early_layers: int = 2
    deep_from: float = 20 / 61
    early: GroupParams = field(default_factory=lambda: MEMORYLESS)
    middle: GroupParams = field(default_factory=GroupParams)
    deep: GroupParams = field(default_factory=GroupParams)

    def validate(self) -> None:
        check_types(self)
        if self.heads < 1 or self.topic_sections < 1 or self.early_layers < 0:
            raise DsacacheError(
                "indexer model: heads and topic_sections must be >= 1, early_layers >= 0"
            )
        if not self.section_k > 0 or self.span_tokens < 1:
            raise DsacacheError("indexer model: section_k must be > 0 and span_tokens >= 1")
        for name in ("topic_share", "span_share", "layer_coupling", "jump_rate", "deep_from"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise DsacacheError(f"indexer model: {name} must be in [0, 1], got {v}")
        if self.rope_spread < 0:
            raise DsacacheError("indexer model: rope_spread must be >= 0")
        for g in GROUPS:
            getattr(self, g).validate(g)

    def group_of(self, layer: int, layers: int) -> str:
        if layer < self.early_layers:
            return "early"
        if layer >= round(self.deep_from * layers):
            return "deep"
        return "middle"

    def layer_groups(self, layers: int, model_layers: int | None = None) -> list[str]:
        """The group of each of a trace's `layers`. With model_layers > layers the trace is a
        reduced model whose layers stand for an even sample of model_layers' depth (trace layer
        i for model layer floor((i + 1/2) × model_layers / layers)), so a few layers keep the
        full model's mix of groups instead of being all early ones."""
        if model_layers is None or model_layers <= layers:
            return [self.group_of(ly, layers) for ly in range(layers)]
        return [
            self.group_of((2 * ly + 1) * model_layers // (2 * layers), model_layers)
            for ly in range(layers)
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexerModel:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DsacacheError(f"indexer model: unknown parameters {sorted(unknown)}")
        kw = dict(data)
        for g in GROUPS:
            if g in kw:
                sub = kw[g]
                gk = {f.name for f in fields(GroupParams)}
                if not isinstance(sub, dict) or set(sub) - gk:
                    raise DsacacheError(f"indexer model: bad {g} group parameters")
                kw[g] = GroupParams(**sub)
        model = cls(**kw)
        model.validate()
        return model

    def with_group(self, name: str, **changes: float) -> IndexerModel:
        return replace(self, **{name: replace(getattr(self, name), **changes)})


def calibrated() -> IndexerModel:
    """The parameters benchmarks/fit_indexer.py fitted (data/indexer_calibration.json)."""
    text = resources.files("dsacache.trace").joinpath("data/indexer_calibration.json").read_text()
    return IndexerModel.from_dict(json.loads(text)["model"])


def calibration_record() -> dict[str, Any]:
    """The whole calibration file: the model plus the fit's targets and achieved values."""
    text = resources.files("dsacache.trace").joinpath("data/indexer_calibration.json").read_text()
    return json.loads(text)
