"""Distil the lightning indexer from the frozen backbone's dense attention.

DeepSeek-V3.2's dense warm-up: the backbone is frozen and, per layer l, the indexer learns
KL(p_l || softmax(I_l)), where p_l is the backbone's dense attention summed over heads and
L1-normalised per query (= the mean over heads), and I_l the index scores. Keys a query cannot see
(causal or sliding-window mask) are excluded from both sides. The loss is the sum over layers of
the mean KL per query token.

How p is obtained (exact, any family the hooks serve, GQA included): while `DenseProbe` is active
the model's attention implementation is a registered function of ours that receives the
post-rotary q/k/v every family hands to transformers' attention interface, computes
softmax(q k^T * scaling + mask) in fp32 itself (kv heads repeated as `repeat_kv` does), returns
the dense output and keeps the head mean. The mask is transformers' own eager mask, so causal,
sliding-window and padding rules are the model's. The indexer's input, each attention module's
`hidden_states`, comes from a forward pre-hook (the contract with indexer.py).

Checkpoint = the indexer (`LightningIndexer.save`, FILE.safetensors) + the training state beside it
(FILE.train.safetensors: Adam moments, step, hyperparameters, data fingerprint). Batches are a
pure function of (seed, step) and the lr schedule of the step alone, so resuming at step N
replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dsacache.dsa.attention import register_interface
from dsacache.dsa.indexer import IndexerConfig, LightningIndexer
from dsacache.dsa.quality import topk_recall
from dsacache.dsa.sparse import repeat_kv
from dsacache.errors import DsacacheError

PROBE_IMPL = "dsacache_dense_probe"
_TAG = "_dsacache_dense_probe"  # attribute set on attention modules while a probe is active
STATE_FORMAT = "dsacache-distill-state"

Progress = Callable[[int], None]


# --------------------------------------------------------------------------- dense probe
def _dense_probe_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Exact dense attention (fp32 softmax) that also hands the head-mean probabilities over."""
    tag = getattr(module, _TAG, None)
    if tag is None:
        raise DsacacheError("dense probe attention ran outside a DenseProbe")
    probe, layer = tag
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise DsacacheError("distill: attention sinks are not supported")
    tq, tk = query.shape[-2], key.shape[-2]
    with torch.autocast(device_type=query.device.type, enabled=False):
        rep = query.shape[1] // key.shape[1]  # GQA: query head h reads kv head h // rep
        q, k, v = query.float(), repeat_kv(key.float(), rep), repeat_kv(value, rep)
        scale = scaling if scaling is not None else q.shape[-1] ** -0.5
        logits = torch.matmul(q, k.transpose(-1, -2)) * scale
        softcap = kwargs.get("softcap")
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        if attention_mask is None:  # no mask given: plain causal, queries are the last tq keys
            pos = torch.arange(tk - tq, tk, device=q.device)
            allowed = torch.arange(tk, device=q.device)[None, :] <= pos[:, None]
            logits = logits.masked_fill(~allowed, float("-inf"))
        elif attention_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attention_mask[..., :tk], float("-inf"))
        else:
            logits = logits + attention_mask[..., :tk].float()
        probs = torch.softmax(logits, dim=-1)
        out = torch.matmul(probs.to(v.dtype), v)
    probe.record(layer, probs.mean(dim=1))
    return out.transpose(1, 2).contiguous(), None


def _register_probe() -> None:
    # the model's own eager mask rules
    register_interface(PROBE_IMPL, _dense_probe_attention, "eager_mask")


