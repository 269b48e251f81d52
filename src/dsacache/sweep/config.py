"""Sweep grids from TOML: traces x requests x policies x capacities x partitions x hardware x
layers per GPU x weights x near-miss sources x HBM buffers x buffer policies x host links, one
`Run` per point, each with a config hash.

Without `buffer_tokens` a run is `dsacache perf`'s: the LLC token region (`policies` x
`capacities` x `partitions`) simulated, then the decode step modelled. With it, a run is
`dsacache hierarchy`'s: per-(request, layer) HBM buffers of N tokens under a buffer policy, the
LLC region (`policies` x `capacities`, by default token-lru at 0 MiB: no LLC reservation) in
front of their rows, and the step modelled with the buffers' misses read over the host link
(`host_links`, by default the hardware's own).

The batch is each trace's requests (they share the simulated region): a synth trace's
`requests` (or the grid's `requests` axis, which sets it for every synth trace), a file's own.
There is no `batch` key: scaling one request's hit rate to a bigger batch is not a simulation.

The hash is the sha256 of the run's canonical JSON (sorted keys, no spaces), which holds the
trace's identity: a synth trace's full parameters (defaults filled in: the generator is
`dsacache synth`'s default, the indexer model, unless `generator = "stats"`), or a trace file's path
as written plus a fingerprint of its content (an .npz: sha256 of the file; a store: sha256 of
every zarr.json in it, i.e. its meta and array shapes).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsacache.errors import DsacacheError
from dsacache.hardware import HOST_LINKS
from dsacache.perf import perf_params
from dsacache.sim import POLICIES, SimConfig
from dsacache.sim.config import NEAR_MISS_POLICY, NEAR_MISS_SOURCES, mb_to_mib
from dsacache.sim.hierarchy import HierarchyConfig, level_policies
from dsacache.trace.generate import DEFAULT_GENERATOR, check_generator
from dsacache.trace.geometry import PRESETS as GEOMETRY_PRESETS

SCHEMA_VERSION = 3
KEYS = (
    "traces", "requests", "policies", "capacities", "partitions", "hardware",
    "layers_per_gpu", "weights_mib", "near_miss_source", "buffer_tokens", "buffer_policies",
    "host_links",
)  # fmt: skip
BUFFER_KEYS = ("buffer_policies", "host_links")  # axes of the HBM level: need buffer_tokens
# keys of the first schema whose meaning changed: a one-line error says what to write instead
RENAMED = {
    "batch": "the batch is each trace's requests: give `requests = [...]` (synth traces) or "
    "a trace file recorded with that many requests",
    "weights_mb": "weights are MiB: write `weights_mib`",
}
REQUIRED = ("traces", "policies", "capacities")  # policies, capacities: not with buffer_tokens
HOST_LINK_OF_HARDWARE = "hardware"  # host_links value: each GPU's own link
SYNTH_KEYS = {"synth", "generator", "steps", "context", "layers", "top_k", "seed", "requests"}
_CAP = re.compile(r"^\s*([0-9.eE+-]+)\s*(mib|mb|tokens?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Run:
    """One grid point. `config` is canonical JSON-able; `trace` its trace's identity."""

    config: dict[str, Any]
    base_dir: str  # where relative trace paths resolve (not part of the hash)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def trace(self) -> dict[str, Any]:
        return self.config["trace"]


