"""Load a backbone: `tiny` (the packaged checkpoint) or any local Hugging Face checkpoint dir."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from dsacache.errors import DsacacheError

# Architecture families (config.json's model_type) the DSA attention can serve. Owned by the
# DSA engineer: edit here when a family is added or found wrong.
SUPPORTED_MODEL_TYPES: frozenset[str] = frozenset(
    {"llama", "qwen2", "qwen3", "mistral", "gpt_neox", "gpt2"}
)

TINY = "tiny"


def tiny_path() -> Path:
    """Directory of the packaged `tiny` checkpoint (config, safetensors, tokenizer)."""
    return Path(str(resources.files("dsacache.dsa") / "assets" / "tiny"))


def resolve_model_path(name_or_path: str) -> Path:
    """The checkpoint directory for `name_or_path`, checked; DsacacheError when it is not one."""
    path = tiny_path() if name_or_path == TINY else Path(name_or_path).expanduser()
    if not path.exists():
        raise DsacacheError(
            f"model {name_or_path!r}: no such directory (use 'tiny' or a local HF dir)"
        )
    if not path.is_dir() or not (path / "config.json").is_file():
        raise DsacacheError(
            f"model {name_or_path!r}: not a Hugging Face checkpoint (no config.json)"
        )
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise DsacacheError(f"model {name_or_path!r}: unreadable config.json ({exc})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(sorted(SUPPORTED_MODEL_TYPES))
        raise DsacacheError(
            f"model {name_or_path!r}: unsupported architecture {model_type!r}"
            f" (supported: {supported})"
        )
    return path


def load_backbone(name_or_path: str, dtype: torch.dtype = torch.float32) -> tuple[object, object]:
    """(model in eval mode, tokenizer) for `tiny` or a local HF checkpoint dir, loaded offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DsacacheError(f"model {name_or_path!r}: cannot load checkpoint ({first})") from None
    model.eval()
    return model, tokenizer


def load_indexer(
    indexer: Path | None, model_dir: Path, model: torch.nn.Module, seed: int = 0
) -> tuple[torch.nn.Module, str | None]:
    """(indexer, the file it came from) for `model`: `indexer` if given, else the checkpoint's own
    indexer.safetensors (packaged for tiny); with neither, an untrained seeded indexer and None
    (the caller warns: its selections mean nothing)."""
    from dsacache.dsa.hooks import attention_modules
    from dsacache.dsa.indexer import IndexerConfig, LightningIndexer

    hidden = int(model.config.hidden_size)
    layers = len(attention_modules(model))
    path = indexer if indexer is not None else model_dir / "indexer.safetensors"
    if indexer is None and not path.is_file():
        return LightningIndexer(IndexerConfig(), hidden, layers, seed=seed), None
    ix = LightningIndexer.load(path)
    if (ix.hidden_size, ix.num_layers) != (hidden, layers):
        raise DsacacheError(
            f"{path}: indexer is for hidden size {ix.hidden_size} x {ix.num_layers} layers, "
            f"the model has {hidden} x {layers}"
        )
    return ix, str(path)