def _set_attn_impl(model: nn.Module, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # older transformers: the config attribute is what the attention modules read
        model.config._attn_implementation = name
    if model.config._attn_implementation != name:
        raise DsacacheError(
            f"distill: {type(model).__name__} cannot switch its attention implementation"
        )


class DenseProbe:
    """Context manager: the backbone runs exact dense attention and, per layer, this keeps the
    attention input `hidden_states` (detached) and the head-mean probabilities [B, Tq, Tk]."""

    def __init__(self, model: nn.Module) -> None:
        from dsacache.dsa.hooks import attention_modules

        self.model = model
        self.modules = attention_modules(model)
        self.hidden: list[Tensor | None] = [None] * len(self.modules)
        self.probs: list[Tensor | None] = [None] * len(self.modules)
        self._handles: list[Any] = []
        self._old_impl: str | None = None

    @property
    def num_layers(self) -> int:
        return len(self.modules)

    def record(self, layer: int, probs: Tensor) -> None:
        self.probs[layer] = probs

    def _pre_hook(self, layer: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            h = kwargs.get("hidden_states", args[0] if args else None)
            if h is None:
                raise DsacacheError(f"distill: layer {layer}'s attention got no hidden_states")
            self.hidden[layer] = h.detach()

        return hook

    def __enter__(self) -> DenseProbe:
        _register_probe()
        self._old_impl = self.model.config._attn_implementation
        for layer, m in enumerate(self.modules):
            setattr(m, _TAG, (self, layer))
            self._handles.append(
                m.register_forward_pre_hook(self._pre_hook(layer), with_kwargs=True)
            )
        try:
            _set_attn_impl(self.model, PROBE_IMPL)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for m in self.modules:
            if hasattr(m, _TAG):
                delattr(m, _TAG)
        if self._old_impl is not None and self.model.config._attn_implementation == PROBE_IMPL:
            _set_attn_impl(self.model, self._old_impl)

    def take(self) -> tuple[list[Tensor], list[Tensor]]:
        """(hidden per layer, head-mean probabilities per layer) of the last forward; clears."""
        if any(h is None for h in self.hidden) or any(p is None for p in self.probs):
            missing = [i for i, p in enumerate(self.probs) if p is None]
            raise DsacacheError(f"distill: no dense attention captured for layer(s) {missing}")
        hidden, probs = list(self.hidden), list(self.probs)
        self.hidden = [None] * self.num_layers
        self.probs = [None] * self.num_layers
        return hidden, probs  # type: ignore[return-value]


def _autocast(device: torch.device) -> Any:
    # bf16 autocast for the frozen backbone on GPU; the indexer itself stays fp32.
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def _backbone_body(model: nn.Module) -> nn.Module:
    """The decoder without the LM head (its logits are not needed)."""
    body = getattr(model, "base_model", None)
    return body if isinstance(body, nn.Module) else model


@torch.no_grad()
def dense_targets(
    model: nn.Module, probe: DenseProbe, ids: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """Run the frozen backbone on token ids [B, T]: (attention inputs, dense p) per layer."""
    with _autocast(ids.device):
        _backbone_body(model)(input_ids=ids, use_cache=False)
    return probe.take()


# --------------------------------------------------------------------------- loss
def _causal(t: int, device: torch.device) -> Tensor:
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


def layer_scores(indexer: LightningIndexer, layer: int, hidden: Tensor) -> Tensor:
    """Index scores [B, T, T] of a window against itself (positions 0..T-1, no mask)."""
    pos = torch.arange(hidden.shape[1], device=hidden.device)
    keys = indexer.keys(layer, hidden, pos)
    return indexer.scores(layer, hidden, pos, keys)


def _layer_kl(scores: Tensor, p: Tensor) -> Tensor:
    """Mean over queries of KL(p || softmax(scores)), keys a query cannot see excluded."""
    keep = _causal(scores.shape[-1], scores.device)
    logq = torch.log_softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    logq = logq.masked_fill(~keep, 0.0)  # excluded keys: 0 * (-inf) would be NaN
    p = p.float().masked_fill(~keep, 0.0)
    return (torch.xlogy(p, p) - p * logq).sum(-1).mean()  # xlogy: 0 log 0 = 0


def indexer_kl(
    indexer: LightningIndexer, hidden: list[Tensor], probs: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """(sum over layers of the mean KL(p || softmax(I)) per query, per-layer values detached)."""
    per_layer = [
        _layer_kl(layer_scores(indexer, layer, h), p)
        for layer, (h, p) in enumerate(zip(hidden, probs, strict=True))
    ]
    stacked = torch.stack(per_layer)
    return stacked.sum(), stacked.detach()


# --------------------------------------------------------------------------- data
def encode_text(tokenizer: Any, text: str) -> Tensor:
    """Token ids (1-D int64) of a text, without special tokens."""
    # verbose=False: a whole file is longer than model_max_length; it is cut into windows later.
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def batch_windows(tokens: Tensor, seq: int, batch: int, seed: int, step: int) -> Tensor:
    """The training batch of `step`: `batch` random windows of `seq` tokens, a pure function of
    (seed, step) so that a resumed run sees the same batches."""
    n = tokens.numel() - seq
    if n < 0:
        raise DsacacheError(f"training text has {tokens.numel()} tokens, fewer than --seq {seq}")
    starts = np.random.default_rng([seed, step]).integers(0, n + 1, size=batch)
    idx = torch.from_numpy(starts[:, None] + np.arange(seq)[None, :])
    return tokens[idx]


def heldout_windows(tokens: Tensor, seq: int, count: int) -> Tensor:
    """Up to `count` consecutive non-overlapping windows [N, seq] from the held-out start."""
    n = min(count, tokens.numel() // seq)
    if n < 1:
        raise DsacacheError(f"held-out text has {tokens.numel()} tokens, fewer than --seq {seq}")
    return tokens[: n * seq].view(n, seq)


def token_fingerprint(tokens: Tensor) -> str:
    """sha256 of the training token ids (a resumed run must train on the same data)."""
    return hashlib.sha256(tokens.cpu().numpy().astype(np.int64).tobytes()).hexdigest()


# --------------------------------------------------------------------------- recall
@dataclass
class RecallReport:
    """Top-k recall (and held-out KL) per layer and pooled over layers."""

    k: int
    per_layer: list[float]
    overall: float
    queries_per_layer: int
    kl_per_layer: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    indexer: LightningIndexer,
    windows: Tensor,
    k: int,
    batch: int,
    device: torch.device,
    progress: Progress | None = None,
) -> RecallReport:
    """Recall@k of the indexer against dense attention's top-k on held-out windows [N, T]."""
    with DenseProbe(model) as probe:
        layers = probe.num_layers
        recalls: list[list[Tensor]] = [[] for _ in range(layers)]
        kls = torch.zeros(layers, dtype=torch.float64)
        for i in range(0, windows.shape[0], batch):
            ids = windows[i : i + batch].to(device)
            hidden, probs = dense_targets(model, probe, ids)
            for layer in range(layers):  # one indexer pass per layer for both figures
                scores = layer_scores(indexer, layer, hidden[layer])
                recalls[layer].append(topk_recall(scores, probs[layer], k).cpu())
                kls[layer] += float(_layer_kl(scores, probs[layer])) * ids.shape[0]
            if progress is not None:
                progress(ids.shape[0])
    per_layer = [torch.cat(r) for r in recalls]
    count = per_layer[0].numel()
    if count == 0:
        raise DsacacheError(f"--top-k {k} leaves no query with more than k keys at --seq")
    return RecallReport(
        k=k,
        per_layer=[float(r.mean()) for r in per_layer],
        overall=float(torch.cat(per_layer).mean()),
        queries_per_layer=count,
        kl_per_layer=(kls / windows.shape[0]).tolist(),
    )


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    """What determines the trajectory: a resumed run must use the same values."""

    seq: int = 512
    batch: int = 4
    lr: float = 1e-3
    warmup: int = 10
    seed: int = 0
    clip: float = 1.0
    indexer: IndexerConfig = field(default_factory=IndexerConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["indexer"] = self.indexer.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["indexer"] = IndexerConfig.from_dict(d["indexer"])
        return cls(**d)

    def lr_at(self, step: int) -> float:
        """Linear warm-up over `warmup` steps, then constant (a function of the step alone)."""
        return self.lr * min(1.0, (step + 1) / max(1, self.warmup))


def check_train_config(cfg: TrainConfig) -> None:
    """Reject impossible values with one line naming the option."""
    for name, value, least in (("--seq", cfg.seq, 2), ("--batch", cfg.batch, 1)):
        if value < least:
            raise DsacacheError(f"{name} must be >= {least}, got {value}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise DsacacheError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.warmup < 0:
        raise DsacacheError(f"--warmup must be >= 0, got {cfg.warmup}")


@dataclass
class TrainState:
    """Indexer, optimizer and the step the next update will be."""

    indexer: LightningIndexer
    optimizer: torch.optim.Optimizer
    step: int
    config: TrainConfig
    data_sha256: str
    losses: list[float] = field(default_factory=list)


def _optimizer(indexer: LightningIndexer, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(indexer.parameters(), lr=cfg.lr)


def model_dims(model: nn.Module) -> tuple[int, int]:
    """(hidden_size, number of attention layers) of a backbone."""
    from dsacache.dsa.hooks import attention_modules

    return int(model.config.hidden_size), len(attention_modules(model))


def new_state(
    model: nn.Module, cfg: TrainConfig, data_sha256: str, device: torch.device
) -> TrainState:
    """A fresh indexer (seeded) for `model` and its optimizer, at step 0."""
    hidden_size, layers = model_dims(model)
    indexer = LightningIndexer(cfg.indexer, hidden_size, layers, seed=cfg.seed).to(device)
    return TrainState(indexer, _optimizer(indexer, cfg), 0, cfg, data_sha256)


def state_path(checkpoint: Path) -> Path:
    """The training-state file beside an indexer checkpoint FILE.safetensors."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".train.safetensors")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(state: TrainState, path: Path) -> None:
    """Indexer at `path`, optimizer + step + config beside it (each file replaced atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    opt = state.optimizer.state_dict()
    tensors = {}
    for pid, slots in opt["state"].items():
        for name, value in slots.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{pid}.{name}"] = t.detach().cpu().contiguous()
    meta = {
        "format": STATE_FORMAT,
        "step": str(state.step),
        "config": json.dumps(state.config.to_dict()),
        "param_groups": json.dumps(opt["param_groups"]),
        "data_sha256": state.data_sha256,
        "losses": json.dumps(state.losses),
    }
    _atomic(state_path(path), lambda p: save_file(tensors, str(p), metadata=meta))
    _atomic(path, state.indexer.save)


def read_state_meta(checkpoint: Path) -> dict:
    """The training-state metadata of a checkpoint (its config as a TrainConfig under 'config')."""
    from safetensors import safe_open

    sp = state_path(checkpoint)
    if not Path(checkpoint).is_file():
        raise DsacacheError(f"--resume {checkpoint}: file not found")
    if not sp.is_file():
        raise DsacacheError(f"--resume {checkpoint}: its training state {sp.name} is missing")
    try:
        with safe_open(str(sp), framework="pt") as f:
            meta = dict(f.metadata() or {})
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        meta["step"] = int(meta["step"])
        meta["config"] = TrainConfig.from_dict(json.loads(meta["config"]))
        meta["losses"] = json.loads(meta.get("losses", "[]"))
    except DsacacheError:
        raise
    except Exception as e:
        raise DsacacheError(
            f"{sp}: not a distill training state ({type(e).__name__}: {e})"
        ) from None
    return meta


def load_checkpoint(
    checkpoint: Path, model: nn.Module, cfg: TrainConfig, data_sha256: str, device: torch.device
) -> TrainState:
    """Resume: the indexer, optimizer and step of `checkpoint`, checked against this run."""
    from safetensors.torch import load_file

    meta = read_state_meta(checkpoint)
    if meta["config"] != cfg:
        old, new = meta["config"].to_dict(), cfg.to_dict()
        diff = ", ".join(f"{k}={new[k]} (checkpoint: {old[k]})" for k in new if new[k] != old[k])
        raise DsacacheError(f"--resume {checkpoint}: training settings differ: {diff}")
    if meta["data_sha256"] != data_sha256:
        raise DsacacheError(f"--resume {checkpoint}: --text is not the checkpoint's training text")
    indexer = LightningIndexer.load(checkpoint)
    hidden_size, layers = model_dims(model)
    if (indexer.hidden_size, indexer.num_layers) != (hidden_size, layers):
        raise DsacacheError(
            f"--resume {checkpoint}: indexer is for hidden size {indexer.hidden_size} x "
            f"{indexer.num_layers} layers, the model has {hidden_size} x {layers}"
        )
    indexer.to(device)
    optimizer = _optimizer(indexer, cfg)
    flat = load_file(str(state_path(checkpoint)))
    opt_state: dict[int, dict[str, Tensor]] = {}
    for name, t in flat.items():
        _, pid, slot = name.split(".", 2)
        opt_state.setdefault(int(pid), {})[slot] = t
    optimizer.load_state_dict(
        {"state": opt_state, "param_groups": json.loads(meta["param_groups"])}
    )
    return TrainState(indexer, optimizer, meta["step"], cfg, data_sha256, meta["losses"])


def train(
    model: nn.Module,
    state: TrainState,
    tokens: Tensor,
    steps: int,
    device: torch.device,
    out: Path,
    checkpoint_every: int,
    progress: Progress | None = None,
) -> TrainState:
    """Train until `state.step == steps`; checkpoint every `checkpoint_every` steps + at the end."""
    cfg = state.config
    state.indexer.train()
    with DenseProbe(model) as probe:
        while state.step < steps:
            ids = batch_windows(tokens, cfg.seq, cfg.batch, cfg.seed, state.step).to(device)
            hidden, probs = dense_targets(model, probe, ids)
            loss, _ = indexer_kl(state.indexer, hidden, probs)
            if not torch.isfinite(loss):
                raise DsacacheError(f"distill: loss is {loss.item()} at step {state.step}")
            for group in state.optimizer.param_groups:
                group["lr"] = cfg.lr_at(state.step)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip > 0:
                nn.utils.clip_grad_norm_(state.indexer.parameters(), cfg.clip)
            state.optimizer.step()
            state.losses.append(float(loss.detach()))
            state.step += 1
            if progress is not None:
                progress(1)
            if checkpoint_every > 0 and state.step % checkpoint_every == 0:
                save_checkpoint(state, out)
    state.indexer.eval()
    save_checkpoint(state, out)
    return state


def prepare_backbone(model: nn.Module, device: torch.device) -> nn.Module:
    """Frozen fp32 backbone in eval mode on `device` (GPU matmuls run under bf16 autocast)."""
    model.to(device=device, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
