"""Attach a lightning indexer to a transformers causal LM without editing model code.

Forward pre-hooks on each layer's attention module capture its input (the indexer's input);
the model's attention implementation is switched to the registered `dsa` function, which finds
its layer through a handle set on the module. Families whose attention bypasses transformers'
AttentionInterface, or that are non-causal, encoder-decoder or use cross-attention, are refused
with a DsacacheError rather than run wrongly.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from dsacache.dsa import attention
from dsacache.dsa.indexer import LightningIndexer
from dsacache.dsa.sparse import DsaRuntime
from dsacache.errors import DsacacheError

_INTERFACE_CALL = "ALL_ATTENTION_FUNCTIONS.get_interface("


def _num_layers(model: nn.Module) -> int:
    cfg = model.config
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if not n:
        raise DsacacheError(f"{type(model).__name__}: config has no num_hidden_layers")
    return int(n)


def _layer_list(model: nn.Module, n: int) -> nn.ModuleList:
    """The decoder's list of layers: the ModuleList of exactly `n` blocks."""
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise DsacacheError(f"{type(model).__name__}: cannot find its {n} decoder layers")


def _uses_interface(module: nn.Module) -> bool:
    try:
        return _INTERFACE_CALL in inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every layer, in layer order; DsacacheError if unsupported."""
    cfg = getattr(model, "config", None)
    name = type(model).__name__
    if cfg is None:
        raise DsacacheError(f"{name}: not a transformers model (no config)")
    family = getattr(cfg, "model_type", "?")
    if getattr(cfg, "is_encoder_decoder", False):
        raise DsacacheError(f"{family}: encoder-decoder models are not supported (causal LMs only)")
    if not getattr(cfg, "is_causal", True) or getattr(cfg, "use_bidirectional_attention", False):
        raise DsacacheError(f"{family}: non-causal attention is not supported")
    if getattr(cfg, "add_cross_attention", False):
        raise DsacacheError(f"{family}: cross-attention is not supported")
    n = _num_layers(model)
    mods: list[nn.Module] = []
    for pos, block in enumerate(_layer_list(model, n)):
        found = [
            m for m in block.modules() if m is not block and type(m).__name__.endswith("Attention")
        ]
        if len(found) != 1:
            raise DsacacheError(
                f"{family}: layer {pos} has {len(found)} attention modules (expected 1); "
                "this family is not supported"
            )
        m = found[0]
        if not _uses_interface(m):
            raise DsacacheError(
                f"{family}: {type(m).__name__} does not go through transformers' "
                "AttentionInterface; this family is not supported"
            )
        if not getattr(m, "is_causal", True):
            raise DsacacheError(f"{family}: layer {pos} attention is not causal; not supported")
        if getattr(m, "layer_idx", pos) != pos:
            raise DsacacheError(f"{family}: layer {pos} has layer_idx {m.layer_idx}")
        mods.append(m)
    return mods


def sliding_windows(model: nn.Module) -> list[int | None]:
    """Each layer's sliding window (None = full attention), as the module will pass it."""
    cfg = model.config
    out: list[int | None] = []
    for m in attention_modules(model):
        if hasattr(m, "sliding_window"):  # Qwen2/Qwen3: per layer type
            out.append(m.sliding_window)
        elif getattr(cfg, "use_sliding_window", True):  # Mistral/Phi-3: config-wide
            out.append(getattr(cfg, "sliding_window", None))
        else:
            out.append(None)
    return out


def check_context(model: nn.Module, max_context: int) -> None:
    """DsacacheError if any layer's sliding window is shorter than `max_context` tokens."""
    for layer, w in enumerate(sliding_windows(model)):
        if w is not None and w < max_context:
            raise DsacacheError(
                f"{model.config.model_type}: layer {layer} uses a {w}-token sliding window, "
                f"shorter than the {max_context}-token context; DSA over sliding-window "
                "attention is not supported"
            )


@dataclass
class Attached:
    """A model with DSA attached; `detach()` restores its own attention."""

    model: nn.Module
    runtime: DsaRuntime
    modules: list[nn.Module]
    previous_impl: str | None
    handles: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for m in self.modules:
            if hasattr(m, "_dsa_handle"):
                del m._dsa_handle
        if self.previous_impl is not None:
            self.model.set_attn_implementation(self.previous_impl)

    def check_routed(self) -> None:
        """DsacacheError if a layer's attention did not reach the `dsa` function."""
        missing = [i for i, c in enumerate(self.runtime.calls) if c == 0]
        if missing:
            raise DsacacheError(
                f"{self.model.config.model_type}: layer(s) {missing} bypassed the 'dsa' "
                "attention function; this family is not supported"
            )


def attach(model: nn.Module, indexer: LightningIndexer, top_k: int | None) -> Attached:
    """Route every layer's attention through `dsa` with `indexer` and `top_k` (None: dense)."""
    mods = attention_modules(model)
    runtime = DsaRuntime(indexer, top_k, len(mods))
    attention.register()
    if getattr(model, "_can_set_attn_implementation", None) and not (
        model._can_set_attn_implementation()
    ):
        raise DsacacheError(
            f"{model.config.model_type}: its attention implementation cannot be switched"
        )
    previous = model.config._attn_implementation
    model.set_attn_implementation(attention.ATTN_NAME)
    if model.config._attn_implementation != attention.ATTN_NAME:
        raise DsacacheError(f"{model.config.model_type}: could not switch attention to 'dsa'")
    att = Attached(model, runtime, mods, previous)
    for layer, m in enumerate(mods):
        m._dsa_handle = (runtime, layer)
        att.handles.append(m.register_forward_pre_hook(_capture(runtime, layer), with_kwargs=True))
    return att


def _capture(runtime: DsaRuntime, layer: int):  # noqa: ANN202 - a torch hook
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is None:
            raise DsacacheError(f"layer {layer}: attention called without hidden_states")
        runtime.pending[layer] = hidden

    return hook