@dataclass(frozen=True)
class SweepConfig:
    text: str  # the TOML as given (written to DIR/sweep.toml)
    runs: list[Run]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def load_config(path: str | Path) -> SweepConfig:
    """Read and expand a sweep TOML (relative trace paths resolve against its folder)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DsacacheError(f"cannot read sweep config {str(p)!r}: {e.strerror or e}") from None
    return parse_config(text, base_dir=p.parent, source=str(p))


def parse_config(text: str, base_dir: str | Path = ".", source: str = "<config>") -> SweepConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DsacacheError(f"{source}: bad TOML: {e}") from None
    for key, why in RENAMED.items():
        if key in data:
            raise DsacacheError(f"{source}: {key!r} is not a key: {why}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise DsacacheError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    has_buffer = "buffer_tokens" in data
    missing = [k for k in REQUIRED if k not in data and not (has_buffer and k != "traces")]
    if missing:
        raise DsacacheError(f"{source}: missing key {missing[0]!r} (required: traces, policies, "
                            "capacities; with buffer_tokens only traces)")  # fmt: skip
    for key in BUFFER_KEYS:
        if key in data and not has_buffer:
            raise DsacacheError(f"{source}: {key} needs buffer_tokens (the HBM level's size)")
    base = Path(base_dir)
    raw = _list(data, "traces", source)
    if "requests" in data:
        raw = _with_requests(raw, _list(data, "requests", source), source)
    traces = [_trace_identity(t, base, source) for t in raw]
    policies = [_policy(p, source) for p in _list(data, "policies", source, ["token-lru"])]
    caps = [_capacity(c, source) for c in _list(data, "capacities", source, [0])]
    partitions = [_partition(p, source) for p in _list(data, "partitions", source, ["global"])]
    hardware = [_hardware(h, source) for h in _list(data, "hardware", source, ["h100"])]
    lpg = [
        _opt_int(x, "layers_per_gpu", source) for x in _list(data, "layers_per_gpu", source, [None])
    ]
    weights = [_weights(w, source) for w in _list(data, "weights_mib", source, [None])]
    nm_sources = [_nm_source(x, source) for x in _list(data, "near_miss_source", source, [None])]
    buffers: list[int | None] = [None]
    buffer_policies: list[str | None] = [None]
    links: list[str | None] = [None]
    if has_buffer:
        buffers = [
            _pos_int(n, "buffer_tokens", source) for n in _list(data, "buffer_tokens", source)
        ]
        buffer_policies = [
            _level_policy(p, "buffer_policies", source)
            for p in _list(data, "buffer_policies", source, ["token-lru"])
        ]
        links = [_host_link(x, source) for x in _list(data, "host_links", source,
                                                      [HOST_LINK_OF_HARDWARE])]  # fmt: skip
    runs = []
    for tr, pol, cap, part, hw, lp, w, nm, n, bp, link in itertools.product(
        traces, policies, caps, partitions, hardware, lpg, weights, nm_sources, buffers,
        buffer_policies, links,
    ):  # fmt: skip
        nm = nm if pol == NEAR_MISS_POLICY else None  # the other policies have no source
        cfg = {
            "version": SCHEMA_VERSION, "trace": tr, "policy": pol, "capacity_mib": cap[0],
            "capacity_tokens": cap[1], "partition": part, "hardware": hw,
            "layers_per_gpu": lp, "weights_mib": w, "near_miss_source": nm,
            "buffer_tokens": n, "buffer_policy": bp, "host_link": link,
        }  # fmt: skip
        try:  # one-line error on a bad combination
            SimConfig(pol, cap[1], cap[0], part, nm)
        except DsacacheError as e:
            raise DsacacheError(f"{source}: {e} (sweep key near_miss_source)") from None
        if n is not None:
            _check_hierarchy(cfg, source, base)
        runs.append(Run(cfg, str(base)))
    seen: set[str] = set()
    unique = []
    for r in runs:  # a value listed twice gives one run
        if r.config_hash not in seen:
            seen.add(r.config_hash)
            unique.append(r)
    return SweepConfig(text, unique)


def _list(data: dict, key: str, source: str, default: list | None = None) -> list:
    value = data.get(key, default)
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise DsacacheError(f"{source}: {key} must list at least one value")
    return value


def _policy(p: Any, source: str) -> str:
    if not isinstance(p, str) or p not in POLICIES:
        raise DsacacheError(
            f"{source}: unknown policy {p!r} (known: {', '.join(sorted(POLICIES))})"
        )
    return p


def _with_requests(traces: list, values: list, source: str) -> list:
    """Each synth trace once per request count (a file trace keeps its own requests)."""
    counts = [_pos_int(n, "requests", source) for n in values]
    if not any(isinstance(t, dict) and "synth" in t for t in traces):
        # the axis would change nothing: a file's batch is the requests it was recorded with
        raise DsacacheError(
            f"{source}: the `requests` axis applies to synth traces only and this grid has "
            "none (a trace file's batch is its own requests)"
        )
    out = []
    for t in traces:
        if not (isinstance(t, dict) and "synth" in t):
            out.append(t)
            continue
        if "requests" in t:
            raise DsacacheError(
                f"{source}: synth trace {t['synth']!r} sets requests and the grid has a "
                "`requests` axis: give one of them"
            )
        out += [{**t, "requests": n} for n in counts]
    return out


def hierarchy_config(cfg: dict[str, Any]) -> HierarchyConfig:
    """The `dsacache hierarchy` configuration of a run with an HBM buffer."""
    return HierarchyConfig(
        cfg["buffer_tokens"], cfg["buffer_policy"], cfg["capacity_mib"], cfg["policy"],
        cfg["hardware"], cfg["capacity_tokens"], cfg["partition"],
    )  # fmt: skip


def _check_hierarchy(cfg: dict[str, Any], source: str, base: Path) -> None:
    """What a hierarchy run can check before it runs: the LLC level's policy, the region
    against the hardware's LLC, N >= the trace's top-k (a synth trace's, or a file's geometry),
    so a bad grid writes nothing."""
    _level_policy(cfg["policy"], "policies", source)
    try:
        level = hierarchy_config(cfg)
        t = cfg["trace"]
        k = t.get("top_k")
        if k is None and "path" in t:
            k = _file_top_k(str(base / t["path"]), t["fingerprint"])
        if k is not None:
            synth = "synth" in t
            whose = f"the synth trace's top_k {k}" if synth else f"the top_k ({k}) of trace "
            level.check_top_k(k, "buffer_tokens", whose + ("" if synth else repr(t["path"])))
    except DsacacheError as e:
        raise DsacacheError(f"{source}: {e}") from None


@functools.lru_cache(maxsize=64)
def _file_top_k(path: str, fingerprint: str) -> int:
    """A trace file's top-k (cached by its content's fingerprint: one read per file)."""
    from dsacache.trace.io import open_trace

    return open_trace(path, lazy=True).geometry.top_k


def _level_policy(p: Any, key: str, source: str) -> str:
    usable = level_policies()
    if p not in usable:
        raise DsacacheError(
            f"{source}: {key}: {p!r} cannot run a level of the hierarchy (usable: "
            f"{', '.join(usable)})"
        )
    return str(p)


def _host_link(x: Any, source: str) -> str | None:
    if x == HOST_LINK_OF_HARDWARE:
        return None
    if not isinstance(x, str) or x.lower() not in HOST_LINKS:
        known = ", ".join([HOST_LINK_OF_HARDWARE, *HOST_LINKS])
        raise DsacacheError(f"{source}: unknown host link {x!r} (known: {known})")
    return x.lower()


def _nm_source(x: Any, source: str) -> str | None:
    if x is None or x in NEAR_MISS_SOURCES:
        return x
    raise DsacacheError(
        f"{source}: near_miss_source must be {' or '.join(NEAR_MISS_SOURCES)}, got {x!r}"
    )


def _capacity(c: Any, source: str) -> tuple[float | None, int | None]:
    """(MiB, None) or (None, tokens). A bare number is MiB; "X MiB" / "N tokens"; a table
    {mib = X} / {tokens = N}. "X MB" means decimal megabytes (10**6 B, as the paper's tables)
    and is stored as the MiB it equals."""
    bad = DsacacheError(
        f'{source}: bad capacity {c!r} (give MiB as a number, "20 MiB", "5 MB" (= 4.77 MiB), '
        '"5000 tokens", {mib = 20} or {tokens = 5000}; >= 0)'
    )
    mb: Any = None
    tok: Any = None
    if isinstance(c, bool):
        raise bad
    if isinstance(c, int | float):
        mb = c
    elif isinstance(c, str):
        m = _CAP.match(c)
        if not m:
            raise bad
        try:
            num = float(m.group(1))
        except ValueError:
            raise bad from None
        unit = m.group(2).lower()
        if unit.startswith("tok"):
            if num != int(num):
                raise bad
            tok = int(num)
        else:
            mb = num if unit == "mib" else mb_to_mib(num)
    elif isinstance(c, dict) and len(c) == 1 and set(c) <= {"mib", "tokens"}:
        mb, tok = c.get("mib"), c.get("tokens")
        if tok is not None and (isinstance(tok, bool) or not isinstance(tok, int)):
            raise bad
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int | float)):
            raise bad
    else:
        raise bad
    if mb is not None:
        mb = float(mb)
        if not mb >= 0 or mb == float("inf"):
            raise bad
    if tok is not None and tok < 0:
        raise bad
    try:
        SimConfig("token-lru", tok, mb)
    except DsacacheError as e:
        raise DsacacheError(f"{source}: bad capacity {c!r}: {e}") from None
    return mb, tok


def _partition(p: Any, source: str) -> str:
    ok = isinstance(p, str) and (
        p in ("global", "per-layer") or re.fullmatch(r"pinned:\d+(,\d+)*", p) is not None
    )
    if not ok:
        raise DsacacheError(
            f"{source}: bad partition {p!r} (give global, per-layer or pinned:L1,L2,...)"
        )
    return p


def _hardware(h: Any, source: str) -> str:
    if not isinstance(h, str):
        raise DsacacheError(f"{source}: hardware must be a preset name, got {h!r}")
    try:
        perf_params(h.lower())
    except DsacacheError as e:
        raise DsacacheError(f"{source}: {e}") from None
    return h.lower()


def _pos_int(x: Any, key: str, source: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise DsacacheError(f"{source}: {key} must be integers >= 1, got {x!r}")
    return x


def _opt_int(x: Any, key: str, source: str) -> int | None:
    return None if x is None else _pos_int(x, key, source)


def _weights(w: Any, source: str) -> float | None:
    """MiB per layer, or None for "model" (the model's own, from the trace geometry)."""
    if w is None or w == "model":
        return None
    if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w < float("inf"):
        raise DsacacheError(f'{source}: weights_mib must be numbers >= 0 or "model", got {w!r}')
    return float(w)


def _trace_identity(t: Any, base: Path, source: str) -> dict[str, Any]:
    if isinstance(t, str):
        return file_identity(t, base, source)
    if isinstance(t, dict) and "synth" in t:
        return synth_identity(t, source)
    raise DsacacheError(
        f'{source}: bad trace {t!r} (give a path or a table {{synth = "deepseek-v3.2", '
        "steps = ..., context = ...}})"
    )


def synth_identity(t: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(t) - SYNTH_KEYS)
    if unknown:
        raise DsacacheError(
            f"{source}: synth trace: unknown key {unknown[0]!r} "
            f"(known: {', '.join(sorted(SYNTH_KEYS))})"
        )
    name = t["synth"]
    if name not in GEOMETRY_PRESETS:
        known = ", ".join(sorted(GEOMETRY_PRESETS))
        raise DsacacheError(f"{source}: unknown synth preset {name!r} (known: {known})")
    g = GEOMETRY_PRESETS[name]
    for key in ("steps", "context"):
        if key not in t:
            raise DsacacheError(f"{source}: synth trace {name!r}: missing key {key!r}")
    generator = t.get("generator", DEFAULT_GENERATOR)
    check_generator(generator, f"{source}: synth trace {name!r}: generator")
    out: dict[str, Any] = {
        "synth": name, "generator": generator, "steps": t["steps"], "context": t["context"],
        "layers": t.get("layers", g.layers), "top_k": t.get("top_k", g.top_k),
        "seed": t.get("seed", 0), "requests": t.get("requests", 1),
    }  # fmt: skip
    for key, value in out.items():
        if key in ("synth", "generator"):
            continue
        low = 0 if key == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DsacacheError(
                f"{source}: synth trace {name!r}: {key} must be an integer >= {low}, got {value!r}"
            )
    return out


def file_identity(path: str, base: Path, source: str) -> dict[str, Any]:
    p = Path(path)
    full = p if p.is_absolute() else base / p
    if not full.exists():
        raise DsacacheError(f"{source}: trace {path!r} does not exist")
    h = hashlib.sha256()
    if full.is_file():
        with full.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        kind = "sha256 of the file"
    else:
        metas = sorted(full.rglob("zarr.json"))
        if not metas:
            raise DsacacheError(f"{source}: trace {path!r} is not a trace store (no zarr.json)")
        for m in metas:
            h.update(m.relative_to(full).as_posix().encode() + b"\0" + m.read_bytes() + b"\0")
        kind = "sha256 of the store's zarr.json files"
    return {"path": path, "fingerprint": h.hexdigest(), "fingerprint_kind": kind}


def trace_label(identity: dict[str, Any]) -> str:
    if "synth" in identity:
        s = identity
        return (
            f"synth:{s['synth']}:generator={s['generator']}:steps={s['steps']}"
            f":context={s['context']}:layers={s['layers']}"
            f":top_k={s['top_k']}:seed={s['seed']}:requests={s['requests']}"
        )
    return identity["path"]
